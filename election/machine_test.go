package election

import (
	"slices"
	"strings"
	"testing"
	"time"
)

const dead = 300 * time.Millisecond

func at(ms int) time.Time { return epoch.Add(time.Duration(ms) * time.Millisecond) }

func started(preferred bool) *Machine {
	m := New(Config{Node: 1, Preferred: preferred, Dead: dead})
	m.Step(Event{Kind: Start, Now: at(0)})
	return m
}

// activeMachine is a machine that became active and has a standby peer.
func activeMachine(t *testing.T) *Machine {
	t.Helper()
	m := started(true)
	m.Step(Event{Kind: PeerFrame, Now: at(10), Peer: Peer{Role: Init}})
	m.Step(Event{Kind: PeerFrame, Now: at(20), Peer: Peer{Role: Standby}})
	m.Step(Event{Kind: Tick, Now: at(25)})
	if m.Role() != Active {
		t.Fatalf("setup: role %v", m.Role())
	}
	return m
}

func standbyMachine(t *testing.T) *Machine {
	t.Helper()
	m := started(false)
	m.Step(Event{Kind: PeerFrame, Now: at(10), Peer: Peer{Role: Active}})
	m.Step(Event{Kind: Tick, Now: at(15)})
	if m.Role() != Standby {
		t.Fatalf("setup: role %v", m.Role())
	}
	return m
}

func kinds(acts []Action) []ActionKind {
	var k []ActionKind
	for _, a := range acts {
		k = append(k, a.Kind)
	}
	return k
}

// hasReport says whether acts report something that says what.
func hasReport(acts []Action, what string) bool {
	return slices.ContainsFunc(acts, func(a Action) bool { return a.Kind == Report && strings.Contains(a.Reason, what) })
}

func transition(acts []Action) (Action, bool) {
	for _, a := range acts {
		if a.Kind == Transition {
			return a, true
		}
	}
	return Action{}, false
}

// Design 3: "Peer standby or silent: the preferred node becomes ACTIVE; the
// other waits for its window to end."
func TestStartupPreferredPeerSilent(t *testing.T) {
	m := started(true)
	m.Step(Event{Kind: Tick, Now: at(899)})
	if m.Role() != Init {
		t.Fatalf("active before the window ended: %v", m.Role())
	}
	acts := m.Step(Event{Kind: Tick, Now: at(900)})
	tr, ok := transition(acts)
	if m.Role() != Active || !ok || !strings.Contains(tr.Reason, "peer silent") {
		t.Fatalf("role %v, actions %v", m.Role(), acts)
	}
	if !slices.Contains(kinds(acts), ClaimVIPs) {
		t.Errorf("became active without claiming: %v", acts)
	}
}

func TestStartupPreferredPeerStandbyAtOnce(t *testing.T) {
	m := started(true)
	m.Step(Event{Kind: PeerFrame, Now: at(5), Peer: Peer{Role: Standby}})
	m.Step(Event{Kind: Tick, Now: at(10)})
	if m.Role() != Active {
		t.Fatalf("preferred node with a standby peer: %v", m.Role())
	}
}

// A starting node decides on the newest frame, not the first: frames held
// in a neighbour queue while a link was down arrive oldest first.
func TestStartupDecidesOnNewestFrame(t *testing.T) {
	m := started(true)
	m.Step(Event{Kind: PeerFrame, Now: at(5), Peer: Peer{Role: Standby}}) // stale
	m.Step(Event{Kind: PeerFrame, Now: at(5), Peer: Peer{Role: Active}})  // fresh
	m.Step(Event{Kind: Tick, Now: at(10)})
	if m.Role() != Standby {
		t.Fatalf("role %v: acted on a stale frame", m.Role())
	}
}

func TestStartupOtherWaitsForWindow(t *testing.T) {
	m := started(false)
	m.Step(Event{Kind: PeerFrame, Now: at(5), Peer: Peer{Role: Init, Facts: Facts{Preferred: true}}})
	if m.Role() != Init {
		t.Fatalf("non-preferred node moved early: %v", m.Role())
	}
	m.Step(Event{Kind: PeerFrame, Now: at(15), Peer: Peer{Role: Active}})
	m.Step(Event{Kind: Tick, Now: at(20)})
	if m.Role() != Standby {
		t.Fatalf("peer active: %v", m.Role())
	}
}

func TestStartupOtherPeerSilentTakesOver(t *testing.T) {
	m := started(false)
	m.Step(Event{Kind: Tick, Now: at(900)})
	if m.Role() != Active {
		t.Fatalf("non-preferred node with a silent peer after the window: %v", m.Role())
	}
}

// "No preemption: a recovered Primary stays standby."
func TestNoPreemption(t *testing.T) {
	m := started(true)
	m.Step(Event{Kind: PeerFrame, Now: at(5), Peer: Peer{Role: Active}})
	m.Step(Event{Kind: Tick, Now: at(6)})
	for ms := 10; ms < 5000; ms += 100 {
		m.Step(Event{Kind: PeerFrame, Now: at(ms), Peer: Peer{Role: Active}})
		m.Step(Event{Kind: Tick, Now: at(ms)})
	}
	if m.Role() != Standby {
		t.Fatalf("returning primary preempted: %v", m.Role())
	}
}

func TestStandbyTakesOverWhenPeerLost(t *testing.T) {
	m := standbyMachine(t)
	acts := m.Step(Event{Kind: PeerLost, Now: at(500)})
	tr, _ := transition(acts)
	if m.Role() != Active || tr.Reason != "peer lost: all paths silent for 300ms" {
		t.Fatalf("role %v, %v", m.Role(), acts)
	}
	// ACTIVE is said before the claim (an active peer sees the split at
	// once), Holding only after it (a leaving peer releases on Holding:
	// make-before-break).
	k := kinds(acts)
	claim := slices.Index(k, ClaimVIPs)
	if claim < 1 || k[0] != Advertise || acts[0].Advert.Role != Active || acts[0].Advert.Holding {
		t.Fatalf("first say ACTIVE, not holding, then claim: %v", acts)
	}
	if last := acts[len(acts)-1]; last.Kind != Advertise || !last.Advert.Holding {
		t.Errorf("say Holding after the claim: %v", acts)
	}
}

func TestStandbyTakesOverAtOnceWhenPeerLeavesOrFaults(t *testing.T) {
	for _, p := range []Peer{{Role: Active, Leaving: true}, {Role: Active, Fault: true}, {Role: Fault}} {
		m := standbyMachine(t)
		m.Step(Event{Kind: PeerFrame, Now: at(50), Peer: p})
		if m.Role() != Active {
			t.Errorf("peer %+v: role %v", p, m.Role())
		}
	}
}

func TestOnePathDownIsDegradedOnly(t *testing.T) {
	m := standbyMachine(t)
	acts := m.Step(Event{Kind: PathDown, Now: at(50), Path: "raw"})
	if m.Role() != Standby || len(acts) != 0 {
		t.Fatalf("path down changed something: %v %v", m.Role(), acts)
	}
	if d := m.Degraded(); len(d) != 1 || d[0] != "raw" {
		t.Errorf("degraded %v", d)
	}
	m.Step(Event{Kind: PathUp, Now: at(60), Path: "raw"})
	if len(m.Degraded()) != 0 {
		t.Errorf("still degraded after path up")
	}
}

// Self-fencing: "an active node that loses a critical check goes to FAULT,
// releases the VIP, and tells the peer in its next frame, sent at once."
func TestFaultReleasesAndAdvertises(t *testing.T) {
	m := activeMachine(t)
	acts := m.Step(Event{Kind: Health, Now: at(100), Healthy: false, Reason: "public link down"})
	if m.Role() != Fault {
		t.Fatalf("role %v", m.Role())
	}
	k := kinds(acts)
	if !slices.Contains(k, ReleaseVIPs) || k[len(k)-1] != Advertise || !m.Advert().Fault {
		t.Errorf("actions %v, advert %+v", acts, m.Advert())
	}
	m.Step(Event{Kind: Health, Now: at(200), Healthy: true})
	if m.Role() != Standby {
		t.Errorf("after recovery: %v, want STANDBY (no preemption)", m.Role())
	}
}

// "If both are in FAULT, the one that was active keeps the VIP and reports
// it": there is no one better to hand to.
func TestFaultWithoutEligibleStandbyKeepsVIPs(t *testing.T) {
	m := activeMachine(t)
	m.Step(Event{Kind: PeerFrame, Now: at(50), Peer: Peer{Role: Fault, Fault: true}})
	acts := m.Step(Event{Kind: Health, Now: at(100), Healthy: false, Reason: "media died"})
	if m.Role() != Active || slices.Contains(kinds(acts), ReleaseVIPs) || kinds(acts)[0] != Report {
		t.Fatalf("role %v, actions %v", m.Role(), acts)
	}
	// The peer recovers: now hand over.
	acts = m.Step(Event{Kind: PeerFrame, Now: at(200), Peer: Peer{Role: Standby}})
	if m.Role() != Fault || !slices.Contains(kinds(acts), ReleaseVIPs) {
		t.Fatalf("after the peer recovered: %v %v", m.Role(), acts)
	}
}

// The same when the fault came while the node was locked and the lock is
// lifted: what the lock held back is a handover, and with nobody to hand
// to the VIPs stay.
func TestUnlockedFaultWithoutEligibleStandbyKeepsVIPs(t *testing.T) {
	m := activeMachine(t)
	m.Step(Event{Kind: PeerLost, Now: at(500)})
	m.Step(Event{Kind: Lock, Now: at(600), Locked: true})
	m.Step(Event{Kind: Health, Now: at(700), Healthy: false, Reason: "media died"})
	acts := m.Step(Event{Kind: Lock, Now: at(800), Locked: false})
	if m.Role() != Active || slices.Contains(kinds(acts), ReleaseVIPs) || !slices.Contains(kinds(acts), Report) {
		t.Fatalf("unlocked in fault with no peer: role %v, actions %v", m.Role(), acts)
	}
	// A standby comes: now hand over.
	acts = m.Step(Event{Kind: PeerFrame, Now: at(900), Peer: Peer{Role: Standby}})
	if m.Role() != Fault || !slices.Contains(kinds(acts), ReleaseVIPs) {
		t.Fatalf("after a standby came: %v %v", m.Role(), acts)
	}
}

// An active in fault that kept its VIPs for want of a standby, when one
// comes back with older session state (it restarted: it holds none until
// it has loaded this node's): the active keeps the VIPs until the
// standby's position reaches its own, and the standby does not take over
// meanwhile; then the active steps down, and the standby takes over.
// Handing over at once dropped every session on both nodes.
func TestFaultedActiveHandsOverOnceTheStandbyCaughtUp(t *testing.T) {
	a := activeMachine(t)
	a.Step(Event{Kind: PeerLost, Now: at(100), Written: 500})
	a.Step(Event{Kind: Health, Now: at(200), Healthy: false, Reason: "media died", Written: 500})
	acts := a.Step(Event{Kind: PeerFrame, Now: at(300), Written: 500, Peer: Peer{Role: Standby, Written: 0}})
	if a.Role() != Active || slices.Contains(kinds(acts), ReleaseVIPs) || !hasReport(acts, "keeping the VIPs until it has caught up") {
		t.Fatalf("a standby back with nothing: role %v, actions %v", a.Role(), acts)
	}
	if a.Quiet() {
		t.Error("quiet while a bound may fire")
	}
	// The standby, which came up beside it, waits too.
	b := started(false)
	b.Step(Event{Kind: PeerFrame, Now: at(300), Written: 0, Peer: Peer{Role: Active, Fault: true, Written: 500}})
	acts = b.Step(Event{Kind: Tick, Now: at(310), Written: 0})
	if b.Role() != Standby || !hasReport(acts, "taking over once it hands over") {
		t.Fatalf("the standby beside it, with nothing: role %v, actions %v", b.Role(), acts)
	}
	b.Step(Event{Kind: PeerFrame, Now: at(320), Written: 0, Peer: Peer{Role: Active, Fault: true, Written: 500}})
	b.Step(Event{Kind: PeerFrame, Now: at(400), Written: 300, Peer: Peer{Role: Active, Fault: true, Written: 510}})
	if b.Role() != Standby {
		t.Fatalf("the standby took over halfway: %v", b.Role())
	}
	// Caught up, it still waits for the active's word: taking over now,
	// before the active has seen it caught up, makes a split brain.
	b.Step(Event{Kind: PeerFrame, Now: at(450), Written: 510, Peer: Peer{Role: Active, Fault: true, Written: 510}})
	if b.Role() != Standby {
		t.Fatalf("the standby took over before the active stepped down: %v", b.Role())
	}
	// Halfway, and on: the active waits for what it had when the
	// standby came back (500), not for writes since.
	a.Step(Event{Kind: PeerFrame, Now: at(400), Written: 510, Peer: Peer{Role: Standby, Written: 300}})
	if a.Role() != Active {
		t.Fatalf("stepped down halfway: %v", a.Role())
	}
	acts = a.Step(Event{Kind: PeerFrame, Now: at(500), Written: 520, Peer: Peer{Role: Standby, Written: 505}})
	tr, _ := transition(acts)
	if a.Role() != Fault || !slices.Contains(kinds(acts), ReleaseVIPs) || !strings.Contains(tr.Reason, "has caught up") {
		t.Fatalf("the standby caught up: role %v, actions %v", a.Role(), acts)
	}
	acts = b.Step(Event{Kind: PeerFrame, Now: at(510), Written: 520, Peer: Peer{Role: Fault, Fault: true, Written: 520}})
	if b.Role() != Active {
		t.Fatalf("the active stepped down, and its standby is %v: %v", b.Role(), acts)
	}
}

// A standby that starts beside an active in fault with newer sessions, and
// loads them before it hears that active's next frame, waits for the
// active's word all the same. Judged only at that frame, it took over at
// once, before the active had seen it caught up: a split brain the active
// won (active longest), and a session dropped on each node's resync (CI,
// the soak's "stop the standby, the active's media server dies, start the
// standby").
func TestStandbyStartedBesideAFaultedActiveWaitsForItsWord(t *testing.T) {
	b := started(false)
	b.Step(Event{Kind: PeerFrame, Now: at(300), Written: 0, Peer: Peer{Role: Active, Fault: true, Written: 500}})
	acts := b.Step(Event{Kind: Tick, Now: at(310), Written: 0})
	if b.Role() != Standby || !hasReport(acts, "taking over once it hands over") {
		t.Fatalf("started beside an active in fault with newer sessions: role %v, actions %v", b.Role(), acts)
	}
	acts = b.Step(Event{Kind: PeerFrame, Now: at(360), Written: 500, Peer: Peer{Role: Active, Fault: true, Written: 500}})
	if b.Role() != Standby {
		t.Fatalf("caught up, the standby took over before the active stepped down: %v", acts)
	}
	acts = b.Step(Event{Kind: PeerFrame, Now: at(400), Written: 500, Peer: Peer{Role: Fault, Fault: true, Written: 500}})
	if b.Role() != Active {
		t.Fatalf("the active stepped down, and its standby is %v: %v", b.Role(), acts)
	}
	// Beside an active in fault whose state it already holds, nothing
	// to wait for: it takes over at the frame, as before.
	c := started(false)
	c.Step(Event{Kind: PeerFrame, Now: at(300), Written: 500, Peer: Peer{Role: Active, Fault: true, Written: 500}})
	c.Step(Event{Kind: Tick, Now: at(310), Written: 500})
	c.Step(Event{Kind: PeerFrame, Now: at(360), Written: 500, Peer: Peer{Role: Active, Fault: true, Written: 500}})
	if c.Role() != Active {
		t.Fatalf("beside an active in fault whose state it holds: %v", c.Role())
	}
}

// The waits are bounded: a standby that does not catch up (its replication
// refused, a snapshot that does not load) gets the VIPs without the
// sessions it lacks at the active's bound, and a standby beside an older
// active, which hands over at once or never, takes over at twice that.
func TestFaultedActiveHandOverIsBounded(t *testing.T) {
	a := activeMachine(t)
	a.Step(Event{Kind: PeerLost, Now: at(100), Written: 500})
	a.Step(Event{Kind: Health, Now: at(200), Healthy: false, Reason: "media died", Written: 500})
	a.Step(Event{Kind: PeerFrame, Now: at(300), Written: 500, Peer: Peer{Role: Standby}})
	a.Step(Event{Kind: Tick, Now: at(300).Add(DefaultCatchUpBound - time.Millisecond), Written: 500})
	if a.Role() != Active {
		t.Fatalf("stepped down before the bound: %v", a.Role())
	}
	acts := a.Step(Event{Kind: Tick, Now: at(300).Add(DefaultCatchUpBound), Written: 500})
	tr, _ := transition(acts)
	if a.Role() != Fault || !strings.Contains(tr.Reason, "did not catch up") {
		t.Fatalf("at the bound: role %v, actions %v", a.Role(), acts)
	}
	b := standbyMachine(t)
	b.Step(Event{Kind: PeerFrame, Now: at(100), Peer: Peer{Role: Active, Fault: true, Written: 500}})
	b.Step(Event{Kind: Tick, Now: at(100).Add(2*DefaultCatchUpBound - time.Millisecond)})
	if b.Role() != Standby {
		t.Fatalf("took over before its bound: %v", b.Role())
	}
	// (Its first transition: this machine was never told that the peer
	// hears it, and a one-way rule then yields.)
	acts = b.Step(Event{Kind: Tick, Now: at(100).Add(2 * DefaultCatchUpBound)})
	if tr, _ := transition(acts); tr.To != Active || !strings.Contains(tr.Reason, "did not hand over") {
		t.Fatalf("at its bound: %v", acts)
	}
}

// A fenced active (its agent hangs; its core says FAULT for it) catches
// nobody up: its standby takes over at once, older state or not, as it
// does from a leaving one. So does a standby that holds the active's
// position, and one whose active's checks recover meanwhile stops waiting.
func TestStandbyWaitsOnlyForAFaultedActiveThatHandsOver(t *testing.T) {
	for _, p := range []Peer{
		{Role: Active, Fault: true, Fenced: true, Written: 500},
		{Role: Active, Fault: true, Leaving: true, Written: 500},
		{Role: Active, Fault: true, Written: 100},
	} {
		b := standbyMachine(t)
		if b.Step(Event{Kind: PeerFrame, Now: at(100), Written: 100, Peer: p}); b.Role() != Active {
			t.Errorf("beside %+v: %v", p, b.Role())
		}
	}
	b := standbyMachine(t)
	b.Step(Event{Kind: PeerFrame, Now: at(100), Peer: Peer{Role: Active, Fault: true, Written: 500}})
	b.Step(Event{Kind: PeerFrame, Now: at(200), Peer: Peer{Role: Active, Written: 500}})
	if !b.Quiet() {
		t.Error("still waiting on an active whose checks recovered")
	}
}

func TestGracefulStopMakeBeforeBreak(t *testing.T) {
	m := activeMachine(t)
	acts := m.Step(Event{Kind: Stop, Now: at(100)})
	if slices.Contains(kinds(acts), ReleaseVIPs) || !m.Advert().Leaving {
		t.Fatalf("released before the standby claimed: %v", acts)
	}
	// The standby says it is active but does not hold the VIPs yet:
	// keep them.
	acts = m.Step(Event{Kind: PeerFrame, Now: at(102), Peer: Peer{Role: Active}})
	if m.Role() != Active || slices.Contains(kinds(acts), ReleaseVIPs) {
		t.Fatalf("released before the standby held the VIPs: %v", acts)
	}
	// It holds them: only now release and exit.
	acts = m.Step(Event{Kind: PeerFrame, Now: at(103), Peer: Peer{Role: Active, Holding: true}})
	if k := kinds(acts); !slices.Contains(k, ReleaseVIPs) || k[len(k)-1] != Exit {
		t.Fatalf("actions %v", acts)
	}
}

func TestGracefulStopBoundAndNoPeer(t *testing.T) {
	m := activeMachine(t)
	m.Step(Event{Kind: Stop, Now: at(100)})
	m.Step(Event{Kind: Tick, Now: at(1099)})
	if m.Role() != Active {
		t.Fatal("gave up before the bound")
	}
	acts := m.Step(Event{Kind: Tick, Now: at(1100)})
	if k := kinds(acts); !slices.Contains(k, ReleaseVIPs) || k[len(k)-1] != Exit {
		t.Fatalf("bound passed: %v", acts)
	}

	m = activeMachine(t)
	m.Step(Event{Kind: PeerLost, Now: at(50)})
	acts = m.Step(Event{Kind: Stop, Now: at(100)})
	if k := kinds(acts); !slices.Contains(k, ReleaseVIPs) || k[len(k)-1] != Exit {
		t.Fatalf("no peer: %v", acts)
	}
}

// A node that stops gracefully says so in its last frame, after any
// handover: Leaving, not active, then Exit. Its peer takes it for stopped,
// not lost, and neither hands over to it nor waits for it.
func TestGracefulStopSaysLeavingLast(t *testing.T) {
	lastAdvert := func(t *testing.T, acts []Action) Advert {
		t.Helper()
		k := kinds(acts)
		if len(k) < 2 || k[len(k)-1] != Exit || k[len(k)-2] != Advertise {
			t.Fatalf("actions %v, want an advert then Exit last", k)
		}
		return acts[len(acts)-2].Advert
	}
	m := standbyMachine(t)
	if ad := lastAdvert(t, m.Step(Event{Kind: Stop, Now: at(100)})); ad.Role != Standby || !ad.Leaving {
		t.Errorf("a stopping standby's last advert: %+v", ad)
	}
	m = activeMachine(t)
	m.Step(Event{Kind: Stop, Now: at(100)})
	acts := m.Step(Event{Kind: PeerFrame, Now: at(103), Peer: Peer{Role: Active, Holding: true}})
	if ad := lastAdvert(t, acts); ad.Role != Standby || !ad.Leaving || ad.Holding {
		t.Errorf("a stopped active's last advert: %+v", ad)
	}

	// The peer of a stopping standby: an active in fault that kept its
	// VIPs for want of a standby keeps them, and a switchover to it is
	// refused.
	m = activeMachine(t)
	m.Step(Event{Kind: PeerFrame, Now: at(50), Peer: Peer{Role: Fault, Fault: true}})
	m.Step(Event{Kind: Health, Now: at(100), Healthy: false, Reason: "media died"})
	acts = m.Step(Event{Kind: PeerFrame, Now: at(200), Peer: Peer{Role: Standby, Leaving: true}})
	if m.Role() != Active || slices.Contains(kinds(acts), ReleaseVIPs) {
		t.Fatalf("handed over to a standby that is stopping: %v %v", m.Role(), acts)
	}
	acts = m.Step(Event{Kind: Switchover, Now: at(300), Force: true})
	if !slices.Contains(kinds(acts), Refused) {
		t.Errorf("a switchover to a stopping standby: %v", acts)
	}

	// Both stop at once: an active handing over to a standby that then
	// says it stops lets go and exits at once, rather than wait for the
	// peer's loss or the handover's bound; a switchover stays active.
	m = activeMachine(t)
	m.Step(Event{Kind: Stop, Now: at(100)})
	acts = m.Step(Event{Kind: PeerFrame, Now: at(101), Peer: Peer{Role: Standby, Leaving: true}})
	if k := kinds(acts); !slices.Contains(k, ReleaseVIPs) || k[len(k)-1] != Exit {
		t.Errorf("stopping beside a stopping standby: %v", acts)
	}
	m = activeMachine(t)
	m.Step(Event{Kind: Switchover, Now: at(100)})
	acts = m.Step(Event{Kind: PeerFrame, Now: at(101), Peer: Peer{Role: Standby, Leaving: true}})
	if m.Role() != Active || m.Advert().Leaving || !slices.Contains(kinds(acts), Refused) {
		t.Errorf("a switchover to a standby that then stops: %v %+v %v", m.Role(), m.Advert(), acts)
	}
}

func TestSwitchover(t *testing.T) {
	m := activeMachine(t)
	m.Step(Event{Kind: Switchover, Now: at(100)})
	m.Step(Event{Kind: PeerFrame, Now: at(102), Peer: Peer{Role: Active, Holding: true}})
	if m.Role() != Standby {
		t.Fatalf("after switchover: %v", m.Role())
	}
	if acts := m.Step(Event{Kind: Switchover, Now: at(200)}); kinds(acts)[0] != Refused {
		t.Errorf("switchover on a standby: %v", acts)
	}
	m = activeMachine(t)
	m.Step(Event{Kind: Lock, Now: at(30), Locked: true})
	if acts := m.Step(Event{Kind: Switchover, Now: at(40)}); kinds(acts)[0] != Refused || !strings.Contains(acts[0].Reason, "locked") {
		t.Errorf("switchover on a locked node: %v", acts)
	}
	m.Step(Event{Kind: Switchover, Now: at(50), Force: true})
	if !m.Advert().Leaving {
		t.Errorf("forced switchover on a locked node did not start")
	}
}

// A standby locked in the same instant as the switchover began, before
// its frame said so: the active hears the lock and stays, at once rather
// than at the handover's bound, saying why; a stopping node lets go.
func TestSwitchoverToAStandbyLockedMeanwhile(t *testing.T) {
	// Heard before the switchover: refused, saying why.
	m0 := activeMachine(t)
	m0.Step(Event{Kind: PeerFrame, Now: at(90), Peer: Peer{Role: Standby, Locked: true}})
	if acts := m0.Step(Event{Kind: Switchover, Now: at(100)}); len(acts) == 0 || acts[0].Kind != Refused || !strings.Contains(acts[0].Reason, "the peer is locked") {
		t.Errorf("a switchover to a standby known locked: %v", acts)
	}
	m := activeMachine(t)
	m.Step(Event{Kind: Switchover, Now: at(100)})
	acts := m.Step(Event{Kind: PeerFrame, Now: at(102), Peer: Peer{Role: Standby, Locked: true}})
	if m.Role() != Active || m.Advert().Leaving || len(acts) == 0 || acts[0].Kind != Refused || !strings.Contains(acts[0].Reason, "the peer is locked") {
		t.Errorf("role %v, leaving %v, actions %v", m.Role(), m.Advert().Leaving, acts)
	}
	m = activeMachine(t)
	m.Step(Event{Kind: Stop, Now: at(100)})
	acts = m.Step(Event{Kind: PeerFrame, Now: at(102), Peer: Peer{Role: Standby, Fault: true}})
	if k := kinds(acts); !slices.Contains(k, ReleaseVIPs) || k[len(k)-1] != Exit {
		t.Errorf("stopping beside a standby in fault: %v", acts)
	}
}

// A standby whose heartbeats say it holds fewer writes than the active
// (it restarted, and the active's acknowledgements are of the connection
// before): the switchover waits for them to show every write, up to the
// handoff's bound (a second at least), and is refused past it, or at once
// when the standby can no longer take over. Writes are paused meanwhile,
// so the position holds.
func TestSwitchoverWaitsForTheStandbysWord(t *testing.T) {
	const w = 20
	behind := Peer{Role: Standby, Written: 5}
	pending := func(t *testing.T) *Machine {
		t.Helper()
		m := activeMachine(t)
		m.Step(Event{Kind: PeerFrame, Now: at(90), Peer: behind, Written: w})
		if acts := m.Step(Event{Kind: Switchover, Now: at(100), Written: w}); len(acts) != 0 || m.Advert().Leaving || m.Quiet() {
			t.Fatalf("a switchover to a standby behind: %v, leaving %v, quiet %v", acts, m.Advert().Leaving, m.Quiet())
		}
		return m
	}

	m := pending(t)
	m.Step(Event{Kind: PeerFrame, Now: at(150), Peer: behind, Written: w})
	m.Step(Event{Kind: Tick, Now: at(200), Written: w})
	if m.Advert().Leaving {
		t.Fatal("handing over to a standby still behind")
	}
	m.Step(Event{Kind: PeerFrame, Now: at(250), Peer: Peer{Role: Standby, Written: w}, Written: w})
	if !m.Advert().Leaving {
		t.Fatal("the standby caught up and the switchover did not start")
	}

	m = pending(t)
	if acts := m.Step(Event{Kind: Tick, Now: at(100 + int(2*dead/time.Millisecond)), Written: w}); len(acts) != 0 {
		t.Fatalf("refused before a second: %v", acts)
	}
	acts := m.Step(Event{Kind: Tick, Now: at(1100), Written: w})
	if m.Advert().Leaving || len(acts) == 0 || acts[0].Kind != Refused || !strings.Contains(acts[0].Reason, "holds writes up to 5, this node up to 20") {
		t.Fatalf("at the bound: leaving %v, %v", m.Advert().Leaving, acts)
	}
	if acts := m.Step(Event{Kind: PeerFrame, Now: at(1200), Peer: Peer{Role: Standby, Written: w}, Written: w}); m.Advert().Leaving || len(acts) != 0 {
		t.Fatalf("a refused switchover started later: %v", acts)
	}

	m = pending(t)
	acts = m.Step(Event{Kind: PeerFrame, Now: at(150), Peer: Peer{Role: Standby, Written: 5, Locked: true}, Written: w})
	if len(acts) == 0 || acts[0].Kind != Refused || !strings.Contains(acts[0].Reason, "the peer is locked") {
		t.Fatalf("standby locked while waited for: %v", acts)
	}
	m = pending(t)
	acts = m.Step(Event{Kind: PeerLost, Now: at(150), Written: w})
	if len(acts) == 0 || acts[0].Kind != Refused || !strings.Contains(acts[0].Reason, "not heard") {
		t.Fatalf("standby lost while waited for: %v", acts)
	}
	m = pending(t)
	m.Step(Event{Kind: Stop, Now: at(150), Written: w})
	if acts := m.Step(Event{Kind: Tick, Now: at(1200), Written: w}); slices.ContainsFunc(acts, func(a Action) bool { return a.Kind == Refused }) {
		t.Fatalf("a stop overtook the switchover, which was refused later: %v", acts)
	}
}

// A preferred node back as a standby (its checks recovered, or its lease ran
// out while it was frozen) reads frames that queued before that: the peer
// said STANDBY then, and has taken over since. Such a frame must not make
// it take the VIPs as if nobody held them; the peer's answer to its
// change, received after it, does when the peer really is a standby.
func TestStandbyActsOnlyOnFramesAfterItBecameOne(t *testing.T) {
	m := activeMachine(t)
	m.Step(Event{Kind: Health, Now: at(100), Healthy: false, Reason: "lease ran out"})
	m.Step(Event{Kind: Health, Now: at(5000), Healthy: true})
	if m.Role() != Standby {
		t.Fatalf("setup: %v", m.Role())
	}
	if m.Step(Event{Kind: PeerFrame, Now: at(150), Peer: Peer{Role: Standby}}); m.Role() != Standby {
		t.Fatal("took over on a frame from before it became a standby")
	}
	m.Step(Event{Kind: PeerFrame, Now: at(400), Peer: Peer{Role: Active, Holding: true}})
	m.Step(Event{Kind: PeerFrame, Now: at(5001), Peer: Peer{Role: Active, Holding: true}})
	if m.Role() != Standby {
		t.Fatalf("beside an active peer: %v", m.Role())
	}

	m = activeMachine(t)
	m.Step(Event{Kind: Health, Now: at(100), Healthy: false, Reason: "check"})
	m.Step(Event{Kind: Health, Now: at(5000), Healthy: true})
	m.Step(Event{Kind: PeerFrame, Now: at(150), Peer: Peer{Role: Standby}})
	if m.Step(Event{Kind: PeerFrame, Now: at(5002), Peer: Peer{Role: Standby}}); m.Role() != Active {
		t.Fatalf("the peer's answer says nobody is active: %v", m.Role())
	}
}

func TestSwitchoverNotTakenUpStaysActive(t *testing.T) {
	m := activeMachine(t)
	m.Step(Event{Kind: Switchover, Now: at(100)})
	if acts := m.Step(Event{Kind: Tick, Now: at(1099)}); len(acts) != 0 || !m.Advert().Leaving {
		t.Fatalf("gave up before the bound: %v", acts)
	}
	acts := m.Step(Event{Kind: Tick, Now: at(1100)})
	if m.Role() != Active || m.Advert().Leaving || slices.Contains(kinds(acts), ReleaseVIPs) || kinds(acts)[0] != Refused {
		t.Fatalf("role %v, leaving %v, actions %v", m.Role(), m.Advert().Leaving, acts)
	}
}

// At turbo (a 5 ms dead interval) a loaded standby says it holds the VIPs
// well after two dead intervals. A planned handover waits a second at
// least (the VIPs stay held meanwhile), and a standby that said ACTIVE
// is never left beside an active that changed its mind: at the bound the
// handover completes. Before, a switchover under a write stream at turbo
// stayed active beside it every time (a split brain), and a stop
// released the VIPs tens of milliseconds before anybody held them.
func TestHandoverWaitsForASlowStandbysClaim(t *testing.T) {
	for _, stop := range []bool{false, true} {
		m := New(Config{Node: 1, Preferred: true, Dead: 5 * time.Millisecond})
		m.Step(Event{Kind: Start, Now: at(0)})
		m.Step(Event{Kind: PeerFrame, Now: at(1), Peer: Peer{Role: Standby}})
		m.Step(Event{Kind: Tick, Now: at(2)})
		if m.Role() != Active {
			t.Fatalf("setup: %v", m.Role())
		}
		kind := Switchover
		if stop {
			kind = Stop
		}
		m.Step(Event{Kind: kind, Now: at(10)})
		m.Step(Event{Kind: PeerFrame, Now: at(12), Peer: Peer{Role: Active}})
		for ms := 13; ms < 60; ms++ {
			if acts := m.Step(Event{Kind: Tick, Now: at(ms)}); len(acts) != 0 {
				t.Fatalf("stop %v: at %d ms, the peer claiming: %v", stop, ms, acts)
			}
		}
		m.Step(Event{Kind: PeerFrame, Now: at(60), Peer: Peer{Role: Active, Holding: true}})
		if m.Role() != Standby {
			t.Fatalf("stop %v: the peer holds the VIPs: %v", stop, m.Role())
		}
	}
	m := New(Config{Node: 1, Preferred: true, Dead: 5 * time.Millisecond})
	m.Step(Event{Kind: Start, Now: at(0)})
	m.Step(Event{Kind: PeerFrame, Now: at(1), Peer: Peer{Role: Standby}})
	m.Step(Event{Kind: Tick, Now: at(2)})
	m.Step(Event{Kind: Switchover, Now: at(10)})
	m.Step(Event{Kind: PeerFrame, Now: at(12), Peer: Peer{Role: Active}})
	acts := m.Step(Event{Kind: Tick, Now: at(1010)})
	if m.Role() != Standby || slices.Contains(kinds(acts), Refused) {
		t.Fatalf("the peer said ACTIVE and never that it holds them: %v %v", m.Role(), acts)
	}
}

func TestVIPRemovedIsReclaimed(t *testing.T) {
	m := activeMachine(t)
	if acts := m.Step(Event{Kind: VIPRemoved, Now: at(50)}); len(acts) != 1 || acts[0].Kind != ClaimVIPs {
		t.Fatalf("%v", acts)
	}
	s := standbyMachine(t)
	if acts := s.Step(Event{Kind: VIPRemoved, Now: at(50)}); len(acts) != 0 {
		t.Fatalf("standby reclaims: %v", acts)
	}
}

// Design 5 / style 4: "A locked node never changes role by itself", as one
// table running every event against a locked machine in each role.
func TestLockedNeverChangesRoleByItself(t *testing.T) {
	events := []Event{
		{Kind: Tick, Now: at(5000)},
		{Kind: PeerLost, Now: at(5000)},
		{Kind: PeerFrame, Now: at(5000), Peer: Peer{Role: Active, Leaving: true}},
		{Kind: PeerFrame, Now: at(5000), Peer: Peer{Role: Active, Fault: true}},
		{Kind: PeerFrame, Now: at(5000), Peer: Peer{Role: Fault}},
		{Kind: PeerFrame, Now: at(5000), Peer: Peer{Role: Standby}},
		{Kind: PeerFrame, Now: at(5000), Peer: Peer{Role: Active, SplitBrain: true, Facts: Facts{Node: 2, ActiveFor: time.Hour, LastNewSession: time.Millisecond}}},
		{Kind: Health, Now: at(5000), Healthy: false, Reason: "media died"},
		{Kind: Health, Now: at(5000), Healthy: true},
		{Kind: PathDown, Now: at(5000), Path: "raw"},
		{Kind: VIPRemoved, Now: at(5000)},
		{Kind: NewSession, Now: at(5000)},
		{Kind: Switchover, Now: at(5000)},
	}
	setups := map[string]func(*testing.T) *Machine{"active": activeMachine, "standby": standbyMachine}
	for name, setup := range setups {
		for _, ev := range events {
			m := setup(t)
			m.Step(Event{Kind: Lock, Now: at(1000), Locked: true})
			before := m.Role()
			// Each event twice, and a tick after, so delayed rules fire.
			m.Step(ev)
			m.Step(ev)
			m.Step(Event{Kind: Tick, Now: at(9000)})
			if m.Role() != before {
				t.Errorf("locked %s: %v moved it to %v", name, ev.Kind, m.Role())
			}
		}
	}
}

// Design 5: "a locked active does not step down on ... fault". Its frames
// say FAULT while it keeps the VIPs, and its standby took over at every
// one: two actives, an arbitration the locked one won, and again at the
// next frame, every 10 ms for as long as the fault lasted. The standby
// says once why it waits; it takes over when the locked active leaves (a
// dead agent's core says so), or when it is unlocked in fault.
func TestStandbyLeavesALockedActiveInFaultAlone(t *testing.T) {
	m := standbyMachine(t)
	locked := Peer{Role: Active, Fault: true, Locked: true, Facts: Facts{Locked: true}}
	acts := m.Step(Event{Kind: PeerFrame, Now: at(500), Peer: locked})
	if m.Role() != Standby || !hasReport(acts, "locked: it keeps its role") {
		t.Fatalf("beside a locked active in fault: %v, %v", m.Role(), acts)
	}
	for i := range 5 {
		if acts := m.Step(Event{Kind: PeerFrame, Now: at(600 + 100*i), Peer: locked}); m.Role() != Standby || len(acts) != 0 {
			t.Fatalf("frame %d of a locked active in fault: %v, %v", i, m.Role(), acts)
		}
	}
	unlocked := locked
	unlocked.Locked, unlocked.Facts.Locked = false, false
	if m.Step(Event{Kind: PeerFrame, Now: at(1200), Peer: unlocked}); m.Role() != Active {
		t.Fatalf("beside an active unlocked in fault: %v", m.Role())
	}
	m = standbyMachine(t)
	m.Step(Event{Kind: PeerFrame, Now: at(500), Peer: locked})
	leaving := locked
	leaving.Leaving = true
	if m.Step(Event{Kind: PeerFrame, Now: at(600), Peer: leaving}); m.Role() != Active {
		t.Fatalf("beside a locked active that leaves: %v", m.Role())
	}
}

func TestLockedStandbyReportsWhyItDoesNotTakeOver(t *testing.T) {
	m := standbyMachine(t)
	m.Step(Event{Kind: Lock, Now: at(20), Locked: true})
	acts := m.Step(Event{Kind: PeerLost, Now: at(400)})
	if len(acts) != 1 || acts[0].Kind != Report || !strings.Contains(acts[0].Reason, "locked") {
		t.Fatalf("%v", acts)
	}
	// Unlocked with the peer still lost, it takes over: redundancy was
	// only held back by the lock.
	m.Step(Event{Kind: Lock, Now: at(500), Locked: false})
	if m.Role() != Active {
		t.Errorf("unlocked standby with a lost peer: %v", m.Role())
	}
}

// Design 3: "A node that starts or restarts never becomes active over a
// peer that holds newer session state ... a peer whose boot generation
// changed is a peer that restarted: the standby, holding every
// acknowledged write, takes over, and the restarted node resyncs from it."
func TestRestartedActiveIsReplacedByTheStandby(t *testing.T) {
	m := standbyInSync(t)
	// The active's daemon is killed and back before the dead interval.
	acts := m.Step(Event{Kind: PeerFrame, Now: at(150), Written: 200, Peer: Peer{Role: Init, Generation: 2, Facts: Facts{Preferred: true}}})
	tr, ok := transition(acts)
	if m.Role() != Active || !ok || !strings.Contains(tr.Reason, "peer restarted") {
		t.Fatalf("role %v, actions %v", m.Role(), acts)
	}
	if i := slices.IndexFunc(acts, func(a Action) bool { return a.Kind == NotifyFailover }); i < 0 || acts[i].PeerWritten != 200 {
		t.Errorf("no failover notice against the old active's position 200: %v", acts)
	}
	// The same generation again is the same daemon: nothing happens.
	l := lockedStandby(t)
	l.Step(Event{Kind: PeerFrame, Now: at(150), Peer: Peer{Role: Init, Generation: 2}})
	if l.Role() != Standby {
		t.Errorf("a locked standby took over on a peer restart: %v", l.Role())
	}
}

// A standby that did not run while the active restarted (its hapaird
// stopped, its lease run out) may first hear the new boot when it already
// says ACTIVE: it took over because this node could not. It is the
// active; taking over made a split brain.
func TestARestartedPeerAlreadyActiveIsNotReplaced(t *testing.T) {
	m := standbyInSync(t)
	acts := m.Step(Event{Kind: PeerFrame, Now: at(3000), Written: 200, Peer: Peer{Role: Active, Generation: 2, Written: 3, Facts: Facts{Preferred: true, ActiveFor: 2 * time.Second}}})
	if m.Role() != Standby || len(acts) != 0 {
		t.Fatalf("role %v, actions %v", m.Role(), acts)
	}
	// Leaving, it is handed over to at once, as any active.
	acts = m.Step(Event{Kind: PeerFrame, Now: at(3100), Written: 200, Peer: Peer{Role: Active, Generation: 2, Written: 3, Leaving: true}})
	if tr, ok := transition(acts); m.Role() != Active || !ok || tr.Reason != "peer leaving" {
		t.Errorf("a leaving peer: role %v, actions %v", m.Role(), acts)
	}
}

// A restarted active defers to the standby's newer sessions (design 3);
// when that standby then cannot take over (its hapaird stopped and its
// core fenced it, or its checks failed), nobody would hold the VIPs for
// as long as it stays so. This node takes them, as it would have at the
// end of its start-up window had the peer been in fault then.
func TestAStandbyBesideANewerStandbyInFaultTakesOver(t *testing.T) {
	m := started(true)
	peer := Peer{Role: Standby, Generation: 1, Written: 27}
	m.Step(Event{Kind: PeerFrame, Now: at(10), Peer: peer})
	for ms := 20; m.Role() == Init && ms < 60_000; ms += 100 {
		m.Step(Event{Kind: Tick, Now: at(ms)})
	}
	if m.Role() != Standby {
		t.Fatalf("setup: %v", m.Role())
	}
	now := int(m.roleAt.Sub(epoch)/time.Millisecond) + 1000
	peer.Fault, peer.Fenced = true, true
	acts := m.Step(Event{Kind: PeerFrame, Now: at(now), Peer: peer})
	if tr, ok := transition(acts); m.Role() != Active || !ok || tr.Reason != "no active node: the peer is in fault" {
		t.Fatalf("role %v, actions %v", m.Role(), acts)
	}
}

// standbyInSync is a standby whose active, of boot generation 1, and it
// hold writes up to 200.
func standbyInSync(t *testing.T) *Machine {
	t.Helper()
	m := started(false)
	m.Step(Event{Kind: PeerFrame, Now: at(10), Written: 0, Peer: Peer{Role: Active, Generation: 1, Written: 0}})
	m.Step(Event{Kind: Tick, Now: at(15)})
	m.Step(Event{Kind: PeerFrame, Now: at(100), Written: 200, Peer: Peer{Role: Active, Generation: 1, Written: 200}})
	if m.Role() != Standby {
		t.Fatalf("setup: %v", m.Role())
	}
	return m
}

func lockedStandby(t *testing.T) *Machine {
	m := standbyMachine(t)
	m.Step(Event{Kind: Lock, Now: at(20), Locked: true})
	m.Step(Event{Kind: PeerFrame, Now: at(30), Peer: Peer{Role: Active, Generation: 1}})
	return m
}

// The restarted node, even the preferred one, does not become active over
// a standby that holds newer state: not at once, not when its window ends.
func TestRestartedPreferredNodeDefersToNewerPeer(t *testing.T) {
	m := started(true)
	acts := m.Step(Event{Kind: PeerFrame, Now: at(10), Written: 0, Peer: Peer{Role: Standby, Generation: 1, Written: 200}})
	acts = append(acts, m.Step(Event{Kind: Tick, Now: at(15), Written: 0})...)
	if m.Role() != Init {
		t.Fatalf("became %v over a peer with newer state: %v", m.Role(), acts)
	}
	acts = m.Step(Event{Kind: Tick, Now: at(900), Written: 0})
	if tr, _ := transition(acts); m.Role() != Standby || !strings.Contains(tr.Reason, "newer session state") {
		t.Fatalf("at the window's end: %v, %v", m.Role(), acts)
	}
	// The peer, standby too and holding more, takes over; so does this
	// rule from the other side: a standby with the newer state.
	p := standbyMachine(t)
	acts = p.Step(Event{Kind: PeerFrame, Now: at(950), Written: 200, Peer: Peer{Role: Standby, Written: 0, Facts: Facts{Preferred: true}}})
	if tr, ok := transition(acts); p.Role() != Active || !ok || !strings.Contains(tr.Reason, "no active node") {
		t.Fatalf("standby with newer state: %v, %v", p.Role(), acts)
	}
	// A locked peer never takes over, and nobody is active. Active, the
	// restarted node would stream its empty store to it, and it would
	// drop every session (found by a soak: all lost, on both nodes). It
	// stays standby and says so, for the operator who locked the peer.
	l := started(true)
	l.Step(Event{Kind: PeerFrame, Now: at(10), Peer: Peer{Role: Standby, Locked: true, Written: 200, Facts: Facts{Locked: true}}})
	acts = l.Step(Event{Kind: Tick, Now: at(900)})
	if l.Role() != Standby || !hasReport(acts, "is locked: nobody is active") {
		t.Fatalf("with the newer peer locked: %v, %v", l.Role(), acts)
	}
	// Unlocked, the peer takes over (above, "no active node"); this node
	// waits for it.
	if l.Step(Event{Kind: PeerFrame, Now: at(950), Peer: Peer{Role: Standby, Written: 200}}); l.Role() != Standby {
		t.Fatalf("took over from a newer unlocked standby: %v", l.Role())
	}
	// Stopped instead (an operator who wants this node active without
	// the sessions): this node takes over.
	l.Step(Event{Kind: PeerFrame, Now: at(960), Peer: Peer{Role: Standby, Locked: true, Leaving: true, Written: 200}})
	l.Step(Event{Kind: PeerLost, Now: at(1300)})
	if l.Role() != Active {
		t.Errorf("with the locked peer stopped: %v", l.Role())
	}
}

// Issue 17, design.md section 4: both active, and the peer does not hear
// this node on any path: the peer can never learn it lost, so this node
// yields once that has held for a dead interval; a locked node reports
// instead; after a healed isolation, where each soon hears the other, the
// usual arbitration decides.
func TestOneWaySplitYields(t *testing.T) {
	oneWay := func(locked bool) *Machine {
		m := activeMachine(t)
		m.Step(Event{Kind: Heard, Now: at(30), Path: "raw", Heard: true})
		if locked {
			m.Step(Event{Kind: Lock, Now: at(35), Locked: true})
		}
		m.Step(Event{Kind: Heard, Now: at(100), Path: "raw", Heard: false})
		m.Step(Event{Kind: PeerFrame, Now: at(110), Peer: Peer{Role: Active}})
		return m
	}
	m := oneWay(false)
	if m.Step(Event{Kind: Tick, Now: at(110 + 299)}); m.Role() != Active {
		t.Fatalf("yielded before a dead interval: %v", m.Role())
	}
	acts := m.Step(Event{Kind: Tick, Now: at(110 + 300)})
	if tr, _ := transition(acts); m.Role() != Standby || !strings.Contains(tr.Reason, "one-way") || !slices.Contains(kinds(acts), ReleaseVIPs) {
		t.Fatalf("one-way split: %v, %v", m.Role(), acts)
	}
	l := oneWay(true)
	acts = l.Step(Event{Kind: Tick, Now: at(500)})
	if l.Role() != Active || len(acts) != 1 || acts[0].Kind != Report {
		t.Fatalf("locked: %v, %v", l.Role(), acts)
	}
	// Healed isolation: the peer hears us within an interval.
	h := oneWay(false)
	h.Step(Event{Kind: Heard, Now: at(200), Path: "raw", Heard: true})
	if h.Step(Event{Kind: Tick, Now: at(1000)}); h.Role() != Active {
		t.Fatalf("yielded although heard: %v", h.Role())
	}
}

// The one-way rule's dead interval counts from when the condition began,
// whatever the peer's frames said before. A frozen active thawed (CI,
// beside a loaded machine's Debian build): its core's first frames said
// ACTIVE and fenced (its agent's lease ran out in the freeze), and did not
// echo this node, which had taken over. The split's start was taken only
// from an unfenced active's frame after one that was not, and the rule
// did not look at the fence, so it measured from long before and this
// node yielded at its next tick; the thawed node, stepping down a moment
// later, found nobody active and took the VIPs back. A peer that is
// fenced, or leaving, is no reason to yield; an active's frame after
// such a one starts the dead interval.
func TestOneWaySplitCountsFromWhenItBegan(t *testing.T) {
	for _, first := range []Peer{
		{Role: Active, Fault: true, Fenced: true},
		{Role: Active, Leaving: true},
	} {
		m := standbyMachine(t)
		m.Step(Event{Kind: Heard, Now: at(20), Path: "raw", Heard: true})
		m.Step(Event{Kind: PathDown, Now: at(400), Path: "raw"})
		m.Step(Event{Kind: PeerLost, Now: at(400)})
		if m.Role() != Active {
			t.Fatalf("setup: %v after the peer was lost", m.Role())
		}
		m.Step(Event{Kind: PathUp, Now: at(5000), Path: "raw"})
		m.Step(Event{Kind: PeerFrame, Now: at(5000), Peer: first})
		if m.Step(Event{Kind: Tick, Now: at(5000 + 400)}); m.Role() != Active {
			t.Fatalf("after %+v: yielded to a peer fenced or leaving: %v", first, m.Role())
		}
		m.Step(Event{Kind: PeerFrame, Now: at(5400), Peer: Peer{Role: Active}})
		if m.Step(Event{Kind: Tick, Now: at(5400 + 299)}); m.Role() != Active {
			t.Fatalf("after %+v: yielded before a dead interval of the one-way condition: %v", first, m.Role())
		}
		if m.Step(Event{Kind: Tick, Now: at(5400 + 300)}); m.Role() != Standby {
			t.Errorf("after %+v: the one-way condition held a dead interval and this node is %v", first, m.Role())
		}
	}
}

// An active that stalled past its lease keeps the VIPs when its last word
// of the peer, from before the stall, says the peer cannot take them (in
// fault). When the peer's frames since, read in the stall's fault, say
// it took over at the fence, this node steps down: no split brain, which
// this node, active longest, won, taking the VIPs back from the node that
// had served while it hung. A fault of another kind keeps the old rule
// (arbitrate), and so does a locked node, whose lock keeps its role.
func TestAStalledActiveStepsDownToThePeerThatTookOver(t *testing.T) {
	for _, tc := range []struct {
		name            string
		stalled, locked bool
		want            Role
	}{
		{"stalled", true, false, Fault},
		{"check-failed", false, false, Active},
		{"stalled-locked", true, true, Active},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := activeMachine(t)
			if tc.locked {
				m.Step(Event{Kind: Lock, Now: at(30), Locked: true})
			}
			m.Step(Event{Kind: PeerFrame, Now: at(40), Peer: Peer{Role: Standby, Fault: true}})
			if acts := m.Step(Event{Kind: Health, Now: at(5000), Healthy: false, Reason: "stalled", Stalled: tc.stalled}); m.Role() != Active {
				t.Fatalf("setup: %v after a fault beside a peer in fault (%v)", m.Role(), kinds(acts))
			}
			acts := m.Step(Event{Kind: PeerFrame, Now: at(5001), Peer: Peer{Role: Active, Holding: true}})
			if m.Role() != tc.want {
				t.Fatalf("%v at the frame of a peer that took over, want %v (%v)", m.Role(), tc.want, kinds(acts))
			}
			if split := slices.Contains(kinds(acts), SplitBrainStarted); split != (tc.want == Active) {
				t.Errorf("split brain started %v", split)
			}
			if tc.want != Fault {
				return
			}
			m.Step(Event{Kind: Health, Now: at(5002), Healthy: true})
			if m.Role() != Standby || m.SplitBrain() {
				t.Errorf("%v once the stall's fault was over (split %v), want a standby", m.Role(), m.SplitBrain())
			}
		})
	}
}

// The machine says when a split brain starts, once, so that the agent need
// not compare states before and after a step.
func TestSplitBrainStartedOnce(t *testing.T) {
	m := activeMachine(t)
	count := 0
	for ms := 100; ms < 130; ms += 10 {
		for _, a := range m.Step(Event{Kind: PeerFrame, Now: at(ms), Peer: Peer{Role: Active}}) {
			if a.Kind == SplitBrainStarted {
				count++
			}
		}
	}
	if count != 1 || !m.SplitBrain() {
		t.Errorf("split brain started %d times (want 1), arbitrating %v", count, m.SplitBrain())
	}
}

// Quiet (the agent's cue to tick seldom) is false whenever a rule of the
// clock may fire: starting, handing over, a split, a held-down takeover.
func TestQuiet(t *testing.T) {
	m := started(true)
	if m.Quiet() {
		t.Error("quiet while starting")
	}
	m = activeMachine(t)
	if !m.Quiet() {
		t.Error("an active node with a standby peer is not quiet")
	}
	m.Step(Event{Kind: PeerFrame, Now: at(2000), Peer: Peer{Role: Active}})
	if m.Quiet() {
		t.Error("quiet with an active peer (a split)")
	}
	m = activeMachine(t)
	m.Step(Event{Kind: Switchover, Now: at(2000)})
	if m.Quiet() {
		t.Error("quiet while handing over")
	}
	h := New(Config{Node: 2, Dead: dead, HoldDown: 10 * dead})
	h.Step(Event{Kind: Start, Now: at(0)})
	h.Step(Event{Kind: PeerFrame, Now: at(10), Peer: Peer{Role: Active}})
	h.Step(Event{Kind: Tick, Now: at(20)})
	h.Step(Event{Kind: PeerLost, Now: at(1000)}) // takes over
	// The peer is back, active for longer: this node yields.
	h.Step(Event{Kind: PeerFrame, Now: at(1100), Peer: Peer{Role: Active, SplitBrain: true, Facts: Facts{Node: 1, ActiveFor: time.Hour, LastNewSession: -1}}})
	if h.Role() != Standby || !h.Quiet() {
		t.Fatalf("after yielding: %v, quiet %v", h.Role(), h.Quiet())
	}
	h.Step(Event{Kind: PeerLost, Now: at(1500)})
	if _, until := h.Flaps(); until.IsZero() || h.Quiet() {
		t.Errorf("a held-down takeover: until %v, quiet %v", until, h.Quiet())
	}
}

// Events come in the order the agent handles them, and a frame's carries
// the kernel's receive time: one the heartbeat core read late (an active
// core reads its standby at its send tick) is stamped before a new session
// handled just ahead of it. The session is still this node's newest fact
// when the split is frozen, at age 0 (it was taken for none, an age below
// zero, and the node with the newer session yielded).
func TestSplitFrozenAfterANewSessionCountsIt(t *testing.T) {
	m := activeMachine(t)
	m.Step(Event{Kind: NewSession, Now: at(1000)})
	peer := Peer{Role: Active, SplitBrain: true, Facts: Facts{Node: 2, ActiveFor: 500 * time.Millisecond, LastNewSession: 50 * time.Millisecond}}
	m.Step(Event{Kind: PeerFrame, Now: at(990), Peer: peer})
	if m.Role() != Active {
		t.Fatalf("this node processed the newest session, and became %v", m.Role())
	}
	if f := m.Advert().Frozen; f == nil || f.LastNewSession != 0 {
		t.Errorf("frozen facts %+v, want this node's last new session at age 0", f)
	}
}

// A split's facts are frozen only once the peer hears this node: a
// snapshot the peer cannot hear would be taken at another instant than
// the peer's own (a one-way link: the peer took over because it lost our
// frames, and freezes when the link heals), and ages compared across the
// two instants let an older session win. Until then the split is said
// (status, SplitBrainStarted, a frame at once) but nothing is frozen.
func TestSplitFrozenOnlyOnceThePeerHearsUs(t *testing.T) {
	m := activeMachine(t)
	m.Step(Event{Kind: NewSession, Now: at(1000)})
	acts := m.Step(Event{Kind: PeerFrame, Now: at(1100), Peer: Peer{Role: Active, Deaf: true}})
	if !slices.Contains(kinds(acts), SplitBrainStarted) || !slices.Contains(kinds(acts), Advertise) || !m.SplitBrain() {
		t.Fatalf("a split with a deaf peer: %v, split brain %v", acts, m.SplitBrain())
	}
	if ad := m.Advert(); ad.Frozen != nil || ad.SplitBrain {
		t.Fatalf("frozen while the peer does not hear us: %+v", ad)
	}
	if acts := m.Step(Event{Kind: PeerFrame, Now: at(1200), Peer: Peer{Role: Active, Deaf: true}}); slices.Contains(kinds(acts), SplitBrainStarted) {
		t.Errorf("the split said twice: %v", acts)
	}
	// The peer hears us from 1500 on, and answers with its snapshot:
	// its session is newer (300ms old against our 500ms), and we yield.
	peer := Peer{Role: Active, SplitBrain: true, Facts: Facts{Node: 2, ActiveFor: time.Second, LastNewSession: 300 * time.Millisecond}}
	acts = m.Step(Event{Kind: PeerFrame, Now: at(1500), Peer: peer})
	var f *Facts // what the first frame after it says: the snapshot
	if i := slices.IndexFunc(acts, func(a Action) bool { return a.Kind == Advertise }); i >= 0 {
		f = acts[i].Advert.Frozen
	}
	if f == nil || f.LastNewSession != 500*time.Millisecond {
		t.Fatalf("heard at 1500: frozen %+v, %v", f, acts)
	}
	if m.Role() != Standby || m.SplitBrain() {
		t.Errorf("the peer's session is newer, and this node is %v (split brain %v)", m.Role(), m.SplitBrain())
	}
}

// Another node runs under this node's name. An active node stays while
// the twin is not active, or is but has the higher generation; otherwise
// it is a fault that drops the VIPs even with no eligible standby (the
// twin may hold them too), that no recovered check clears, and that a
// lock still holds back.
func TestTwin(t *testing.T) {
	const mine = 5
	active := func(t *testing.T) *Machine {
		t.Helper()
		m := New(Config{Node: 1, Preferred: true, Dead: dead, Generation: mine})
		m.Step(Event{Kind: Start, Now: at(0)})
		m.Step(Event{Kind: PeerFrame, Now: at(10), Peer: Peer{Role: Standby}})
		m.Step(Event{Kind: Tick, Now: at(25)})
		m.Step(Event{Kind: PeerLost, Now: at(50)})
		if m.Role() != Active {
			t.Fatalf("setup: role %v", m.Role())
		}
		return m
	}
	twin := func(role Role, gen uint64) Event {
		return Event{Kind: Twin, Now: at(100), Reason: "another hapaird runs as node a", Peer: Peer{Role: role, Generation: gen}}
	}
	for _, c := range []struct {
		name string
		twin Event
		stay bool
	}{
		{"twin starting", twin(Init, mine+1), true},
		{"twin active, this one lower", twin(Active, mine+1), true},
		{"twin active, this one higher", twin(Active, mine-1), false},
	} {
		m := active(t)
		acts := m.Step(c.twin)
		if c.stay {
			if m.Role() != Active || m.Twinned() || slices.Contains(kinds(acts), ReleaseVIPs) || kinds(acts)[0] != Report {
				t.Errorf("%s: role %v, twinned %v, actions %v; want it to stay active", c.name, m.Role(), m.Twinned(), acts)
			}
			continue
		}
		if m.Role() != Fault || !m.Twinned() || !slices.Contains(kinds(acts), ReleaseVIPs) || !m.Advert().Fault {
			t.Fatalf("%s: role %v, twinned %v, actions %v", c.name, m.Role(), m.Twinned(), acts)
		}
		m.Step(Event{Kind: Health, Now: at(200), Healthy: true})
		m.Step(Event{Kind: PeerLost, Now: at(300)})
		if m.Role() != Fault {
			t.Errorf("%s: role %v after a check recovered and the peer left", c.name, m.Role())
		}
	}
	sb := standbyMachine(t)
	if sb.Step(twin(Init, mine)); sb.Role() != Fault || !sb.Twinned() {
		t.Errorf("standby: role %v, twinned %v", sb.Role(), sb.Twinned())
	}
	locked := active(t)
	locked.Step(Event{Kind: Lock, Now: at(50), Locked: true})
	acts := locked.Step(twin(Active, mine-1))
	if locked.Role() != Active || slices.Contains(kinds(acts), ReleaseVIPs) || kinds(acts)[0] != Report {
		t.Fatalf("locked: role %v, actions %v", locked.Role(), acts)
	}
	locked.Step(Event{Kind: Lock, Now: at(200), Locked: false})
	if locked.Role() != Fault {
		t.Errorf("unlocked: role %v, want FAULT", locked.Role())
	}
}

// Two nodes that became active within a millisecond of each other split:
// a at 10.1 ms, b at 10.4 ms, both freezing at 11.5 ms. Frames carry ages
// in whole milliseconds (heartbeat's putAge), so each hears the other's
// 1.4 or 1.1 ms as 1 ms. Each must arbitrate on the numbers the other
// hears, or both find themselves the one active longest and stay: a CI
// run at turbo kept such a split for good.
func TestSplitArbitratesOnWhatTheWireCarries(t *testing.T) {
	us := func(n int) time.Time { return epoch.Add(time.Duration(n) * time.Microsecond) }
	wire := func(d time.Duration) time.Duration { // heartbeat's putAge, then getAge
		if d < 0 {
			return -1
		}
		return d / time.Millisecond * time.Millisecond
	}
	nodes := [2]*Machine{}
	for i, activeAt := range []int{10100, 10400} {
		m := New(Config{Node: uint8(i + 1), Dead: dead, StartupWindow: 10 * time.Millisecond})
		m.Step(Event{Kind: Start, Now: us(0)})
		m.Step(Event{Kind: Tick, Now: us(activeAt)})
		if m.Role() != Active {
			t.Fatalf("setup: node %d is %v", i+1, m.Role())
		}
		m.Step(Event{Kind: PeerFrame, Now: us(11500), Peer: Peer{Role: Active, Facts: Facts{Node: uint8(2 - i), ActiveFor: time.Millisecond, LastNewSession: -1}}})
		if m.Advert().Frozen == nil {
			t.Fatalf("setup: node %d did not freeze", i+1)
		}
		nodes[i] = m
	}
	frozen := [2]Facts{*nodes[0].Advert().Frozen, *nodes[1].Advert().Frozen}
	for i, m := range nodes {
		f := frozen[1-i]
		m.Step(Event{Kind: PeerFrame, Now: us(11600), Peer: Peer{Role: Active, SplitBrain: true, Facts: Facts{Node: f.Node, Preferred: f.Preferred, ActiveFor: wire(f.ActiveFor), LastNewSession: wire(f.LastNewSession)}}})
	}
	if a, b := nodes[0].Role(), nodes[1].Role(); (a == Active) == (b == Active) {
		t.Fatalf("after the split: a %v, b %v; want exactly one active (frozen %+v, %+v)", a, b, frozen[0], frozen[1])
	}
}

// A node kept standby by an active whose frames it cannot use (they echo
// an earlier boot of its: the active does not hear it) took over when
// those frames stopped for a while, and they came back from the same boot
// (Resumed): the active was late, not gone, and will never hear this node
// to arbitrate. It yields after a dead interval, unless locked; it keeps
// the VIPs when the frames are not known to continue what it saw, or when
// they end within the interval (the peer answered, or fell silent).
func TestActiveYieldsToALateActiveThatCannotHearIt(t *testing.T) {
	unanswered := func(ms int, on, resumed bool) Event {
		return Event{Kind: Unverified, Now: at(ms), Unverified: on, Resumed: resumed, Reason: "node 2 says it is active"}
	}
	tookOver := func(t *testing.T) *Machine {
		t.Helper()
		m := started(false)
		m.Step(unanswered(50, true, false))
		if m.Step(Event{Kind: Tick, Now: at(1000)}); m.Role() != Standby {
			t.Fatalf("setup: start-up beside the active: role %v", m.Role())
		}
		if m.Step(unanswered(2000, false, false)); m.Role() != Active {
			t.Fatalf("setup: its frames stopped: role %v", m.Role())
		}
		m.Step(unanswered(2500, true, true))
		return m
	}
	hasTransition := func(acts []Action, prefix string) bool {
		return slices.ContainsFunc(acts, func(a Action) bool { return a.Kind == Transition && strings.HasPrefix(a.Reason, prefix) })
	}

	m := tookOver(t)
	if acts := m.Step(Event{Kind: Tick, Now: at(2500 + 299)}); m.Role() != Active || len(acts) != 0 {
		t.Fatalf("within a dead interval: role %v, actions %v", m.Role(), acts)
	}
	acts := m.Step(Event{Kind: Tick, Now: at(2500 + 300)})
	if m.Role() != Standby || !slices.Contains(kinds(acts), ReleaseVIPs) || !hasTransition(acts, "one-way link: the peer, active and unable to hear this node, was only late") {
		t.Fatalf("a dead interval on: role %v, actions %v", m.Role(), acts)
	}
	// Its frames stop again: the peer is gone now, and this node takes
	// over as before.
	if acts := m.Step(unanswered(4000, false, false)); m.Role() != Active || !hasTransition(acts, "peer silent") {
		t.Errorf("the late active's frames stopped: role %v, actions %v", m.Role(), acts)
	}

	locked := tookOver(t)
	locked.Step(Event{Kind: Lock, Now: at(2600), Locked: true})
	acts = locked.Step(Event{Kind: Tick, Now: at(3000)})
	if locked.Role() != Active || !slices.ContainsFunc(acts, func(a Action) bool { return a.Kind == Report && strings.Contains(a.Reason, "locked") }) {
		t.Errorf("locked: role %v, actions %v", locked.Role(), acts)
	}

	// Frames not known to continue those it saw (another boot of the
	// peer's, or a recording of one this node never saw continue).
	fresh := started(false)
	fresh.Step(Event{Kind: Tick, Now: at(1000)})
	if fresh.Role() != Active {
		t.Fatalf("setup: a peer silent through the start-up window: role %v", fresh.Role())
	}
	fresh.Step(unanswered(1500, true, false))
	if fresh.Step(Event{Kind: Tick, Now: at(3000)}); fresh.Role() != Active {
		t.Errorf("frames not known to continue a boot it saw: role %v", fresh.Role())
	}

	// The report ends within the dead interval.
	ended := tookOver(t)
	ended.Step(unanswered(2600, false, false))
	if ended.Step(Event{Kind: Tick, Now: at(3500)}); ended.Role() != Active {
		t.Errorf("the report ended within a dead interval: role %v", ended.Role())
	}

	// A standby that hears the same is already where it belongs: the
	// report, made while it was standby, does not count once it took
	// over on its authentic active's silence.
	sb := standbyMachine(t)
	sb.Step(unanswered(100, true, true))
	sb.Step(Event{Kind: PeerLost, Now: at(400)})
	if sb.Step(Event{Kind: Tick, Now: at(1000)}); sb.Role() != Active {
		t.Errorf("standby whose authentic active fell silent: role %v", sb.Role())
	}
}

// A peer that signs with a key this node does not hold (the two nodes hold
// different keys): a starting node does not take the VIPs beside it, not
// even when unlocked, and takes them once such frames stop. A node that
// already is active, or a standby whose authentic active fell silent,
// does as before.
func TestUnverifiedPeer(t *testing.T) {
	unverified := func(ms int, on bool) Event { return Event{Kind: Unverified, Now: at(ms), Unverified: on} }
	m := started(true)
	m.Step(unverified(400, true))
	m.Step(Event{Kind: Lock, Now: at(500), Locked: true})
	if acts := m.Step(Event{Kind: Tick, Now: at(1000)}); m.Role() != Standby || slices.Contains(kinds(acts), ClaimVIPs) {
		t.Fatalf("start-up beside an unverifiable peer: role %v, actions %v", m.Role(), acts)
	}
	if m.Step(Event{Kind: Lock, Now: at(1100), Locked: false}); m.Role() != Standby {
		t.Fatalf("unlocked beside an unverifiable peer: role %v", m.Role())
	}
	acts := m.Step(unverified(1500, false))
	if m.Role() != Active || !slices.Contains(kinds(acts), ClaimVIPs) {
		t.Fatalf("its frames stopped: role %v, actions %v", m.Role(), acts)
	}
	if !slices.ContainsFunc(acts, func(a Action) bool { return a.Kind == Transition && strings.HasPrefix(a.Reason, "peer silent") }) {
		t.Errorf("takeover reason: %v", acts)
	}

	// The caller's reason (keys, cluster, an active that does not answer)
	// is the start-up transition's.
	why := "node 2 says it is active, in frames that echo an earlier boot of this node's"
	n := started(false)
	n.Step(Event{Kind: Unverified, Now: at(400), Unverified: true, Reason: why})
	acts = n.Step(Event{Kind: Tick, Now: at(1000)})
	if n.Role() != Standby || !slices.ContainsFunc(acts, func(a Action) bool {
		return a.Kind == Transition && a.Reason == "start-up: "+why+"; not taking the VIPs beside it"
	}) {
		t.Errorf("start-up beside an active that does not answer: role %v, actions %v", n.Role(), acts)
	}

	control := started(true)
	if control.Step(Event{Kind: Tick, Now: at(1000)}); control.Role() != Active {
		t.Fatalf("control: a peer silent through the start-up window: role %v", control.Role())
	}

	act := activeMachine(t)
	if acts := act.Step(unverified(100, true)); act.Role() != Active || slices.Contains(kinds(acts), ReleaseVIPs) {
		t.Errorf("active: role %v, actions %v", act.Role(), acts)
	}

	// The active restarted with another key: its authentic frames
	// stopped, and the standby takes over beside the unverifiable ones.
	sb := standbyMachine(t)
	sb.Step(unverified(100, true))
	if sb.Step(Event{Kind: PeerLost, Now: at(400)}); sb.Role() != Active {
		t.Errorf("standby whose active fell silent: role %v", sb.Role())
	}
	// Such frames ending while the peer is heard change nothing.
	sb2 := standbyMachine(t)
	sb2.Step(unverified(100, true))
	if sb2.Step(unverified(200, false)); sb2.Role() != Standby {
		t.Errorf("standby with its active heard: role %v", sb2.Role())
	}
}

// A node that was in fault when its peer fell silent, or through the
// whole start-up window, becomes a standby when its checks recover, and
// nothing else would ever make it active: it takes over then, as a
// standby does when its peer falls silent. Found by the container test,
// whose service's check failed at hapaird's start: the lone node stayed
// STANDBY with nobody active.
func TestRecoveredNodeTakesOverFromASilentPeer(t *testing.T) {
	recovered := "checks recovered with the peer silent"
	t.Run("fault through the start-up window", func(t *testing.T) {
		m := started(true)
		m.Step(Event{Kind: Health, Now: at(10), Healthy: false, Reason: "media not running"})
		m.Step(Event{Kind: Tick, Now: at(1000)})
		if m.Role() != Fault {
			t.Fatalf("after the window: %v", m.Role())
		}
		acts := m.Step(Event{Kind: Health, Now: at(3000), Healthy: true})
		if tr, _ := transition(acts); m.Role() != Active || !slices.Contains(kinds(acts), ClaimVIPs) {
			t.Fatalf("recovered alone: %v, %v", m.Role(), tr)
		}
		if acts[len(acts)-1].Kind != Advertise || !acts[len(acts)-1].Advert.Holding {
			t.Errorf("not said Holding after the claim: %v", acts)
		}
	})
	t.Run("peer lost while in fault", func(t *testing.T) {
		m := standbyMachine(t)
		m.Step(Event{Kind: Health, Now: at(50), Healthy: false, Reason: "media died"})
		m.Step(Event{Kind: PeerLost, Now: at(500)})
		if m.Role() != Fault {
			t.Fatalf("after the loss: %v", m.Role())
		}
		acts := m.Step(Event{Kind: Health, Now: at(2000), Healthy: true})
		var reasons []string
		for _, a := range acts {
			if a.Kind == Transition {
				reasons = append(reasons, a.From.String()+"->"+a.To.String()+": "+a.Reason)
			}
		}
		if m.Role() != Active || len(reasons) != 2 || !strings.HasSuffix(reasons[1], recovered) {
			t.Fatalf("role %v, transitions %q", m.Role(), reasons)
		}
	})
	// Started beside an active peer with its checks failing: FAULT, not
	// a STANDBY that its recovery would never look at again.
	t.Run("checks failing at start beside an active peer", func(t *testing.T) {
		m := started(false)
		m.Step(Event{Kind: Health, Now: at(5), Healthy: false, Reason: "media not running"})
		m.Step(Event{Kind: PeerFrame, Now: at(10), Peer: Peer{Role: Active}})
		m.Step(Event{Kind: Tick, Now: at(15)})
		if m.Role() != Fault {
			t.Fatalf("at start: %v", m.Role())
		}
		m.Step(Event{Kind: PeerLost, Now: at(500)})
		m.Step(Event{Kind: Health, Now: at(1000), Healthy: true})
		if m.Role() != Active {
			t.Fatalf("recovered with the peer lost: %v", m.Role())
		}
	})
	t.Run("peer seen: a standby as before", func(t *testing.T) {
		m := standbyMachine(t)
		m.Step(Event{Kind: Health, Now: at(50), Healthy: false, Reason: "media died"})
		m.Step(Event{Kind: PeerFrame, Now: at(100), Peer: Peer{Role: Active}})
		m.Step(Event{Kind: Health, Now: at(200), Healthy: true})
		if m.Role() != Standby {
			t.Fatalf("recovered beside an active peer: %v", m.Role())
		}
	})
	t.Run("locked, then unlocked", func(t *testing.T) {
		m := standbyMachine(t)
		m.Step(Event{Kind: Health, Now: at(50), Healthy: false, Reason: "media died"})
		m.Step(Event{Kind: Lock, Now: at(60), Locked: true})
		m.Step(Event{Kind: PeerLost, Now: at(500)})
		m.Step(Event{Kind: Health, Now: at(600), Healthy: true})
		m.Step(Event{Kind: Tick, Now: at(5000)})
		if m.Role() != Fault {
			t.Fatalf("locked: %v, want FAULT kept", m.Role())
		}
		m.Step(Event{Kind: Lock, Now: at(6000), Locked: false})
		if m.Role() != Active {
			t.Fatalf("unlocked with the checks recovered and the peer silent: %v", m.Role())
		}
	})
	t.Run("frames it cannot verify", func(t *testing.T) {
		m := started(true)
		m.Step(Event{Kind: Health, Now: at(10), Healthy: false, Reason: "media not running"})
		m.Step(Event{Kind: Unverified, Now: at(20), Unverified: true})
		m.Step(Event{Kind: Tick, Now: at(1000)})
		m.Step(Event{Kind: Health, Now: at(3000), Healthy: true})
		if m.Role() != Standby {
			t.Fatalf("beside unverifiable frames: %v", m.Role())
		}
		m.Step(Event{Kind: Unverified, Now: at(4000), Unverified: false})
		if m.Role() != Active {
			t.Fatalf("once they stopped: %v", m.Role())
		}
	})
	t.Run("lost within the hold-down", func(t *testing.T) {
		m := New(Config{Node: 1, Dead: dead, HoldDown: 2 * time.Second})
		m.Step(Event{Kind: Start, Now: at(0)})
		m.Step(Event{Kind: PeerFrame, Now: at(10), Peer: Peer{Role: Active}})
		m.Step(Event{Kind: Tick, Now: at(15)})
		// The link flaps: the peer is lost (held by a lock here, so
		// that this node stays standby) and back at 600.
		m.Step(Event{Kind: Lock, Now: at(20), Locked: true})
		m.Step(Event{Kind: PeerLost, Now: at(500)})
		m.Step(Event{Kind: PeerFrame, Now: at(600), Peer: Peer{Role: Active}})
		m.Step(Event{Kind: Lock, Now: at(650), Locked: false})
		m.Step(Event{Kind: Health, Now: at(800), Healthy: false, Reason: "media died"})
		m.Step(Event{Kind: PeerLost, Now: at(1000)}) // again, within 2 s of its return
		if m.Role() != Fault {
			t.Fatalf("setup: %v", m.Role())
		}
		acts := m.Step(Event{Kind: Health, Now: at(1100), Healthy: true})
		if m.Role() != Standby || !slices.Contains(kinds(acts), Report) {
			t.Fatalf("recovered within the hold-down: %v, %v", m.Role(), acts)
		}
		m.Step(Event{Kind: Tick, Now: at(2600)})
		if m.Role() != Standby {
			t.Fatalf("before the hold-down ends (at 2700): %v", m.Role())
		}
		m.Step(Event{Kind: Tick, Now: at(2700)})
		if m.Role() != Active {
			t.Fatalf("after the hold-down: %v", m.Role())
		}
	})
}

// An active steps down on a fault for a standby that, in the same instant,
// stops (its frame saying so was not yet in): nobody would take the VIPs
// until it came back, and then with an empty store over this node's
// sessions. The node takes them back, in fault, as it keeps them when a
// fault finds no eligible standby; so it does when the standby is lost,
// locked or in fault before it took over.
func TestFaultHandedToAStandbyThatWillNotTakeOverIsTakenBack(t *testing.T) {
	for _, next := range []Event{
		{Kind: PeerFrame, Peer: Peer{Role: Standby, Leaving: true}},
		{Kind: PeerFrame, Peer: Peer{Role: Standby, Locked: true}},
		{Kind: PeerFrame, Peer: Peer{Role: Fault, Fault: true}},
		{Kind: PeerLost},
	} {
		m := activeMachine(t)
		m.Step(Event{Kind: Health, Now: at(100), Healthy: false, Reason: "media died"})
		if m.Role() != Fault {
			t.Fatalf("setup: %v", m.Role())
		}
		next.Now = at(120)
		acts := m.Step(next)
		tr, _ := transition(acts)
		if m.Role() != Active || !slices.Contains(kinds(acts), ClaimVIPs) || !strings.Contains(tr.Reason, "keeping the VIPs in fault") {
			t.Errorf("after %v %+v: role %v, actions %v", next.Kind, next.Peer, m.Role(), acts)
		}
	}
}

// A fault while the standby, restarted, has not yet loaded this node's
// sessions (it came back less than CatchUpBound ago, or it is still
// loading its snapshot): the active keeps the VIPs until the standby's
// position reaches its own, as for a standby that comes back. Not for a
// standby that has followed for a while: its frames' position is up to an
// interval old, and the fault must fail over at once.
func TestFaultWhileTheStandbyLoadsWaitsForIt(t *testing.T) {
	later := at(20).Add(DefaultCatchUpBound) // the peer was first heard at 20
	for _, ev := range []Event{
		{Kind: Health, Now: at(100)},
		{Kind: Health, Now: later, StandbyLoading: true},
	} {
		m := activeMachine(t)
		m.Step(Event{Kind: PeerFrame, Now: at(50), Written: 500, Peer: Peer{Role: Standby}})
		ev.Reason, ev.Written = "media died", 500
		acts := m.Step(ev)
		if m.Role() != Active || !hasReport(acts, "keeping the VIPs until it has caught up") {
			t.Fatalf("a fault at %v, the standby loading %v: role %v, actions %v", ev.Now.Sub(epoch), ev.StandbyLoading, m.Role(), acts)
		}
		if m.Step(Event{Kind: PeerFrame, Now: ev.Now.Add(50 * time.Millisecond), Written: 500, Peer: Peer{Role: Standby, Written: 500}}); m.Role() != Fault {
			t.Fatalf("the standby loaded it all: %v", m.Role())
		}
	}
	m := activeMachine(t)
	m.Step(Event{Kind: PeerFrame, Now: at(50), Written: 500, Peer: Peer{Role: Standby, Written: 490}})
	if m.Step(Event{Kind: Health, Now: later, Healthy: false, Reason: "media died", Written: 500}); m.Role() != Fault {
		t.Errorf("a fault with the standby following: %v", m.Role())
	}
	// This node's own stall: its core has told the standby to take over
	// (FlagFenced), and the standby does not wait for it.
	m = activeMachine(t)
	m.Step(Event{Kind: PeerFrame, Now: at(50), Written: 500, Peer: Peer{Role: Standby}})
	if m.Step(Event{Kind: Health, Now: at(100), Healthy: false, Reason: "the agent stalled past its lease", Written: 500, Stalled: true}); m.Role() != Fault {
		t.Errorf("a stall beside a standby just back: %v", m.Role())
	}
}

// A standby restarted (an upgrade, a crash) is lost and heard again, with
// a new boot generation: a restart, not a flap of the link. The active
// that heard it, once a switchover made it the standby, takes over within
// the dead interval when that peer is lost; it held the takeover down for
// hold_down (2 s by default) when a restart counted as a flap, the common
// rolling upgrade being restart the standby, then switch over to it. The
// same loss and return with the same generation is a flap, and held down.
func TestAPeersRestartIsNotAFlap(t *testing.T) {
	for _, restarted := range []bool{true, false} {
		m := New(Config{Node: 1, Preferred: true, Dead: dead, HoldDown: 10 * dead})
		m.Step(Event{Kind: Start, Now: at(0)})
		m.Step(Event{Kind: PeerFrame, Now: at(10), Peer: Peer{Role: Standby, Generation: 1}})
		m.Step(Event{Kind: Tick, Now: at(25)})
		m.Step(Event{Kind: PeerLost, Now: at(1000)})
		gen := uint64(1)
		if restarted {
			gen = 2
		}
		m.Step(Event{Kind: PeerFrame, Now: at(1100), Peer: Peer{Role: Standby, Generation: gen}})
		m.Step(Event{Kind: Switchover, Now: at(1200)})
		m.Step(Event{Kind: PeerFrame, Now: at(1210), Peer: Peer{Role: Active, Holding: true, Generation: gen}})
		if m.Role() != Standby {
			t.Fatalf("restarted %v: after the switchover %v", restarted, m.Role())
		}
		m.Step(Event{Kind: PeerLost, Now: at(1500)})
		flaps, until := m.Flaps()
		switch {
		case restarted && (m.Role() != Active || flaps != 0):
			t.Errorf("the peer restarted, then was lost: %v, %d flaps, held until %v", m.Role(), flaps, until)
		case !restarted && (m.Role() != Standby || flaps != 1 || until.IsZero()):
			t.Errorf("the link flapped, then the peer was lost: %v, %d flaps, held until %v", m.Role(), flaps, until)
		}
	}
}

// What the agent asks before it pauses writes for a switchover: a peer
// that is gone, locked, in fault or stopping refuses it however long the
// wait, and says so; a starting peer may be a standby by the wait's end
// (a switchover right after the standby's restart), and is left to it.
func TestSwitchoverRefusalAskedBeforeTheWait(t *testing.T) {
	for _, tc := range []struct {
		peer   *Peer // nil: lost
		locked bool  // this node
		want   string
	}{
		{peer: nil, want: "the peer is not heard"},
		{peer: &Peer{Role: Standby, Locked: true}, want: "the peer is locked"},
		{peer: &Peer{Role: Standby, Fault: true}, want: "the peer is in fault"},
		{peer: &Peer{Role: Standby, Leaving: true}, want: "the peer is stopping"},
		{peer: &Peer{Role: Init}, want: ""},
		{peer: &Peer{Role: Init}, locked: true, want: "this node is locked"},
		{peer: &Peer{Role: Standby}, want: ""},
	} {
		m := activeMachine(t)
		if tc.peer == nil {
			m.Step(Event{Kind: PeerLost, Now: at(100)})
		} else {
			m.Step(Event{Kind: PeerFrame, Now: at(100), Peer: *tc.peer})
		}
		if tc.locked {
			m.Step(Event{Kind: Lock, Now: at(150), Locked: true})
		}
		got := m.SwitchoverRefusal(false)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("peer %+v, locked %v: %q, want %q", tc.peer, tc.locked, got, tc.want)
		}
		// handOff refuses in the same words.
		if acts := m.Step(Event{Kind: Switchover, Now: at(200)}); got != "" && (len(acts) == 0 || acts[0].Kind != Refused || acts[0].Reason != got) {
			t.Errorf("peer %+v: the switchover itself: %v, want refused with %q", tc.peer, acts, got)
		}
	}
}

// A standby that took over from a fenced active (its agent hangs; its core
// says FAULT for it, under the role its agent last gave, ACTIVE) goes on
// hearing it say ACTIVE. That is no split brain: the hung node's core
// lets the VIPs go once this node holds them, and its agent comes back a
// standby. Taken for one, it alerted the operator to both nodes active,
// and where the hung node had been in a split when it stopped, its frozen
// facts won the arbitration (active longest): the new active yielded to
// a node that cannot act, took over again at its next frame, and so on.
func TestAFencedActiveIsNoSplitBrain(t *testing.T) {
	b := standbyMachine(t)
	fenced := Peer{Role: Active, Fault: true, Fenced: true, Holding: true, Facts: Facts{Node: 2, ActiveFor: time.Hour, LastNewSession: -1}}
	if b.Step(Event{Kind: PeerFrame, Now: at(100), Peer: fenced}); b.Role() != Active {
		t.Fatalf("beside a fenced active: %v", b.Role())
	}
	acts := b.Step(Event{Kind: PeerFrame, Now: at(110), Peer: fenced})
	if b.SplitBrain() || slices.Contains(kinds(acts), SplitBrainStarted) {
		t.Errorf("a split brain with a fenced peer: %v", acts)
	}
	fenced.SplitBrain = true
	b.Step(Event{Kind: PeerFrame, Now: at(120), Peer: fenced})
	if b.Role() != Active || b.SplitBrain() {
		t.Errorf("beside a fenced peer that was in a split when it hung: %v, split %v", b.Role(), b.SplitBrain())
	}
	// Its agent runs again and says what it is: a standby.
	b.Step(Event{Kind: PeerFrame, Now: at(200), Peer: Peer{Role: Standby, Facts: Facts{Node: 2, LastNewSession: -1}}})
	if b.Role() != Active || b.SplitBrain() {
		t.Errorf("once the peer is back a standby: %v, split %v", b.Role(), b.SplitBrain())
	}
	// An active that is not fenced is a split, as before.
	acts = b.Step(Event{Kind: PeerFrame, Now: at(300), Peer: Peer{Role: Active, Holding: true, Facts: Facts{Node: 2, LastNewSession: -1}}})
	if !b.SplitBrain() {
		t.Errorf("an active peer, not fenced: no split: %v", acts)
	}
}
