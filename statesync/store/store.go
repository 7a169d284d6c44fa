// Package store holds the application sessions of one node and the
// positions that order them: the sequence of every write, the epoch (the
// active's term) it belongs to, and a bounded log of recent operations from
// which a standby resumes. It knows nothing of connections or roles; the
// replication protocol (package repl) reads its log and snapshots and
// applies what the active sends.
//
// The log holds operations encoded as they travel (package wire), so the
// active sends it to the standby as it is.
package store

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/hapair/hapair/statesync/wire"
)

// OpKind is what an operation does.
type OpKind uint8

// Operation kinds.
const (
	OpCreate OpKind = wire.KindCreate
	OpUpdate OpKind = wire.KindUpdate
	OpDelete OpKind = wire.KindDelete
)

var opNames = [...]string{OpCreate: "create", OpUpdate: "update", OpDelete: "delete"}

func (k OpKind) String() string {
	if k >= OpCreate && int(k) < len(opNames) {
		return opNames[k]
	}
	return fmt.Sprintf("op(%d)", uint8(k))
}

// Op is one replicated write, in the order of Seq. ID and Data may alias
// a read buffer: the store copies what it keeps.
type Op struct {
	Seq  uint64
	Kind OpKind
	ID   []byte
	Data []byte
}

// Session is one application session as the store shows it.
type Session struct {
	ID string
	// Data is read-only: it is the store's own copy, shared with every
	// reader and snapshot of this version of the session.
	Data    []byte
	Version uint64
	updated int64 // monotonic nanoseconds since clockBase: when last written here
}

// entry is a session as the store keeps it: its id is the map key. Small
// on purpose, a 32-byte allocation and a 24-byte map slot besides the id
// and the data: a store holds millions. The data is held as a string (16
// bytes where a slice takes 24) because it never changes once written.
type entry struct {
	data    string
	version uint64
	updated int64
}

func (e *entry) session(id string) Session {
	return Session{ID: id, Data: view(e.data), Version: e.version, updated: e.updated}
}

// view is s's bytes without a copy; callers never write to them.
func view(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// own is b as a string without a copy; b is a copy nobody else holds.
func own(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

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
	// MaxMemory bounds the bytes all sessions hold: ids, data and
	// entryCost each (default 1 GiB).
	MaxMemory int64
	// LogBytes bounds the log of recent operations kept for resuming
	// standbys (default 16 MiB, and at least two of the largest
	// operations). A standby further behind gets a snapshot.
	LogBytes int
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
	if l.MaxMemory == 0 {
		l.MaxMemory = 1 << 30
	}
	if l.LogBytes == 0 {
		l.LogBytes = 16 << 20
	}
	l.LogBytes = max(l.LogBytes, 2*wire.OpSize(l.MaxIDLen, l.MaxData))
}

// Errors callers branch on.
var (
	ErrExists   = errors.New("session already exists")
	ErrNotFound = errors.New("no such session")
	ErrTooLarge = errors.New("session data too large")
	ErrBadID    = errors.New("bad session id")
	ErrFull     = errors.New("session limit reached")
	// ErrNotFollowing: replicated ops of a stream this store no longer
	// follows: it became active (SetEpoch) while they were on their way.
	ErrNotFollowing = errors.New("not following that stream")
)

// entryCost is what a session costs beyond its id and data: the map slot
// and the entry (measured as about 100 bytes per session at 100,000).
const entryCost = 100

func sessionCost(idLen, dataLen int) int64 { return int64(idLen + dataLen + entryCost) }

// Store holds the sessions and the log of recent operations. Safe for
// concurrent use.
type Store struct {
	lim Limits

	mu       sync.Mutex
	sessions map[string]*entry
	seq      uint64 // last written (active) or applied (standby)
	epoch    uint64 // the stream the sequence numbers belong to
	// prevEpoch and prevSeq are the stream this node held, and how far,
	// when it began its own (SetEpoch).
	prevEpoch, prevSeq uint64
	log                opLog
	frame              []byte        // scratch for encoding an op into the log
	notify             chan struct{} // signalled (capacity 1) on every write: one reader, the leader

	// Mirrors of seq and len(sessions), set under mu and read without
	// it: the agent puts them in every heartbeat, which must never wait
	// for the store (a snapshot holds mu for as long as it copies).
	written atomic.Uint64
	count   atomic.Int64
	mem     int64 // what the sessions hold (sessionCost), under mu
}

// New makes an empty store.
func New(lim Limits) *Store {
	lim.defaults()
	s := &Store{lim: lim, sessions: map[string]*entry{}, notify: make(chan struct{}, 1)}
	// Pages of the ring become resident only as the log fills. It is on
	// the heap, whole, on purpose: the collector counts it as live, a
	// ballast that keeps a store of few sessions from being collected
	// over and over while the stream runs (a follower never fills its
	// ring, so on a standby it is nothing but that). Mapped outside the
	// heap, or made as the log filled, it cost replication 3 to 16 % of
	// its throughput (design-notes.md).
	s.log = opLog{ring: make([]byte, lim.LogBytes), first: 1}
	return s
}

func (s *Store) check(id, data []byte) error {
	if len(id) == 0 || len(id) > s.lim.MaxIDLen {
		return fmt.Errorf("%w: %d bytes (1 to %d)", ErrBadID, len(id), s.lim.MaxIDLen)
	}
	if len(data) > s.lim.MaxData {
		return fmt.Errorf("%w: %d bytes, the limit is %d", ErrTooLarge, len(data), s.lim.MaxData)
	}
	return nil
}

// Write applies a local write with the next sequence number and logs it.
func (s *Store) Write(kind OpKind, id string, data []byte, now time.Time) (uint64, error) {
	w := []Write{{Kind: kind, ID: []byte(id), Data: data}}
	if s.WriteBatch(w, now) {
		s.Wake()
	}
	return w[0].Seq, w[0].Err
}

// Write is one write of a batch, with its outcome filled in. ID and Data
// may alias a request buffer: the store copies what it keeps. A Write that
// arrives with Err set (a malformed request) is skipped.
type Write struct {
	Kind OpKind
	ID   []byte
	Data []byte
	Seq  uint64 // set on success
	Err  error
}

// WriteBatch applies writes in order under one lock: a pipelining client's
// writes that arrived together cost one lock, and one wake-up of the
// replication sender, not one each. It says whether anything was written;
// the caller then wakes the sender (Wake), or sends itself.
func (s *Store) WriteBatch(ws []Write, now time.Time) (wrote bool) {
	for i := range ws {
		if ws[i].Err == nil {
			ws[i].Err = s.check(ws[i].ID, ws[i].Data)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range ws {
		w := &ws[i]
		if w.Err != nil {
			continue
		}
		cur := s.sessions[string(w.ID)]
		switch w.Kind {
		case OpCreate:
			if cur != nil {
				w.Err = fmt.Errorf("%w: %s", ErrExists, w.ID)
			} else if len(s.sessions) >= s.lim.MaxSessions {
				w.Err = fmt.Errorf("%w (%d sessions, sessions.max_sessions)", ErrFull, s.lim.MaxSessions)
			} else if s.mem+sessionCost(len(w.ID), len(w.Data)) > s.lim.MaxMemory {
				w.Err = fmt.Errorf("%w (%d bytes of sessions, sessions.max_memory)", ErrFull, s.lim.MaxMemory)
			}
		case OpUpdate, OpDelete:
			if cur == nil {
				w.Err = fmt.Errorf("%w: %s", ErrNotFound, w.ID)
			} else if w.Kind == OpUpdate && s.mem+int64(len(w.Data)-len(cur.data)) > s.lim.MaxMemory {
				w.Err = fmt.Errorf("%w (%d bytes of sessions, sessions.max_memory)", ErrFull, s.lim.MaxMemory)
			}
		default:
			w.Err = fmt.Errorf("statesync: unknown op %v", w.Kind)
		}
		if w.Err != nil {
			continue
		}
		w.Seq = s.seq + 1
		op := Op{Seq: w.Seq, Kind: w.Kind, ID: w.ID, Data: w.Data}
		s.applyLocked(cur, &op, now)
		s.frame = wire.Append(s.frame[:0], &wire.Msg{Type: wire.Op, Seq: op.Seq, Kind: uint8(op.Kind), ID: op.ID, Data: op.Data})
		s.log.append(s.frame)
		wrote = true
	}
	s.publish()
	return wrote
}

// publish updates the lock-free mirrors. Called with mu held.
func (s *Store) publish() {
	s.written.Store(s.seq)
	s.count.Store(int64(len(s.sessions)))
}

// Apply applies replicated operations of the stream epoch, in order, under
// one lock. A follower keeps no log of them: a standby that becomes active
// starts a new epoch, whose standbys take a snapshot. Ops of the old
// stream that arrive after that are refused: applied, they would be in
// this store and in no snapshot or log its own standby is sent (the log
// restarts at each apply), so that standby stayed behind for good, and a
// later failover to it lost them.
func (s *Store) Apply(now time.Time, epoch uint64, ops ...Op) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if epoch != s.epoch {
		return fmt.Errorf("%w: ops of stream %d, and this store is in stream %d", ErrNotFollowing, epoch, s.epoch)
	}
	for i := range ops {
		op := &ops[i]
		if op.Seq != s.seq+1 {
			return fmt.Errorf("statesync: op %d out of order (applied %d)", op.Seq, s.seq)
		}
		s.applyLocked(s.sessions[string(op.ID)], op, now)
	}
	s.log.reset(s.seq)
	s.publish()
	if len(ops) > 0 {
		s.Wake()
	}
	return nil
}

// applyLocked applies op to cur, the session it names (nil if none).
func (s *Store) applyLocked(cur *entry, op *Op, now time.Time) {
	switch op.Kind {
	case OpCreate, OpUpdate:
		if cur == nil {
			cur = &entry{}
			s.sessions[string(op.ID)] = cur
			s.mem += sessionCost(len(op.ID), 0)
		}
		s.mem += int64(len(op.Data) - len(cur.data))
		// An exact-size copy: the session keeps it for its life.
		cur.data = string(op.Data)
		cur.updated = stamp(now)
		cur.version++
	case OpDelete:
		if cur != nil {
			s.mem -= sessionCost(len(op.ID), len(cur.data))
		}
		delete(s.sessions, string(op.ID))
	}
	s.seq = op.Seq
}

// Wake tells the reader of Changed that there is more to read.
func (s *Store) Wake() {
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
// failover. A standby from an older stream takes a snapshot, unless it
// holds exactly what this node held when the stream began (Resume).
func (s *Store) SetEpoch(e uint64) {
	s.mu.Lock()
	s.prevEpoch, s.prevSeq = s.epoch, s.seq
	s.epoch = e
	s.mu.Unlock()
}

// Resume returns the log position from which a standby that holds the
// stream epoch up to seq continues, ok false when it needs a snapshot. It
// continues in this stream from anywhere the log reaches back to; and from
// the stream this node held before it became active (the old active's,
// after a switchover or a failover) exactly where this node took over: the
// standby's history is then a prefix of ours. Further along the old
// stream it holds writes this node never had: it takes a snapshot.
func (s *Store) Resume(epoch, seq uint64) (pos int64, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case epoch == s.epoch && seq <= s.seq:
	case epoch != 0 && epoch == s.prevEpoch && seq == s.prevSeq:
	default:
		return 0, false
	}
	return s.log.find(seq + 1)
}

// Changed returns a channel that receives after writes; a single reader
// (the leader) drains it and then reads the log.
func (s *Store) Changed() <-chan struct{} { return s.notify }

// ReadLog appends to dst the encoded operations from pos, at most max
// bytes (it may end inside an operation: the bytes go to a stream), and
// returns the position after them. ok is false when writes have already
// overwritten pos: the reader fell behind the log.
func (s *Store) ReadLog(dst []byte, pos int64, max int) ([]byte, int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.read(dst, pos, max)
}

// Snapshot copies every session with the sequence it is consistent with
// and the log position of the operations after it.
func (s *Store) Snapshot() (epoch, seq uint64, pos int64, sessions []Session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sessions = make([]Session, 0, len(s.sessions))
	for id, e := range s.sessions {
		sessions = append(sessions, e.session(id))
	}
	return s.epoch, s.seq, s.log.end, sessions
}

// Load replaces everything with a snapshot and returns the ids of local
// sessions the snapshot does not hold as they were: the sessions this node
// is about to drop. The store keeps the sessions' Data as they are: the
// caller must not modify them afterwards.
func (s *Store) Load(epoch, seq uint64, sessions []Session, now time.Time) (dropped []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := make(map[string]*entry, len(sessions))
	var mem int64
	for i := range sessions {
		v := &sessions[i]
		// A snapshot's data are the follower's own copies.
		next[v.ID] = &entry{data: own(v.Data), version: v.Version, updated: stamp(now)}
		mem += sessionCost(len(v.ID), len(v.Data))
	}
	for id, cur := range s.sessions {
		if n := next[id]; n == nil || n.version != cur.version || n.data != cur.data {
			dropped = append(dropped, id)
		}
	}
	s.sessions, s.epoch, s.seq, s.mem = next, epoch, seq, mem
	s.publish()
	s.log.reset(seq)
	s.Wake()
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
	e := s.sessions[id]
	if e == nil {
		return Session{}, false
	}
	return e.session(id), true
}

// List returns copies of every session, data included.
func (s *Store) List() []Session {
	_, _, _, l := s.Snapshot()
	return l
}

// Limits are the store's bounds, defaults filled in.
func (s *Store) Limits() Limits { return s.lim }

// Len is the number of sessions. It does not wait for the store.
func (s *Store) Len() int { return int(s.count.Load()) }

// Written is the last sequence written (active) or applied (standby). It
// does not wait for the store.
func (s *Store) Written() uint64 { return s.written.Load() }
