package node

import (
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hapair/hapair/internal/control"
)

// metricsConns is how many connections the metrics listener keeps open at
// once: a scraper or two, a dashboard, an operator's curl. The listener
// may face a whole management network, and every connection it keeps
// costs the agent a descriptor, a goroutine and its buffers: unbounded, a
// flood of idle connections would grow the agent until its collector,
// then the OOM killer, made the node fail over. Replication is bounded
// the same way (repl's unproven connections).
const metricsConns = 16

// appConns is how many connections the application socket keeps open at
// once. Applications hold a client, a stream and an event subscription
// each, a few per process: a media server's few hundred workers fit. An
// application that opens connections and never closes them (a client made
// per request) fills it, and is then refused, with a 503 that says why,
// instead of growing the agent by a goroutine and its buffers per
// connection (a stream's are 128 KiB) until the OOM killer ends the agent
// of an active node, or of both.
const appConns = 1024

// adminConns is how many connections the operator socket keeps open:
// root's commands, one at a time. It has its own, so an application that
// fills its socket leaves root the status (which the operator socket
// serves too, and hapairctl reads there as root) and the commands.
const adminConns = 16

// limitListener keeps at most cap(slots) of l's connections open. A
// connection beyond them is closed at once, and refused told of it:
// waiting in accept instead would queue a real client behind the flood.
// Before it is closed, a refused connection is sent answer, if any (an
// HTTP response, so that the client reads why rather than a closed
// connection).
type limitListener struct {
	net.Listener
	slots   chan struct{}
	refused func(error)
	answer  []byte
	count   atomic.Uint64 // connections refused
}

// conns says how many connections l keeps open now, at most, and refused
// (nothing for a listener not opened yet).
func (l *limitListener) conns() control.Conns {
	if l == nil {
		return control.Conns{}
	}
	return control.Conns{Open: len(l.slots), Max: cap(l.slots), Refused: l.count.Load()}
}

func limitConns(l net.Listener, n int, refused func(error)) *limitListener {
	return &limitListener{Listener: l, slots: make(chan struct{}, n), refused: refused}
}

// tooMany is the answer of an HTTP listener that keeps n connections and
// has them all open.
func tooMany(n int, where string) []byte {
	body, _ := json.Marshal(control.Error{Error: fmt.Sprintf("%d connections open on %s, the most hapaird keeps: an application opens connections and does not close them", n, where)})
	body = append(body, '\n')
	return fmt.Appendf(nil, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
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
			l.count.Add(1)
			l.refused(fmt.Errorf("connection from %s closed: %d open on %s, the most the listener keeps", peer(c), cap(l.slots), l.Addr()))
			if l.answer != nil {
				// Into the socket's buffer, which a fresh connection has
				// room for: the deadline only keeps a full one from
				// holding up the accept loop.
				c.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
				c.Write(l.answer)
			}
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

// NetConn is the connection c wraps (control.ClientGone looks through it).
func (c *slotConn) NetConn() net.Conn { return c.Conn }

// CloseWrite passes the half-close through: net/http uses it, when the
// conn has it, to let the client read the response before the reset an
// unread request would cause.
func (c *slotConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// peer names who is at the other end of c: a TCP client's address, a unix
// socket client's process (its credentials, which the kernel took at
// connect), so that the log names the application that floods.
func peer(c net.Conn) string {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return c.RemoteAddr().String()
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return "a local process"
	}
	var cred *unix.Ucred
	raw.Control(func(fd uintptr) {
		cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if err != nil || cred == nil {
		return "a local process"
	}
	return fmt.Sprintf("pid %d (uid %d)", cred.Pid, cred.Uid)
}
