package repl

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hapair/hapair/statesync/wire"
)

// ackPump reads the standby's acknowledgements. Its goroutine (run) parks
// until they arrive, like any reader; a sync writer may instead poll the
// socket for its own acknowledgement for a short while (spin). On a machine
// whose idle CPUs halt (most virtual machines) the wake-ups of a parked
// reader and of the writer waiting for it cost more than the round trip to
// the standby itself.
type ackPump struct {
	c   *sealedConn
	raw syscall.RawConn // nil over TLS: no polling then

	mu   sync.Mutex // the buffers, the opener, and who reads the socket
	buf  []byte     // opened, not yet parsed
	rbuf [4096]byte // read from the socket, not yet opened
	dup  int        // a duplicate of the socket for pollers, -1 if none
	// acked: the standby has acknowledged once, so it has loaded what
	// the connection began with; until then it may be silent for long.
	acked atomic.Bool
	// tcp: the kernel watches this connection (keepAlive), nil if not.
	// pingless: so does the standby's, which said so with a ping; an
	// idle connection then carries nothing, and reads wait without a
	// deadline.
	tcp      *net.TCPConn
	pingless atomic.Bool
	// current says whether this pump's connection is still the attached
	// standby's: a replaced connection's late acknowledgements must not
	// count for the new standby, which may hold nothing.
	current func(*ackPump) bool
	// onConfig hears the standby's config message (Config.OnPeerConfig).
	onConfig func(sums map[string]uint64, release string)
}

// deadline is how long the standby may stay silent from now, or none
// (zero) while both kernels watch an established connection.
func (p *ackPump) deadline() time.Time {
	switch {
	case !p.acked.Load():
		return time.Now().Add(setupAllow)
	case p.pingless.Load():
		return time.Time{}
	}
	return time.Now().Add(deadAfter)
}

func newAckPump(c *sealedConn, br *bufio.Reader) *ackPump {
	p := &ackPump{c: c, tcp: c.tcp, buf: make([]byte, 0, 4096), dup: -1}
	pre, _ := br.Peek(br.Buffered()) // anything read past the hello
	p.buf = append(p.buf, pre...)
	p.buf = c.open.take(p.buf) // and opened, not yet read
	if tc, ok := c.Conn.(*net.TCPConn); ok {
		if raw, err := tc.SyscallConn(); err == nil {
			// Its own descriptor: closing the connection cannot hand a
			// poller a reused number. It shares the socket's non-blocking
			// mode, which nothing changes, and is closed on exec, so hooks
			// and checks do not inherit it.
			raw.Control(func(fd uintptr) {
				if d, err := unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0); err == nil {
					p.raw, p.dup = raw, d
				}
			})
		}
	}
	return p
}

// close releases the duplicate descriptor once no poller holds it.
func (p *ackPump) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dup >= 0 {
		syscall.Close(p.dup)
		p.dup = -1
	}
}

// take reads what fd holds, opens it and applies the acknowledgements in
// it. Called with mu held.
func (p *ackPump) take(fd int, acks *acks) (n int, err error) {
	if n, err = readOnce(fd, p.rbuf[:]); n <= 0 {
		return n, err
	}
	return n, p.add(p.rbuf[:n], acks)
}

// add opens bytes read from the socket and applies what they complete.
func (p *ackPump) add(b []byte, acks *acks) error {
	if err := p.c.open.feed(b); err != nil {
		return err
	}
	p.buf = p.c.open.take(p.buf)
	return p.parse(acks)
}

func (p *ackPump) parse(acks *acks) error {
	var m wire.Msg
	used := 0
	for len(p.buf)-used >= 4 {
		n := 4 + int(binary.BigEndian.Uint32(p.buf[used:]))
		if n < 5 || n-4 > wire.MaxMsg {
			return fmt.Errorf("%w: %d bytes", wire.ErrMalformed, n-4)
		}
		if len(p.buf)-used < n {
			break
		}
		err := wire.Decode(p.buf[used+4:used+n], &m)
		if errors.Is(err, wire.ErrUnknown) {
			used += n // a later version's, which this one does without
			continue
		}
		if err != nil {
			return err
		}
		switch {
		case m.Type == wire.Ack:
			if p.current == nil || p.current(p) {
				acks.set(m.Seq)
			}
			if !p.acked.Swap(true) && p.tcp != nil {
				// Set up: from now on data the standby's
				// kernel does not take fails the connection
				// within deadAfter (see setupAllow). A socket
				// that refuses keeps the acknowledgement
				// deadline.
				if boundUnacked(p.tcp) != nil {
					p.tcp = nil
					p.pingless.Store(false)
				}
			}
		case m.Type == wire.Ping && p.tcp != nil:
			p.pingless.Store(true)
		case m.Type == wire.Config && p.onConfig != nil && (p.current == nil || p.current(p)):
			// A replaced connection's are the peer's old file's.
			p.onConfig(m.Sums, m.Release)
		}
		used += n
	}
	p.buf = p.buf[:copy(p.buf, p.buf[used:])]
	return nil
}

// run reads acknowledgements until the connection fails or stays silent
// for deadAfter (setupAllow until the first; while pingless, until the
// kernel fails it).
func (p *ackPump) run(acks *acks) error {
	p.mu.Lock()
	err := p.parse(acks) // what came with the hello
	p.mu.Unlock()
	if err != nil {
		return err
	}
	if p.raw == nil {
		tmp := make([]byte, 4096)
		for {
			p.c.SetReadDeadline(p.deadline())
			n, err := p.c.Conn.Read(tmp)
			if err != nil {
				return err
			}
			p.mu.Lock()
			err = p.add(tmp[:n], acks)
			p.mu.Unlock()
			if err != nil {
				return err
			}
		}
	}
	for {
		p.c.SetReadDeadline(p.deadline())
		var n int
		var rerr error
		err := p.raw.Read(func(fd uintptr) bool {
			p.mu.Lock()
			n, rerr = p.take(int(fd), acks)
			p.mu.Unlock()
			// Nothing there (a poller may have taken it): park again.
			return !errors.Is(rerr, syscall.EAGAIN)
		})
		switch {
		case err != nil:
			return err
		case rerr != nil:
			return rerr
		case n == 0:
			return io.EOF
		}
	}
}

// spin polls the socket until seq is acknowledged or d has passed, and
// says whether it was.
func (p *ackPump) spin(acks *acks, seq uint64, d time.Duration) bool {
	if p.raw == nil {
		return acks.load() >= seq // over TLS only run reads the socket
	}
	start := time.Now()
	for acks.load() < seq {
		if time.Since(start) > d {
			return false
		}
		if p.mu.TryLock() {
			if p.dup >= 0 {
				p.take(p.dup, acks) // errors are run's to report
			}
			p.mu.Unlock()
		}
		yield()
	}
	return true
}

// pollReader reads a TCP connection, polling it for up to poll before the
// read sleeps until data comes: for a standby in sync mode, whose next
// operation usually follows within the active's round trip.
type pollReader struct {
	raw  syscall.RawConn
	poll time.Duration
}

func (r *pollReader) Read(p []byte) (int, error) {
	var n int
	var rerr error
	start := time.Now()
	err := r.raw.Read(func(fd uintptr) bool {
		for {
			n, rerr = readOnce(int(fd), p)
			switch {
			case rerr != syscall.EAGAIN:
				return true
			case time.Since(start) > r.poll:
				return false // sleep until readable
			}
			yield()
		}
	})
	switch {
	case err != nil:
		return 0, err
	case rerr != nil:
		return 0, rerr
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// readOnce reads a non-blocking socket once, past interruptions.
func readOnce(fd int, p []byte) (int, error) {
	for {
		n, err := syscall.Read(fd, p)
		if err != syscall.EINTR {
			return n, err
		}
	}
}

// yield gives the CPU away between polls, not only the goroutine's turn:
// the peer, or the reader of what is polled for, may be queued on it.
func yield() {
	syscall.Syscall(syscall.SYS_SCHED_YIELD, 0, 0, 0)
	runtime.Gosched()
}
