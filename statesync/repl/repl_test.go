package repl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hapair/hapair/statesync/store"
	"github.com/hapair/hapair/statesync/wire"
)

var key = bytes.Repeat([]byte{3}, 32)

type node struct {
	store  *store.Store
	repl   *Replicator
	ln     net.Listener
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	dropped []string
}

// startNode runs a replicator on loopback (replication has no link-layer
// part, so loopback is the real thing here; the daemon's tests run it
// across namespaces).
func startNode(t *testing.T, st *store.Store, peer string, keys [][]byte, active bool) *node {
	t.Helper()
	return startNodeCfg(t, st, Config{Keys: keys, Peer: peer}, active)
}

// startNodeCfg runs a replicator with cfg (OnDropped is the node's own).
func startNodeCfg(t *testing.T, st *store.Store, cfg Config, active bool) *node {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return runNode(t, st, cfg, ln, active)
}

// runNode runs a replicator with cfg on ln: the active accepts on it.
func runNode(t *testing.T, st *store.Store, cfg Config, ln net.Listener, active bool) *node {
	t.Helper()
	n := &node{store: st, ln: ln, done: make(chan struct{})}
	cfg.OnDropped = func(ids []string) {
		n.mu.Lock()
		n.dropped = append(n.dropped, ids...)
		n.mu.Unlock()
	}
	n.repl = New(st, cfg)
	if active {
		n.repl.SetActive(true, 1)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	go func() {
		defer close(n.done)
		n.repl.Run(ctx, ln)
	}()
	t.Cleanup(n.stop)
	return n
}

// lead runs an active replicator on rs (a store a test wraps), on a fresh
// loopback listener, until the test ends.
func lead(t *testing.T, rs Store) (*Replicator, net.Listener) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := New(rs, Config{Keys: [][]byte{key}})
	r.SetActive(true, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx, ln)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return r, ln
}

func (n *node) stop() {
	n.cancel()
	<-n.done
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func write(t *testing.T, s *store.Store, kind store.OpKind, id, data string) uint64 {
	t.Helper()
	seq, err := s.Write(kind, id, []byte(data), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

func TestReplicationStreamsAndAcks(t *testing.T) {
	leader := startNode(t, store.New(store.Limits{}), "", [][]byte{key}, true)
	follower := startNode(t, store.New(store.Limits{}), leader.ln.Addr().String(), [][]byte{key}, false)
	for i := 0; i < 1000; i++ {
		write(t, leader.store, store.OpCreate, fmt.Sprintf("call-%d", i), "digits=")
	}
	write(t, leader.store, store.OpUpdate, "call-7", "digits=123")
	last := write(t, leader.store, store.OpDelete, "call-9", "")
	waitFor(t, "follower to apply", func() bool { _, s := follower.store.Seq(); return s == last })
	waitFor(t, "leader to see the ack", func() bool { return leader.repl.Acked() == last })
	if v, ok := follower.store.Get("call-7"); !ok || string(v.Data) != "digits=123" || v.Version != 2 {
		t.Errorf("call-7 on the follower: %+v %v", v, ok)
	}
	if _, ok := follower.store.Get("call-9"); ok {
		t.Error("deleted session still on the follower")
	}
	if follower.store.Len() != 999 {
		t.Errorf("follower holds %d sessions, want 999", follower.store.Len())
	}
	if !leader.repl.WaitAcked(last, time.Second) {
		t.Error("WaitAcked on an acknowledged sequence timed out")
	}
}

// A standby says when it applied more of the stream, a snapshot included
// (OnApplied): its frames then carry its position within an interval, which
// a switchover waits for.
func TestStandbyTellsWhatItApplied(t *testing.T) {
	leader := startNode(t, store.New(store.Limits{}), "", [][]byte{key}, true)
	for i := range 10 {
		write(t, leader.store, store.OpCreate, fmt.Sprintf("s%d", i), "x")
	}
	var told atomic.Int64
	fstore := store.New(store.Limits{})
	startNodeCfg(t, fstore, Config{Keys: [][]byte{key}, Peer: leader.ln.Addr().String(), OnApplied: func() { told.Add(1) }}, false)
	waitFor(t, "the snapshot to be told of", func() bool { return told.Load() > 0 })
	if _, seq := fstore.Seq(); seq != 10 {
		t.Fatalf("told at position %d, want the snapshot's 10", seq)
	}
	before := told.Load()
	write(t, leader.store, store.OpUpdate, "s1", "y")
	waitFor(t, "an applied write to be told of", func() bool { return told.Load() > before })
}

func TestResumeAndSnapshot(t *testing.T) {
	leader := startNode(t, store.New(store.Limits{LogBytes: 4096, MaxData: 256}), "", [][]byte{key}, true)
	fstore := store.New(store.Limits{})
	f := startNode(t, fstore, leader.ln.Addr().String(), [][]byte{key}, false)
	for i := 0; i < 10; i++ {
		write(t, leader.store, store.OpCreate, fmt.Sprintf("s%d", i), "x")
	}
	waitFor(t, "first sync", func() bool { _, s := fstore.Seq(); return s == 10 })
	snaps := leader.repl.Stats().Snapshots

	// A short outage: the follower reconnects and resumes from its seq.
	f.stop()
	for i := 10; i < 20; i++ {
		write(t, leader.store, store.OpCreate, fmt.Sprintf("s%d", i), "x")
	}
	f = startNode(t, fstore, leader.ln.Addr().String(), [][]byte{key}, false)
	waitFor(t, "resume", func() bool { _, s := fstore.Seq(); return s == 20 })
	if st := leader.repl.Stats(); st.Resumes != 1 || st.Snapshots != snaps {
		t.Errorf("short outage: %+v, want one resume and no new snapshot", st)
	}

	// A long outage: the log (4 KiB) no longer reaches back: snapshot.
	f.stop()
	for i := 0; i < 300; i++ {
		write(t, leader.store, store.OpUpdate, "s1", fmt.Sprint(i))
	}
	startNode(t, fstore, leader.ln.Addr().String(), [][]byte{key}, false)
	waitFor(t, "snapshot", func() bool { _, s := fstore.Seq(); return s == 320 })
	// At least one: the leader may also have tried to resync the old,
	// closing connection before it noticed it was gone.
	if st := leader.repl.Stats(); st.Snapshots < snaps+1 {
		t.Errorf("long outage: %+v, want a new snapshot", st)
	}
	if v, _ := fstore.Get("s1"); string(v.Data) != "299" {
		t.Errorf("s1 = %q after snapshot", v.Data)
	}
}

func TestSnapshotReportsDroppedSessions(t *testing.T) {
	leader := startNode(t, store.New(store.Limits{}), "", [][]byte{key}, true)
	write(t, leader.store, store.OpCreate, "kept", "1")
	// The follower was active alone during an isolation and took calls of
	// its own: they are not on the winner and will be dropped.
	fstore := store.New(store.Limits{})
	fstore.SetEpoch(99)
	write(t, fstore, store.OpCreate, "isolated-call", "1")
	f := startNode(t, fstore, leader.ln.Addr().String(), [][]byte{key}, false)
	// The snapshot lands in the store before OnDropped is called, so wait
	// for the report itself, not only for the winner's session.
	waitFor(t, "resync and its report", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		_, ok := fstore.Get("kept")
		return ok && len(f.dropped) > 0
	})
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.dropped) != 1 || f.dropped[0] != "isolated-call" {
		t.Errorf("dropped %v, want [isolated-call]", f.dropped)
	}
}

func TestWrongKeyRejected(t *testing.T) {
	leader := startNode(t, store.New(store.Limits{}), "", [][]byte{key}, true)
	fstore := store.New(store.Limits{})
	startNode(t, fstore, leader.ln.Addr().String(), [][]byte{bytes.Repeat([]byte{4}, 32)}, false)
	write(t, leader.store, store.OpCreate, "secret", "x")
	waitFor(t, "auth failures", func() bool { return leader.repl.Stats().AuthErrors > 0 })
	if fstore.Len() != 0 {
		t.Error("a follower with the wrong key got data")
	}
}

// A polling reader still sleeps past its poll, honours the read deadline
// (the standby's dead-link detection) and reports the peer's close.
func TestPollReader(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw, _ := c.(*net.TCPConn).SyscallConn()
	r := &pollReader{raw: raw, poll: 100 * time.Microsecond}
	buf := make([]byte, 16)
	go func() {
		time.Sleep(20 * time.Millisecond) // long past the poll: the read sleeps
		peer.Write([]byte("op"))
	}()
	if n, err := r.Read(buf); err != nil || string(buf[:n]) != "op" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	if _, err := r.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("past the deadline: %v, want a timeout", err)
	}
	c.SetReadDeadline(time.Time{})
	peer.Close()
	if _, err := r.Read(buf); err != io.EOF {
		t.Fatalf("after the peer closed: %v, want EOF", err)
	}
}

// Issue 14.6: after a switchover the old active, holding exactly what the
// new active held when it took over, resumes rather than reloading every
// session; one that holds writes the new active never had takes a
// snapshot (and learns which sessions it drops).
func TestOldActiveResumesAfterRoleChange(t *testing.T) {
	for _, extra := range []bool{false, true} {
		ls, fs := store.New(store.Limits{}), store.New(store.Limits{})
		l := startNode(t, ls, "", [][]byte{key}, true)
		f := startNode(t, fs, l.ln.Addr().String(), [][]byte{key}, false)
		for i := range 10 {
			write(t, ls, store.OpCreate, fmt.Sprintf("s%d", i), "x")
		}
		waitFor(t, "sync", func() bool { return l.repl.Acked() == 10 })
		f.stop()
		if extra {
			write(t, ls, store.OpCreate, "only-on-the-old-active", "x")
		}
		l.stop()
		// The roles change: the standby leads a new stream, the old
		// active follows it.
		nl := startNode(t, fs, "", [][]byte{key}, false)
		nl.repl.SetActive(true, 2)
		startNode(t, ls, nl.ln.Addr().String(), [][]byte{key}, false)
		write(t, fs, store.OpCreate, "after", "x")
		waitFor(t, "the old active to follow", func() bool { _, ok := ls.Get("after"); return ok })
		st := nl.repl.Stats()
		if !extra && (st.Resumes != 1 || st.Snapshots != 0) {
			t.Errorf("old active with a prefix: %+v, want a resume", st)
		}
		if extra && st.Snapshots == 0 {
			t.Errorf("old active with writes of its own: %+v, want a snapshot", st)
		}
		if _, ok := ls.Get("only-on-the-old-active"); ok {
			t.Error("a write the new active never had survived")
		}
	}
}

// The active hears when its standby's connection ends by itself (the
// standby's process died, and its kernel closed the connection): the
// daemon then has its heartbeat core read what the standby's core says
// at once. Not when the active itself stops leading.
func TestActiveHearsItsStandbysConnectionEnd(t *testing.T) {
	lost := make(chan struct{}, 4)
	l := startNodeCfg(t, store.New(store.Limits{}), Config{Keys: [][]byte{key}, OnStandbyLost: func() { lost <- struct{}{} }}, true)
	standby := func() *node {
		f := startNode(t, store.New(store.Limits{}), l.ln.Addr().String(), [][]byte{key}, false)
		seq := write(t, l.store, store.OpCreate, fmt.Sprint("s", time.Now().UnixNano()), "x")
		waitFor(t, "the standby to follow", func() bool { return l.repl.Acked() == seq })
		return f
	}
	standby().stop()
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Fatal("the active did not hear its standby's connection end")
	}
	standby()
	l.stop() // waits for every connection's end
	select {
	case <-lost:
		t.Error("the active's own stop was taken for its standby's end")
	default:
	}
}

// A standby waits for a snapshot however long the active takes to copy its
// store, rather than give up after deadAfter and dial again: on a loaded
// node with 300,000 sessions every attempt timed out in the copy, and each
// new one queued behind the last on the store lock, so the standby never
// got a snapshot at all.
func TestSlowSnapshotIsWaitedFor(t *testing.T) {
	st := &slowStore{Store: store.New(store.Limits{}), gate: make(chan struct{})}
	for i := 0; i < 10; i++ {
		write(t, st.Store, store.OpCreate, fmt.Sprintf("s%d", i), "x")
	}
	leader, ln := lead(t, st)
	var errs atomic.Int32
	fstore := store.New(store.Limits{})
	startNodeCfg(t, fstore, Config{Keys: [][]byte{key}, Peer: ln.Addr().String(), OnError: func(error) { errs.Add(1) }}, false)
	// The copy takes longer than deadAfter.
	time.Sleep(deadAfter + deadAfter/2) // the store's slow copy, not a wait for an event
	close(st.gate)
	waitFor(t, "the snapshot", func() bool { _, s := fstore.Seq(); return s == 10 })
	waitFor(t, "the first acknowledgement", func() bool { return leader.Acked() == 10 })
	if st := leader.Stats(); st.Snapshots != 1 || errs.Load() != 0 {
		t.Errorf("%d snapshots and %d standby errors, want one snapshot and none", st.Snapshots, errs.Load())
	}
}

// slowStore's snapshots wait for gate: a store that takes long to copy.
type slowStore struct {
	*store.Store
	gate chan struct{}
}

func (s *slowStore) Snapshot() (epoch, seq uint64, pos int64, sessions []store.Session) {
	<-s.gate
	return s.Store.Snapshot()
}

// An active of a later version may send messages this version does not
// know, between the ops of its log: the standby skips them and applies
// every op, without a reconnect. And an active skips what a later standby
// sends beside its acknowledgements.
func TestALaterVersionsMessagesAreSkipped(t *testing.T) {
	st := &laterStore{Store: store.New(store.Limits{})}
	leader, ln := lead(t, st)
	var errs atomic.Int32
	fstore := store.New(store.Limits{})
	startNodeCfg(t, fstore, Config{Keys: [][]byte{key}, Peer: ln.Addr().String(), OnError: func(error) { errs.Add(1) }}, false)
	// Attached (an empty snapshot) before the writes, so that they go
	// through the log.
	waitFor(t, "the standby", func() bool { return leader.Stats().Snapshots == 1 })
	for i := range 10 {
		write(t, st.Store, store.OpCreate, fmt.Sprintf("s%d", i), "x")
	}
	waitFor(t, "the ops", func() bool { _, s := fstore.Seq(); return s == 10 })
	waitFor(t, "their acknowledgement", func() bool { return leader.Acked() == 10 })
	if st.injected.Load() == 0 || errs.Load() != 0 {
		t.Errorf("%d unknown messages sent, %d standby errors: want some, and none", st.injected.Load(), errs.Load())
	}

	p := &ackPump{}
	a := &acks{sig: make(chan struct{})}
	p.buf = append([]byte{0, 0, 0, 4, 200, 1, 2, 3}, wire.Append(nil, &wire.Msg{Type: wire.Ack, Seq: 7})...)
	if err := p.parse(a); err != nil || a.load() != 7 {
		t.Errorf("an acknowledgement after a message of a new type: %v, acknowledged %d, want 7", err, a.load())
	}
}

// laterStore's log puts a message of a type no version knows yet before
// every chunk it reads, as an active of a later version might.
type laterStore struct {
	*store.Store
	injected atomic.Int32
}

func (s *laterStore) ReadLog(dst []byte, pos int64, max int) ([]byte, int64, bool) {
	start := len(dst)
	out, next, ok := s.Store.ReadLog(dst, pos, max)
	if !ok || len(out) == start {
		return out, next, ok
	}
	s.injected.Add(1)
	chunk := append([]byte{0, 0, 0, 5, 200, 1, 2, 3, 4}, out[start:]...)
	return append(out[:start], chunk...), next, ok
}

func TestWaitAckedTimesOutWithoutStandby(t *testing.T) {
	st := store.New(store.Limits{})
	r := New(st, Config{})
	r.SetActive(true, 1)
	seq := write(t, st, store.OpCreate, "a", "x")
	start := time.Now()
	if r.WaitAcked(seq, 50*time.Millisecond) {
		t.Fatal("acked without a standby")
	}
	if time.Since(start) < 50*time.Millisecond {
		t.Error("returned before the timeout")
	}
}

// The protocol needs no TCP: with an injected dialer the two ends speak
// over any stream connection (here a unix socket pair, no network).
func TestReplicationOverAnInjectedConn(t *testing.T) {
	ln := &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
	leader := runNode(t, store.New(store.Limits{}), Config{Keys: [][]byte{key}}, ln, true)
	dial := func(ctx context.Context) (net.Conn, error) {
		a, b := socketPair(t)
		select {
		case ln.conns <- a:
			return b, nil
		case <-ctx.Done():
			a.Close()
			b.Close()
			return nil, ctx.Err()
		}
	}
	fstore := store.New(store.Limits{})
	runNode(t, fstore, Config{Keys: [][]byte{key}, Dial: dial}, &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}, false)
	var last uint64
	for i := range 100 {
		last = write(t, leader.store, store.OpCreate, fmt.Sprintf("s%d", i), "x")
	}
	waitFor(t, "the follower to apply", func() bool { _, s := fstore.Seq(); return s == last })
	waitFor(t, "the acknowledgement", func() bool { return leader.repl.Acked() == last })
}

// pipeListener hands out connections a test made.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *pipeListener) Addr() net.Addr { return &net.UnixAddr{Name: "pipe", Net: "unix"} }

// A sync writer polls the socket for its acknowledgement (SpinAcked) while
// the acknowledgement reader parks on it: neither loses an ack, and the
// writer's wait ends only once the standby applied the write. The pollers'
// duplicate of the socket must not leak into hooks and checks the daemon
// starts.
func TestSpinAckedSharesTheSocket(t *testing.T) {
	for _, poll := range []time.Duration{0, 100 * time.Microsecond, 5 * time.Millisecond} {
		t.Run(fmt.Sprint(poll), func(t *testing.T) {
			leader := startNode(t, store.New(store.Limits{}), "", [][]byte{key}, true)
			follower := startNodeCfg(t, store.New(store.Limits{}), Config{Keys: [][]byte{key}, Peer: leader.ln.Addr().String(), Poll: poll}, false)
			waitFor(t, "standby attached", func() bool { return leader.repl.Following() && leader.repl.pump.Load() != nil })
			info, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", leader.repl.pump.Load().dup))
			var flags int
			if err == nil {
				fmt.Sscanf(strings.SplitN(string(info), "flags:", 2)[1], "%o", &flags)
			}
			if flags&syscall.O_CLOEXEC == 0 {
				t.Errorf("duplicate socket without close-on-exec (%v): %q", err, info)
			}
			for i := 0; i < 300; i++ {
				ws := []store.Write{{Kind: store.OpCreate, ID: []byte(fmt.Sprint("call-", i)), Data: []byte("x")}}
				if !leader.store.WriteBatch(ws, time.Now()) {
					t.Fatal(ws[0].Err)
				}
				leader.repl.Push()
				seq := ws[0].Seq
				if !leader.repl.SpinAcked(seq, poll) && !leader.repl.WaitAcked(seq, 5*time.Second) {
					t.Fatalf("write %d not acknowledged", seq)
				}
				if _, applied := follower.store.Seq(); applied < seq {
					t.Fatalf("write %d acknowledged with the standby at %d", seq, applied)
				}
			}
		})
	}
}

// A standby that goes silent without closing (a cut link: no FIN, no
// RST) is taken for gone after deadAfter, so status stops saying
// "connected" and redundancy says why.
func TestLeaderNoticesASilentStandby(t *testing.T) {
	for _, network := range []string{"unix", "tcp"} {
		t.Run(network, func(t *testing.T) {
			var cut atomic.Bool
			var leader *node
			var dial func(ctx context.Context) (net.Conn, error)
			if network == "tcp" {
				// The ack pump polls a TCP socket through its raw
				// descriptor: a path of its own.
				leader = startNode(t, store.New(store.Limits{}), "", [][]byte{key}, true)
				dial = func(ctx context.Context) (net.Conn, error) {
					c, err := (&net.Dialer{}).DialContext(ctx, "tcp", leader.ln.Addr().String())
					if err != nil {
						return nil, err
					}
					return &cuttable{Conn: c, cut: &cut}, nil
				}
			} else {
				ln := &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
				leader = runNode(t, store.New(store.Limits{}), Config{Keys: [][]byte{key}}, ln, true)
				dial = func(ctx context.Context) (net.Conn, error) {
					a, b := socketPair(t)
					select {
					case ln.conns <- a:
						return &cuttable{Conn: b, cut: &cut}, nil
					case <-ctx.Done():
						a.Close()
						b.Close()
						return nil, ctx.Err()
					}
				}
			}
			runNode(t, store.New(store.Limits{}), Config{Keys: [][]byte{key}, Dial: dial}, &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}, false)
			// Set up: the standby acknowledges its (empty) snapshot at
			// once, and the active's set-up allowance is over.
			waitFor(t, "the standby's first acknowledgement", func() bool { p := leader.repl.pump.Load(); return p != nil && p.acked.Load() })
			cut.Store(true)
			start := time.Now()
			for leader.repl.Connected() {
				if time.Since(start) > 5*deadAfter {
					t.Fatalf("the leader still says connected %v after its standby went silent", time.Since(start))
				}
				time.Sleep(10 * time.Millisecond)
			}
			t.Logf("noticed after %v", time.Since(start))
		})
	}
}

// cuttable drops what the standby writes once cut: a link that died.
type cuttable struct {
	net.Conn
	cut *atomic.Bool
}

func (c *cuttable) Write(p []byte) (int, error) {
	if c.cut.Load() {
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// A standby that reconnects is attached with nothing acknowledged until
// it says what it holds: the acknowledgements of the connection it
// replaces (a standby that restarted with an empty store) must not show
// the pair in sync while its snapshot is still to come.
func TestNewStandbyStartsWithNothingAcknowledged(t *testing.T) {
	st := &gatedStore{Store: store.New(store.Limits{})}
	leader, ln := lead(t, st)
	for i := range 10 {
		write(t, st.Store, store.OpCreate, fmt.Sprint(i), "x")
	}
	first := startNode(t, store.New(store.Limits{}), ln.Addr().String(), [][]byte{key}, false)
	waitFor(t, "the first standby's acknowledgement", func() bool { return leader.Acked() == 10 })
	first.stop()
	waitFor(t, "the first standby to be gone", func() bool { return !leader.Connected() })
	st.hold()
	second := startNode(t, store.New(store.Limits{}), ln.Addr().String(), [][]byte{key}, false)
	waitFor(t, "the second standby to attach", leader.Connected)
	if a := leader.Acked(); a != 0 {
		t.Errorf("a standby that has said nothing yet counts as having applied %d writes", a)
	}
	st.release()
	waitFor(t, "the second standby's acknowledgement", func() bool { return leader.Acked() == 10 })
	second.stop()
}

// gatedStore's Resume waits while held: a store busy when a standby
// attaches.
type gatedStore struct {
	*store.Store
	mu   sync.Mutex
	gate chan struct{}
}

func (s *gatedStore) hold() {
	s.mu.Lock()
	s.gate = make(chan struct{})
	s.mu.Unlock()
}

func (s *gatedStore) release() {
	s.mu.Lock()
	close(s.gate)
	s.gate = nil
	s.mu.Unlock()
}

func (s *gatedStore) Resume(epoch, seq uint64) (int64, bool) {
	s.mu.Lock()
	g := s.gate
	s.mu.Unlock()
	if g != nil {
		<-g
	}
	return s.Store.Resume(epoch, seq)
}

// Each end hears the other's config sums and release once it connects,
// before and beside the stream, and a standby that reconnects sends them
// again.
func TestEachEndHearsThePeersSums(t *testing.T) {
	type peerConfig struct {
		sums    map[string]uint64
		release string
	}
	type heard struct {
		mu  sync.Mutex
		got []peerConfig
	}
	hear := func(h *heard) func(map[string]uint64, string) {
		return func(s map[string]uint64, r string) {
			h.mu.Lock()
			h.got = append(h.got, peerConfig{s, r})
			h.mu.Unlock()
		}
	}
	count := func(h *heard) int { h.mu.Lock(); defer h.mu.Unlock(); return len(h.got) }
	var byActive, byStandby heard
	aSums := map[string]uint64{"vip": 1, "node": 2}
	bSums := map[string]uint64{"vip": 3, "node": 2, "later": 4}
	leader := startNodeCfg(t, store.New(store.Limits{}), Config{Keys: [][]byte{key}, Sums: aSums, Release: "1.0", OnPeerConfig: hear(&byActive)}, true)
	for i := range 50 {
		write(t, leader.store, store.OpCreate, fmt.Sprintf("s-%d", i), "x") // a snapshot to send
	}
	fstore := store.New(store.Limits{})
	bCfg := Config{Keys: [][]byte{key}, Peer: leader.ln.Addr().String(), Sums: bSums, Release: "1.1", OnPeerConfig: hear(&byStandby)}
	follower := startNodeCfg(t, fstore, bCfg, false)
	waitFor(t, "both ends to hear the other's sums", func() bool { return count(&byActive) == 1 && count(&byStandby) == 1 })
	if a, b := byActive.got[0], byStandby.got[0]; !maps.Equal(a.sums, bSums) || a.release != "1.1" || !maps.Equal(b.sums, aSums) || b.release != "1.0" {
		t.Errorf("the active heard %v %q (want %v \"1.1\"), the standby %v %q (want %v \"1.0\")", a.sums, a.release, bSums, b.sums, b.release, aSums)
	}
	last := write(t, leader.store, store.OpUpdate, "s-7", "y")
	waitFor(t, "the stream after the sums", func() bool { return leader.repl.Acked() == last })
	follower.stop()
	startNodeCfg(t, fstore, bCfg, false)
	waitFor(t, "the sums again on a new connection", func() bool { return count(&byActive) == 2 && count(&byStandby) == 2 })
}

// Word that the peer is active, given while this node does not wait for it
// (it is active itself, or follows), must not wake it once the peer has
// stepped down since: an active demoted at its stop, whose peer had been
// active a moment in a switchover, dialled a peer that was not active, and
// was gone in the middle of the handshake.
func TestStaleWordOfAnActivePeerDialsNothing(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dialled := make(chan struct{}, 100)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			dialled <- struct{}{}
			c.Close()
		}
	}()
	const fallback = 3 * time.Second
	n := startNodeCfg(t, store.New(store.Limits{}), Config{Keys: [][]byte{key}, Peer: ln.Addr().String(), AwaitPeer: true, AwaitFallback: fallback}, true)
	n.repl.PeerActive(true)
	n.repl.PeerActive(false)
	n.repl.SetActive(false, 0)
	select {
	case <-dialled:
		t.Fatal("dialled a peer that is not active, on word given before it stepped down")
	case <-time.After(fallback / 3):
	}
	n.repl.PeerActive(true)
	select {
	case <-dialled:
	case <-time.After(fallback / 3):
		t.Fatal("no dial once the peer is active")
	}
}

// A standby that awaits its peer (AwaitPeer) dials only once told that the
// peer is active, or once per AwaitFallback meanwhile, and says nothing of
// a peer that closes its connections while it is not active (as a peer
// that is a standby too, or starting, does). Without it, it dialled every
// 50 ms and reported each failure: a logged replication error at each
// start of a pair, and twenty dials a second between two standbys.
func TestStandbyDialsOnlyAnActivePeer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var dials atomic.Int32
	dialled := make(chan time.Time, 100)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			dials.Add(1)
			dialled <- time.Now()
			c.Close() // unheard: this peer is not active
		}
	}()
	// A fallback long beside the waits below, so that a loaded machine
	// cannot make them meet.
	const fallback = 3 * time.Second
	var errs atomic.Int32
	n := startNodeCfg(t, store.New(store.Limits{}), Config{Keys: [][]byte{key}, Peer: ln.Addr().String(), AwaitPeer: true, AwaitFallback: fallback, OnError: func(error) { errs.Add(1) }}, false)
	var first time.Time
	select {
	case first = <-dialled:
	case <-time.After(2 * fallback):
		t.Fatal("no dial at all: the fallback did not come")
	}
	// The window between fallbacks: one dial, where 50 ms back-offs made
	// ten; none of its failures reported.
	time.Sleep(500 * time.Millisecond)
	if d, e := dials.Load(), errs.Load(); d != 1 || e != 0 {
		t.Errorf("%d dials and %d errors reported within 500ms of the first, want 1 and none", d, e)
	}
	n.repl.PeerActive(true)
	select {
	case at := <-dialled:
		// The next fallback was due over a fallback after the first.
		if at.Sub(first) >= fallback {
			t.Errorf("dialled %v after the first, told the peer is active after 500ms: the word did not wake it", at.Sub(first))
		}
	case <-time.After(2 * fallback):
		t.Fatal("no dial once the peer is active")
	}
	// An active peer that still turns it away once it has had time to
	// open its replication (activeGrace) is worth saying.
	waitFor(t, "an error reported", func() bool { return errs.Load() > 0 })
}
