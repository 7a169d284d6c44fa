package statesync

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hapair/hapair/statesync/repl"
	"github.com/hapair/hapair/statesync/store"
)

// Mode says when a write returns.
type Mode string

// Modes.
const (
	Async Mode = "async" // once applied locally
	Sync  Mode = "sync"  // once the standby applied it
)

// ServiceConfig sets up a Service.
type ServiceConfig struct {
	Mode Mode
	// SyncTimeout is how long a sync write waits for the standby before
	// writes degrade to async (default 1s).
	SyncTimeout time.Duration
	// SyncPoll is how long a sync write polls the replication socket for
	// its acknowledgement before it sleeps until it comes (0: never
	// polls). Polling keeps the CPU awake for the round trip: it spends
	// up to this much CPU per sync write to save the wake-ups that make up
	// most of its latency on a virtual machine.
	SyncPoll time.Duration
	// OnNewSession, if set, learns when a session was created here: the
	// arbitration fact "last new session".
	OnNewSession func(time.Time)
	// OnDegraded, if set, learns when sync mode degrades to async.
	OnDegraded func(reason string)
}

// ErrNotActive is returned for writes on a node that is not active.
var ErrNotActive = errors.New("this node is not active")

// Service is the node's session service: the write path from the
// application API (api.go) to the store and its replication, with the
// role gate, sync mode's wait for the standby and async mode's
// backpressure, and the event stream.
type Service struct {
	cfg   ServiceConfig
	store *store.Store
	repl  *repl.Replicator
	hub   *Hub

	mu       sync.RWMutex
	roleGen  uint64 // the newest SetRole applied
	role     string
	active   bool
	activeAt string // the active node's name, for errors on a standby
	paused   chan struct{}

	degraded atomic.Bool
	writes   atomic.Uint64
}

// NewService wires a store and its replicator.
func NewService(st *store.Store, r *repl.Replicator, cfg ServiceConfig) *Service {
	if cfg.SyncTimeout == 0 {
		cfg.SyncTimeout = time.Second
	}
	if cfg.Mode == "" {
		cfg.Mode = Async
	}
	return &Service{cfg: cfg, store: st, repl: r, hub: NewHub(), role: "INIT"}
}

// Hub is the service's event stream.
func (s *Service) Hub() *Hub { return s.hub }

// Publish tells the subscribed applications.
func (s *Service) Publish(ev Event) { s.hub.Publish(ev) }

// Position is what the store has written (active) or applied (standby),
// and what the standby acknowledged; it never waits for the store.
func (s *Service) Position() (written, acked uint64) { return s.store.Written(), s.repl.Acked() }

// Stats are the service's figures for status.
type Stats struct {
	Sessions                   int
	Written, Acked             uint64
	Connected, Degraded        bool
	Snapshots, Resumes, Writes uint64
	CutOff                     uint64 // event subscribers dropped for not reading
}

// Stats reads the figures without waiting for the store.
func (s *Service) Stats() Stats {
	rs := s.repl.Stats()
	return Stats{
		Sessions: s.store.Len(), Written: s.store.Written(), Acked: s.repl.Acked(),
		Connected: s.repl.Connected(), Degraded: s.Degraded(),
		Snapshots: rs.Snapshots, Resumes: rs.Resumes, Writes: s.Writes(), CutOff: s.hub.CutOff(),
	}
}

// SetRole tells the service this node's role and which node is active.
// gen numbers the caller's role changes in the order it made them. Only a
// promotion waits for the store (its new epoch waits out a snapshot load
// or a listing of every session), so the caller may make it off its loop;
// a later change that overtakes it wins, and the promotion is dropped: a
// demotion never waits for the store and never loses to an older
// promotion.
func (s *Service) SetRole(gen uint64, role string, active bool, activeNode string, epoch uint64) {
	if active {
		s.mu.Lock()
		stale := gen < s.roleGen
		s.mu.Unlock()
		if stale {
			return
		}
		s.repl.NewEpoch(epoch)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen < s.roleGen {
		return
	}
	s.roleGen = gen
	s.role, s.active, s.activeAt = role, active, activeNode
	// Under the lock: a demotion and an overtaken promotion must not
	// reach the replicator in the wrong order.
	s.repl.SetActive(active, 0)
}

// Pause holds new writes (for a switchover) until Resume.
func (s *Service) Pause() {
	s.mu.Lock()
	if s.paused == nil {
		s.paused = make(chan struct{})
	}
	s.mu.Unlock()
}

// Resume releases held writes; they then see the role of that moment.
func (s *Service) Resume() {
	s.mu.Lock()
	if s.paused != nil {
		close(s.paused)
		s.paused = nil
	}
	s.mu.Unlock()
}

// WaitSynced waits until the standby has applied every write, or timeout.
func (s *Service) WaitSynced(timeout time.Duration) bool {
	_, seq := s.store.Seq()
	return s.repl.WaitAcked(seq, timeout)
}

// Degraded says whether sync mode currently runs as async.
func (s *Service) Degraded() bool { return s.degraded.Load() }

// Writes counts writes accepted.
func (s *Service) Writes() uint64 { return s.writes.Load() }

func (s *Service) gate() error {
	for {
		s.mu.RLock()
		paused, active, role, at := s.paused, s.active, s.role, s.activeAt
		s.mu.RUnlock()
		if paused != nil {
			<-paused
			continue
		}
		if !active {
			if at == "" {
				return fmt.Errorf("%w (it is %s; no active node known)", ErrNotActive, role)
			}
			return fmt.Errorf("%w (it is %s): write to the active node, %s", ErrNotActive, role, at)
		}
		return nil
	}
}

// apply performs a write without waiting for the standby.
func (s *Service) apply(kind store.OpKind, id string, data []byte) (uint64, error) {
	w := []store.Write{{Kind: kind, ID: []byte(id), Data: data}}
	s.applyBatch(w)
	return w[0].Seq, w[0].Err
}

// applyBatch performs writes that arrived together, in order.
func (s *Service) applyBatch(ws []store.Write) {
	if err := s.gate(); err != nil {
		for i := range ws {
			if ws[i].Err == nil {
				ws[i].Err = err
			}
		}
		return
	}
	now := time.Now()
	if s.store.WriteBatch(ws, now) {
		if s.cfg.Mode == Sync {
			s.repl.Push() // the writer waits for the standby: no hand-off
		} else {
			s.store.Wake()
		}
	}
	var last uint64
	created := false
	for _, w := range ws {
		if w.Err == nil {
			s.writes.Add(1)
			last = w.Seq
			created = created || w.Kind == store.OpCreate
		}
	}
	if created && s.cfg.OnNewSession != nil {
		s.cfg.OnNewSession(now)
	}
	if last > 0 {
		s.backpressure(last)
	}
}

// maxLag bounds how far an attached standby may fall behind in async mode:
// a writer faster than the standby applies is slowed to its pace, so the
// standby stays milliseconds behind instead of a log's length (and never
// needs a snapshot because it was merely slow).
const maxLag = 4096

func (s *Service) backpressure(seq uint64) {
	// Not while the standby loads a snapshot: it acknowledges nothing
	// until it has, and writes must not wait for that.
	if seq <= maxLag || seq-s.repl.Acked() <= maxLag || !s.repl.Following() {
		return
	}
	// Bounded: a stalled standby is the sync timeout's business, not
	// the writer's.
	s.repl.WaitAcked(seq-maxLag, 50*time.Millisecond)
}

// settle waits, in sync mode, until the standby applied seq. A standby
// that does not answer within SyncTimeout turns sync into async (the
// write still stands) until it has caught up again.
func (s *Service) settle(seq uint64) {
	if s.cfg.Mode != Sync {
		return
	}
	if s.degraded.Load() {
		if s.repl.Acked() >= seq-1 && s.repl.Connected() {
			s.degraded.Store(false)
			s.hub.Publish(Event{Type: "sync-restored"})
		} else {
			return
		}
	}
	if s.cfg.SyncPoll > 0 && s.repl.SpinAcked(seq, s.cfg.SyncPoll) {
		return
	}
	if !s.repl.WaitAcked(seq, s.cfg.SyncTimeout) {
		if !s.degraded.Swap(true) {
			reason := fmt.Sprintf("standby did not apply a write within %v; writes now return without waiting for it", s.cfg.SyncTimeout)
			s.hub.Publish(Event{Type: "sync-degraded", Reason: reason})
			if s.cfg.OnDegraded != nil {
				s.cfg.OnDegraded(reason)
			}
		}
	}
}

// Write performs one write as the mode says.
func (s *Service) Write(kind store.OpKind, id string, data []byte) (uint64, error) {
	seq, err := s.apply(kind, id, data)
	if err != nil {
		return 0, err
	}
	s.settle(seq)
	return seq, nil
}
