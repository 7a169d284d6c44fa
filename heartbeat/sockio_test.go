package heartbeat

import (
	"context"
	"encoding/binary"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hapair/hapair/lab"
	"github.com/hapair/hapair/lab/labtest"
)

// A frame that waited in the socket while its reader did not run counts
// from when the kernel received it: a stalled core must not take the
// peer's frames for late ones (nor, at a dead interval's end, for none).
func TestReadGivesKernelReceiveTime(t *testing.T) {
	p := labtest.NewPair(t, lab.Options{})
	a, b := labPaths(t, p, "a"), labPaths(t, p, "b")
	defer closePaths(a, b)
	for i, path := range b {
		t.Run(path.Name, func(t *testing.T) {
			io := newSockIO(path.Conn, path.ifindex, EtherType)
			if io == nil {
				t.Fatal("no socket I/O for a socket")
			}
			// The kernel stamps received frames only once some socket
			// asked for it, and switches that on from a work queue:
			// the first frames after the first socket may come
			// unstamped (stamped when read). So: until one is stamped,
			// within a deadline.
			var age time.Duration
			for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
				sent := time.Now()
				if _, err := a[i].Conn.WriteTo([]byte("hapair-test-frame"), a[i].Peer); err != nil {
					t.Fatal(err)
				}
				// The reader is late: 50 ms after the frame came.
				time.Sleep(50 * time.Millisecond)
				var buf [FrameLen + 1]byte
				n, at, _, err := io.read(buf[:])
				if err != nil {
					t.Fatal(err)
				}
				if string(buf[:n]) != "hapair-test-frame" {
					t.Fatalf("read %q", buf[:n])
				}
				if at.Before(sent) {
					t.Fatalf("receive time %v before sending", sent.Sub(at))
				}
				if age = time.Since(at); age >= 40*time.Millisecond {
					return
				}
			}
			t.Errorf("frames read 50 ms after they came are %v old; want the kernel's receive time", age)
		})
	}
}

// Sending a frame on both paths, reading it and judging it allocate
// nothing: the heartbeat core runs with locked memory at real-time
// priority, where a garbage collection is a pause it cannot afford.
func TestHotPathAllocatesNothing(t *testing.T) {
	a, b := labEndpoints(t, 10*time.Millisecond, 30*time.Millisecond)
	ctx := context.Background()
	out := make([]byte, 0, FrameLen)
	alive := false
	var r rxFrame
	round := func() {
		a.sendAll(out)
		for i, path := range b.paths {
			var err error
			r.n, r.at, r.mac, err = path.io.read(r.buf[:])
			if err != nil {
				t.Fatal(err)
			}
			r.path, r.hasMAC = i, path.io.link
			b.receive(ctx, &r, &alive)
		}
	}
	// The first frames are news (path up, peer alive, a new
	// generation to persist): events that allocate nothing either, but
	// are said once.
	round()
	for len(b.events) > 0 {
		<-b.events
	}
	<-b.persist
	if allocs := testing.AllocsPerRun(200, round); allocs != 0 {
		t.Errorf("%v allocations per frame sent, read and judged; want 0", allocs)
	}
	if got := b.Stats().Received; got < 400 {
		t.Errorf("b judged %d frames authentic, want every one of over 400", got)
	}
}

// The running endpoints, not only the calls a frame goes through: readers
// hand frames to the loop over a channel, and a frame that escaped on the
// way was an allocation per frame received. In the core that went unseen
// by the test above; its heap grew by about 85 KB a second at fast, and at
// turbo's ten times the frames it would have collected every few seconds.
func TestRunningEndpointsAllocateNothing(t *testing.T) {
	// A dead interval far above the interval: a test box too busy for
	// 1 ms heartbeats must not make paths come and go here.
	a, b := labEndpoints(t, time.Millisecond, time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	for _, e := range []*Endpoint{a, b} {
		wg.Add(2)
		go func() {
			defer wg.Done()
			e.Run(ctx)
		}()
		go func() {
			defer wg.Done()
			for {
				select {
				case <-e.Events():
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	received := func() uint64 { return a.stats.recv.Load() + b.stats.recv.Load() }
	// Counted after each has heard the other: what is said once (path
	// up, peer alive, where to send) is done.
	waitFrames := func(n uint64) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); received() < n; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d frames received in 20s, want %d", received(), n)
			}
		}
	}
	waitFrames(200)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	from := received()
	waitFrames(from + 2000)
	runtime.ReadMemStats(&after)
	frames, allocs := received()-from, after.Mallocs-before.Mallocs
	t.Logf("%d allocations while the endpoints received %d frames", allocs, frames)
	if allocs*100 > frames {
		t.Errorf("%d allocations in this process while the endpoints received %d frames; want less than one per 100", allocs, frames)
	}
}

// labEndpoints makes endpoints a and b on a new lab pair's paths, which the
// test's cleanup closes.
func labEndpoints(t *testing.T, interval, dead time.Duration) (a, b *Endpoint) {
	t.Helper()
	p := labtest.NewPair(t, lab.Options{})
	pa, pb := labPaths(t, p, "a"), labPaths(t, p, "b")
	t.Cleanup(func() { closePaths(pa, pb) })
	cfg := func(node uint8, gen uint64) Config {
		return Config{Cluster: testCluster, Node: node, Keys: [][]byte{testKey}, Interval: interval, Dead: dead, Generation: gen, Refresh: time.Hour}
	}
	a, err := New(cfg(1, 11), pa...)
	if err != nil {
		t.Fatal(err)
	}
	b, err = New(cfg(2, 22), pb...)
	if err != nil {
		t.Fatal(err)
	}
	return a, b
}

func closePaths(sets ...[]Path) {
	for _, s := range sets {
		for _, p := range s {
			p.Conn.Close()
		}
	}
}

// The core's socket to its agent, read and written with raw system calls:
// whole messages each way, a full socket waited on rather than dropped, the
// end of the peer read as 0 bytes, and nothing allocated per message.
func TestRawConnCarriesMessages(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	a, err := newRawConn(os.NewFile(uintptr(fds[0]), "a"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := newRawConn(os.NewFile(uintptr(fds[1]), "b"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// Far more than the socket holds: the writer must wait for the
	// reader, not lose messages.
	const n = 20000
	done := make(chan error, 1)
	go func() {
		var m [eventLen]byte
		for i := range n {
			binary.BigEndian.PutUint32(m[:], uint32(i))
			if _, err := a.Write(m[:]); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	var buf [1024]byte
	for i := range n {
		k, err := b.Read(buf[:])
		if err != nil || k != eventLen || binary.BigEndian.Uint32(buf[:]) != uint32(i) {
			t.Fatalf("message %d: %d bytes, %v, says %d", i, k, err, binary.BigEndian.Uint32(buf[:]))
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var m [eventLen]byte
	if allocs := testing.AllocsPerRun(100, func() {
		a.Write(m[:])
		b.Read(buf[:])
	}); allocs != 0 {
		t.Errorf("a message written and read allocates %v times", allocs)
	}
	a.Close()
	if k, err := b.Read(buf[:]); k != 0 || err != nil {
		t.Errorf("after the peer closed: %d bytes, %v; want 0, nil", k, err)
	}
}
