package heartbeat

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hapair/hapair/lab/labtest"
	"golang.org/x/sys/unix"
)

// What the agent says crosses to the core whole, with its instants turned
// into ages and back: each process has its own monotonic origin.
func TestCoreLocalRoundTrip(t *testing.T) {
	now := time.Now()
	in := Local{Role: RoleActive, Flags: FlagLocked | FlagPreferred | FlagSplitBrain,
		ActiveSince: now.Add(-41 * time.Second), LastNewSession: now.Add(-2300 * time.Millisecond),
		Frozen: &FrozenAges{ActiveFor: 41 * time.Second, LastNewSession: -1}, SyncWritten: 200, SyncAcked: 199}
	var b [localLen]byte
	putLocal(b[:], &in, now, true)
	var out Local
	var frozen FrozenAges
	later := now.Add(time.Hour) // the core's clock reading when it decodes
	sendNow, err := getLocal(b[:], &out, &frozen, later)
	if err != nil || !sendNow {
		t.Fatalf("getLocal: %v, sendNow %v", err, sendNow)
	}
	if out.Role != in.Role || out.Flags != in.Flags || out.SyncWritten != 200 || out.SyncAcked != 199 || *out.Frozen != *in.Frozen {
		t.Errorf("decoded %+v, want %+v", out, in)
	}
	if later.Sub(out.ActiveSince) != 41*time.Second || later.Sub(out.LastNewSession) != 2300*time.Millisecond {
		t.Errorf("ages: active %v, new session %v", later.Sub(out.ActiveSince), later.Sub(out.LastNewSession))
	}
	putLocal(b[:], &Local{Role: RoleStandby}, now, false)
	if sendNow, _ := getLocal(b[:], &out, &frozen, later); sendNow || !out.ActiveSince.IsZero() || !out.LastNewSession.IsZero() || out.Frozen != nil {
		t.Errorf("a standby's local: %+v (send now %v)", out, sendNow)
	}
	if _, err := getLocal(b[:10], &out, &frozen, later); err == nil {
		t.Error("a short local message was accepted")
	}
}

func TestCoreCountsRoundTrip(t *testing.T) {
	var c Counters
	c.sent.Store(7)
	c.pauses.Store(2)
	c.sendGap(40*time.Millisecond, 30*time.Millisecond)
	c.sendGap(20*time.Millisecond, 30*time.Millisecond)
	c.drops[DropMAC].Store(5)
	// The core's paths, in another order than pathNames'.
	c.paths = make([]pathCounts, 2)
	c.paths[0].name, c.paths[1].name = "udp", "raw"
	c.paths[0].heard.Store(100)
	c.paths[0].lost.Store(3)
	c.paths[1].heard.Store(90)
	c.paths[1].lost.Store(11)
	var b [8 * numCounts]byte
	putCounts(b[:], &c)
	s := getCounts(b[:])
	if s.Sent != 7 || s.Pauses != 2 || s.Stalls != 1 || s.LongestSendGap != 40*time.Millisecond || s.Drops["bad_mac"] != 5 || s.Drops["replayed"] != 0 {
		t.Errorf("counts: %+v", s)
	}
	if want := (map[string]PathFrames{"raw": {90, 11}, "udp": {100, 3}}); !maps.Equal(s.Paths, want) {
		t.Errorf("paths: %v, want %v", s.Paths, want)
	}
}

// A core whose agent died (or whose lease ran out) lets go of the VIPs at
// the frame in which its peer says it holds them, not at its next check a
// quarter interval on: the two nodes held them that long (20-25 ms at the
// default profile in the soak's kill of a locked active).
func TestVIPsGoAtThePeersHoldingFrame(t *testing.T) {
	w := memWorld()
	a := startOn(t, w.paths(t, "a"), 1, 2*time.Second) // a check every 500 ms
	b := startOn(t, w.paths(t, "b"), 2, 2*time.Second)
	a.waitFor(t, PeerFrame, "", 0, 5*time.Second)
	a.ep.setFenced(true)
	ctx, cancel := context.WithCancel(context.Background())
	released, done := make(chan time.Time, 1), make(chan struct{})
	go func() {
		defer close(done)
		a.ep.releaseWhenTaken(ctx, func() { released <- time.Now() })
	}()
	defer func() { cancel(); <-done }()
	took := time.Now()
	b.ep.SetLocal(Local{Role: RoleActive, Flags: FlagHolding})
	select {
	case at := <-released:
		// Generous: the next check came 500 ms after the start.
		if d := at.Sub(took); d > 250*time.Millisecond {
			t.Errorf("released %v after the peer said it holds them", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("never released")
	}
}

// A frame sent once the agent's lease has run out says FAULT and fenced,
// whether or not the lease's timer has fenced the node yet: after a pause
// of the whole host (a virtual machine paused, the daemon stopped with its
// core), the sender and the timer woke together, and a frame sent first
// said ACTIVE to a peer that had taken over meanwhile, a split brain to it
// until the fence came. No timer fences here (that is ServeCore's): only
// the frames' own check can. A locked node is never fenced.
func TestFramesAfterTheLeaseSayFenced(t *testing.T) {
	const lease = 300 * time.Millisecond
	for _, locked := range []bool{false, true} {
		w := memWorld()
		a := startOn(t, w.paths(t, "a"), 1, 20*time.Millisecond)
		b := startOn(t, w.paths(t, "b"), 2, 20*time.Millisecond)
		local := Local{Role: RoleActive}
		if locked {
			local.Flags = FlagLocked
		}
		a.ep.SetLocal(local)
		start := time.Now()
		a.ep.leaseFor(lease)
		var at time.Time // when b first heard a fenced frame
		fenced := func(ev Event) bool {
			if ev.Kind == PeerFrame && ev.Frame.Flags&FlagFenced != 0 {
				at = ev.At
				return true
			}
			return false
		}
		// Long enough for a frame after the lease on a loaded machine.
		for end := start.Add(lease + 2*time.Second); time.Now().Before(end) && !b.saw(0, fenced); time.Sleep(10 * time.Millisecond) {
		}
		switch {
		case locked && !at.IsZero():
			t.Errorf("a locked node's frames said fenced %v after its lease began", at.Sub(start))
		case !locked && at.IsZero():
			t.Errorf("no frame said fenced within %v after the lease ran out", 2*time.Second)
		case !locked && at.Before(start.Add(lease)):
			t.Errorf("a frame said fenced %v after a lease of %v began", at.Sub(start), lease)
		}
		a.stop()
		b.stop()
	}
}

// A later version grows the agent's and the core's messages at their end
// (CoreProtocol): a local with fields appended decodes as before, and a
// counts message reads right whether its writer has fewer counters (an
// older core: the missing ones read as zero) or more.
func TestCoreMessagesGrowAtTheirEnd(t *testing.T) {
	now := time.Now()
	in := Local{Role: RoleActive, Flags: FlagHolding, ActiveSince: now.Add(-time.Minute), SyncWritten: 9, SyncAcked: 8}
	b := make([]byte, localLen, localLen+16)
	putLocal(b, &in, now, true)
	b = append(b, "a later field..."...)
	var out Local
	var frozen FrozenAges
	if sendNow, err := getLocal(b, &out, &frozen, now); err != nil || !sendNow || out.Role != in.Role || out.Flags != in.Flags || out.SyncAcked != 8 || now.Sub(out.ActiveSince) != time.Minute {
		t.Errorf("a longer local: %+v (send now %v, %v)", out, sendNow, err)
	}

	var c Counters
	c.sent.Store(7)
	c.relieved.Store(3) // the last scalar counter
	c.drops[DropMAC].Store(5)
	full := make([]byte, 8*numCounts)
	putCounts(full, &c)
	if s := getCounts(append(full, make([]byte, 24)...)); s.Sent != 7 || s.Relieved != 3 || s.Drops["bad_mac"] != 5 {
		t.Errorf("counts with three more after them: %+v", s)
	}
	// A core that had no relief counter, nor paths or drops after it.
	if s := getCounts(full[:8*(scalarCounts-1)]); s.Sent != 7 || s.Relieved != 0 || s.Drops["bad_mac"] != 0 {
		t.Errorf("counts of an older core: %+v", s)
	}
}

// seqpacket returns the two ends of a unix SOCK_SEQPACKET pair, as the
// agent and its core talk over.
func seqpacket(t *testing.T) (agent, core net.Conn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var conns [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "core-socket")
		if conns[i], err = net.FileConn(f); err != nil {
			t.Fatal(err)
		}
		f.Close()
		t.Cleanup(func() { conns[i].Close() })
	}
	return conns[0], conns[1]
}

// testCore makes a Core whose child is the returned connection's far end,
// played by the test.
func testCore(t *testing.T) (*Core, net.Conn) {
	t.Helper()
	agent, child := seqpacket(t)
	c, err := NewCore(CoreConfig{Endpoint: Config{Cluster: testCluster, Node: 1, Keys: [][]byte{testKey}, Interval: time.Second, Dead: 3 * time.Second}, Lease: time.Second},
		func() (net.Conn, func() error, error) { return agent, func() error { return nil }, nil })
	if err != nil {
		t.Fatal(err)
	}
	return c, child
}

// readMsg reads one message from the agent, within a generous bound.
func readMsg(t *testing.T, conn net.Conn) []byte {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64<<10)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("reading the agent's message: %v", err)
	}
	return buf[:n]
}

// An agent asks its core for CoreProtocol, and a core of an older version
// it cannot drive is told goodbye (so it ends without fencing) and named
// in the error.
func TestAgentRefusesACoreOlderThanItself(t *testing.T) {
	c, child := testCore(t)
	done := make(chan error, 1)
	go func() { done <- c.Run(context.Background()) }()
	init := readMsg(t, child)
	var cfg CoreConfig
	if init[0] != msgInit || json.Unmarshal(init[1:], &cfg) != nil || cfg.Protocol != CoreProtocol {
		t.Fatalf("the agent's first message: %q", init)
	}
	child.Write(append([]byte{msgHello}, `{"RealTime":true}`...)) // no version: older than any
	if bye := readMsg(t, child); string(bye) != string([]byte{msgBye}) {
		t.Errorf("the agent sent %q to a core it cannot drive, want goodbye", bye)
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "protocol 0") {
			t.Errorf("Run: %v, want the core's protocol named", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not end")
	}
}

// A core of a later version may send messages this agent does not know,
// and longer ones than it knows: the agent skips the unknown ones and
// reads what it knows of the rest.
func TestAgentSkipsWhatALaterCoreAdds(t *testing.T) {
	c, child := testCore(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	readMsg(t, child) // init
	child.Write(append([]byte{msgHello}, `{"Protocol":2,"Locked":true,"Later":"field"}`...))
	if l := readMsg(t, child); l[0] != msgLocal {
		t.Fatalf("the agent's first message after the hello: %q", l)
	}
	child.Write([]byte("Zsomething a later core says"))
	ev := make([]byte, eventLen, eventLen+8)
	ev[0], ev[1], ev[2] = msgEvent, byte(PathDown), 1
	child.Write(append(ev, "appended"...))
	select {
	case got := <-c.Events():
		if got.Kind != PathDown || got.Path != "udp" {
			t.Errorf("event %+v, want the udp path down", got)
		}
	case err := <-done:
		t.Fatalf("Run ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no event")
	}
	if !c.Isolation().Locked {
		t.Error("the hello's fields were not read")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

// The core skips a message of a type it does not know (a later agent's)
// and reads on.
func TestCoreSkipsWhatALaterAgentAdds(t *testing.T) {
	agent, core := seqpacket(t)
	ep, err := New(Config{Cluster: testCluster, Node: 1, Keys: [][]byte{testKey}, Interval: time.Second, Dead: 3 * time.Second, Generation: 1}, memWorld().paths(t, "a")...)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- readParent(context.Background(), core, ep, make([]byte, 64<<10)) }()
	agent.Write([]byte("Za later agent's message"))
	l := make([]byte, localLen, localLen+8)
	putLocal(l, &Local{Role: RoleActive}, time.Now(), false)
	agent.Write(append(l, "appended"...))
	agent.Write([]byte{msgBye})
	select {
	case err := <-done:
		if !errors.Is(err, errBye) {
			t.Fatalf("readParent: %v, want goodbye", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("readParent did not end")
	}
	ep.mu.Lock()
	role := ep.local.Role
	ep.mu.Unlock()
	if role != RoleActive {
		t.Errorf("the local after an unknown message was not applied: role %v", role)
	}
}

// A renewal the core reads after the agent's lease ran out fences the node
// as the lease's timer does, once: it comes from an agent that was stopped
// past its lease. When the core wakes from a stop of the whole daemon, the
// renewal queued meanwhile and the timer are ready together; read first,
// it renewed the lease, the reset timer fenced nobody, and the frames
// said ACTIVE again to a peer that had taken over at the fenced ones. That
// instant is made here by ending the lease early, with a timer that does
// not fire during the test. The lease runs again once fenced, so frames
// say what the agent says after it has handled the fence.
func TestARenewalAfterTheLeaseFencesTheNode(t *testing.T) {
	w := memWorld()
	b := startOn(t, w.paths(t, "b"), 2, 20*time.Millisecond)
	defer b.stop()
	agent, child := seqpacket(t)
	cfg := CoreConfig{Endpoint: Config{Cluster: testCluster, Node: 1, Keys: [][]byte{testKey}, Interval: 20 * time.Millisecond, Dead: 60 * time.Millisecond, Generation: 1},
		Lease: time.Minute}
	c, err := NewCore(cfg, func() (net.Conn, func() error, error) { return agent, func() error { return nil }, nil })
	if err != nil {
		t.Fatal(err)
	}
	opened := make(chan *Endpoint, 1)
	open := func(cfg CoreConfig) (*Endpoint, error) {
		ep, err := New(cfg.Endpoint, w.paths(t, "a")...)
		opened <- ep
		return ep, err
	}
	released := make(chan struct{}, 1)
	served := make(chan error, 1)
	go func() {
		served <- serveCore(child, func(CoreConfig) CoreHello { return CoreHello{} }, func(CoreConfig) { released <- struct{}{} }, open)
	}()
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- c.Run(ctx) }()
	fenced, drained := make(chan struct{}, 2), make(chan struct{})
	go func() {
		defer close(drained)
		for {
			select {
			case ev := <-c.Events():
				if ev.Kind == Fenced {
					select {
					case fenced <- struct{}{}:
					default: // a third: the second says enough
					}
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	defer func() {
		cancel()
		<-ran
		<-drained
		if len(fenced) > 0 {
			t.Error("the core fenced the node twice")
		}
		if err := <-served; err != nil {
			t.Errorf("the core ended with %v, not at the agent's goodbye", err)
		}
	}()
	c.SetLocal(Local{Role: RoleActive})
	ep := <-opened
	// The core starts the lease once it has the first local.
	if !labtest.PollUntil(5*time.Second, func() bool {
		ep.mu.Lock()
		defer ep.mu.Unlock()
		return !ep.leaseEnd.IsZero()
	}) {
		t.Fatal("the core never started the agent's lease")
	}
	ep.mu.Lock()
	ep.leaseEnd = time.Now().Add(-time.Millisecond)
	ep.mu.Unlock()
	from := b.len()
	c.SetLocal(Local{Role: RoleActive})
	select {
	case <-fenced:
	case <-time.After(5 * time.Second):
		t.Fatal("a renewal after the lease's end did not fence the node")
	}
	saysFenced := func(want bool) func(Event) bool {
		return func(ev Event) bool {
			return ev.Kind == PeerFrame && ev.Frame.Role == RoleActive && (ev.Frame.Flags&FlagFenced != 0) == want
		}
	}
	if !labtest.PollUntil(5*time.Second, func() bool { return b.saw(from, saysFenced(true)) }) {
		t.Error("the peer heard no fenced frame")
	}
	select {
	case <-released: // two dead intervals on: the peer holds nothing
	case <-time.After(10 * time.Second):
		t.Error("the fenced core never released the VIPs")
	}
	// The agent handles the fence and renews in time: the lease runs
	// again, and the frames say ACTIVE unfenced.
	c.Unfence()
	from = b.len()
	c.SetLocal(Local{Role: RoleActive, Flags: FlagPreferred})
	if !labtest.PollUntil(5*time.Second, func() bool { return b.saw(from, saysFenced(false)) }) {
		t.Error("after the fence was handled, the frames still said fenced")
	}
}
