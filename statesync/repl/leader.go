package repl

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hapair/hapair/statesync/wire"
)

// lead serves one standby connection on the active, until it fails, a
// newer authenticated connection replaces it, or ctx ends.
func (r *Replicator) lead(ctx context.Context, cancel context.CancelFunc, c net.Conn) error {
	stop := closeOnDone(ctx, c)
	defer stop()
	sc, err := r.secure(ctx, c, true)
	<-r.unproven
	if err != nil {
		return err
	}
	br := bufio.NewReaderSize(sc, 4096)
	var hello wire.Msg
	if _, err := wire.Read(br, nil, &hello); err != nil || hello.Type != wire.Hello {
		return fmt.Errorf("statesync: expected hello: %v", err)
	}
	r.takeOver(cancel)
	l := &leader{r: r, bw: bufio.NewWriterSize(sc, 64<<10), ackErr: make(chan error, 1)}
	pump := newAckPump(sc, br)
	pump.onConfig = r.cfg.OnPeerConfig
	l.pump = pump
	pump.current = func(p *ackPump) bool { return r.pump.Load() == p }
	defer l.pumpAcks(c, pump)()
	// What this standby holds is unknown until begin: status must not
	// show the replaced standby's acknowledgements for it (a restarted
	// standby holds nothing), so they are dropped before it counts as
	// attached. Counted, not flagged: the replaced connection ends after
	// this one started.
	r.acks.set(0)
	r.attached.Add(1) // after the reset: a reader of the count sees it
	r.leading.Add(1)
	defer r.leading.Add(-1)
	// A connection that ends by itself (not replaced by the standby's
	// next one, not ended by this node's change of role) may be a
	// standby that died: its heartbeat core says so next.
	defer func() {
		if ctx.Err() == nil && r.cfg.OnStandbyLost != nil {
			r.cfg.OnStandbyLost()
		}
	}()
	snd, err := l.begin(hello)
	if err != nil {
		return closedByPeer(err)
	}
	r.sending.Store(snd)
	defer r.sending.CompareAndSwap(snd, nil)
	return closedByPeer(l.stream(ctx, snd))
}

// leader is the active's end of one replication connection: it brings the
// standby up to date (a resume from the log, or a snapshot), then streams
// the log as it grows.
type leader struct {
	r      *Replicator
	bw     *bufio.Writer
	ackErr chan error // the acknowledgement reader's end
	pump   *ackPump
}

// pumpAcks reads the standby's acknowledgements on their own goroutine
// (sync writers may poll for theirs, transport.go); the returned func
// closes c and waits for that goroutine.
func (l *leader) pumpAcks(c net.Conn, pump *ackPump) (stop func()) {
	l.r.pump.Store(pump)
	pumped := make(chan struct{})
	go func() {
		defer close(pumped)
		l.ackErr <- pump.run(&l.r.acks)
	}()
	return func() {
		l.r.pump.CompareAndSwap(pump, nil)
		c.Close()
		<-pumped
		pump.close()
	}
}

// begin resumes the standby from what it holds, or sends a snapshot, and
// returns the sender positioned after it.
func (l *leader) begin(hello wire.Msg) (*sender, error) {
	r := l.r
	epoch, _ := r.store.Seq()
	pos, resumed := r.store.Resume(hello.Epoch, hello.Seq)
	out := make([]byte, 0, sendChunk)
	if len(r.cfg.Sums) > 0 {
		// First, so the standby compares files even while a large
		// snapshot is on its way.
		if _, err := l.bw.Write(wire.Append(out, &wire.Msg{Type: wire.Config, Sums: r.cfg.Sums, Release: r.cfg.Release})); err != nil {
			return nil, err
		}
	}
	// What this standby holds, not what a previous connection acknowledged:
	// until it says more, it has what it resumes from, or nothing.
	if !resumed {
		r.acks.set(0)
		var err error
		if pos, err = r.sendSnapshot(l.bw); err != nil {
			return nil, err
		}
		return &sender{bw: l.bw, pos: pos, out: out}, nil
	}
	r.acks.set(hello.Seq)
	r.loaded.Store(hello.Seq)
	r.resumes.Add(1)
	out = wire.Append(out, &wire.Msg{Type: wire.Resume, Epoch: epoch})
	if _, err := l.bw.Write(out); err != nil {
		return nil, err
	}
	return &sender{bw: l.bw, pos: pos, out: out}, nil
}

// stream sends the log as it grows, and a ping when there is nothing to
// send for keepalive unless the standby needs none, until the connection
// fails or ctx ends.
func (l *leader) stream(ctx context.Context, snd *sender) error {
	idle := time.NewTimer(keepalive)
	defer idle.Stop()
	for {
		snd.mu.Lock()
		_, err := snd.drain(l.r, true)
		snd.mu.Unlock()
		if err != nil {
			return err
		}
		// The standby's ping comes with its hello, so it is
		// usually read before the first wait.
		var ping <-chan time.Time
		if l.pump.pingless.Load() {
			idle.Stop()
		} else {
			idle.Reset(keepalive)
			ping = idle.C
		}
		select {
		case <-l.r.store.Changed():
		case <-ping:
			if l.pump.pingless.Load() {
				continue
			}
			if err := snd.ping(); err != nil {
				return err
			}
			l.r.pings.Add(1)
		case err := <-l.ackErr:
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

// ping tells an idle standby the active is there; it answers with an ack.
func (s *sender) ping() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.out = wire.Append(s.out[:0], &wire.Msg{Type: wire.Ping})
	_, err := s.bw.Write(s.out)
	return err
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
	r.store.Wake()
}

// sendChunk is how much of the log a leader copies out per read.
const sendChunk = 64 << 10

func (r *Replicator) sendSnapshot(bw *bufio.Writer) (pos int64, err error) {
	r.snapshots.Add(1)
	epoch, seq, pos, sessions := r.store.Snapshot()
	r.loaded.Store(seq)
	out := wire.Append(nil, &wire.Msg{Type: wire.Snapshot, Epoch: epoch, Seq: seq, Count: uint64(len(sessions))})
	if _, err := bw.Write(out); err != nil {
		return 0, err
	}
	for i := range sessions {
		out = wire.Append(out[:0], &wire.Msg{Type: wire.Entry, Version: sessions[i].Version, ID: []byte(sessions[i].ID), Data: sessions[i].Data})
		if _, err := bw.Write(out); err != nil {
			return 0, err
		}
	}
	return pos, bw.Flush()
}
