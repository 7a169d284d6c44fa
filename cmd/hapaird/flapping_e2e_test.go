package main

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hapair/hapair/lab"
)

// transitions counts the role changes in a node's log so far.
func transitions(t *testing.T, c *lab.Cluster, node string) int {
	t.Helper()
	b, err := os.ReadFile(c.LogPath(node))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "msg=transition")
}

// Issue 17.3: the heartbeat and replication links go down and up every
// 400 ms for a minute, under a sync-mode write load. The first flap looks
// like a failure (the standby takes over and yields again on arbitration);
// after it the hold-down keeps the standby from taking over on every flap.
// Role changes are counted, not one acknowledged write is lost, and the
// pair ends with one active and one standby in sync.
func TestFlappingLinksChangeRolesOnceAndLoseNothing(t *testing.T) {
	for _, profile := range []string{"default", "fast"} {
		t.Run(profile, func(t *testing.T) {
			t.Parallel()
			c := cluster(t, lab.ConfigOptions{Profile: profile, SyncMode: "sync"})
			act := settle(t, c)
			waitSynced(t, c, act)
			before := transitions(t, c, "a") + transitions(t, c, "b")
			w, stop := writeLoad(t, c, act, 0)
			const flaps = 75
			for range flaps { // the fault's own rhythm: down 400 ms, up 400 ms
				if err := c.SeparatePair(false); err != nil {
					t.Fatal(err)
				}
				time.Sleep(400 * time.Millisecond)
				if err := c.SeparatePair(true); err != nil {
					t.Fatal(err)
				}
				time.Sleep(400 * time.Millisecond)
			}
			changes := transitions(t, c, "a") + transitions(t, c, "b") - before
			final, err := c.Settle(10 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.WaitSynced(final, 10*time.Second); err != nil {
				t.Fatal(err)
			}
			acked := stop()
			sb := other(final)
			s, _ := c.Status(sb)
			t.Logf("%s: %d flaps of both links, %d role changes, %d acknowledged writes, %s counted %d flaps", profile, flaps, changes, w.Count(), sb, s.HoldDown.Flaps)
			// Without the hold-down every flap is a takeover and an
			// arbitration, 150 role changes; the bound leaves room for a
			// second failover on a loaded machine.
			if changes > 4 {
				t.Errorf("%d role changes in %d flaps", changes, flaps)
			}
			if s.HoldDown.Flaps < flaps/2 {
				t.Errorf("%s counted %d flaps, want about %d", sb, s.HoldDown.Flaps, flaps)
			}
			// Sync mode: every acknowledged write is on both nodes.
			if m := c.Missing(final, acked) + c.Missing(sb, acked); m > 0 {
				t.Errorf("%d acknowledged writes missing after the flapping", m)
			}
		})
	}
}

// A crash of the standby and systemd's restart of it; then a rolling
// upgrade's first steps: the standby stopped, and started again
// once the active lost it (its new package installed), then a switchover
// to it. The old active, now the standby, heard its peer come back from a
// restart, not from a flap of the link: when the new active's machine
// hangs a moment later, it takes over within the dead interval, not after
// hold_down (10 s here) as it did when the restart counted as a flap. A
// restart quicker than the dead interval was never counted: the peer is
// not lost, it is heard with a new boot.
func TestRestartedStandbyIsNoFlapOfTheLink(t *testing.T) {
	c := cluster(t, lab.ConfigOptions{HoldDown: "10s"})
	act := settle(t, c)
	sb := other(act)
	// Each restart, quick or not, is said in the active's log, with the
	// peer's start counter one up.
	restarted := func(n int) {
		t.Helper()
		if l := loggedLines(c, act, "peer restarted: its frames come from a new boot", n); len(l) != n || !bootsFollow(l[n-1]) {
			t.Errorf("%s's log after %d restarts of its standby: %q", act, n, l)
		}
	}
	// First a crash and systemd's restart: the standby is back within
	// about the dead interval, so it may not even be lost.
	if err := c.Kill(sb); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(sb); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitRole(sb, "STANDBY", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	restarted(1)
	if err := c.Signal(sb, syscall.SIGTERM, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if !pollUntil(5*time.Second, func() bool { s, err := c.Status(act); return err == nil && !s.Peer.Seen }) {
		t.Fatalf("%s did not lose its stopped standby", act)
	}
	if err := c.Start(sb); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitRole(sb, "STANDBY", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	waitSynced(t, c, act)
	if s, err := c.Status(act); err != nil || s.HoldDown.Flaps != 0 {
		t.Errorf("%s after its standby's restart: %+v %v, want no flap counted", act, s.HoldDown, err)
	}
	restarted(2)
	switchover(t, c, act)
	thaw := freeze(t, c, sb)
	defer thaw()
	start := time.Now()
	if err := c.WaitRole(act, "ACTIVE", 5*time.Second); err != nil {
		s, _ := c.Status(act)
		t.Fatalf("%s did not take over from its frozen peer: %v\n%s", act, err, s.Text())
	}
	t.Logf("%s took over %v after %s froze", act, time.Since(start).Round(time.Millisecond), sb)
}

// bootsFollow says whether a "peer restarted" log line's boot is its
// previous_boot plus one.
func bootsFollow(line string) bool {
	var boot, prev uint64
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, "boot="); ok {
			boot, _ = strconv.ParseUint(v, 10, 64)
		}
		if v, ok := strings.CutPrefix(f, "previous_boot="); ok {
			prev, _ = strconv.ParseUint(v, 10, 64)
		}
	}
	return prev > 0 && boot == prev+1
}
