package heartbeat

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hapair/hapair/internal/leaktest"
	"github.com/hapair/hapair/lab"
	"github.com/hapair/hapair/lab/labtest"
	"github.com/mdlayher/packet"
)

const testCluster = 0xC0FFEE

// node is one endpoint running in a lab namespace, with its events
// collected for assertions.
type node struct {
	ep     *Endpoint
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	events []Event
	notify chan struct{}
}

// world is where a pair of endpoints runs: in memory, or on veths between
// namespaces. The pair tests run their bodies in both.
type world struct {
	paths func(t testing.TB, name string) []Path
	// cut takes the link of a path ("raw", "udp") down or up.
	cut func(t testing.TB, path string, up bool)
}

func memWorld() world {
	links, paths := memLinks()
	return world{
		paths: func(t testing.TB, name string) []Path { return paths(name) },
		cut:   func(t testing.TB, path string, up bool) { links[path].down.Store(!up) },
	}
}

// memLinks makes the two paths as in-memory links, and what gives node
// "a" or "b" its ends of them (new ones for a node restarted).
func memLinks() (map[string]*memLink, func(name string) []Path) {
	links := map[string]*memLink{"raw": newMemLink("raw"), "udp": newMemLink("udp")}
	return links, func(name string) []Path {
		var out []Path
		for _, path := range []string{"raw", "udp"} {
			mine, theirs := links[path].end(name == "b"), links[path].end(name != "b")
			out = append(out, Path{Name: path, Conn: mine, Peer: theirs.local})
		}
		return out
	}
}

func vethWorld(t testing.TB) world {
	p := labtest.NewPair(t, lab.Options{})
	return world{
		paths: func(t testing.TB, name string) []Path { return labPaths(t, p, name) },
		cut: func(t testing.TB, path string, up bool) {
			cut := p.CutHeartbeat
			if path == "udp" {
				cut = p.CutReplication
			}
			if err := cut(up); err != nil {
				t.Fatal(err)
			}
		},
	}
}

// inEachWorld runs body in memory (no root needed) and over veths, and
// checks that it leaves no goroutine behind: the check comes first, so
// that it looks once every endpoint has stopped.
func inEachWorld(t *testing.T, body func(t *testing.T, w world)) {
	t.Run("memory", func(t *testing.T) {
		leaktest.Check(t)
		body(t, memWorld())
	})
	t.Run("veth", func(t *testing.T) {
		leaktest.Check(t)
		body(t, vethWorld(t))
	})
}

// labPaths opens node name's raw and UDP paths in the lab pair p.
func labPaths(t testing.TB, p *lab.Pair, name string) []Path {
	t.Helper()
	peer := "b"
	if name == "b" {
		peer = "a"
	}
	var paths []Path
	err := lab.Do(p.Node(name), func() error {
		ifi, err := net.InterfaceByName(lab.Heartbeat)
		if err != nil {
			return err
		}
		raw, err := RawPath(ifi, nil)
		if err != nil {
			return err
		}
		udp, err := UDPPath(netip.AddrPortFrom(lab.ReplAddr[name].Addr(), 7405), netip.AddrPortFrom(lab.ReplAddr[peer].Addr(), 7405))
		if err != nil {
			raw.Conn.Close()
			return err
		}
		paths = []Path{raw, udp}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return paths
}

func startNode(t testing.TB, p *lab.Pair, name string, id uint8, interval time.Duration) *node {
	t.Helper()
	return startOn(t, labPaths(t, p, name), id, interval)
}

// startOn runs an endpoint on paths, its events collected.
func startOn(t testing.TB, paths []Path, id uint8, interval time.Duration, opts ...func(*Config)) *node {
	t.Helper()
	cfg := Config{Cluster: testCluster, Node: id, Keys: [][]byte{testKey}, Interval: interval, Dead: 3 * interval, Generation: 1}
	for _, o := range opts {
		o(&cfg)
	}
	ep, err := New(cfg, paths...)
	if err != nil {
		t.Fatal(err)
	}
	return run(t, ep)
}

// run runs ep, its events collected.
func run(t testing.TB, ep *Endpoint) *node {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{ep: ep, cancel: cancel, done: make(chan struct{}), notify: make(chan struct{}, 1)}
	go func() {
		defer close(n.done)
		ep.Run(ctx)
	}()
	go func() {
		for {
			select {
			case ev := <-ep.Events():
				n.mu.Lock()
				n.events = append(n.events, ev)
				n.mu.Unlock()
				select {
				case n.notify <- struct{}{}:
				default:
				}
			case <-n.done:
				return
			}
		}
	}()
	t.Cleanup(n.stop)
	return n
}

func (n *node) stop() {
	n.cancel()
	<-n.done
}

// waitFor waits until an event of kind (on path, if set) arrives after
// index from, and returns it with its index.
func (n *node) waitFor(t testing.TB, kind EventKind, path string, from int, within time.Duration) (Event, int) {
	t.Helper()
	deadline := time.After(within)
	for {
		n.mu.Lock()
		for i := from; i < len(n.events); i++ {
			if ev := n.events[i]; ev.Kind == kind && (path == "" || ev.Path == path) {
				n.mu.Unlock()
				return ev, i
			}
		}
		n.mu.Unlock()
		select {
		case <-n.notify:
		case <-deadline:
			t.Fatalf("no %v event on %q within %v", kind, path, within)
		}
	}
}

func (n *node) count(kind EventKind, from int) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := 0
	for _, ev := range n.events[from:] {
		if ev.Kind == kind {
			c++
		}
	}
	return c
}

// receiveMore waits, looking every so often, until n's endpoint has
// received count more frames than now; false if the deadline came first.
func (n *node) receiveMore(count uint64, deadline time.Time, every time.Duration) bool {
	for want := n.ep.Stats().Received + count; n.ep.Stats().Received < want; time.Sleep(every) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// saw says whether an event since from satisfies ok.
func (n *node) saw(from int, ok func(Event) bool) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, ev := range n.events[from:] {
		if ok(ev) {
			return true
		}
	}
	return false
}

func (n *node) len() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.events)
}

func TestPairSeesEachOther(t *testing.T) { inEachWorld(t, pairSeesEachOther) }

func pairSeesEachOther(t *testing.T, w world) {
	const iv = 20 * time.Millisecond
	a := startOn(t, w.paths(t, "a"), 1, iv)
	b := startOn(t, w.paths(t, "b"), 2, iv)
	a.ep.SetLocal(Local{Role: RoleActive, ActiveSince: time.Now()})
	// Within an interval or two on an idle machine; the bound is loose
	// for a loaded one (the race detector, other tests' namespaces).
	for _, n := range []*node{a, b} {
		n.waitFor(t, PathUp, "raw", 0, 2*time.Second)
		n.waitFor(t, PathUp, "udp", 0, 2*time.Second)
		n.waitFor(t, PeerAlive, "", 0, 2*time.Second)
	}
	ev, _ := b.waitFor(t, PeerFrame, "", 0, time.Second)
	for ev.Frame.Role != RoleActive {
		ev, _ = b.waitFor(t, PeerFrame, "", b.len()-1, time.Second)
	}
	if ev.Frame.Node != 1 || ev.Frame.ActiveFor < 0 {
		t.Errorf("b sees %+v", ev.Frame)
	}
	// The raw path learned the peer's MAC and now sends unicast.
	if addr, ok := a.ep.PeerAddr(0).(*packet.Addr); ok && addr.HardwareAddr[0] == 0xff {
		t.Errorf("a still broadcasts on the raw path: %v", addr)
	}
}

func TestHeartbeatLinkDownIsDegradedNotLost(t *testing.T) {
	inEachWorld(t, linkDownIsDegradedNotLost)
}

func linkDownIsDegradedNotLost(t *testing.T, w world) {
	const iv = 20 * time.Millisecond
	a := startOn(t, w.paths(t, "a"), 1, iv)
	b := startOn(t, w.paths(t, "b"), 2, iv)
	for _, n := range []*node{a, b} {
		n.waitFor(t, PathUp, "raw", 0, 2*time.Second)
		n.waitFor(t, PathUp, "udp", 0, 2*time.Second)
	}
	mark := b.len()
	// Bounds are generous: they catch a broken mechanism, the figures are
	// in BenchmarkDetection. Netlink calls can stall behind other tests'
	// namespace teardown, so the clock starts once the cut is done.
	w.cut(t, "raw", false)
	cut := time.Now()
	ev, _ := b.waitFor(t, PathDown, "raw", mark, 3*iv+time.Second)
	t.Logf("raw path down after %v", ev.At.Sub(cut))
	// Several dead intervals later the peer is still alive over UDP.
	time.Sleep(10 * iv)
	if c := b.count(PeerLost, mark); c != 0 {
		t.Fatalf("peer reported lost with the UDP path up")
	}
	if c := b.count(PathDown, mark); c != 1 {
		t.Errorf("%d path-down events, want 1 (raw)", c)
	}
	// Replication link down too: now the peer is lost.
	w.cut(t, "udp", false)
	cut = time.Now()
	ev, _ = b.waitFor(t, PeerLost, "", mark, 3*iv+time.Second)
	t.Logf("peer lost %v after the last path was cut", ev.At.Sub(cut))
	// And back.
	mark = b.len()
	w.cut(t, "raw", true)
	w.cut(t, "udp", true)
	b.waitFor(t, PeerAlive, "", mark, 2*time.Second)
}

// A path that went down is heard again when it comes back: the agent
// forgets, on PathDown, that the peer hears it there, so PathHeard must
// come again once the peer's frames echo ours. After a one-way loss the
// peer's first frame already does (it heard us all along): that frame
// must say PathHeard, or the agent believes forever that the peer does
// not hear it (and, active in a split, would never freeze its facts).
func TestPathHeardAgainAfterAOneWayLoss(t *testing.T) {
	const iv = 20 * time.Millisecond
	links, paths := memLinks()
	startOn(t, paths("a"), 1, iv)
	b := startOn(t, paths("b"), 2, iv)
	for _, path := range []string{"raw", "udp"} {
		b.waitFor(t, PathHeard, path, 0, 2*time.Second)
	}
	mark := b.len()
	for _, l := range links {
		l.b.deaf.Store(true)
	}
	b.waitFor(t, PeerLost, "", mark, 2*time.Second)
	mark = b.len()
	for _, l := range links {
		l.b.deaf.Store(false)
	}
	for _, path := range []string{"raw", "udp"} {
		b.waitFor(t, PathUp, path, mark, 2*time.Second)
		b.waitFor(t, PathHeard, path, mark, 2*time.Second)
	}
	if n := b.count(PathUnheard, mark); n != 0 {
		t.Errorf("%d path-unheard events after the loss: the peer heard b all along", n)
	}
}

// A node whose own loop did not run for a while (a paused virtual machine)
// sent nothing meanwhile, so the peer's frames that queued up echo nothing
// fresh: that is no sign of a one-way link, and the node must not say the
// peer does not hear it. It did, to an active node thawed after a second
// beside a peer that had taken over, which then yielded to the one-way
// rule instead of arbitrating (e2e TestFrozenActiveThawed, 1 run in 3).
// A peer that really stops hearing it is still said to (the one-way
// tests).
func TestPausedNodeIsNotUnheard(t *testing.T) {
	inEachWorld(t, func(t *testing.T, w world) {
		a, _ := startStallPair(t, w, false)
		for _, path := range []string{"raw", "udp"} {
			a.waitFor(t, PathHeard, path, 0, 5*time.Second)
		}
		from := a.len()
		stall(a, 3*stallDead)
		if n := a.count(PathUnheard, from); n != 0 {
			t.Errorf("%d path-unheard events after a's own pause", n)
		}
	})
}

// Two nodes with other timers (a profile change made one node at a time)
// judge each other by the longer dead interval, which the frames carry:
// the fast node does not lose a peer that sends every 100 ms. Cut, the
// peer is lost within that longer interval.
func TestPeerJudgedByTheLongerDeadInterval(t *testing.T) {
	w := memWorld()
	fast := startOn(t, w.paths(t, "a"), 1, 10*time.Millisecond)
	slow := startOn(t, w.paths(t, "b"), 2, 100*time.Millisecond)
	ev, _ := fast.waitFor(t, PeerFrame, "", 0, 2*time.Second)
	if ev.Frame.Dead != 300*time.Millisecond {
		t.Errorf("the slow peer's frames say dead interval %v", ev.Frame.Dead)
	}
	slow.waitFor(t, PeerAlive, "", 0, 2*time.Second)
	// Ten of the slow node's intervals: the fast one's own dead
	// interval (30 ms) passes between every two of its frames.
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if n := fast.count(PeerLost, 0) + fast.count(PathDown, 0); n != 0 {
			t.Fatalf("the fast node lost its slower peer (%d events)", n)
		}
	}
	if n := slow.count(PeerLost, 0); n != 0 {
		t.Fatalf("the slow node lost its faster peer (%d events)", n)
	}
	mark := fast.len()
	for _, p := range []string{"raw", "udp"} {
		w.cut(t, p, false)
	}
	cut := time.Now()
	fast.waitFor(t, PeerLost, "", mark, 2*time.Second)
	// The peer's last frame came up to one of its intervals (100 ms)
	// before the cut, so 200 ms is the least by the arithmetic, at the
	// edge of what the clocks read (199.6 ms seen); its own 30 ms is far
	// below either.
	if took := time.Since(cut); took < 150*time.Millisecond {
		t.Errorf("lost after %v: judged by its own 30 ms, not the peer's 300 ms", took)
	}
}

// A fast node whose every wake-up comes late by more than half its own dead
// interval (a loaded node without real-time rights, in the middle of a
// rolling profile change) still loses a slower peer that stops: lateness
// that cannot take the peer's longer dead interval past its end must not
// restart it. It used to at every late wake-up, so such a node never lost
// its peer: nobody took over from a dead active for as long as the load
// lasted. Its lateness still keeps it from losing a live peer.
func TestLateWakeUpsDoNotHideAPeerJudgedByALongerInterval(t *testing.T) {
	w := memWorld()
	fast := startOn(t, w.paths(t, "a"), 1, 10*time.Millisecond)
	slow := startOn(t, w.paths(t, "b"), 2, 100*time.Millisecond)
	fast.waitFor(t, PeerAlive, "", 0, 2*time.Second)
	slow.waitFor(t, PeerAlive, "", 0, 2*time.Second)
	// Each turn of the fast node's loop starts 20 ms late: more than
	// half its own 30 ms, less than half the 300 ms it judges by.
	late := func() { time.Sleep(20 * time.Millisecond) }
	fast.ep.park.Store(&late)
	defer fast.ep.park.Store(nil)
	pauses := fast.ep.Stats().Pauses
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if n := fast.count(PeerLost, 0); n != 0 {
			t.Fatal("the late node lost its live peer")
		}
	}
	if fast.ep.Stats().Pauses == pauses {
		t.Fatal("no late wake-up was counted: the test did not make any")
	}
	mark := fast.len()
	for _, p := range []string{"raw", "udp"} {
		w.cut(t, p, false)
	}
	cut := time.Now()
	fast.waitFor(t, PeerLost, "", mark, 3*time.Second)
	t.Logf("lost %v after the cut, %d late wake-ups counted", time.Since(cut), fast.ep.Stats().Pauses-pauses)
}

// A node that starts hears its peer at once, not at the peer's next
// tick: the peer answers the first frame that says it hears nobody. Here
// the peer sends every 10 s; the starting node must hear it within a
// moment.
func TestDeafPeerIsAnsweredAtOnce(t *testing.T) {
	w := memWorld()
	for _, p := range []string{"raw", "udp"} {
		w.cut(t, p, false)
	}
	slow := startOn(t, w.paths(t, "a"), 1, 10*time.Second)
	for deadline := time.Now().Add(2 * time.Second); slow.ep.Stats().Sent == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the slow node sent nothing")
		}
	}
	// Its first frame is lost; the next one is 10 s away.
	for _, p := range []string{"raw", "udp"} {
		w.cut(t, p, true)
	}
	start := time.Now()
	starting := startOn(t, w.paths(t, "b"), 2, 10*time.Millisecond)
	starting.waitFor(t, PeerFrame, "", 0, 2*time.Second)
	t.Logf("the starting node heard its peer %v after it started", time.Since(start))
}

// TestThirdPartyFramesDropped injects frames from a host on the heartbeat
// segment: forged, truncated, replayed and from an old generation. Each is
// counted under its reason and none changes what b reports.
func TestThirdPartyFramesDropped(t *testing.T) {
	p := labtest.NewPair(t, lab.Options{HeartbeatSwitch: true})
	const iv = 20 * time.Millisecond
	b := startNode(t, p, "b", 2, iv)

	var tap *packet.Conn
	err := lab.Do(p.Tap, func() error {
		ifi, err := net.InterfaceByName(lab.Heartbeat)
		if err != nil {
			return err
		}
		tap, err = packet.Listen(ifi, packet.Datagram, EtherType, nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tap.Close()
	bcast := &packet.Addr{HardwareAddr: net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}

	// A genuine node a, generation 5, sends one frame; the tap records it.
	s, _ := NewSigner([][]byte{testKey})
	genuine := Frame{Cluster: testCluster, Node: 1, Role: RoleActive, Generation: 5, Seq: 1, ActiveFor: -1, LastNewSession: -1}
	captured := s.AppendFrame(nil, &genuine, 0)
	send := func(b []byte) {
		if _, err := tap.WriteTo(b, bcast); err != nil {
			t.Fatal(err)
		}
	}
	send(captured)
	b.waitFor(t, PeerAlive, "", 0, time.Second)
	// Newer genuine frames move the window on; generation 6 follows a
	// restart of a.
	for seq := uint64(2); seq < 5; seq++ {
		g := genuine
		g.Seq = seq
		send(s.AppendFrame(nil, &g, 0))
	}
	g6 := genuine
	g6.Generation, g6.Seq = 6, 1
	send(s.AppendFrame(nil, &g6, 0))
	waitStat(t, b.ep, func(st Stats) bool { return st.Received == 5 })
	// The counter moves before the event is out: wait for the event of
	// generation 6 too, or it may land after the mark.
	for from := 0; ; {
		ev, i := b.waitFor(t, PeerFrame, "", from, 2*time.Second)
		if ev.Frame.Generation == 6 {
			break
		}
		from = i + 1
	}
	mark := b.len()

	wrong, _ := NewSigner([][]byte{make([]byte, 32)})
	forged := genuine
	forged.Generation, forged.Seq, forged.Role = 6, 99, RoleFault
	stranger := wrong.AppendFrame(nil, &forged, 0) // signed with a key we do not hold
	send(stranger)
	claimed := bytes.Clone(stranger) // names our key, signed with another
	binary.BigEndian.PutUint32(claimed[16:20], Fingerprint(testKey))
	send(claimed)
	send(captured[:40])
	send(captured) // replayed from the old generation
	g6b := g6
	send(s.AppendFrame(nil, &g6b, 0)) // replayed within the generation
	waitStat(t, b.ep, func(st Stats) bool {
		return st.Drops["bad_mac"] == 1 && st.Drops["unknown_key"] == 1 && st.Drops["short"] == 1 && st.Drops["old_generation"] == 1 && st.Drops["replayed"] == 1
	})
	if st := b.ep.Stats(); st.Received != 5 {
		t.Errorf("received %d genuine frames, want 5", st.Received)
	}
	if c := b.count(PeerFrame, mark); c != 0 {
		t.Errorf("%d frames reported after the attack, want 0", c)
	}
}

func waitStat(t *testing.T, ep *Endpoint, ok func(Stats) bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for !ok(ep.Stats()) {
		if time.Now().After(deadline) {
			t.Fatalf("counters never matched: %+v", ep.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Issue 14.7: the UDP path hears its peer's socket only; the kernel drops
// datagrams from anywhere else before they cost a MAC check.
func TestUDPPathHearsOnlyThePeer(t *testing.T) {
	p := labtest.NewPair(t, lab.Options{})
	b := startNode(t, p, "b", 2, 20*time.Millisecond)
	to := net.UDPAddrFromAddrPort(netip.AddrPortFrom(lab.ReplAddr["b"].Addr(), 7405))
	send := func(from *net.UDPAddr) {
		t.Helper()
		err := lab.Do(p.Node("a"), func() error {
			c, err := net.DialUDP("udp", from, to)
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte("HPHB"))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	send(&net.UDPAddr{IP: lab.ReplAddr["a"].Addr().AsSlice(), Port: 7406}) // the peer's address, another port
	send(net.UDPAddrFromAddrPort(netip.AddrPortFrom(lab.ReplAddr["a"].Addr(), 7405)))
	waitStat(t, b.ep, func(st Stats) bool { return st.Drops["short"] >= 1 })
	if st := b.ep.Stats(); st.Drops["short"] != 1 {
		t.Errorf("short frames counted: %d, want only the one from the peer's socket", st.Drops["short"])
	}
}

// refreshInterval is the frame interval of refreshPair's endpoints.
const refreshInterval = 10 * time.Millisecond

// refreshPair starts a, and b with a Refresh of an hour, on w, and returns
// b's first report of a frame of a's that says it hears b, and its index
// in b's events: a's first frames say it hears nobody yet (FlagDeaf), a
// change reported at once.
func refreshPair(t *testing.T, w world) (a, b *node, ev Event, i int) {
	t.Helper()
	a = startOn(t, w.paths(t, "a"), 1, refreshInterval)
	b = startOn(t, w.paths(t, "b"), 2, refreshInterval, func(c *Config) { c.Refresh = time.Hour })
	ev, i = b.waitFor(t, PeerFrame, "", 0, 2*time.Second)
	for ev.Frame.Flags&FlagDeaf != 0 {
		ev, i = b.waitFor(t, PeerFrame, "", i+1, 2*time.Second)
	}
	return a, b, ev, i
}

// With Refresh, a frame that says nothing new reaches the agent once a
// Refresh, not every interval (an idle agent need not wake for each); a
// change, and the first frame after a loss, reach it at once, and Stats
// knows when the last frame came.
func TestUnchangedFramesWaitForRefresh(t *testing.T) {
	leaktest.Check(t)
	w := memWorld()
	const iv = refreshInterval
	a, b, _, i := refreshPair(t, w)
	if !b.receiveMore(20, time.Now().Add(5*time.Second), iv) {
		t.Fatal("frames stopped")
	}
	if n := b.count(PeerFrame, i); n != 1 {
		t.Errorf("%d frames that said the same were reported, want the first only", n)
	}
	if last := b.ep.Stats().LastFrame; time.Since(last) > time.Second {
		t.Errorf("stats say the last frame came at %v", last)
	}
	from := b.len()
	a.ep.SetLocal(Local{Role: RoleActive, ActiveSince: time.Now()})
	if ev, _ := b.waitFor(t, PeerFrame, "", from, 2*time.Second); ev.Frame.Role != RoleActive {
		t.Errorf("the change reported as %v", ev.Frame.Role)
	}
	for _, p := range []string{"raw", "udp"} {
		w.cut(t, p, false)
	}
	_, lost := b.waitFor(t, PeerLost, "", from, 2*time.Second)
	for _, p := range []string{"raw", "udp"} {
		w.cut(t, p, true)
	}
	b.waitFor(t, PeerFrame, "", lost, 2*time.Second)
}

// Renews has the next frame reported even though it says nothing new:
// the agent set aside a frame it read late and asks for the peer's word
// as it is now. Once: the frames after it wait for Refresh again.
func TestRenewsReportsTheNextFrame(t *testing.T) {
	leaktest.Check(t)
	const iv = refreshInterval
	_, b, ev, i := refreshPair(t, memWorld())
	if !b.receiveMore(5, time.Now().Add(5*time.Second), iv) {
		t.Fatal("frames stopped")
	}
	from := b.len()
	if n := b.count(PeerFrame, i+1); n != 0 {
		t.Fatalf("%d frames that said the same were reported before Renews", n)
	}
	b.ep.Renews()
	again, j := b.waitFor(t, PeerFrame, "", from, 2*time.Second)
	if again.Frame.Seq <= ev.Frame.Seq {
		t.Errorf("reported frame %d after Renews, not one newer than %d", again.Frame.Seq, ev.Frame.Seq)
	}
	if !b.receiveMore(5, time.Now().Add(5*time.Second), iv) {
		t.Fatal("frames stopped")
	}
	if n := b.count(PeerFrame, j+1); n != 0 {
		t.Errorf("%d more frames reported after the one Renews asked for", n)
	}
}

// The peer's first frame sent after it heard a change of ours reaches the
// agent even when it says nothing new (Refresh aside): it is the peer's
// answer. An active whose check failed and recovered within one frame
// went from ACTIVE to STANDBY in its peer's eyes; the peer, not the
// preferred node, stayed a standby, and its frames said nothing new, so
// neither node held the VIPs until the next Refresh, 5 s later.
func TestPeersAnswerToAChangeIsReported(t *testing.T) {
	leaktest.Check(t)
	w := memWorld()
	const iv = 10 * time.Millisecond
	a := startOn(t, w.paths(t, "a"), 1, iv)
	b := startOn(t, w.paths(t, "b"), 2, iv, func(c *Config) { c.Refresh = time.Hour })
	a.ep.SetLocal(Local{Role: RoleStandby})
	b.ep.SetLocal(Local{Role: RoleActive, ActiveSince: time.Now()})
	// quiet waits until twenty of a's frames in a row reached b's agent
	// as nothing new, and says where b's events stand.
	quiet := func() int {
		for deadline := time.Now().Add(5 * time.Second); ; {
			from := b.len()
			if !b.receiveMore(20, deadline, iv) {
				t.Fatal("a's frames kept being reported, or stopped")
			}
			if b.count(PeerFrame, from) == 0 {
				return from
			}
		}
	}
	from := quiet()
	b.ep.SetLocal(Local{Role: RoleStandby})
	ev, i := b.waitFor(t, PeerFrame, "", from, 2*time.Second)
	if ev.Frame.Role != RoleStandby || ev.Frame.EchoSeq == 0 {
		t.Errorf("a's answer: role %v, echoing frame %d", ev.Frame.Role, ev.Frame.EchoSeq)
	}
	// Once per change: the frames after the answer wait for Refresh.
	if !b.receiveMore(20, time.Now().Add(5*time.Second), iv) {
		t.Fatal("frames stopped")
	}
	if n := b.count(PeerFrame, i+1); n != 0 {
		t.Errorf("%d more frames that said nothing new were reported after the answer", n)
	}
}

// Two hosts run as the same node: each drops the other's frames as its
// own, so neither hears a peer. A frame in this node's name of another
// generation, authentic, is a twin's, and a twin that keeps sending for a
// dead interval is reported, once. This node's own frames, come back, are
// not; nor is a burst of those from before a restart, held in a queue.
func TestTwinIsReportedOnce(t *testing.T) {
	w := memWorld()
	const iv = 20 * time.Millisecond
	a := startOn(t, w.paths(t, "a"), 1, iv) // generation 1, dead interval 60 ms
	raw := w.paths(t, "b")[0].Conn
	s, _ := NewSigner([][]byte{testKey})
	send := func(gen, seq uint64) {
		f := Frame{Cluster: testCluster, Node: 1, Role: RoleActive, Generation: gen, Seq: seq, ActiveFor: -1, LastNewSession: -1}
		if _, err := raw.WriteTo(s.AppendFrame(nil, &f, 0), nil); err != nil {
			t.Fatal(err)
		}
	}
	send(1, 1)
	for seq := range uint64(5) {
		send(9, seq+1)
	}
	waitStat(t, a.ep, func(st Stats) bool { return st.Drops["own_node"] == 1 && st.Drops["twin"] == 5 })
	start := time.Now()
	seq := uint64(1)
	for ; a.count(Twin, 0) == 0; seq++ {
		if time.Since(start) > 2*time.Second {
			t.Fatal("a twin sending every interval was never reported")
		}
		send(7, seq)
		time.Sleep(iv) // the twin's own pace
	}
	ev, _ := a.waitFor(t, Twin, "", 0, 0)
	if ev.Frame.Generation != 7 || ev.Frame.Node != 1 || ev.Frame.Role != RoleActive {
		t.Errorf("twin reported as %+v", ev.Frame)
	}
	if d := time.Since(start); d < 3*iv {
		t.Errorf("reported after %v, before a dead interval of its frames", d)
	}
	for end := seq + 10; seq < end; seq++ {
		send(7, seq)
		time.Sleep(iv)
	}
	waitStat(t, a.ep, func(st Stats) bool { return st.Drops["twin"] >= 5+seq-1 })
	if n := a.count(Twin, 0); n != 1 {
		t.Errorf("twin reported %d times, want once", n)
	}
	if n := a.count(PeerAlive, 0); n != 0 {
		t.Errorf("a twin's frames made a peer alive %d times", n)
	}
}

// TestUnverifiedPeerIsReported: the peer's node signs with a key this node
// does not hold. A rolling key change's first frames (under a dead
// interval) are not reported; a dead interval of them is, once, and the
// report ends when they stop; frames of an unknown key beside authentic
// ones are no such report.
func TestUnverifiedPeerIsReported(t *testing.T) {
	w := memWorld()
	const iv = 20 * time.Millisecond
	a := startOn(t, w.paths(t, "a"), 1, iv) // dead interval 60 ms
	raw := w.paths(t, "b")[0].Conn
	otherKey := bytes.Repeat([]byte{0x17}, 32)
	theirs, _ := NewSigner([][]byte{otherKey})
	ours, _ := NewSigner([][]byte{testKey})
	seq := uint64(0)
	var sent time.Time
	send := func(s *Signer) {
		seq++
		f := Frame{Cluster: testCluster, Node: 2, Role: RoleStandby, Generation: 5, Seq: seq, ActiveFor: -1, LastNewSession: -1}
		sent = time.Now()
		if _, err := raw.WriteTo(s.AppendFrame(nil, &f, 0), nil); err != nil {
			t.Fatal(err)
		}
	}
	// A restarted node's first two frames, before it learns our keys.
	send(theirs)
	send(theirs)
	waitStat(t, a.ep, func(st Stats) bool { return st.Drops["unknown_key"] == 2 })
	time.Sleep(4 * iv) // more than a dead interval of nothing: that episode is over
	start := time.Now()
	for a.count(Unverified, 0) == 0 {
		if time.Since(start) > 2*time.Second {
			t.Fatal("a peer signing with another key every interval was never reported")
		}
		send(theirs)
		time.Sleep(iv) // the peer's own pace
	}
	if d := time.Since(start); d < 3*iv {
		t.Errorf("reported after %v, before a dead interval of its frames", d)
	}
	ev, _ := a.waitFor(t, Unverified, "", 0, 0)
	if ev.Frame.Node != 2 || ev.Frame.Key != Fingerprint(otherKey) || ev.Frame.Role != RoleStandby {
		t.Errorf("reported as %+v", ev.Frame)
	}
	for range 5 {
		send(theirs)
		time.Sleep(iv)
	}
	if n := a.count(Unverified, 0); n != 1 {
		t.Errorf("reported %d times, want once", n)
	}
	// They stop: the report ends twice a dead interval later (goneAfter),
	// not one: such a peer cannot hear this node to arbitrate.
	end, i := a.waitFor(t, UnverifiedEnded, "", 0, 2*time.Second)
	if d := end.At.Sub(sent); d < 6*iv {
		t.Errorf("ended %v after the last frame, before twice the dead interval (120 ms)", d)
	}
	// Unknown-key frames beside authentic ones: the peer is heard, and
	// whatever else sends is no report.
	for range 10 {
		send(ours)
		send(theirs)
		time.Sleep(iv)
	}
	if n := a.count(Unverified, i); n != 0 {
		t.Errorf("reported %d times beside authentic frames", n)
	}
	if n := a.count(PeerAlive, 0); n != 1 {
		t.Errorf("the peer came alive %d times, want once (on its authentic frames)", n)
	}
}

// A node that stops gracefully says so in its last frame (Leaving): what
// the agent said just before the endpoint's end goes out, though the loop
// then sees both at once and its select picks between them at random.
// Without that, a node stopped on purpose was taken for lost by its peer
// about half the time the two came together.
func TestLastWordIsSentAtStop(t *testing.T) {
	leaktest.Check(t)
	for i := range 20 {
		w := memWorld()
		a := startOn(t, w.paths(t, "a"), 1, time.Second) // no tick meanwhile
		b := startOn(t, w.paths(t, "b"), 2, time.Second)
		b.waitFor(t, PeerFrame, "", 0, 5*time.Second)
		parked, release := make(chan struct{}, 1), make(chan struct{})
		park := func() {
			select {
			case parked <- struct{}{}:
			default:
			}
			<-release
		}
		a.ep.park.Store(&park)
		a.ep.SendNow() // one more turn of the loop, which then parks
		<-parked
		from := b.len()
		a.ep.SetLocal(Local{Role: RoleStandby, Flags: FlagLeaving})
		a.cancel()
		a.ep.park.Store(nil)
		close(release)
		<-a.done
		// The frames of the turn before may come first.
		for deadline := time.Now().Add(2 * time.Second); !b.saw(from, func(ev Event) bool {
			return ev.Kind == PeerFrame && ev.Frame.Flags&FlagLeaving != 0
		}); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("run %d: no frame said leaving", i)
			}
		}
		b.stop()
	}
}

// A node whose state directory was lost (rebuilt from an image, or its
// package purged and installed again) starts with a boot counter below the
// one its peer remembers of it. The peer drops its frames as an older boot
// until they echo the peer's generation, and it drops the peer's, which
// echo its lost boot: before, each waited for the other for ever, and the
// node, hearing nothing, took the VIPs beside the active. The same with
// the surviving node's state directory copied onto a rebuilt one: it then
// remembers a peer generation above the peer's, and drops the peer's
// frames as an older boot.
func TestPeerWhoseCounterWentBackIsHeard(t *testing.T) {
	for _, tc := range []struct {
		name    string
		peerGen string // what the restarted node remembers of its peer
	}{
		{"state lost", ""},
		{"the peer's state copied in", strconv.FormatUint(9<<32, 10)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := vethWorld(t)
			const iv = 20 * time.Millisecond
			a := startOn(t, w.paths(t, "a"), 1, iv)
			b := startOn(t, w.paths(t, "b"), 2, iv, func(c *Config) { c.Generation = 5 << 32 })
			// a echoes b's generation once it reported a frame of it.
			a.waitFor(t, PeerFrame, "", 0, 2*time.Second)
			b.waitFor(t, PeerAlive, "", 0, 2*time.Second)
			b.stop()
			dir := t.TempDir()
			if tc.peerGen != "" {
				if err := os.WriteFile(filepath.Join(dir, "peer-generation"), []byte(tc.peerGen+"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			from := a.len()
			b = startOn(t, w.paths(t, "b"), 2, iv, func(c *Config) { c.Generation, c.StateDir = 1<<32|7, dir })
			b.waitFor(t, PeerAlive, "", 0, 2*time.Second)
			for {
				ev, i := a.waitFor(t, PeerFrame, "", from, 2*time.Second)
				if ev.Frame.Generation == 1<<32|7 {
					break
				}
				from = i + 1
			}
			if st := a.ep.Stats(); st.Drops[DropOldGeneration.String()] == 0 {
				t.Errorf("a dropped no frame of b's new boot as an older one (%+v): the test did not set the case up", st.Drops)
			}
		})
	}
}

// A restarted node whose active peer does not hear it (a one-way link, or
// not yet) gets frames that echo its previous boot, which it cannot use:
// it is told at once that an active peer is there (Unanswered), and for as
// long as such frames come; once the peer stops sending them, twice a dead
// interval of the peer's later it is told that ended. Frames of a peer
// that is not active tell it nothing: that peer holds no VIPs.
func TestActivePeerThatDoesNotAnswerIsReported(t *testing.T) {
	const iv = 20 * time.Millisecond
	links, paths := memLinks()
	a := startOn(t, paths("a"), 1, 5*iv) // the peer's dead interval, 300 ms, ends it
	b := startOn(t, paths("b"), 2, iv, func(c *Config) { c.Generation = 5 << 32 })
	a.waitFor(t, PeerFrame, "", 0, 2*time.Second)
	b.waitFor(t, PeerFrame, "", 0, 2*time.Second)
	// a no longer hears b, and b restarts.
	for _, l := range links {
		l.a.deaf.Store(true)
	}
	b.stop()
	b = startOn(t, paths("b"), 2, iv, func(c *Config) { c.Generation = 6 << 32 })
	// A starting peer's frames, unanswered for several of its
	// intervals: no report.
	for deadline := time.Now().Add(2 * time.Second); b.ep.Stats().Drops[DropStale.String()] < 3; time.Sleep(iv) {
		if time.Now().After(deadline) {
			t.Fatalf("b dropped no stale frame of a's: %+v", b.ep.Stats().Drops)
		}
	}
	if n := b.count(Unanswered, 0); n != 0 {
		t.Fatalf("b reported a starting peer's frames %d times", n)
	}
	a.ep.SetLocal(Local{Role: RoleActive, ActiveSince: time.Now()})
	ev, i := b.waitFor(t, Unanswered, "", 0, 2*time.Second)
	if ev.Frame.Node != 1 || ev.Frame.Role != RoleActive || ev.Frame.EchoGeneration != 5<<32 {
		t.Errorf("Unanswered carries %+v", ev.Frame)
	}
	// Still unanswered many dead intervals of b's and one of a's later:
	// one report, not ended.
	time.Sleep(15 * iv)
	if n, m := b.count(Unanswered, 0), b.count(UnansweredEnded, 0); n != 1 || m != 0 || b.count(PeerAlive, 0) != 0 {
		t.Fatalf("b: %d Unanswered, %d ended, %d PeerAlive, want 1, 0, 0", n, m, b.count(PeerAlive, 0))
	}
	// a hears b again and answers: ended, after the frame that was used.
	for _, l := range links {
		l.a.deaf.Store(false)
	}
	_, j := b.waitFor(t, UnansweredEnded, "", i, 2*time.Second)
	if _, k := b.waitFor(t, PeerFrame, "", i, 0); k > j {
		t.Errorf("UnansweredEnded (event %d) came before the peer's frame (%d)", j, k)
	}
	// Again, and a stops: ended twice a dead interval of a's after its
	// last frame (goneAfter), not one of b's.
	for _, l := range links {
		l.a.deaf.Store(true)
	}
	b.stop()
	b = startOn(t, paths("b"), 2, iv, func(c *Config) { c.Generation = 7 << 32 })
	b.waitFor(t, Unanswered, "", 0, 2*time.Second)
	a.stop()
	stopped := time.Now()
	b.waitFor(t, UnansweredEnded, "", 0, 2*time.Second)
	// Its last frame left at most one of its intervals (100 ms) before.
	if d := time.Since(stopped); d < 25*iv {
		t.Errorf("ended %v after the peer stopped: not by twice its dead interval (600 ms)", d)
	}
}

// An active's frames that this node cannot use (they echo an earlier boot
// of this node's) are reported again after a silence only when they go on
// past what was seen: numbered higher, of the newest boot. The same frames
// played again, or frames of an older boot of the peer's, are a recording,
// and neither keep this node from the VIPs anew nor say that a live
// active came back (the agent makes an active yield on that).
func TestUnansweredFramesPlayedAgainAreNotReported(t *testing.T) {
	w := memWorld()
	const iv = 20 * time.Millisecond
	a := startOn(t, w.paths(t, "a"), 1, iv, func(c *Config) { c.Generation = 6 << 32 })
	raw := w.paths(t, "b")[0].Conn
	s, _ := NewSigner([][]byte{testKey})
	frame := func(gen, seq uint64) []byte {
		f := Frame{Cluster: testCluster, Node: 2, Role: RoleActive, Generation: gen, Seq: seq, ActiveFor: time.Second, LastNewSession: -1, EchoGeneration: 5 << 32, EchoSeq: 40}
		return s.AppendFrame(nil, &f, 0)
	}
	var recorded [][]byte
	for seq := uint64(1); seq <= 5; seq++ {
		recorded = append(recorded, frame(10<<32, seq))
	}
	play := func(frames [][]byte) {
		t.Helper()
		for _, b := range frames {
			if _, err := raw.WriteTo(b, nil); err != nil {
				t.Fatal(err)
			}
			time.Sleep(iv)
		}
	}
	stale := func() uint64 { return a.ep.Stats().Drops[DropStale.String()] }
	play(recorded)
	_, i := a.waitFor(t, Unanswered, "", 0, 2*time.Second)
	_, j := a.waitFor(t, UnansweredEnded, "", i, 2*time.Second)

	// The same frames again, and then a boot of the peer's before them:
	// dropped and counted, never reported.
	before := stale()
	play(recorded)
	play([][]byte{frame(9<<32, 100), frame(9<<32, 101)})
	waitStat(t, a.ep, func(Stats) bool { return stale() == before+7 })
	if n := a.count(Unanswered, j); n != 0 {
		t.Fatalf("frames played again reported %d times", n)
	}
	// The boot seen, numbered on: reported.
	play([][]byte{frame(10<<32, 6)})
	if ev, _ := a.waitFor(t, Unanswered, "", j, 2*time.Second); ev.Frame.Generation != 10<<32 || ev.Frame.Seq != 6 {
		t.Errorf("reported %+v", ev.Frame)
	}
}

// The end of a report of a peer whose frames this node cannot use is what
// a standby takes over on, so it comes when the peer's frames have stopped
// for twice the dead interval, not at the send tick after that: the last
// frame comes just after a tick of the endpoint's, so its end falls just
// after another, and an end left to the ticks would come nearly an
// interval (400 ms) late. Frames that do not answer this boot are
// reported at once; frames signed with a key this node does not hold once
// they have come for a dead interval.
func TestUnusablePeerReportsEndOnTimeNotAtTheNextTick(t *testing.T) {
	const iv = 400 * time.Millisecond
	for _, c := range []struct {
		name        string
		key         []byte
		frames      int
		report, end EventKind
	}{
		{"unanswered", testKey, 1, Unanswered, UnansweredEnded},
		{"unverified", bytes.Repeat([]byte{0x17}, 32), 5, Unverified, UnverifiedEnded},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			w := memWorld()
			a := startOn(t, w.paths(t, "a"), 1, iv, func(c *Config) { c.Generation = 6 << 32 })
			raw := w.paths(t, "b")[0].Conn
			s, _ := NewSigner([][]byte{c.key})
			// The endpoint's frames queued since its start come at
			// once; the first read that waits is its tick.
			buf := make([]byte, FrameLen)
			for {
				start := time.Now()
				if _, _, err := raw.ReadFrom(buf); err != nil {
					t.Fatal(err)
				}
				if time.Since(start) > iv/2 {
					break
				}
			}
			var sent time.Time
			for seq := range c.frames {
				if seq > 0 {
					if _, _, err := raw.ReadFrom(buf); err != nil { // the next tick
						t.Fatal(err)
					}
				}
				f := Frame{Cluster: testCluster, Node: 2, Role: RoleActive, Generation: 10 << 32, Seq: uint64(seq + 1), ActiveFor: time.Second, LastNewSession: -1, EchoGeneration: 5 << 32, EchoSeq: 40}
				sent = time.Now()
				if _, err := raw.WriteTo(s.AppendFrame(nil, &f, 0), nil); err != nil {
					t.Fatal(err)
				}
			}
			_, i := a.waitFor(t, c.report, "", 0, 2*time.Second)
			ev, _ := a.waitFor(t, c.end, "", i, 10*iv)
			// Generous against a loaded machine, and still short of
			// the tick.
			if late := ev.At.Sub(sent) - 2*3*iv; late > iv/2 {
				t.Errorf("the report ended %v after twice the dead interval", late)
			}
		})
	}
}

// The peer's node running another cluster name (the name changed in one
// node's file) signs with a key of ours: reported as a peer that cannot be
// used, as one that holds another key is, so that a starting node does not
// take the VIPs beside it. Another pair's frames on the segment, signed
// with its own key, are only counted.
func TestPeerOfAnotherClusterIsReported(t *testing.T) {
	w := memWorld()
	const iv = 20 * time.Millisecond
	a := startOn(t, w.paths(t, "a"), 1, iv) // dead interval 60 ms
	raw := w.paths(t, "b")[0].Conn
	ours, _ := NewSigner([][]byte{testKey})
	theirs, _ := NewSigner([][]byte{bytes.Repeat([]byte{0x17}, 32)})
	seq := uint64(0)
	send := func(s *Signer, node uint8) {
		seq++
		f := Frame{Cluster: testCluster + 1, Node: node, Role: RoleActive, Generation: 5, Seq: seq, ActiveFor: -1, LastNewSession: -1}
		if _, err := raw.WriteTo(s.AppendFrame(nil, &f, 0), nil); err != nil {
			t.Fatal(err)
		}
	}
	// Another pair's nodes, with their own key: no report.
	for range 10 {
		send(theirs, 2)
		send(ours, 1) // in this node's name: never verified
		time.Sleep(iv)
	}
	waitStat(t, a.ep, func(st Stats) bool { return st.Drops["other_cluster"] == 20 })
	if n := a.count(Unverified, 0); n != 0 {
		t.Fatalf("another pair's frames reported %d times", n)
	}
	start := time.Now()
	for a.count(Unverified, 0) == 0 {
		if time.Since(start) > 2*time.Second {
			t.Fatal("the peer's node under another cluster name was never reported")
		}
		send(ours, 2)
		time.Sleep(iv)
	}
	ev, _ := a.waitFor(t, Unverified, "", 0, 0)
	if ev.Frame.Node != 2 || ev.Frame.Cluster != testCluster+1 {
		t.Errorf("reported as %+v", ev.Frame)
	}
	if st := a.ep.Stats(); st.Drops["peer_other_cluster"] == 0 {
		t.Errorf("drops: %+v", st.Drops)
	}
}

// A virtual machine restored from a snapshot taken while hapaird ran comes
// back as that process: the same generation, numbering its frames from
// where the snapshot left them. Its peer had heard higher numbers of that
// generation and dropped every frame as replayed, while the restored node
// heard the peer: one-way for as long as the snapshot was old, and a
// restored active stayed active beside the node that took over.
func TestProcessRestoredFromASnapshotIsHeard(t *testing.T) {
	w := vethWorld(t)
	const iv = 5 * time.Millisecond
	gen := func(c *Config) { c.Generation = 3<<32 | 9 }
	a := startOn(t, w.paths(t, "a"), 1, iv)
	cfg := Config{Cluster: testCluster, Node: 2, Keys: [][]byte{testKey}, Interval: iv, Dead: 3 * iv}
	gen(&cfg)
	ep, err := New(cfg, w.paths(t, "b")...)
	if err != nil {
		t.Fatal(err)
	}
	ep.seq = 1 << 20 // about a day's run at the default profile
	b := run(t, ep)
	a.waitFor(t, PeerAlive, "", 0, 2*time.Second)
	from := a.len()
	b.stop()
	_, from = a.waitFor(t, PeerLost, "", from, 2*time.Second)
	b = startOn(t, w.paths(t, "b"), 2, iv, gen) // the snapshot's process: numbering from 1
	b.waitFor(t, PeerAlive, "", 0, 2*time.Second)
	a.waitFor(t, PeerAlive, "", from, 2*time.Second)
	if a.ep.Stats().Drops[DropReplay.String()] == 0 {
		t.Errorf("a dropped nothing as replayed: the test did not set the case up")
	}
}

// A lossy link: every fifth frame a sends on the raw path is lost on the
// way. b counts the loss on that path from the gaps in the frames'
// numbers (a sends each frame on every path, numbered once), exactly as
// many as the link lost, and none on the path that lost none.
func TestLostFramesAreCountedPerPath(t *testing.T) {
	links, paths := memLinks()
	const iv = 5 * time.Millisecond
	startOn(t, paths("a"), 1, iv)
	b := startOn(t, paths("b"), 2, iv)
	for _, p := range []string{"raw", "udp"} {
		b.waitFor(t, PathUp, p, 0, 2*time.Second)
	}
	ends := map[string]*memConn{"raw": links["raw"].end(true), "udp": links["udp"].end(true)}
	// What b counted against what its ends of the links lost (to a
	// full queue too, under load), from here on.
	counted := func(p string) (heard, lost, linkLost int64) {
		s := b.ep.Stats().Paths[p]
		return int64(s.Heard), int64(s.Lost), ends[p].lost.Load()
	}
	type mark struct{ heard, lost, linkLost int64 }
	before := map[string]mark{}
	for _, p := range []string{"raw", "udp"} {
		h, l, ll := counted(p)
		before[p] = mark{h, l, ll}
	}
	ends["raw"].loseEvery.Store(5)
	poll := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(iv) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 10s", what)
			}
		}
	}
	poll("200 frames on raw", func() bool { h, _, _ := counted("raw"); return h-before["raw"].heard >= 200 })
	ends["raw"].loseEvery.Store(0)
	// Once a frame after the last one lost came, b knows of every loss.
	for _, p := range []string{"raw", "udp"} {
		poll(p+": b counts what the link lost", func() bool {
			_, l, ll := counted(p)
			return l-before[p].lost == ll-before[p].linkLost
		})
		h, l, _ := counted(p)
		heard, lost := h-before[p].heard, l-before[p].lost
		t.Logf("%s: b heard %d frames and counted %d lost, as the link lost", p, heard, lost)
		if p == "raw" && lost < heard/5 {
			t.Errorf("raw: %d of %d frames lost, want about one in five", lost, heard)
		}
	}
}

// A frame that comes after a later one (the UDP path may reorder) was
// counted lost when the later one came; it is not lost after all.
func TestLateFrameIsNotLost(t *testing.T) {
	var c pathCounts
	for _, f := range []struct{ newest, seq, lost uint64 }{
		{0, 5, 0}, // the first of a boot: nothing before it is known
		{5, 6, 0},
		{6, 9, 2},
		{9, 8, 1}, // late
		{9, 10, 1},
	} {
		c.frame(f.newest, f.seq)
		if got := c.lost.Load(); got != f.lost {
			t.Errorf("after %d (newest %d): %d lost, want %d", f.seq, f.newest, got, f.lost)
		}
	}
	if c.heard.Load() != 5 {
		t.Errorf("%d heard, want 5", c.heard.Load())
	}
}

// A long link: each frame takes 48 ms to come, 96 ms there and back,
// more than the dead interval of 60 ms (20 ms frames). Every frame still
// comes, and each path stays up; the peer's frames echo ours a round
// trip late, which is no sign that the peer does not hear us (before,
// no path was ever heard). A peer that stops hearing is still said to.
// Scaled at 20 ms, not 5: the link's delay is goroutine timers, and
// beside a loaded CPU (two hogs and a disk flood, race detector) their
// lateness at 5 ms was a jitter of the link's the test then measured.
func TestLongLinkIsNoOneWayLink(t *testing.T) {
	const iv = 20 * time.Millisecond
	links, paths := memLinks()
	for _, l := range links {
		l.a.delay.Store(int64(48 * time.Millisecond))
		l.b.delay.Store(int64(48 * time.Millisecond))
	}
	a := startOn(t, paths("a"), 1, iv)
	b := startOn(t, paths("b"), 2, iv)
	for _, n := range []*node{a, b} {
		for _, path := range []string{"raw", "udp"} {
			n.waitFor(t, PathHeard, path, 0, 2*time.Second)
		}
	}
	mark := [2]int{a.len(), b.len()}
	time.Sleep(100 * iv)
	for i, n := range []*node{a, b} {
		if c := n.count(PathUnheard, mark[i]); c != 0 {
			t.Errorf("%s: %d path-unheard events on a long link", []string{"a", "b"}[i], c)
		}
		if c := n.count(PathDown, mark[i]); c != 0 {
			t.Errorf("%s: %d path-down events on a long link", []string{"a", "b"}[i], c)
		}
	}
	// A real one-way link is still said: b stops hearing a, so a
	// hears b's echo grow old.
	mark[0] = a.len()
	for _, l := range links {
		l.b.deaf.Store(true)
	}
	for _, path := range []string{"raw", "udp"} {
		a.waitFor(t, PathUnheard, path, mark[0], 2*time.Second)
	}
}

// The round trip is the least age of new echoes over the last one to two
// windows; the same echo again (a peer that stopped hearing us) is no
// sample, however old it has grown.
func TestRoundTripCountsNewEchoesOnly(t *testing.T) {
	var r roundTrip
	t0 := time.Unix(1000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	ms := time.Millisecond
	if r.least() != 0 {
		t.Fatalf("no sample yet: %v", r.least())
	}
	r.sample(10, 30*ms, at(0))
	r.sample(11, 25*ms, at(5*ms))
	r.sample(11, 500*ms, at(480*ms)) // the same echo, older: not heard anew
	r.sample(9, 1*ms, at(490*ms))    // an older one, late
	if got := r.least(); got != 25*ms {
		t.Errorf("after two new echoes: %v, want 25ms", got)
	}
	// The next window: its samples and the last window's least.
	r.sample(12, 40*ms, at(rttWindow+10*ms))
	if got := r.least(); got != 25*ms {
		t.Errorf("a window on: %v, want the last window's 25ms", got)
	}
	// Two windows on, the 25 ms is forgotten: the link got longer.
	r.sample(13, 45*ms, at(2*rttWindow+20*ms))
	if got := r.least(); got != 40*ms {
		t.Errorf("two windows on: %v, want 40ms", got)
	}
}

// A late frame's echo (FlagLate: a relief's, or the first after a pause of
// the peer's loop) is not judged while it is within the relief's reach:
// the peer's loop was late, and no one-way link is said. One older than
// that is judged, so a peer whose loop is late at every wake-up, and
// marks every frame, still shows a link that stopped carrying ours.
func TestLateFrameEchoIsJudgedOnlyWhenLongGone(t *testing.T) {
	const dead = 5 * time.Millisecond
	e := &Endpoint{cfg: Config{Generation: 9, Dead: dead, Interval: time.Millisecond}, events: make(chan Event, 8)}
	t0 := time.Unix(1000, 0)
	for seq := uint64(1); seq <= 60; seq++ {
		e.sent[seq%sentRing].seq, e.sent[seq%sentRing].at = seq, t0.Add(time.Duration(seq)*time.Millisecond)
	}
	at := t0.Add(60 * time.Millisecond)
	var p *pathState
	judge := func(echo uint64, late bool) (said []EventKind) {
		f := Frame{EchoGeneration: 9, EchoSeq: echo}
		if late {
			f.Flags |= FlagLate
		}
		if !e.judgeEcho(context.Background(), p, &f, at) {
			t.Fatal("judgeEcho ended")
		}
		for len(e.events) > 0 {
			said = append(said, (<-e.events).Kind)
		}
		return said
	}
	for _, c := range []struct {
		echo uint64
		late bool
		want []EventKind
	}{
		{58, true, nil},                       // fresh anyway
		{30, true, nil},                       // 30 ms: a relief's, within 9 dead intervals
		{30, false, []EventKind{PathUnheard}}, // the loop's own: judged
		{10, true, []EventKind{PathUnheard}},  // 50 ms: past the relief's reach
	} {
		p = &pathState{Path: Path{Name: "raw"}, heardBack: true}
		p.echo.sample(59, time.Millisecond, at) // a round trip of 1 ms
		if got := judge(c.echo, c.late); !slices.Equal(got, c.want) {
			t.Errorf("echo %v old, late %v: %v, want %v", at.Sub(e.sent[c.echo%sentRing].at), c.late, got, c.want)
		}
	}
}

// The least age of a new echo is the round trip and the peer's wait for
// its next send: a constant up to an interval, set by the phase between
// the two nodes' timers. Judged against it whole, an echo was said stale
// up to an interval late, and at the default profile a one-way split
// lasted up to 100 ms longer. A short link (least age within an interval)
// is judged by the dead interval alone, a long one by its round trip as
// well (TestLongLinkIsNoOneWayLink).
func TestEchoIsJudgedWithoutThePeersPhase(t *testing.T) {
	const iv, dead = 100 * time.Millisecond, 300 * time.Millisecond
	e := &Endpoint{cfg: Config{Generation: 9, Dead: dead, Interval: iv}}
	t0 := time.Unix(1000, 0)
	for seq := uint64(1); seq <= 10; seq++ {
		e.sent[seq%sentRing].seq, e.sent[seq%sentRing].at = seq, t0.Add(time.Duration(seq)*iv)
	}
	for _, c := range []struct {
		least, age time.Duration
		fresh      bool
	}{
		{90 * time.Millisecond, 290 * time.Millisecond, true},  // the peer sends 90 ms after us: short link
		{90 * time.Millisecond, 350 * time.Millisecond, false}, // a dead interval past that: not heard
		{130 * time.Millisecond, 420 * time.Millisecond, true}, // a long link: its round trip allowed
		{130 * time.Millisecond, 440 * time.Millisecond, false},
	} {
		p := &pathState{}
		p.echo.sample(10, c.least, t0.Add(10*iv+c.least))
		f := Frame{EchoGeneration: 9, EchoSeq: 5}
		if got := e.echoFresh(p, &f, e.sent[5].at.Add(c.age)); got != c.fresh {
			t.Errorf("round trip and phase %v, echo %v old: fresh %v, want %v", c.least, c.age, got, c.fresh)
		}
	}
}
