package main

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hapair/hapair/lab"
)

// Issue 14.2 and design.md section 3: "A node that starts or restarts
// never becomes active over a peer that holds newer session state; a peer
// whose boot generation changed is a peer that restarted: the standby,
// holding every acknowledged write, takes over, and the restarted node
// resyncs from it." The active's hapaird is killed -9 under a sync-mode
// write load and started again at once, round after round, so both nodes
// take their turn as the restarted one (a is the preferred node): with a
// dead interval far longer than the restart, and with one far shorter.
func TestActiveCrashRestartLosesNoAcknowledgedWrite(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    lab.ConfigOptions
	}{
		{"restart faster than the dead interval", lab.ConfigOptions{SyncMode: "sync", Interval: "100ms", Dead: "3s"}},
		{"restart slower than the dead interval", lab.ConfigOptions{SyncMode: "sync", Profile: "fast"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := cluster(t, tc.o)
			acked := map[string]int{}
			for round := range 10 {
				missing, err := c.CrashRestart(round, acked, 10*time.Second)
				if err != nil {
					t.Fatalf("round %d: %v", round, err)
				}
				if missing > 0 {
					t.Fatalf("round %d: %d acknowledged writes missing on the standby", round, missing)
				}
			}
		})
	}
}

// TestAgentKilledHandsOverAtOnce kills the active's hapaird -9, as the OOM
// killer does (the daemon that holds 300,000 sessions is its likely pick),
// and leaves its heartbeat core be. The core outlives its agent just long
// enough to hand over: it says FAULT at once, so the standby takes over on
// that rather than a dead interval later, and it releases the VIP once the
// standby holds it, not when the VIP's kernel lease (4 s here) runs out.
// Before, the core died with its agent: the standby waited out the dead
// interval and both held the VIP until the lease ended.
func TestAgentKilledHandsOverAtOnce(t *testing.T) {
	c := cluster(t, lab.ConfigOptions{})
	act, sb, core := activeAndCore(t, c)
	holders := c.WatchHolders()
	defer holders.Stop()
	if err := c.Kill(act); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitRole(sb, "ACTIVE", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	st, err := c.Status(sb)
	if err != nil {
		t.Fatal(err)
	}
	if st.LastTransition == nil || !strings.Contains(st.LastTransition.Reason, "peer in fault") {
		t.Errorf("%s took over for %+v, want the dead agent's core to have said FAULT", sb, st.LastTransition)
	}
	// The core ends once it has handed over: within two dead intervals
	// (600 ms) by its own bound.
	deadline := time.Now().Add(5 * time.Second)
	for alive(core) {
		if time.Now().After(deadline) {
			t.Fatalf("the dead agent's heartbeat core %d still runs", core)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if c.Holds(act, lab.VIP.Addr()) {
		t.Errorf("%s still holds the VIP after its core ended", act)
	}
	// Make before break: the two overlap for as long as the core takes
	// to hear that the standby holds it, far from the lease's 4 s.
	if _, both := holders.Stop(); both > time.Second {
		t.Errorf("both nodes held the VIP for %v", both)
	}
	// Once more the other way, as the lab and the bench run it.
	res, err := c.Run("daemon-crash", time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if res.From != sb || res.To != act {
		t.Errorf("daemon-crash moved the VIP %s -> %s, want %s -> %s", res.From, res.To, sb, act)
	}
	t.Log(res)
}

// alive says whether process pid runs: not gone, nor a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(rest, "Z")
}

// TestRestartAtOnceAfterACrashWithNobodyToHandTo kills the lone active's
// hapaird -9 and starts it again at once, as a supervisor other than
// systemd (or an operator's script) does. With no peer to hand to, the
// dead daemon's heartbeat core waits out its two dead intervals before it
// releases the VIP and ends, holding its sockets meanwhile. The new daemon
// must wait for it rather than fail to bind beside it, and come back
// active alone.
func TestRestartAtOnceAfterACrashWithNobodyToHandTo(t *testing.T) {
	c := cluster(t, lab.ConfigOptions{})
	act := settle(t, c)
	if err := c.Signal(other(act), syscall.SIGTERM, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitRole(act, "ACTIVE", time.Second); err != nil {
		t.Fatal(err)
	}
	cores := lab.Children(c.Pid(act))
	if err := c.Kill(act); err != nil {
		t.Fatal(err)
	}
	if len(cores) != 1 || !alive(cores[0]) {
		t.Fatalf("the dead daemon's core %v does not outlive it", cores)
	}
	if err := c.Start(act); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitRole(act, "ACTIVE", 10*time.Second); err != nil {
		t.Fatalf("restarted at once: %v", err)
	}
	if alive(cores[0]) {
		t.Errorf("the old core %d runs beside the new daemon", cores[0])
	}
}

// The other half of a daemon: the active's heartbeat core killed (the OOM
// killer's pick, a stray kill -9 of the wrong pid), its agent alive. No
// frame leaves the node, so the standby takes over a dead interval later;
// the agent must not keep the VIP beside it until its lease runs out.
func TestCoreKilledLeavesOneHolder(t *testing.T) {
	c := cluster(t, lab.ConfigOptions{})
	act, sb, core := activeAndCore(t, c)
	holders := c.WatchHolders()
	defer holders.Stop()
	if err := syscall.Kill(core, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitRole(sb, "ACTIVE", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if !pollUntil(5*time.Second, func() bool { return !c.Holds(act, lab.VIP.Addr()) }) {
		t.Errorf("%s still holds the VIP 5 s after its core was killed", act)
	}
	// The operator reads why.
	if len(loggedLines(c, act, "child gone: signal: killed", 1)) == 0 {
		t.Errorf("%s's log does not say its core was killed: %q", act, logLines(c, act, "level=ERROR"))
	}
	none, both := holders.Stop()
	t.Logf("no holder for %v, two for %v", none, both)
	if both > time.Second {
		t.Errorf("both nodes held the VIP for %v", both)
	}
}

// activeAndCore settles c and returns its active node, the standby, and the
// active's heartbeat core (the daemon's one child).
func activeAndCore(t *testing.T, c *lab.Cluster) (act, sb string, core int) {
	t.Helper()
	act = settle(t, c)
	cores := lab.Children(c.Pid(act))
	if len(cores) != 1 {
		t.Fatalf("%s's daemon has children %v, want its heartbeat core", act, cores)
	}
	return act, other(act), cores[0]
}

// The standby is locked (maintenance on it), and the active's hapaird is
// killed -9 under a sync-mode write load and started again (systemd does,
// a second later). The locked standby never takes over, and holds every
// acknowledged session. The restarted node must not take over beside it
// with its empty store: the locked standby would resynchronise from it
// and drop them all. Before, it did, and every session was lost on both
// nodes (found by a soak at the fast profile). It stays standby and says
// why; once the operator unlocks the standby, that one takes over with
// every session.
func TestRestartBesideALockedStandbyLosesNoSession(t *testing.T) {
	c := cluster(t, lab.ConfigOptions{Profile: "fast", SyncMode: "sync"})
	act := settle(t, c)
	sb := other(act)
	waitSynced(t, c, act)
	lock(t, c, sb)
	w, stop := writeLoad(t, c, act, 0)
	if err := c.Kill(act); err != nil {
		t.Fatal(err)
	}
	acked := stop()
	if err := c.Start(act); err != nil {
		t.Fatal(err)
	}
	if !pollUntil(10*time.Second, func() bool { s, err := c.Status(act); return err == nil && s.Role != "INIT" }) {
		t.Fatal("the restarted node did not leave INIT")
	}
	for _, n := range []string{act, sb} {
		if s, err := c.Status(n); err != nil || s.Role != "STANDBY" {
			t.Fatalf("%s: %+v, %v", n, s, err)
		}
		if c.Holds(n, lab.VIP.Addr()) {
			t.Errorf("%s holds the VIP", n)
		}
	}
	if m := c.Missing(sb, acked); m > 0 {
		t.Fatalf("%d of the %d acknowledged writes missing on the locked standby", m, w.Count())
	}
	if len(loggedLines(c, act, "is locked: nobody is active", 1)) == 0 {
		t.Error("the restarted node did not say that the locked peer holds newer sessions")
	}
	hapairctl(t, c, sb, "unlock")
	if err := c.WaitRole(sb, "ACTIVE", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := settle(t, c); got != sb {
		t.Fatalf("%s active, want %s", got, sb)
	}
	waitSynced(t, c, sb)
	for _, n := range []string{sb, act} {
		if m := c.Missing(n, acked); m > 0 {
			t.Errorf("%d of the %d acknowledged writes missing on %s", m, w.Count(), n)
		}
	}
}
