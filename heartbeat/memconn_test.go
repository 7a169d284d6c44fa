package heartbeat

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// memLink is an in-memory link between two PacketConns, as wireguard-go's
// tests pair their devices over channels: the endpoint's tests run on it
// without root, and the same bodies run over real veths. A link that is
// down loses what is written to it, as a cut cable does.
type memLink struct {
	down atomic.Bool
	mu   sync.Mutex // guards a and b, made anew by end
	a, b *memConn
}

type memAddr string

func (a memAddr) Network() string { return "mem" }
func (a memAddr) String() string  { return string(a) }

type memConn struct {
	link *memLink
	// deaf loses what the peer writes to this end only: a one-way link.
	deaf atomic.Bool
	// loseEvery, when n > 0, loses every nth frame the peer writes to
	// this end; lost counts what was written to it and lost, for any
	// reason.
	loseEvery, written, lost atomic.Int64
	// delay, when set, is how long a frame the peer writes takes to
	// come to this end (ns): a long link.
	delay  atomic.Int64
	local  memAddr
	in     chan []byte
	closed chan struct{}
	once   sync.Once
}

// newMemLink makes a link with a conn for each end.
func newMemLink(name string) *memLink {
	l := &memLink{}
	l.a = &memConn{link: l, local: memAddr(name + "-a"), in: make(chan []byte, 64), closed: make(chan struct{})}
	l.b = &memConn{link: l, local: memAddr(name + "-b"), in: make(chan []byte, 64), closed: make(chan struct{})}
	return l
}

func (c *memConn) peer() *memConn {
	c.link.mu.Lock()
	defer c.link.mu.Unlock()
	if c == c.link.a {
		return c.link.b
	}
	return c.link.a
}

// end is the link's end for node "b" (isB) or "a": a new one in place of
// one that was closed, as a restarted node opens its sockets anew.
func (l *memLink) end(isB bool) *memConn {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := &l.a
	if isB {
		c = &l.b
	}
	select {
	case <-(*c).closed:
		*c = &memConn{link: l, local: (*c).local, in: make(chan []byte, 64), closed: make(chan struct{})}
	default:
	}
	return *c
}

func (c *memConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case p := <-c.in:
		return copy(b, p), c.peer().local, nil
	case <-c.closed:
		return 0, nil, net.ErrClosed
	}
}

func (c *memConn) WriteTo(b []byte, _ net.Addr) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	p := c.peer()
	n := p.written.Add(1)
	if k := p.loseEvery.Load(); c.link.down.Load() || p.deaf.Load() || k > 0 && n%k == 0 {
		p.lost.Add(1)
		return len(b), nil
	}
	deliver := func(b []byte) {
		select {
		case p.in <- b:
		default: // a full queue drops, as a socket's does
			p.lost.Add(1)
		}
	}
	if d := time.Duration(p.delay.Load()); d > 0 {
		b := append([]byte(nil), b...)
		time.AfterFunc(d, func() { deliver(b) })
		return len(b), nil
	}
	deliver(append([]byte(nil), b...))
	return len(b), nil
}

func (c *memConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *memConn) LocalAddr() net.Addr { return c.local }

// Deadlines are not used by the endpoint, which ends its reads by Close.
func (c *memConn) SetDeadline(t time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(t time.Time) error { return nil }
