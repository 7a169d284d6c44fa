package statesync

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// OpKind is what an operation does.
type OpKind uint8

// Operation kinds.
const (
	OpCreate OpKind = 1 + iota
	OpUpdate
	OpDelete
)

func (k OpKind) String() string {
	switch k {
	case OpCreate:
		return "create"
	case OpUpdate:
		return "update"
	case OpDelete:
		return "delete"
	}
	return fmt.Sprintf("op(%d)", uint8(k))
}

// Op is one write, in the order of Seq.
type Op struct {
	Seq  uint64
	Kind OpKind
	ID   string
	Data []byte // never modified once logged: sessions and log share it
}

// Session is one application session. It is kept small: a store holds
// millions.
type Session struct {
	ID      string
	Data    []byte
	Version uint64
	updated int64 // monotonic nanoseconds since clockBase: when last written here
}

// clockBase anchors the stores' monotonic timestamps; an int64 offset
// takes 8 bytes per session where a time.Time takes 24.
var clockBase = time.Now()

func stamp(t time.Time) int64 { return int64(t.Sub(clockBase)) }

// Age is how long ago the session was last written on this node.
func (v *Session) Age(now time.Time) time.Duration {
	return now.Sub(clockBase) - time.Duration(v.updated)
}

// Limits bound a store. Zero values mean the defaults.
type Limits struct {
	MaxSessions int // default 1,000,000
	MaxData     int // bytes per session, default 64 KiB
	MaxIDLen    int // default 256
	LogOps      int // operations kept for resuming standbys, default 1<<16
}

func (l *Limits) defaults() {
	if l.MaxSessions == 0 {
		l.MaxSessions = 1_000_000
	}
	if l.MaxData == 0 {
		l.MaxData = 64 << 10
	}
	if l.MaxIDLen == 0 {
		l.MaxIDLen = 256
	}
	if l.LogOps == 0 {
		l.LogOps = 1 << 16
	}
}

// Errors callers branch on.
var (
	ErrExists   = errors.New("session already exists")
	ErrNotFound = errors.New("no such session")
	ErrTooLarge = errors.New("session data too large")
	ErrBadID    = errors.New("bad session id")
	ErrFull     = errors.New("session limit reached")
)

// Store holds the sessions and the log of recent operations. Safe for
// concurrent use.
type Store struct {
	lim Limits

	mu       sync.Mutex
	sessions map[string]*Session
	seq      uint64 // last written (active) or applied (standby)
	epoch    uint64 // the stream the sequence numbers belong to
	log      []Op   // ring of the last LogOps operations
	logStart int    // index of the oldest op in log
	logLen   int
	notify   chan struct{} // signalled (capacity 1) on every write: one reader, the leader

	acked  atomic.Uint64 // read on every write (backpressure): no lock
	ackMu  sync.Mutex
	ackSig chan struct{}
}

// NewStore makes an empty store.
func NewStore(lim Limits) *Store {
	lim.defaults()
	return &Store{lim: lim, sessions: map[string]*Session{}, log: make([]Op, lim.LogOps), notify: make(chan struct{}, 1), ackSig: make(chan struct{})}
}

func (s *Store) check(id string, data []byte) error {
	if id == "" || len(id) > s.lim.MaxIDLen {
		return fmt.Errorf("%w: %d bytes (1 to %d)", ErrBadID, len(id), s.lim.MaxIDLen)
	}
	if len(data) > s.lim.MaxData {
		return fmt.Errorf("%w: %d bytes, the limit is %d", ErrTooLarge, len(data), s.lim.MaxData)
	}
	return nil
}

// Write applies a local write with the next sequence number and logs it.
// data is kept, not copied: the caller must not modify it afterwards.
func (s *Store) Write(kind OpKind, id string, data []byte, now time.Time) (uint64, error) {
	w := []Write{{Kind: kind, ID: id, Data: data}}
	s.WriteBatch(w, now)
	return w[0].Seq, w[0].Err
}

// Write is one write of a batch, with its outcome filled in.
type Write struct {
	Kind OpKind
	ID   string
	Data []byte
	Seq  uint64 // set on success
	Err  error
}

// WriteBatch applies writes in order under one lock: a pipelining client's
// writes that arrived together cost one lock and one wake-up of the
// replication sender, not one each.
func (s *Store) WriteBatch(ws []Write, now time.Time) {
	for i := range ws {
		ws[i].Err = s.check(ws[i].ID, ws[i].Data)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	wrote := false
	for i := range ws {
		w := &ws[i]
		if w.Err != nil {
			continue
		}
		cur := s.sessions[w.ID]
		switch w.Kind {
		case OpCreate:
			if cur != nil {
				w.Err = fmt.Errorf("%w: %s", ErrExists, w.ID)
			} else if len(s.sessions) >= s.lim.MaxSessions {
				w.Err = fmt.Errorf("%w (%d)", ErrFull, s.lim.MaxSessions)
			}
		case OpUpdate, OpDelete:
			if cur == nil {
				w.Err = fmt.Errorf("%w: %s", ErrNotFound, w.ID)
			}
		default:
			w.Err = fmt.Errorf("statesync: unknown op %v", w.Kind)
		}
		if w.Err != nil {
			continue
		}
		w.Seq = s.seq + 1
		s.applyLocked(Op{Seq: w.Seq, Kind: w.Kind, ID: w.ID, Data: w.Data}, now, false)
		wrote = true
	}
	if wrote {
		s.signal()
	}
}

// Apply applies replicated operations, in order, under one lock.
func (s *Store) Apply(now time.Time, ops ...Op) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, op := range ops {
		if op.Seq != s.seq+1 {
			return fmt.Errorf("statesync: op %d out of order (applied %d)", op.Seq, s.seq)
		}
		s.applyLocked(op, now, false)
	}
	if len(ops) > 0 {
		s.signal()
	}
	return nil
}

func (s *Store) applyLocked(op Op, now time.Time, signal bool) {
	switch op.Kind {
	case OpCreate, OpUpdate:
		cur := s.sessions[op.ID]
		if cur == nil {
			cur = &Session{ID: op.ID}
			s.sessions[op.ID] = cur
		}
		cur.Data, cur.updated = op.Data, stamp(now)
		cur.Version++
	case OpDelete:
		delete(s.sessions, op.ID)
	}
	s.seq = op.Seq
	i := (s.logStart + s.logLen) % len(s.log)
	if s.logLen == len(s.log) {
		s.logStart = (s.logStart + 1) % len(s.log)
	} else {
		s.logLen++
	}
	s.log[i] = op
	if signal {
		s.signal()
	}
}

func (s *Store) signal() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// Seq is the last sequence written or applied, with the epoch it belongs
// to.
func (s *Store) Seq() (epoch, seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.epoch, s.seq
}

// SetEpoch starts a new stream, when this node becomes active: sequence
// numbers go on from where they are, so positions stay comparable across a
// failover, but a standby from an older stream must take a snapshot.
func (s *Store) SetEpoch(e uint64) {
	s.mu.Lock()
	s.epoch = e
	s.mu.Unlock()
	s.setAcked(0)
}

// Changed returns a channel that receives after writes; a single reader
// (the leader) drains it and then reads OpsAfter.
func (s *Store) Changed() <-chan struct{} { return s.notify }

// OpsAfter appends to dst the logged operations after seq, at most max. ok
// is false when seq is older than the log holds: the follower needs a
// snapshot.
func (s *Store) OpsAfter(dst []Op, seq uint64, max int) (ops []Op, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq >= s.seq {
		return dst, true
	}
	oldest := s.seq - uint64(s.logLen) + 1
	if s.logLen == 0 || seq+1 < oldest {
		return dst, false
	}
	start := int(seq + 1 - oldest)
	for i := start; i < s.logLen && len(dst) < max; i++ {
		dst = append(dst, s.log[(s.logStart+i)%len(s.log)])
	}
	return dst, true
}

// Snapshot copies every session with the sequence it is consistent with.
func (s *Store) Snapshot() (epoch, seq uint64, sessions []Session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sessions = make([]Session, 0, len(s.sessions))
	for _, v := range s.sessions {
		sessions = append(sessions, *v)
	}
	return s.epoch, s.seq, sessions
}

// Load replaces everything with a snapshot and returns the ids of local
// sessions the snapshot does not hold as they were: the sessions this node
// is about to drop.
func (s *Store) Load(epoch, seq uint64, sessions []Session, now time.Time) (dropped []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := make(map[string]*Session, len(sessions))
	for i := range sessions {
		v := sessions[i]
		v.updated = stamp(now)
		next[v.ID] = &v
	}
	for id, cur := range s.sessions {
		if n := next[id]; n == nil || n.Version != cur.Version || string(n.Data) != string(cur.Data) {
			dropped = append(dropped, id)
		}
	}
	s.sessions, s.epoch, s.seq = next, epoch, seq
	s.logStart, s.logLen = 0, 0
	s.signal()
	return dropped
}

// SetFollowing records the stream a follower applies.
func (s *Store) SetFollowing(epoch uint64) {
	s.mu.Lock()
	s.epoch = epoch
	s.mu.Unlock()
}

// Get returns a copy of a session.
func (s *Store) Get(id string) (Session, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.sessions[id]
	if v == nil {
		return Session{}, false
	}
	return *v, true
}

// List returns copies of every session, data included.
func (s *Store) List() []Session {
	_, _, l := s.Snapshot()
	return l
}

// Len is the number of sessions.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// Acked is the highest sequence the standby acknowledged in this epoch.
func (s *Store) Acked() uint64 { return s.acked.Load() }

func (s *Store) setAcked(seq uint64) {
	s.ackMu.Lock()
	s.acked.Store(seq)
	close(s.ackSig)
	s.ackSig = make(chan struct{})
	s.ackMu.Unlock()
}

// WaitAcked waits until the standby acknowledged seq, or until timeout.
func (s *Store) WaitAcked(seq uint64, timeout time.Duration) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.ackMu.Lock()
		acked, sig := s.acked.Load(), s.ackSig
		s.ackMu.Unlock()
		if acked >= seq {
			return true
		}
		select {
		case <-sig:
		case <-deadline.C:
			return false
		}
	}
}
