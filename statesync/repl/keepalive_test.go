package repl

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hapair/hapair/statesync/store"
)

// idlePair runs an active and a standby on loopback, the standby dialling
// through wrap, and waits until the standby has loaded its (empty)
// snapshot: the connection's set-up is over. It returns the active, the
// standby's TCP connection, and how many times the standby dialled.
func idlePair(t *testing.T, wrap func(net.Conn) net.Conn) (leader *node, standby *net.TCPConn, dials *atomic.Int32) {
	t.Helper()
	leader = startNode(t, store.New(store.Limits{}), "", [][]byte{key}, true)
	dials = new(atomic.Int32)
	var conn atomic.Pointer[net.TCPConn]
	dial := func(ctx context.Context) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", leader.ln.Addr().String())
		if err != nil {
			return nil, err
		}
		dials.Add(1)
		conn.Store(c.(*net.TCPConn))
		return wrap(c), nil
	}
	runNode(t, store.New(store.Limits{}), Config{Keys: [][]byte{key}, Dial: dial}, &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}, false)
	waitFor(t, "the standby's first acknowledgement", func() bool { p := leader.repl.pump.Load(); return p != nil && p.acked.Load() })
	return leader, conn.Load(), dials
}

// sockopt reads an integer socket option of c.
func sockopt(t *testing.T, c *net.TCPConn, level, opt int) int {
	t.Helper()
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	raw.Control(func(fd uintptr) { v, err = unix.GetsockoptInt(int(fd), level, opt) })
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// An idle connection whose two kernels keep it alive carries nothing: no
// ping wakes either daemon, and its silence does not break it (the
// kernels' probes answer for it). The kernels bound a dead link as the
// pings did: probes after keepalive, a failure after deadAfter.
func TestIdleConnectionCarriesNoPings(t *testing.T) {
	t.Parallel() // each waits out a silence of its own
	leader, standby, dials := idlePair(t, func(c net.Conn) net.Conn { return c })
	p := leader.repl.pump.Load()
	if !p.pingless.Load() {
		t.Fatal("the active did not hear that the standby's kernel keeps the connection")
	}
	ms := int(deadAfter / time.Millisecond)
	for _, c := range []struct {
		end string
		c   *net.TCPConn
	}{{"active", p.tcp}, {"standby", standby}} {
		got := []int{
			sockopt(t, c.c, unix.SOL_SOCKET, unix.SO_KEEPALIVE),
			sockopt(t, c.c, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE),
			sockopt(t, c.c, unix.IPPROTO_TCP, unix.TCP_KEEPINTVL),
			sockopt(t, c.c, unix.IPPROTO_TCP, unix.TCP_KEEPCNT),
			sockopt(t, c.c, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT),
		}
		want := []int{1, int(keepalive / time.Second), int(keepalive / time.Second), int(deadAfter / keepalive), ms}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("%s: keepalive, idle s, interval s, count, user timeout ms = %v; want %v", c.end, got, want)
				break
			}
		}
	}
	// What is tested is a silence, so it takes time: longer than the
	// standby's and the active's deadAfter, and than a ping's period.
	time.Sleep(deadAfter + keepalive)
	if n := leader.repl.Stats().Pings; n != 0 {
		t.Errorf("%d pings on an idle connection both kernels keep", n)
	}
	if n := dials.Load(); n != 1 || !leader.repl.Connected() {
		t.Fatalf("the idle connection broke: %d dials, connected %v", n, leader.repl.Connected())
	}
	// And it still carries the stream.
	seq := write(t, leader.store, store.OpCreate, "after-silence", "v")
	if !leader.repl.WaitAcked(seq, 5*time.Second) {
		t.Fatal("a write after the silence was not acknowledged")
	}
}

// opaque hides the TCP connection under it, as a standby of an older
// release, which times its own reads, would look to the active.
type opaque struct{ net.Conn }

// A standby whose kernel does not keep the connection for it (an older
// release, which also times its reads) is pinged while idle, and its
// connection outlives deadAfter of idleness.
func TestStandbyThatTimesItsReadsIsPinged(t *testing.T) {
	t.Parallel() // each waits out a silence of its own
	leader, _, dials := idlePair(t, func(c net.Conn) net.Conn { return opaque{c} })
	if leader.repl.pump.Load().pingless.Load() {
		t.Fatal("the active heard that a standby without the kernel's keepalive needs no pings")
	}
	time.Sleep(deadAfter + keepalive) // a silence, as above
	if n := leader.repl.Stats().Pings; n < uint64(deadAfter/keepalive)-1 {
		t.Errorf("%d pings in %v of idleness; want one every %v", n, deadAfter+keepalive, keepalive)
	}
	if n := dials.Load(); n != 1 || !leader.repl.Connected() {
		t.Fatalf("the idle connection broke: %d dials, connected %v", n, leader.repl.Connected())
	}
}

// Over TLS the kernel keeps the TCP connection under it alike, and the
// standby's ping travels inside TLS: an idle connection carries nothing
// there either.
func TestIdleTLSConnectionCarriesNoPings(t *testing.T) {
	t.Parallel() // each waits out a silence of its own
	dir := t.TempDir()
	makePKI(t, dir, "pair-ca", "a", "b")
	leader := tlsNode(t, dir, "a", "b", "", true)
	tlsNode(t, dir, "b", "a", leader.ln.Addr().String(), false)
	waitFor(t, "the standby's first acknowledgement", func() bool { p := leader.repl.pump.Load(); return p != nil && p.acked.Load() })
	if !leader.repl.pump.Load().pingless.Load() {
		t.Fatal("the active did not hear, over TLS, that the standby's kernel keeps the connection")
	}
	before := leader.repl.Stats()
	time.Sleep(deadAfter + keepalive) // a silence, as above
	after := leader.repl.Stats()
	if after.Pings != 0 {
		t.Errorf("%d pings on an idle TLS connection both kernels keep", after.Pings)
	}
	if after.Resumes != before.Resumes || after.Snapshots != before.Snapshots || !leader.repl.Connected() {
		t.Fatalf("the idle TLS connection broke: resumes %d->%d, snapshots %d->%d, connected %v", before.Resumes, after.Resumes, before.Snapshots, after.Snapshots, leader.repl.Connected())
	}
}
