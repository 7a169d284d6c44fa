package statesync

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
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

	connected  atomic.Bool  // following the active
	leading    atomic.Int32 // standby connections being served
	snapshots  atomic.Uint64
	resumes    atomic.Uint64
	authErrors atomic.Uint64
}

// NewReplicator makes a replicator for store; it starts as standby.
func NewReplicator(store *Store, cfg ReplConfig) *Replicator {
	r := &Replicator{cfg: cfg, store: store, changed: make(chan struct{}, 1)}
	r.roleCtx, r.roleStop = context.WithCancel(context.Background())
	return r
}

// SetActive switches between leading and following. A node that becomes
// active starts a new epoch, so standbys of the old stream take a snapshot.
func (r *Replicator) SetActive(active bool, epoch uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if active == r.active && r.roleCtx.Err() == nil {
		return
	}
	r.active = active
	r.roleStop()
	r.roleCtx, r.roleStop = context.WithCancel(context.Background())
	if active {
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

// ReplStats counts the replicator's events.
type ReplStats struct {
	Snapshots, Resumes, AuthErrors uint64
}

// Stats reads the counters.
func (r *Replicator) Stats() ReplStats {
	return ReplStats{Snapshots: r.snapshots.Load(), Resumes: r.resumes.Load(), AuthErrors: r.authErrors.Load()}
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

func (r *Replicator) lead(ctx context.Context, cancel context.CancelFunc, c net.Conn) error {
	stop := closeOnDone(ctx, c)
	defer stop()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	if r.cfg.TLSServer != nil {
		tc := tls.Server(c, r.cfg.TLSServer)
		if err := handshake(ctx, tc); err != nil {
			r.authErrors.Add(1)
			return err
		}
		c = tc
	}
	if err := authenticate(c, r.cfg.Keys, true, 2*time.Second); err != nil {
		if errors.Is(err, ErrAuth) {
			r.authErrors.Add(1)
		}
		return err
	}
	br := bufio.NewReaderSize(c, 4096)
	bw := bufio.NewWriterSize(c, 64<<10)
	var hello msg
	if _, err := readMsg(br, nil, &hello); err != nil || hello.typ != msgHello {
		return fmt.Errorf("statesync: expected hello: %v", err)
	}
	r.takeOver(cancel)
	// Counted, not flagged: the replaced connection ends after this one
	// started.
	r.leading.Add(1)
	defer r.leading.Add(-1)

	// Acks arrive on the same connection, read by their own goroutine.
	ackErr := make(chan error, 1)
	go func() {
		var m msg
		var buf []byte
		for {
			var err error
			c.SetReadDeadline(time.Now().Add(deadAfter))
			if buf, err = readMsg(br, buf, &m); err != nil {
				ackErr <- err
				return
			}
			if m.typ == msgAck {
				r.store.setAcked(m.seq)
			}
		}
	}()

	epoch, seq := r.store.Seq()
	next := hello.seq
	var out []byte
	if _, ok := r.store.OpsAfter(nil, hello.seq, 0); ok && hello.epoch == epoch && hello.seq <= seq {
		r.resumes.Add(1)
		out = appendMsg(out[:0], &msg{typ: msgResume, epoch: epoch})
	} else {
		var err error
		if out, next, err = r.sendSnapshot(bw, out); err != nil {
			return err
		}
	}
	batch := make([]Op, 0, 1024)
	idle := time.NewTimer(keepalive)
	defer idle.Stop()
	for {
		var ok bool
		batch, ok = r.store.OpsAfter(batch[:0], next, cap(batch))
		if !ok {
			// The standby fell behind the log: resync it rather than
			// keep an unbounded backlog.
			var err error
			if out, next, err = r.sendSnapshot(bw, out); err != nil {
				return err
			}
			continue
		}
		for i := range batch {
			op := &batch[i]
			out = appendMsg(out[:0], &msg{typ: msgOp, seq: op.Seq, kind: op.Kind, id: op.ID, data: op.Data})
			if _, err := bw.Write(out); err != nil {
				return err
			}
			next = op.Seq
		}
		if len(batch) > 0 {
			continue
		}
		if bw.Buffered() > 0 {
			if err := bw.Flush(); err != nil {
				return err
			}
		}
		idle.Reset(keepalive)
		select {
		case <-r.store.Changed():
		case <-idle.C:
			out = appendMsg(out[:0], &msg{typ: msgPing})
			if _, err := bw.Write(out); err != nil {
				return err
			}
		case err := <-ackErr:
			return err
		case <-ctx.Done():
			return nil
		}
	}
}

func (r *Replicator) sendSnapshot(bw *bufio.Writer, out []byte) ([]byte, uint64, error) {
	r.snapshots.Add(1)
	epoch, seq, sessions := r.store.Snapshot()
	out = appendMsg(out[:0], &msg{typ: msgSnapshot, epoch: epoch, seq: seq, count: uint64(len(sessions))})
	if _, err := bw.Write(out); err != nil {
		return out, 0, err
	}
	for i := range sessions {
		out = appendMsg(out[:0], &msg{typ: msgEntry, version: sessions[i].Version, id: sessions[i].ID, data: sessions[i].Data})
		if _, err := bw.Write(out); err != nil {
			return out, 0, err
		}
	}
	return out, seq, bw.Flush()
}

func (r *Replicator) follow(ctx context.Context) error {
	d := net.Dialer{Timeout: time.Second, KeepAlive: time.Second}
	c, err := d.DialContext(ctx, "tcp", r.cfg.Peer)
	if err != nil {
		return err
	}
	stop := closeOnDone(ctx, c)
	defer stop()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	if r.cfg.TLSClient != nil {
		tc := tls.Client(c, r.cfg.TLSClient)
		if err := handshake(ctx, tc); err != nil {
			r.authErrors.Add(1)
			return err
		}
		c = tc
	}
	if err := authenticate(c, r.cfg.Keys, false, 2*time.Second); err != nil {
		if errors.Is(err, ErrAuth) {
			r.authErrors.Add(1)
		}
		return err
	}
	br := bufio.NewReaderSize(c, 64<<10)
	bw := bufio.NewWriterSize(c, 4096)
	epoch, seq := r.store.Seq()
	out := appendMsg(nil, &msg{typ: msgHello, epoch: epoch, seq: seq})
	if _, err := bw.Write(out); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	r.connected.Store(true)
	var m msg
	var buf []byte
	var snap []Session
	var snapHdr msg
	var last uint64
	sinceAck := 0
	pend := make([]Op, 0, ackEvery)
	for {
		c.SetReadDeadline(time.Now().Add(deadAfter))
		if buf, err = readMsg(br, buf, &m); err != nil {
			return err
		}
		now := time.Now()
		ping := false
		if m.typ != msgOp && len(pend) > 0 {
			// Anything else is ordered after the ops held for a batch.
			if err := r.store.Apply(now, pend...); err != nil {
				return err
			}
			last = pend[len(pend)-1].Seq
			sinceAck += len(pend)
			pend = pend[:0]
		}
		switch m.typ {
		case msgSnapshot:
			snapHdr, snap = m, make([]Session, 0, min(m.count, 1<<20))
			if m.count == 0 {
				r.loadSnapshot(snapHdr, snap, now)
				last = snapHdr.seq
			}
		case msgEntry:
			snap = append(snap, Session{ID: m.id, Data: append([]byte(nil), m.data...), Version: m.version})
			if uint64(len(snap)) == snapHdr.count {
				r.loadSnapshot(snapHdr, snap, now)
				snap, last = nil, snapHdr.seq
			}
		case msgResume:
			r.store.SetFollowing(m.epoch)
			_, last = r.store.Seq()
		case msgPing:
			ping = true
		case msgOp:
			op := Op{Seq: m.seq, Kind: m.kind, ID: m.id}
			if m.kind != OpDelete {
				op.Data = append([]byte(nil), m.data...)
			}
			// Ops that arrived together are applied under one lock.
			pend = append(pend, op)
			if br.Buffered() > 0 && len(pend) < cap(pend) {
				continue
			}
			if err := r.store.Apply(now, pend...); err != nil {
				return err
			}
			last = m.seq
			sinceAck += len(pend)
			pend = pend[:0]
		default:
			return fmt.Errorf("statesync: unexpected message %d from the active", m.typ)
		}
		// Acknowledge cumulatively once the burst that arrived together
		// is applied (one ack per batch, not per op), and at least every
		// ackEvery ops while the stream runs flat out, so the active's
		// view of the standby, and sync writers, never wait on a burst.
		if (br.Buffered() == 0 || sinceAck >= ackEvery) && (last > 0 || ping) {
			sinceAck = 0
			out = appendMsg(out[:0], &msg{typ: msgAck, seq: last})
			if _, err := bw.Write(out); err != nil {
				return err
			}
			if err := bw.Flush(); err != nil {
				return err
			}
		}
	}
}

func (r *Replicator) loadSnapshot(hdr msg, sessions []Session, now time.Time) {
	dropped := r.store.Load(hdr.epoch, hdr.seq, sessions, now)
	if len(dropped) > 0 && r.cfg.OnDropped != nil {
		r.cfg.OnDropped(dropped)
	}
}
