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
	// OnDegraded, if set, learns when sync mode degrades to async, and
	// whether the standby said it stops (a planned restart: nothing is
	// wrong) rather than stopped answering.
	OnDegraded func(reason string, planned bool)
	// OnWrite, if set, learns that writes were applied here (written
	// by an application, or from the active's stream: Applied), at
	// most once per writeNotice: the agent then advertises the new
	// position in its frames without ticking for it.
	OnWrite func()
}

// writeNotice bounds how often OnWrite is called under a write load.
const writeNotice = 10 * time.Millisecond

// ErrNotActive is returned for writes on a node that is not active.
var ErrNotActive = errors.New("this node is not active")

// ErrNotReplicated is returned, in sync mode, for a write this node
// applied but stopped being active before the standby applied it: the new
// active may not hold it, so it is not acknowledged.
var ErrNotReplicated = errors.New("this node stopped being active before the standby applied the write; it may be lost: write it again to the active node")

// closed is a closed channel: the term of a node that is not active.
var closed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

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
	// term closes when this node stops being active: a sync write
	// applied in it and not yet acknowledged then fails instead of
	// waiting out the sync timeout and returning as if replicated.
	term chan struct{}

	degraded atomic.Bool
	// degradedWhy is the reason sync mode last degraded, for status.
	degradedWhy atomic.Pointer[string]
	// gone closes when the standby said it stops (StandbyStopped): sync
	// writers waiting for it give up at once. Made anew, under mu, when
	// sync is restored.
	gone chan struct{}
	// stoppedConns is the replicator's Attached count when the standby
	// said it stops: until a connection begun after it, the stopping
	// standby's own acknowledgements (it acked every write up to its
	// stop) must not restore sync mode.
	stoppedConns atomic.Uint64
	// floor is what the store had written when sync mode degraded: a
	// standby that has acknowledged that much since has shown it is
	// alive and applying, so sync may be restored (settle).
	floor atomic.Uint64
	// pace is how many writes a second the standby acknowledged lately
	// while sync was degraded, averaged over windows (paceWindow) from
	// paceAcked at paceAt: sync is restored only for a standby that
	// applies what it lacks within half the sync timeout (settle).
	paceMu    sync.Mutex
	paceAt    time.Time
	paceAcked uint64
	pace      float64
	// paced says pace holds a window's measure since the degrade, of the
	// standby connection paceConn counts (Attached).
	paced    bool
	paceConn uint64
	writes   atomic.Uint64
	// noticed is when OnWrite was last called, in ns since started: by
	// the monotonic clock, as a wall clock stepped back by an hour would
	// hold the notices back for the hour (and the frames' write position
	// with them, which a standby that takes over reads to tell the
	// applications whether sync was complete).
	noticed atomic.Int64
	started time.Time
}

// NewService wires a store and its replicator.
func NewService(st *store.Store, r *repl.Replicator, cfg ServiceConfig) *Service {
	if cfg.SyncTimeout == 0 {
		cfg.SyncTimeout = time.Second
	}
	if cfg.Mode == "" {
		cfg.Mode = Async
	}
	s := &Service{cfg: cfg, store: st, repl: r, hub: NewHub(), role: "INIT", term: closed, gone: make(chan struct{}), started: time.Now()}
	s.noticed.Store(-int64(writeNotice)) // the first write is noticed
	return s
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
	OverTLS                    bool // the replication link's last connection
	Snapshots, Resumes, Writes uint64
	CutOff                     uint64 // event subscribers dropped for not reading
	// DegradedReason is why sync mode degraded, and StandbyPace the
	// writes a second the standby acknowledged lately, averaged over
	// half the sync timeout (measurePace; nil: none measured yet on the
	// standby connected now, so a standby that stopped applying reads 0,
	// not nothing), while Degraded.
	DegradedReason string
	StandbyPace    *float64
}

// Stats reads the figures without waiting for the store.
func (s *Service) Stats() Stats {
	rs := s.repl.Stats()
	st := Stats{
		Sessions: s.store.Len(), Written: s.store.Written(), Acked: s.repl.Acked(),
		Connected: s.repl.Connected(), Degraded: s.Degraded(), OverTLS: s.repl.OverTLS(),
		Snapshots: rs.Snapshots, Resumes: rs.Resumes, Writes: s.Writes(), CutOff: s.hub.CutOff(),
	}
	if st.Degraded {
		if why := s.degradedWhy.Load(); why != nil {
			st.DegradedReason = *why
		}
		// The pace of the standby connected now: one measured on a
		// connection since gone says nothing of it.
		conn := s.repl.Attached()
		s.paceMu.Lock()
		if s.paced && st.Connected && s.paceConn == conn {
			st.StandbyPace = new(s.pace)
		}
		s.paceMu.Unlock()
	}
	return st
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
	switch {
	case active && !s.active:
		s.term = make(chan struct{})
	case !active && s.active:
		close(s.term)
		s.term = closed
	}
	s.role, s.active, s.activeAt = role, active, activeNode
	// Under the lock: a demotion and an overtaken promotion must not
	// reach the replicator in the wrong order.
	s.repl.SetActive(active, 0)
}

// PeerActive says whether the peer's heartbeats say it is active, which a
// standby's replication waits for before it dials (repl.Config.AwaitPeer).
func (s *Service) PeerActive(active bool) { s.repl.PeerActive(active) }

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

// StandbyLoading says whether the attached standby is still loading its
// snapshot; it never waits.
func (s *Service) StandbyLoading() bool { return s.repl.Loading() }

// Degraded says whether sync mode currently runs as async.
func (s *Service) Degraded() bool { return s.degraded.Load() }

// Writes counts writes accepted.
func (s *Service) Writes() uint64 { return s.writes.Load() }

// gate waits out a pause and refuses writes on a node that is not active;
// it returns the active term the write belongs to.
func (s *Service) gate() (term <-chan struct{}, err error) {
	for {
		s.mu.RLock()
		paused, active, role, at, term := s.paused, s.active, s.role, s.activeAt, s.term
		s.mu.RUnlock()
		if paused != nil {
			<-paused
			continue
		}
		if !active {
			if at == "" {
				return nil, fmt.Errorf("%w (it is %s; no active node known)", ErrNotActive, role)
			}
			return nil, fmt.Errorf("%w (it is %s): write to the active node, %s", ErrNotActive, role, at)
		}
		return term, nil
	}
}

// applyBatch performs writes that arrived together, in order, and returns
// the active term they were written in (settle's to watch).
func (s *Service) applyBatch(ws []store.Write) (term <-chan struct{}) {
	term, err := s.gate()
	if err != nil {
		for i := range ws {
			if ws[i].Err == nil {
				ws[i].Err = err
			}
		}
		return closed
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
		s.notice(now)
		s.backpressure(last)
	}
	return term
}

// Applied tells the service that this standby applied more of the
// active's stream (repl.Config.OnApplied): as a write here, its new
// position is noticed (OnWrite), so the frames carry it within an
// interval and a switchover waits no longer for it than that.
func (s *Service) Applied() { s.notice(time.Now()) }

// notice calls OnWrite, at most once per writeNotice.
func (s *Service) notice(now time.Time) {
	if n := int64(now.Sub(s.started)); s.cfg.OnWrite != nil && n-s.noticed.Load() >= int64(writeNotice) {
		s.noticed.Store(n)
		s.cfg.OnWrite()
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

// settle waits, in sync mode, until the standby applied seq, written in
// term. A standby that does not answer within SyncTimeout turns sync into
// async (the write still stands) until it has caught up again. A node
// that stops being active first (a split brain lost, a one-way link
// yielded) does not acknowledge the write: ErrNotReplicated.
func (s *Service) settle(seq uint64, term <-chan struct{}) error {
	if s.cfg.Mode != Sync {
		return nil
	}
	if s.degraded.Load() {
		if s.restorable(seq) {
			s.mu.Lock()
			select {
			case <-s.gone:
				s.gone = make(chan struct{})
			default:
			}
			s.mu.Unlock()
			s.degraded.Store(false)
			s.hub.Publish(Event{Type: "sync-restored"})
		} else {
			return nil
		}
	}
	if s.cfg.SyncPoll > 0 && s.repl.SpinAcked(seq, s.cfg.SyncPoll) {
		return nil
	}
	s.mu.RLock()
	gone := s.gone
	s.mu.RUnlock()
	if s.repl.WaitAckedOr(seq, s.cfg.SyncTimeout, term, gone) {
		return nil
	}
	select {
	case <-term:
		return ErrNotReplicated
	default:
	}
	s.degrade(fmt.Sprintf("standby did not apply a write within %v; writes now return without waiting for it", s.cfg.SyncTimeout), false)
	return nil
}

// restorable says whether the write seq may wait for the standby again,
// in degraded sync mode: one that connected since it said it stops, that
// applies the stream (its snapshot loaded) and has applied what was
// written when sync degraded (so it is not the hung standby that made
// it degrade), and is within the backpressure's bound of seq, so the
// write waits milliseconds for it. Not "caught up to this write": a
// pipelined writer's batch, or a fast writer beside the stream's round
// trip, keeps it a few writes behind at every write, and sync was then
// restored only once the writes paused (never, under a steady stream),
// acknowledging all of them without the standby meanwhile.
//
// Nor one that is further behind than it applies in half the sync
// timeout, at the pace it acknowledged writes lately (measurePace): a
// standby that applies, but slower than the writer writes, is kept
// within the backpressure's bound, thousands of writes behind, and the
// write that restored sync waited out the timeout for it and degraded
// sync again, every few seconds for as long as the stream lasted (each
// time every writer waited the timeout). Such a standby restores sync
// when the writer slows below its pace, as a paused writer's standby does.
func (s *Service) restorable(seq uint64) bool {
	conn := s.repl.Attached()
	if conn <= s.stoppedConns.Load() || !s.repl.Following() {
		return false
	}
	acked := s.repl.Acked() // read after conn: of that connection or a newer one
	if acked+1 >= seq {
		return true // it lacks only this write
	}
	// Measured before the other tests, so a standby that is far behind
	// or hung has a pace too: status says it applies nothing.
	pace, ok := s.measurePace(conn, acked)
	return ok && acked >= s.floor.Load() && acked+maxLag >= seq && float64(seq-acked) <= pace*(s.cfg.SyncTimeout/2).Seconds()
}

// paceWindow is how long measurePace measures the standby's pace over: long
// enough for a pipelined stream's acknowledgements to average out, short
// enough that sync comes back within a fraction of the timeout.
func (s *Service) paceWindow() time.Duration {
	return min(max(s.cfg.SyncTimeout/8, 5*time.Millisecond), 50*time.Millisecond)
}

// measurePace is the pace the standby kept lately, measured at acked on
// its connection conn (Attached). ok false: another write measures it,
// and this one does not restore sync, so many writers do not queue on
// the lock (the next will). Degraded writes only. Sync is restored for a
// standby that applies what it lacks within half the sync timeout at
// that pace (restorable).
//
// Each window's pace is averaged into the last (exponentially, over half
// the sync timeout, the span it predicts): acknowledgements come in lumps
// (a TCP segment of many writes; a standby's busy CPU), so one window
// read 0 and the next twice the standby's pace. Through a 256 kbit/s link
// beside busy CPUs, the pace of a single window read 0 in two of three
// runs, as status said, and a lump could restore sync for a standby that
// could not keep it.
//
// A standby that connected anew starts a new measure: its
// acknowledgements restart from its snapshot's or resume's point, and a
// window across that jump would read the snapshot as a pace.
func (s *Service) measurePace(conn, acked uint64) (float64, bool) {
	if !s.paceMu.TryLock() {
		return 0, false
	}
	defer s.paceMu.Unlock()
	now := time.Now()
	if conn != s.paceConn {
		s.paceAt, s.paceAcked, s.paceConn, s.pace, s.paced = now, acked, conn, 0, false
	} else if d := now.Sub(s.paceAt); d >= s.paceWindow() {
		if !s.paceAt.IsZero() && acked >= s.paceAcked {
			s.pace = averagePace(s.pace, float64(acked-s.paceAcked)/d.Seconds(), d, s.cfg.SyncTimeout/2, s.paced)
			s.paced = true
		}
		s.paceAt, s.paceAcked = now, acked
	}
	return s.pace, true
}

// averagePace is the pace once a window of d that read pace was averaged
// into avg (if paced: the windows before) over span: the first window is
// taken as it is, and each later one weighs d/span (all of it once d is
// span or longer).
func averagePace(avg, pace float64, d, span time.Duration, paced bool) float64 {
	if !paced {
		return pace
	}
	return avg + (pace-avg)*min(1, d.Seconds()/span.Seconds())
}

// degrade turns sync mode into async until the standby has caught up, and
// says so once.
func (s *Service) degrade(reason string, planned bool) {
	if s.degraded.Load() {
		return
	}
	s.floor.Store(s.store.Written())
	// The pace is measured anew: a standby that was quick before may
	// be the one that just made sync degrade.
	s.paceMu.Lock()
	s.paceAt, s.pace, s.paced = time.Time{}, 0, false
	s.paceMu.Unlock()
	if !s.degraded.Swap(true) {
		// The reason of the degrade that won, as its event says: two
		// may race here (a write's timeout, the standby's word).
		s.degradedWhy.Store(&reason)
		s.hub.Publish(Event{Type: "sync-degraded", Reason: reason})
		if s.cfg.OnDegraded != nil {
			s.cfg.OnDegraded(reason, planned)
		}
	}
}

// StandbyStopped is told that the standby said it stops (its last frame):
// planned, a stop or restart; not planned, its heartbeat core saying that
// its daemon died. In sync mode, writes then stop waiting for it at once,
// rather than each stalling for up to SyncTimeout until it is back:
// nothing can be gained by waiting for a node that is not there. A
// standby merely silent is not gone: it may be taking over, and writes
// acknowledged without it would be lost; those wait out the timeout.
func (s *Service) StandbyStopped(planned bool) {
	if s.cfg.Mode != Sync {
		return
	}
	s.mu.RLock()
	active := s.active
	s.mu.RUnlock()
	if !active {
		return
	}
	// Said before the writers are released: one of them would say it
	// first, with the timeout's reason.
	s.stoppedConns.Store(s.repl.Attached())
	reason := "the standby stopped; writes now return without waiting for it"
	if !planned {
		reason = "the standby stopped: its hapaird died; writes now return without waiting for it"
	}
	s.degrade(reason, planned)
	s.mu.Lock()
	select {
	case <-s.gone:
	default:
		close(s.gone)
	}
	s.mu.Unlock()
}

// Write performs one write as the mode says.
func (s *Service) Write(kind store.OpKind, id string, data []byte) (uint64, error) {
	w := []store.Write{{Kind: kind, ID: []byte(id), Data: data}}
	term := s.applyBatch(w)
	if w[0].Err != nil {
		return 0, w[0].Err
	}
	if err := s.settle(w[0].Seq, term); err != nil {
		return 0, err
	}
	return w[0].Seq, nil
}
