package heartbeat

import (
	"context"
	"maps"
	"testing"
	"time"
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
