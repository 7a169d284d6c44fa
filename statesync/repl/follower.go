package repl

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/hapair/hapair/statesync/store"
	"github.com/hapair/hapair/statesync/wire"
)

// follow dials the active and applies what it sends, until the connection
// fails or ctx ends.
func (r *Replicator) follow(ctx context.Context) error {
	c, err := r.cfg.Dial(ctx)
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
	f := &follower{r: r, c: c, kept: sc.tcp != nil, br: bufio.NewReaderSize(sc.reader(in), 64<<10), bw: bufio.NewWriterSize(sc, 4096), pend: make([]store.Op, 0, ackEvery)}
	epoch, seq := r.store.Seq()
	f.out = wire.Append(f.out[:0], &wire.Msg{Type: wire.Hello, Epoch: epoch, Seq: seq})
	if f.kept {
		// This end needs no pings (keepalive); an older active
		// ignores what is not an acknowledgement.
		f.out = wire.Append(f.out, &wire.Msg{Type: wire.Ping})
	}
	if len(r.cfg.Sums) > 0 {
		f.out = wire.Append(f.out, &wire.Msg{Type: wire.Config, Sums: r.cfg.Sums, Release: r.cfg.Release})
	}
	if err := f.flush(); err != nil {
		return err
	}
	r.connected.Store(true)
	return closedByPeer(f.run())
}

// follower is the standby's end of one replication connection: it applies
// what the active sends, in order, and acknowledges it.
type follower struct {
	r     *Replicator
	c     net.Conn
	br    *bufio.Reader
	bw    *bufio.Writer
	out   []byte // an encoded message, reused
	big   []byte // a message larger than br's buffer
	m     wire.Msg
	pend  []store.Op // ops read and not yet applied
	snap  []store.Session
	hdr   wire.Msg // the snapshot being received
	epoch uint64   // the stream the snapshot or resume began
	last  uint64
	told  uint64 // the last position OnApplied heard of
	unAck int    // ops applied since the last acknowledgement
	begun bool   // a snapshot or resume began the stream
	owed  bool   // an acknowledgement is owed even at sequence 0: a ping, or a load
	// kept: the kernel watches the link (keepAlive), so once the stream
	// has begun reads wait without a deadline; unbounded: they do now.
	kept, unbounded bool
}

func (f *follower) send(m *wire.Msg) error {
	f.out = wire.Append(f.out[:0], m)
	return f.flush()
}

// flush sends what f.out holds.
func (f *follower) flush() error {
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
		// top of the usual allowance. Once the stream has begun on a
		// link the kernel watches, a read waits as long as the
		// connection lives: an idle active sends nothing.
		b, buffered, err := wire.AwaitFrames(f.br, &f.big, 1, wire.MaxMsg, func(n int) {
			if f.begun && f.kept {
				if !f.unbounded {
					f.c.SetReadDeadline(time.Time{})
					f.unbounded = true
				}
				return
			}
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
		if (f.br.Buffered() == 0 || f.unAck >= ackEvery) && (f.last > 0 || f.owed) {
			f.unAck, f.owed = 0, false
			if err := f.send(&wire.Msg{Type: wire.Ack, Seq: f.last}); err != nil {
				return err
			}
			if f.last != f.told && f.r.cfg.OnApplied != nil {
				f.told = f.last
				f.r.cfg.OnApplied()
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
		err := wire.Decode(b[used+4:used+n], &f.m)
		if errors.Is(err, wire.ErrUnknown) {
			used += n // a later version's, which this one does without
			continue
		}
		if err != nil {
			return used, err
		}
		used += n
		if f.m.Type == wire.Op {
			f.pend = append(f.pend, store.Op{Seq: f.m.Seq, Kind: store.OpKind(f.m.Kind), ID: f.m.ID, Data: f.m.Data})
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
	if err := f.r.store.Apply(now, f.epoch, f.pend...); err != nil {
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
	switch m.Type {
	case wire.Snapshot:
		f.begun, f.epoch = true, m.Epoch
		f.hdr, f.snap = *m, make([]store.Session, 0, min(m.Count, 1<<20))
		if m.Count == 0 {
			f.r.loadSnapshot(f.hdr, f.snap, now)
			f.last, f.owed = f.hdr.Seq, true
		}
	case wire.Entry:
		f.snap = append(f.snap, store.Session{ID: string(m.ID), Data: bytes.Clone(m.Data), Version: m.Version})
		if uint64(len(f.snap)) == f.hdr.Count {
			f.r.loadSnapshot(f.hdr, f.snap, now)
			// Acknowledged at once, even an empty store's sequence 0:
			// the active allows a long silence until the first
			// acknowledgement (setupAllow), and a link cut after it
			// is noticed within deadAfter.
			f.snap, f.last, f.owed = nil, f.hdr.Seq, true
		}
	case wire.Resume:
		f.begun, f.epoch = true, m.Epoch
		f.r.store.SetFollowing(m.Epoch)
		_, f.last = f.r.store.Seq()
		f.owed = true
	case wire.Ping:
		f.owed = true
	case wire.Config:
		if f.r.cfg.OnPeerConfig != nil {
			f.r.cfg.OnPeerConfig(m.Sums, m.Release)
		}
	default:
		return fmt.Errorf("statesync: unexpected message %d from the active", m.Type)
	}
	return nil
}

func (r *Replicator) loadSnapshot(hdr wire.Msg, sessions []store.Session, now time.Time) {
	dropped := r.store.Load(hdr.Epoch, hdr.Seq, sessions, now)
	if len(dropped) > 0 && r.cfg.OnDropped != nil {
		r.cfg.OnDropped(dropped)
	}
}
