package statesync

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// ReplConfig sets up a Replicator.
type ReplConfig struct {
	Keys [][]byte
	// Peer is the other node's replication address, dialled while this
	// node is standby.
	Peer string
	// OnDropped, if set, is told which local sessions a snapshot from the
	// active is about to replace or remove (after a split brain, the
	// loser's sessions from the isolation).
	OnDropped func(ids []string)
	// OnError, if set, hears connection errors (for rate-limited logs).
	OnError func(error)
	// Poll, if set, is how long a standby polls the link for the next
	// operation before its reader sleeps (sync mode: the writer waits for
	// this standby, and the standby's wake-up is part of its wait). Not
	// over TLS.
	Poll time.Duration
	// TLSServer and TLSClient, when set, wrap the replication link in TLS
	// (mutual: each side presents a certificate the other verifies). The
	// key-based challenge-response still runs inside it.
	TLSServer, TLSClient *tls.Config
}

// Replicator streams the store to the standby while this node is active,
// and follows the active while it is standby.
type Replicator struct {
	cfg   ReplConfig
	store *Store

	mu       sync.Mutex
	active   bool
	roleCtx  context.Context
	roleStop context.CancelFunc
	changed  chan struct{}
	current  context.CancelFunc // the attached standby's connection

	sending    atomic.Pointer[sender]  // the attached standby's, while active
	pump       atomic.Pointer[ackPump] // likewise
	loaded     atomic.Uint64           // the standby streams once it acknowledged this: its snapshot or resume point
	connected  atomic.Bool             // following the active
	leading    atomic.Int32            // standby connections being served
	snapshots  atomic.Uint64
	resumes    atomic.Uint64
	authErrors atomic.Uint64
	rejected   atomic.Uint64 // records that failed to open: tampering
	refused    atomic.Uint64 // connections not from the peer, or too many unproven
	unproven   chan struct{} // a slot per connection still authenticating
}

// NewReplicator makes a replicator for store; it starts as standby.
func NewReplicator(store *Store, cfg ReplConfig) *Replicator {
	r := &Replicator{cfg: cfg, store: store, changed: make(chan struct{}, 1), unproven: make(chan struct{}, maxUnproven)}
	r.roleCtx, r.roleStop = context.WithCancel(context.Background())
	return r
}

// SetActive switches between leading and following. A node that becomes
// active starts a new epoch (epoch; 0 when the caller has set it in the
// store already), so standbys of the old stream take a snapshot, or resume
// (Store.Resume).
func (r *Replicator) SetActive(active bool, epoch uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if active == r.active && r.roleCtx.Err() == nil {
		return
	}
	r.active = active
	r.roleStop()
	r.roleCtx, r.roleStop = context.WithCancel(context.Background())
	if active && epoch != 0 {
		r.store.SetEpoch(epoch)
	}
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func (r *Replicator) role() (context.Context, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.roleCtx, r.active
}

// Connected says whether a standby is attached (active) or this node is
// attached to the active (standby).
func (r *Replicator) Connected() bool { return r.connected.Load() || r.leading.Load() > 0 }

// Following says whether an attached standby has loaded its snapshot (or
// resumed) and now applies the stream.
func (r *Replicator) Following() bool {
	return r.leading.Load() > 0 && r.store.Acked() >= r.loaded.Load()
}

// ReplStats counts the replicator's events.
type ReplStats struct {
	Snapshots, Resumes, AuthErrors uint64
	// Rejected counts connections ended by a record that failed to
	// open: altered or injected on the way.
	Rejected uint64
	// Refused counts connections closed unheard: not from the peer's
	// address, or beyond maxUnproven authenticating at once.
	Refused uint64
}

// maxUnproven bounds the connections authenticating at once.
const maxUnproven = 4

// Stats reads the counters.
func (r *Replicator) Stats() ReplStats {
	return ReplStats{Snapshots: r.snapshots.Load(), Resumes: r.resumes.Load(), AuthErrors: r.authErrors.Load(), Rejected: r.rejected.Load(), Refused: r.refused.Load()}
}

// Run accepts standbys on ln while active and follows the peer while
// standby, until ctx ends; it closes ln and returns when all its
// goroutines have ended.
func (r *Replicator) Run(ctx context.Context, ln net.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.accept(ctx, ln, &wg)
	}()
	go func() {
		<-ctx.Done()
		ln.Close()
		r.mu.Lock()
		r.roleStop()
		r.mu.Unlock()
	}()
	for ctx.Err() == nil {
		rc, active := r.role()
		if active {
			select {
			case <-rc.Done():
			case <-ctx.Done():
			}
			continue
		}
		err := r.follow(rc)
		r.connected.Store(false)
		if err != nil && rc.Err() == nil && r.cfg.OnError != nil {
			r.cfg.OnError(err)
		}
		select { // back off before dialling again
		case <-time.After(50 * time.Millisecond):
		case <-rc.Done():
		case <-ctx.Done():
		}
	}
	return nil
}

func (r *Replicator) accept(ctx context.Context, ln net.Listener, wg *sync.WaitGroup) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		rc, active := r.role()
		if !active {
			c.Close()
			continue
		}
		// Only the peer may connect, and only a few connections may be
		// proving themselves at once: a stranger cannot hold the
		// listener busy, nor make the active spend on handshakes.
		if !r.fromPeer(c) {
			r.refused.Add(1)
			c.Close()
			continue
		}
		select {
		case r.unproven <- struct{}{}:
		default:
			r.refused.Add(1)
			c.Close()
			continue
		}
		lc, cancel := context.WithCancel(rc)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cancel()
			err := r.lead(lc, cancel, c)
			if err != nil && lc.Err() == nil && r.cfg.OnError != nil {
				r.cfg.OnError(err)
			}
		}()
	}
}

// fromPeer says whether c comes from the peer's address (any port).
func (r *Replicator) fromPeer(c net.Conn) bool {
	peer, err := netip.ParseAddrPort(r.cfg.Peer)
	if err != nil {
		return true // a name, not an address: the handshake decides
	}
	from, err := netip.ParseAddrPort(c.RemoteAddr().String())
	return err == nil && from.Addr().Unmap() == peer.Addr().Unmap()
}

func handshake(ctx context.Context, c *tls.Conn) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := c.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("statesync: tls: %w", err)
	}
	return nil
}

// ackEvery bounds how many applied ops go unacknowledged while data keeps
// arriving.
const ackEvery = 256

// closeOnDone closes c when ctx ends, unblocking its reads and writes.
func closeOnDone(ctx context.Context, c net.Conn) (stop func()) {
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
		case <-done:
		}
		c.Close()
	}()
	return func() { close(done) }
}

// takeOver makes cancel the standby connection's, ending the previous one:
// one standby at a time, and only an authenticated one replaces it.
func (r *Replicator) takeOver(cancel context.CancelFunc) {
	r.mu.Lock()
	prev := r.current
	r.current = cancel
	r.mu.Unlock()
	if prev != nil {
		prev()
	}
}

// secure readies a fresh replication connection, as the active (server)
// or the standby: TLS if configured, then the key's challenge-response
// both ways. Failures to prove identity are counted.
func (r *Replicator) secure(ctx context.Context, c net.Conn, server bool) (*sealedConn, error) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	var tc *tls.Conn
	switch {
	case server && r.cfg.TLSServer != nil:
		tc = tls.Server(c, r.cfg.TLSServer)
	case !server && r.cfg.TLSClient != nil:
		tc = tls.Client(c, r.cfg.TLSClient)
	}
	if tc != nil {
		if err := handshake(ctx, tc); err != nil {
			r.authErrors.Add(1)
			return nil, err
		}
		c = tc
	}
	send, recv, err := authenticate(c, r.cfg.Keys, server, 2*time.Second)
	if err != nil {
		if errors.Is(err, ErrAuth) {
			r.authErrors.Add(1)
		}
		return nil, err
	}
	return newSealedConn(c, send, recv, func() { r.rejected.Add(1) })
}

func (r *Replicator) lead(ctx context.Context, cancel context.CancelFunc, c net.Conn) error {
	stop := closeOnDone(ctx, c)
	defer stop()
	sc, err := r.secure(ctx, c, true)
	<-r.unproven
	if err != nil {
		return err
	}
	br := bufio.NewReaderSize(sc, 4096)
	bw := bufio.NewWriterSize(sc, 64<<10)
	var hello msg
	if _, err := readMsg(br, nil, &hello); err != nil || hello.typ != msgHello {
		return fmt.Errorf("statesync: expected hello: %v", err)
	}
	r.takeOver(cancel)
	// Counted, not flagged: the replaced connection ends after this one
	// started.
	r.leading.Add(1)
	defer r.leading.Add(-1)

	// Acks arrive on the same connection, read by their own goroutine
	// (and by sync writers polling for theirs).
	pump := newAckPump(sc, br)
	r.pump.Store(pump)
	ackErr := make(chan error, 1)
	pumped := make(chan struct{})
	go func() {
		defer close(pumped)
		ackErr <- pump.run(r.store)
	}()
	defer func() {
		r.pump.CompareAndSwap(pump, nil)
		c.Close()
		<-pumped
		pump.close()
	}()

	epoch, _ := r.store.Seq()
	pos, resumed := r.store.Resume(hello.epoch, hello.seq)
	// What this standby holds, not what a previous connection acknowledged:
	// until it says more, it has what it resumes from, or nothing.
	if resumed {
		r.store.setAcked(hello.seq)
		r.loaded.Store(hello.seq)
	} else {
		r.store.setAcked(0)
	}
	out := make([]byte, 0, sendChunk)
	if resumed {
		r.resumes.Add(1)
		out = appendMsg(out, &msg{typ: msgResume, epoch: epoch})
		if _, err := bw.Write(out); err != nil {
			return err
		}
	} else {
		var err error
		if pos, err = r.sendSnapshot(bw); err != nil {
			return err
		}
	}
	snd := &sender{bw: bw, pos: pos, out: out}
	r.sending.Store(snd)
	defer r.sending.CompareAndSwap(snd, nil)
	idle := time.NewTimer(keepalive)
	defer idle.Stop()
	for {
		snd.mu.Lock()
		_, err := snd.drain(r, true)
		snd.mu.Unlock()
		if err != nil {
			return err
		}
		idle.Reset(keepalive)
		select {
		case <-r.store.Changed():
		case <-idle.C:
			snd.mu.Lock()
			out = appendMsg(nil, &msg{typ: msgPing})
			_, err := bw.Write(out)
			snd.mu.Unlock()
			if err != nil {
				return err
			}
		case err := <-ackErr:
			return err
		case <-ctx.Done():
			return nil
		}
	}
}

// sender is the send side of the attached standby's connection. The
// leader's goroutine drains the log into it; a sync writer may do so itself
// (Push) and save the hand-off, which is most of a sync write's latency on
// top of the network's.
type sender struct {
	mu  sync.Mutex
	bw  *bufio.Writer
	pos int64
	out []byte
	err error
}

// drain sends what the log holds beyond pos and flushes; done is false
// when the standby fell behind the log and resync is false (a writer's
// goroutine leaves the snapshot to the leader's). Called with mu held.
func (s *sender) drain(r *Replicator, resync bool) (done bool, err error) {
	for s.err == nil {
		// The log holds the ops encoded as they go on the wire.
		var ok bool
		s.out, s.pos, ok = r.store.ReadLog(s.out[:0], s.pos, sendChunk)
		switch {
		case !ok && !resync:
			return false, nil
		case !ok:
			// The standby fell behind the log: resync it rather than
			// keep an unbounded backlog.
			s.pos, s.err = r.sendSnapshot(s.bw)
		case len(s.out) > 0:
			_, s.err = s.bw.Write(s.out)
		case s.bw.Buffered() > 0:
			s.err = s.bw.Flush()
		default:
			return true, nil
		}
	}
	return false, s.err
}

// Push sends what was just written to the attached standby from the
// caller's goroutine, if no one else is sending; otherwise, or without a
// standby, it wakes the leader's goroutine.
func (r *Replicator) Push() {
	if s := r.sending.Load(); s != nil && s.mu.TryLock() {
		done, _ := s.drain(r, false)
		s.mu.Unlock()
		if done {
			return
		}
	}
	r.store.signal()
}

// sendChunk is how much of the log a leader copies out per read.
const sendChunk = 64 << 10

func (r *Replicator) sendSnapshot(bw *bufio.Writer) (pos int64, err error) {
	r.snapshots.Add(1)
	epoch, seq, pos, sessions := r.store.Snapshot()
	r.loaded.Store(seq)
	out := appendMsg(nil, &msg{typ: msgSnapshot, epoch: epoch, seq: seq, count: uint64(len(sessions))})
	if _, err := bw.Write(out); err != nil {
		return 0, err
	}
	for i := range sessions {
		out = appendMsg(out[:0], &msg{typ: msgEntry, version: sessions[i].Version, id: []byte(sessions[i].ID), data: sessions[i].Data})
		if _, err := bw.Write(out); err != nil {
			return 0, err
		}
	}
	return pos, bw.Flush()
}

func (r *Replicator) follow(ctx context.Context) error {
	d := net.Dialer{Timeout: time.Second, KeepAlive: time.Second}
	c, err := d.DialContext(ctx, "tcp", r.cfg.Peer)
	if err != nil {
		return err
	}
	stop := closeOnDone(ctx, c)
	defer stop()
	sc, err := r.secure(ctx, c, false)
	if err != nil {
		return err
	}
	var in io.Reader = sc.Conn
	if tc, ok := sc.Conn.(*net.TCPConn); ok && r.cfg.Poll > 0 {
		if raw, err := tc.SyscallConn(); err == nil {
			in = &pollReader{raw: raw, poll: r.cfg.Poll}
		}
	}
	f := &follower{r: r, c: c, br: bufio.NewReaderSize(sc.reader(in), 64<<10), bw: bufio.NewWriterSize(sc, 4096), pend: make([]Op, 0, ackEvery)}
	epoch, seq := r.store.Seq()
	if err := f.send(&msg{typ: msgHello, epoch: epoch, seq: seq}); err != nil {
		return err
	}
	r.connected.Store(true)
	return f.run()
}

// follower is the standby's end of one replication connection: it applies
// what the active sends, in order, and acknowledges it.
type follower struct {
	r      *Replicator
	c      net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	out    []byte // an encoded message, reused
	big    []byte // a message larger than br's buffer
	m      msg
	pend   []Op // ops read and not yet applied
	snap   []Session
	hdr    msg // the snapshot being received
	last   uint64
	unAck  int  // ops applied since the last acknowledgement
	begun  bool // a snapshot or resume began the stream
	pinged bool
}

func (f *follower) send(m *msg) error {
	f.out = appendMsg(f.out[:0], m)
	if _, err := f.bw.Write(f.out); err != nil {
		return err
	}
	return f.bw.Flush()
}

func (f *follower) run() error {
	for {
		// The read deadline is set only before a read that may block:
		// setting it costs a clock read, and a buffered message needs
		// none. A message larger than the buffer gets at least 1 MB/s on
		// top of the usual allowance.
		b, buffered, err := awaitFrames(f.br, &f.big, 1, maxMsg, func(n int) {
			allow := deadAfter
			if !f.begun {
				allow = setupAllow // the active may be copying its store
			}
			if n > f.br.Size() {
				allow += time.Duration(n) * time.Microsecond
			}
			f.c.SetReadDeadline(time.Now().Add(allow))
		})
		if err != nil {
			return err
		}
		used, err := f.handle(b, time.Now())
		if err != nil {
			return err
		}
		if buffered {
			f.br.Discard(used)
		}
		// Acknowledge cumulatively once what arrived together is applied
		// (one ack per batch, not per op), and at least every ackEvery ops
		// while the stream runs flat out, so the active's view of the
		// standby, and sync writers, never wait on a burst.
		if (f.br.Buffered() == 0 || f.unAck >= ackEvery) && (f.last > 0 || f.pinged) {
			f.unAck, f.pinged = 0, false
			if err := f.send(&msg{typ: msgAck, seq: f.last}); err != nil {
				return err
			}
		}
	}
}

// handle applies every whole message in b, runs of ops under one lock,
// straight from the read buffer, and returns how much of b it used.
func (f *follower) handle(b []byte, now time.Time) (used int, err error) {
	for len(b)-used >= 4 && len(f.pend) < cap(f.pend) {
		n := 4 + int(binary.BigEndian.Uint32(b[used:]))
		if len(b)-used < n {
			break
		}
		if err := decodeMsg(b[used+4:used+n], &f.m); err != nil {
			return used, err
		}
		used += n
		if f.m.typ == msgOp {
			f.pend = append(f.pend, Op{Seq: f.m.seq, Kind: f.m.kind, ID: f.m.id, Data: f.m.data})
			continue
		}
		// Anything else is ordered after the ops before it.
		if err := f.apply(now); err != nil {
			return used, err
		}
		if err := f.control(now); err != nil {
			return used, err
		}
	}
	return used, f.apply(now)
}

// apply applies the pending ops.
func (f *follower) apply(now time.Time) error {
	if len(f.pend) == 0 {
		return nil
	}
	if err := f.r.store.Apply(now, f.pend...); err != nil {
		return err
	}
	f.last = f.pend[len(f.pend)-1].Seq
	f.unAck += len(f.pend)
	f.pend = f.pend[:0]
	return nil
}

// control handles a message other than an op.
func (f *follower) control(now time.Time) error {
	m := &f.m
	switch m.typ {
	case msgSnapshot:
		f.begun = true
		f.hdr, f.snap = *m, make([]Session, 0, min(m.count, 1<<20))
		if m.count == 0 {
			f.r.loadSnapshot(f.hdr, f.snap, now)
			f.last = f.hdr.seq
		}
	case msgEntry:
		f.snap = append(f.snap, Session{ID: string(m.id), Data: bytes.Clone(m.data), Version: m.version})
		if uint64(len(f.snap)) == f.hdr.count {
			f.r.loadSnapshot(f.hdr, f.snap, now)
			f.snap, f.last = nil, f.hdr.seq
		}
	case msgResume:
		f.begun = true
		f.r.store.SetFollowing(m.epoch)
		_, f.last = f.r.store.Seq()
	case msgPing:
		f.pinged = true
	default:
		return fmt.Errorf("statesync: unexpected message %d from the active", m.typ)
	}
	return nil
}

func (r *Replicator) loadSnapshot(hdr msg, sessions []Session, now time.Time) {
	dropped := r.store.Load(hdr.epoch, hdr.seq, sessions, now)
	if len(dropped) > 0 && r.cfg.OnDropped != nil {
		r.cfg.OnDropped(dropped)
	}
}
