package node

import (
	"fmt"
	"net"
	"sync"
)

// metricsConns is how many connections the metrics listener keeps open at
// once: a scraper or two, a dashboard, an operator's curl. The listener
// may face a whole management network, and every connection it keeps
// costs the agent a descriptor, a goroutine and its buffers: unbounded, a
// flood of idle connections would grow the agent until its collector,
// then the OOM killer, made the node fail over. Replication is bounded
// the same way (repl's unproven connections).
const metricsConns = 16

// limitListener keeps at most cap(slots) of l's connections open. A
// connection beyond them is closed at once, and refused told of it:
// waiting in accept instead would queue a real scraper behind the flood.
type limitListener struct {
	net.Listener
	slots   chan struct{}
	refused func(error)
}

func limitConns(l net.Listener, n int, refused func(error)) net.Listener {
	return &limitListener{Listener: l, slots: make(chan struct{}, n), refused: refused}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
			return &slotConn{Conn: c, slots: l.slots}, nil
		default:
			l.refused(fmt.Errorf("connection from %s closed: %d open, the most the listener keeps", c.RemoteAddr(), cap(l.slots)))
			c.Close()
		}
	}
}

// slotConn gives its slot back when it is closed, once however often.
type slotConn struct {
	net.Conn
	slots chan struct{}
	once  sync.Once
}

func (c *slotConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { <-c.slots })
	return err
}

// CloseWrite passes the half-close through: net/http uses it, when the
// conn has it, to let the client read the response before the reset an
// unread request would cause.
func (c *slotConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
