package heartbeat

import (
	"context"
	"encoding/binary"
	"os"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hapair/hapair/lab"
	"github.com/hapair/hapair/lab/labtest"
)

// A frame that waited in the socket while its reader did not run counts
// from when the kernel received it: a stalled core must not take the
// peer's frames for late ones (nor, at a dead interval's end, for none).
// The same holds for a frame an active node's loop polls at its send tick.
func TestReadGivesKernelReceiveTime(t *testing.T) {
	p := labtest.NewPair(t, lab.Options{})
	a, b := labPaths(t, p, "a"), labPaths(t, p, "b")
	defer closePaths(a, b)
	for i, path := range b {
		io := newSockIO(path.Conn, path.ifindex, EtherType)
		if io == nil || !io.owned() {
			t.Fatal("no socket I/O of its own for a socket")
		}
		defer io.close()
		for _, how := range []string{"read", "poll"} {
			t.Run(path.Name+"/"+how, func(t *testing.T) {
				testKernelReceiveTime(t, a[i], io, how == "poll")
			})
		}
	}
}

func testKernelReceiveTime(t *testing.T, from Path, io *sockIO, poll bool) {
	if poll {
		io.unwatch()
	} else if err := io.watch(); err != nil {
		t.Fatal(err)
	}
	// The kernel stamps received frames only once some socket
	// asked for it, and switches that on from a work queue:
	// the first frames after the first socket may come
	// unstamped (stamped when read). So: until one is stamped,
	// within a deadline.
	var age time.Duration
	// The kernel stamps frames by the wall clock, which the receive time
	// is turned back into a monotonic instant against: a frame during
	// which the wall clock moved against the monotonic one (a time
	// daemon, the VM's host) cannot be judged, and is tried again.
	base := time.Now()
	wallAhead := func() time.Duration {
		n := time.Now()
		return time.Duration(n.UnixNano()-base.UnixNano()) - n.Sub(base)
	}
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		clock := wallAhead()
		sent := time.Now()
		if _, err := from.Conn.WriteTo([]byte("hapair-test-frame"), from.Peer); err != nil {
			t.Fatal(err)
		}
		// The reader is late: 50 ms after the frame came.
		time.Sleep(50 * time.Millisecond)
		var buf [FrameLen + 1]byte
		var n int
		var at time.Time
		var err error
		if poll {
			var ok bool
			if ok, n, at, _, err = io.poll(buf[:]); !ok {
				t.Fatal("nothing to poll 50 ms after a frame was sent")
			}
		} else {
			n, at, _, err = io.read(buf[:])
		}
		if err != nil {
			t.Fatal(err)
		}
		if string(buf[:n]) != "hapair-test-frame" {
			t.Fatalf("read %q", buf[:n])
		}
		if moved := wallAhead() - clock; moved > 20*time.Microsecond || moved < -20*time.Microsecond {
			t.Logf("the wall clock moved %v against the monotonic clock: again", moved)
			continue
		}
		if at.Before(sent) {
			t.Fatalf("receive time %v before sending", sent.Sub(at))
		}
		if age = time.Since(at); age >= 40*time.Millisecond {
			return
		}
	}
	t.Errorf("frames read 50 ms after they came are %v old; want the kernel's receive time", age)
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
	for _, p := range b.paths {
		if err := p.io.watch(); err != nil {
			t.Fatal(err)
		}
	}
	round := func() {
		a.sendAll(out, false, false)
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
	// An active node's loop polls its sockets instead: the same.
	for _, p := range b.paths {
		p.io.unwatch()
	}
	polls := func() {
		want := b.stats.polled.Load() + uint64(len(b.paths))
		a.sendAll(out, false, false)
		for deadline := time.Now().Add(time.Second); b.stats.polled.Load() < want; {
			if time.Now().After(deadline) {
				t.Fatal("frames sent were not polled within a second")
			}
			b.poll(ctx, &alive)
		}
	}
	if allocs := testing.AllocsPerRun(200, polls); allocs != 0 {
		t.Errorf("%v allocations per frame sent, polled and judged; want 0", allocs)
	}
	if got := b.Stats().Received; got < 800 {
		t.Errorf("b judged %d frames authentic, want every one of over 800", got)
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
		runEndpoint(&wg, ctx, ctx, e, nil)
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

// runEndpoint runs e until runCtx ends, and reads its events (passing
// each to seen, if set) until ctx does; wg waits for both.
func runEndpoint(wg *sync.WaitGroup, ctx, runCtx context.Context, e *Endpoint, seen func(Event)) {
	wg.Add(2)
	go func() {
		defer wg.Done()
		e.Run(runCtx)
	}()
	go func() {
		defer wg.Done()
		for {
			select {
			case ev := <-e.Events():
				if seen != nil {
					seen(ev)
				}
			case <-ctx.Done():
				return
			}
		}
	}()
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

// An active node with a standby peer reads the standby's frames at its own
// wake-ups (each frame costs it no wake-up of its own); everything else
// reads at once: a handover, a peer that is not a standby. Liveness is
// judged either way: a standby that stops is declared lost.
func TestActiveReadsAStandbyAtItsOwnWakeUps(t *testing.T) {
	// Intervals long enough that a frame read at once (well inside
	// 100 ms) is told from one read at the next tick (up to 400 ms).
	const interval, dead = 400 * time.Millisecond, 1200 * time.Millisecond
	a, b := labEndpoints(t, interval, dead)
	ctx, cancel := context.WithCancel(context.Background())
	bctx, bstop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	// a's events as the test sees them: a peer frame's delay is from the
	// kernel's receipt to a's report.
	type seen struct {
		ev    Event
		delay time.Duration
	}
	aEvents := make(chan seen, 1024)
	runEndpoint(&wg, ctx, ctx, a, func(ev Event) { aEvents <- seen{ev, time.Since(ev.At)} })
	runEndpoint(&wg, ctx, bctx, b, nil)
	a.SetLocal(Local{Role: RoleActive, Flags: FlagHolding})
	b.SetLocal(Local{Role: RoleStandby})
	// Each step changes what b says, so a reports b's next frame: wait
	// for that report and say how late a read it. (b's first frames say
	// it hears nobody yet, FlagDeaf, and the next ones are a change: not
	// the frame looked for; nor is b's answer to a change of a's, which a
	// reports too: the answer to a's first ACTIVE, read at a's tick as a
	// polled, could still be queued when the handover began, and was taken
	// for a late read, 3 runs in 20 beside CPU hogs. written tells the
	// frame looked for.)
	nextFrame := func(want Role, written uint64) seen {
		t.Helper()
		for deadline := time.After(5 * time.Second); ; {
			select {
			case s := <-aEvents:
				if s.ev.Kind == PeerFrame && s.ev.Frame.Role == want && s.ev.Frame.Flags&FlagDeaf == 0 && s.ev.Frame.SyncWritten == written {
					return s
				}
			case <-deadline:
				t.Fatalf("no frame from b as %v in 5 s", want)
			}
		}
	}
	// polledBy waits until a polls (of the next three frames it
	// receives, some polled), or does not (none of them).
	polledBy := func(want bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); ; {
			from := a.Stats()
			for window := time.Now().Add(5 * interval); a.Stats().Received < from.Received+3; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(window) {
					t.Fatalf("a received %d frames in %v", a.Stats().Received-from.Received, 5*interval)
				}
			}
			if polled := a.Stats().Polled > from.Polled; polled == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("a still polls, or does not, after 5 s; polling wanted: %v", want)
			}
		}
	}
	nextFrame(RoleStandby, 0)
	polledBy(true)
	if p := b.Stats().Polled; p != 0 {
		t.Errorf("the standby polled %d frames; it reads them as they come", p)
	}

	// A handover: a says it is leaving and must hear b's answer at once.
	a.SetLocal(Local{Role: RoleActive, Flags: FlagHolding | FlagLeaving})
	polledBy(false)
	for i := range 5 {
		// b's next frame, read before a's tick could come.
		before := a.Stats().Polled
		b.SetLocal(Local{Role: RoleStandby, SyncWritten: uint64(i + 1)})
		if s := nextFrame(RoleStandby, uint64(i+1)); s.delay > interval/4 {
			t.Errorf("leaving, a read the standby's frame %v after it came; want it at once", s.delay)
		}
		if p := a.Stats().Polled; p != before {
			t.Errorf("leaving, a polled %d frames", p-before)
		}
	}

	// Back to the steady state, then a peer that is active too: a reads
	// it at once from then on.
	a.SetLocal(Local{Role: RoleActive, Flags: FlagHolding})
	polledBy(true)
	b.SetLocal(Local{Role: RoleActive})
	nextFrame(RoleActive, 0)
	polledBy(false)
	b.SetLocal(Local{Role: RoleStandby})
	nextFrame(RoleStandby, 0)
	polledBy(true)

	// The agent saw the standby's replication connection end: a reads
	// b's frames as they come for a dead interval, then at its wake-ups
	// again.
	a.ReadAtOnce()
	for i := range 3 {
		written := uint64(10 + i)
		b.SetLocal(Local{Role: RoleStandby, SyncWritten: written})
		if s := nextFrame(RoleStandby, written); s.delay > interval/4 {
			t.Errorf("asked to read at once, a read the standby's frame %v after it came", s.delay)
		}
	}
	polledBy(true)

	// A standby that stops is lost, polled or not.
	bstop()
	for deadline := time.After(10 * dead); ; {
		select {
		case s := <-aEvents:
			if s.ev.Kind != PeerLost {
				continue
			}
			return
		case <-deadline:
			t.Fatalf("a polling did not declare b lost in %v", 10*dead)
		}
	}
}

// A wall clock stepped while a frame waited in its socket must not make
// the frame, or its path, older than the frame read before it: kernel
// receive times are wall-clock times. The clock itself is not stepped
// here (it is the machine's, and every other test's): a step of S between
// the stamp and the read is, to the reader, a stamp S earlier.
func TestArrivalSurvivesAWallClockStep(t *testing.T) {
	const dead = 300 * time.Millisecond
	now := time.Now()
	prev := now.Add(-100 * time.Millisecond) // the frame read before
	stamped := now.Add(-50 * time.Microsecond).UnixNano()
	for _, c := range []struct {
		name string
		step time.Duration // the wall clock's step between stamp and read
		want time.Time
	}{
		{"no step", 0, now.Add(-50 * time.Microsecond)},
		// Taken as it is, the frame would be 2 s old: the path silent
		// at once.
		{"forward 2s", 2 * time.Second, prev},
		{"forward 80ms", 80 * time.Millisecond, now.Add(-80*time.Millisecond - 50*time.Microsecond)},
		{"back 2s", -2 * time.Second, now},
		{"forward past 10s", 15 * time.Second, now},
	} {
		got := arrival(now, stamped-int64(c.step), prev)
		if !got.Equal(c.want) {
			t.Errorf("%s: arrived %v after the frame before, want %v", c.name, got.Sub(prev), c.want.Sub(prev))
		}
		if now.Sub(got) >= dead {
			t.Errorf("%s: the frame just read is %v old, past the dead interval", c.name, now.Sub(got))
		}
	}
	if got := arrival(now, 0, prev); !got.Equal(now) {
		t.Errorf("no stamp: arrived %v after the frame before, want now (%v)", got.Sub(prev), now.Sub(prev))
	}
}

// Both paths' frames are marked to go ahead of bulk traffic: the kernel's
// priority (pfifo_fast's first band) and, over UDP, DSCP CS6. The UDP
// path's test of the effect is TestBusyReplicationLinkIsNoDeadPeer (real
// daemons, a busy replication link).
func TestFramesAreMarkedAsNetworkControl(t *testing.T) {
	p := labtest.NewPair(t, lab.Options{})
	paths := labPaths(t, p, "a")
	defer closePaths(paths)
	for _, path := range paths {
		rc, err := path.Conn.(syscall.Conn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		rc.Control(func(fd uintptr) {
			if prio, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PRIORITY); err != nil || prio != framePriority {
				t.Errorf("%s: priority %d, %v; want %d", path.Name, prio, err, framePriority)
			}
			if path.Name != "udp" {
				return
			}
			if tos, err := unix.GetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TOS); err != nil || tos != frameTOS {
				t.Errorf("%s: TOS %#x, %v; want %#x", path.Name, tos, err, frameTOS)
			}
		})
	}
}
