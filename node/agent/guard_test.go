package agent

import (
	"github.com/hapair/hapair/heartbeat"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/hapair/hapair/vip"
)

var (
	t0       = time.Date(2026, 12, 7, 4, 0, 0, 0, time.UTC)
	someVIP  = vip.Addr{Prefix: netip.MustParsePrefix("192.0.2.100/24"), Interface: "pub0"}
	otherMAC = net.HardwareAddr{0x00, 0x00, 0x5e, 0x00, 0x53, 0x01}
)

// conflictMsg starts the line that reports a sighting.
const conflictMsg = "another host answers for a VIP this node holds"

// probeEvery is the default [announce] probe.
const probeEvery = 30 * time.Second

func at(d time.Duration) time.Time { return t0.Add(d) }

// The guard probes once this node has held the VIPs, and its peer said
// it holds none, for probeSettle; then every probeEvery.
func TestGuardProbesOnceTheHandoverHasSettled(t *testing.T) {
	g := vipGuard{lease: 10 * time.Second, every: probeEvery}
	// The peer is active and lets go as this node takes over.
	g.observe(at(0), false, true, true)
	g.observe(at(100*time.Millisecond), true, true, true)
	g.observe(at(200*time.Millisecond), true, true, false)
	for _, d := range []time.Duration{200 * time.Millisecond, time.Second, 1100 * time.Millisecond} {
		if g.due(at(d)) {
			t.Fatalf("due %v after the claim, %v after the peer let go", d-100*time.Millisecond, d-200*time.Millisecond)
		}
	}
	now := at(1200 * time.Millisecond)
	g.observe(now, true, true, false)
	if !g.due(now) {
		t.Fatal("not due once both had settled")
	}
	g.begin(now)
	if g.due(now) {
		t.Error("due again while a probe runs")
	}
	if appeared, gone := g.done(now, nil); len(appeared)+len(gone) != 0 {
		t.Errorf("nothing seen: %v appeared, %v gone", appeared, gone)
	}
	if g.due(now.Add(probeEvery - time.Millisecond)) {
		t.Error("due again before probeEvery")
	}
	if !g.due(now.Add(probeEvery)) {
		t.Error("not due after probeEvery")
	}
}

// A peer that is not heard may still hold the VIPs until its kernel's
// lease runs out (its daemon hung, its host frozen); after that, a host
// answering is news: the peer active too, or another host.
func TestGuardWaitsOutASilentPeersLease(t *testing.T) {
	g := vipGuard{lease: 10 * time.Second, every: probeEvery}
	g.observe(at(0), true, false, false)
	if g.due(at(10 * time.Second)) {
		t.Error("due within the silent peer's lease")
	}
	if !g.due(at(11 * time.Second)) {
		t.Error("not due once the silent peer's lease and the settle passed")
	}
}

// While the peer may hold the VIPs (active, holding, leaving, in a split),
// the guard does not probe: the peer would answer.
func TestGuardDoesNotProbeWhileThePeerMayHold(t *testing.T) {
	off := vipGuard{lease: 10 * time.Second}
	off.observe(at(0), true, true, false)
	if off.due(at(time.Hour)) {
		t.Error("due with probes off")
	}
	g := vipGuard{lease: 10 * time.Second, every: probeEvery}
	for s := time.Duration(0); s < 2*probeEvery; s += time.Second {
		g.observe(at(s), true, true, true)
		if g.due(at(s)) {
			t.Fatalf("due at %v with the peer saying it may hold", s)
		}
	}
}

// What a probe saw is told once: when a host first answers and when it
// no longer does.
func TestGuardTellsWhatChanged(t *testing.T) {
	g := vipGuard{lease: 10 * time.Second, every: probeEvery}
	g.observe(at(0), true, true, false)
	seen := []vip.Sighting{{Addr: someVIP, MAC: otherMAC}}
	probe := func(now time.Time, s []vip.Sighting) (int, int) {
		t.Helper()
		g.observe(now, true, true, false)
		if !g.due(now) {
			t.Fatalf("not due at %v", now.Sub(t0))
		}
		g.begin(now)
		appeared, gone := g.done(now, s)
		return len(appeared), len(gone)
	}
	if a, gn := probe(at(time.Second), seen); a != 1 || gn != 0 || g.read != 1 {
		t.Errorf("first sighting: %d appeared, %d gone", a, gn)
	}
	if c := g.conflicts(); len(c) != 1 || c[0].MAC != otherMAC.String() || !c[0].Since.Equal(at(time.Second)) {
		t.Errorf("conflicts %+v", c)
	}
	if a, gn := probe(at(time.Second+probeEvery), seen); a != 0 || gn != 0 {
		t.Errorf("the same host again: %d appeared, %d gone", a, gn)
	}
	if c := g.conflicts(); len(c) != 1 || !c[0].Since.Equal(at(time.Second)) {
		t.Errorf("conflicts after the second probe %+v: since is the first sighting", c)
	}
	if a, gn := probe(at(time.Second+2*probeEvery), nil); a != 0 || gn != 1 {
		t.Errorf("the host let go: %d appeared, %d gone", a, gn)
	}
	if c := g.conflicts(); len(c) != 0 {
		t.Errorf("conflicts %+v after the host let go", c)
	}
}

// An answer to a probe that began before this node let go, or before the
// peer said it may hold the VIPs, is not read: the peer may be what
// answered.
func TestGuardDropsAStaleAnswer(t *testing.T) {
	for _, c := range []struct {
		name                    string
		holding, heard, mayHold bool
	}{{"this node let go", false, true, false}, {"the peer may hold", true, true, true}, {"the peer went silent", true, false, false}} {
		g := vipGuard{lease: 10 * time.Second, every: probeEvery}
		g.observe(at(0), true, true, false)
		now := at(time.Second)
		g.begin(now)
		g.observe(now.Add(100*time.Millisecond), c.holding, c.heard, c.mayHold)
		appeared, _ := g.done(now.Add(200*time.Millisecond), []vip.Sighting{{Addr: someVIP, MAC: otherMAC}})
		if len(appeared) != 0 || len(g.conflicts()) != 0 || g.read != 0 {
			t.Errorf("%s during the probe: %v appeared, conflicts %v", c.name, appeared, g.conflicts())
		}
	}
	// Letting go forgets what was seen: a new hold probes afresh.
	g := vipGuard{lease: 10 * time.Second, every: probeEvery}
	g.observe(at(0), true, true, false)
	g.begin(at(time.Second))
	g.done(at(time.Second), []vip.Sighting{{Addr: someVIP, MAC: otherMAC}})
	g.observe(at(2*time.Second), false, true, false)
	if len(g.conflicts()) != 0 {
		t.Errorf("conflicts kept after letting go: %v", g.conflicts())
	}
	g.observe(at(3*time.Second), true, true, false)
	if !g.due(at(4 * time.Second)) {
		t.Error("a new hold does not probe once settled")
	}
}

// nextProbe waits for the agent's next probe and returns where to answer.
func (r *rig) nextProbe(t *testing.T) chan<- []vip.Sighting {
	t.Helper()
	select {
	case answer := <-r.vips.probes:
		return answer
	case <-time.After(5 * time.Second):
		t.Fatal("no probe")
		return nil
	}
}

// An answer is reported while the peer says it holds nothing; one that
// comes after the peer began to hold the VIPs (a split, a takeover), a
// moment after the last tick, may be the peer's and is not.
func TestAProbeAnsweredOnceThePeerHoldsIsNotReported(t *testing.T) {
	r := newRig(t, true, nil)
	r.vips.probes = make(chan chan []vip.Sighting)
	r.a.guard.every = time.Second
	r.run(t)
	r.hb.events <- frame(heartbeat.RoleStandby, 0)
	r.waitRole(t, "ACTIVE")
	r.nextProbe(t) <- []vip.Sighting{{Addr: someVIP, MAC: otherMAC}}
	deadline := time.Now().Add(2 * time.Second)
	for len(r.a.Status().VIPConflicts) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the sighting is not in status: %+v", r.a.Status().VIPConflicts)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if n := r.log.count(conflictMsg); n != 1 {
		t.Fatalf("%d conflict lines, want 1:\n%s", n, r.log.String())
	}
	answer := r.nextProbe(t)
	r.hb.events <- frame(heartbeat.RoleActive, heartbeat.FlagHolding)
	r.waitPeerRole(t, "ACTIVE")
	peerMAC := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0b}
	answer <- []vip.Sighting{{Addr: someVIP, MAC: peerMAC}}
	// The peer lets go; the next probe shows the answer above was
	// handled (a probe at a time).
	r.hb.events <- frame(heartbeat.RoleStandby, 0)
	r.nextProbe(t) <- nil
	if n := r.log.count(peerMAC.String()); n != 0 {
		t.Errorf("the answer given while the peer held the VIPs was reported:\n%s", r.log.String())
	}
	if r.a.Status().Role != "ACTIVE" {
		t.Errorf("role %s: the test means this node to keep the VIPs throughout", r.a.Status().Role)
	}
}

// A probe that could not ask says nothing of who answers: a host seen
// before stays listed, and is not told gone.
func TestGuardKeepsWhatItSawThroughAFailedProbe(t *testing.T) {
	g := vipGuard{lease: 10 * time.Second, every: probeEvery}
	g.observe(at(0), true, true, false)
	g.begin(at(time.Second))
	g.done(at(time.Second), []vip.Sighting{{Addr: someVIP, MAC: otherMAC}})
	now := at(time.Second + probeEvery)
	if !g.due(now) {
		t.Fatal("not due")
	}
	g.begin(now)
	g.failed()
	if len(g.conflicts()) != 1 || g.read != 1 {
		t.Errorf("after a failed probe: conflicts %v, %d read", g.conflicts(), g.read)
	}
	if !g.due(now.Add(probeEvery)) {
		t.Error("no probe after a failed one")
	}
}

// Status lists the hosts in one order, whatever the map's.
func TestGuardListsConflictsInOrder(t *testing.T) {
	g := vipGuard{lease: 10 * time.Second, every: probeEvery}
	g.observe(at(0), true, true, false)
	g.begin(at(time.Second))
	var seen []vip.Sighting
	for i := 9; i >= 0; i-- {
		seen = append(seen, vip.Sighting{Addr: someVIP, MAC: net.HardwareAddr{0, 0, 0x5e, 0, 0x53, byte(i)}})
	}
	g.done(at(time.Second), seen)
	c := g.conflicts()
	for i := 1; i < len(c); i++ {
		if c[i-1].MAC >= c[i].MAC {
			t.Fatalf("out of order: %v", c)
		}
	}
}
