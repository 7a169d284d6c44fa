package main

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/hapair/hapair/lab"
	"golang.org/x/sys/unix"
)

// isolateUntilBothActive cuts every path between the nodes (heartbeat link
// and replication link; the public segment stays, as in a real isolation
// of the pair) and waits until both are active.
func isolateUntilBothActive(t *testing.T, c *lab.Cluster) {
	t.Helper()
	if err := c.SeparatePair(false); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a", "b"} {
		if err := c.WaitRole(n, "ACTIVE", 3*time.Second); err != nil {
			t.Fatal(err)
		}
	}
}

// heal restores the links and checks that, once a dead interval has
// passed, exactly one node holds the VIP: winner.
func heal(t *testing.T, c *lab.Cluster, winner string) {
	t.Helper()
	if err := c.SeparatePair(true); err != nil {
		t.Fatal(err)
	}
	loser := other(winner)
	if err := c.WaitRole(loser, "STANDBY", 3*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // one dead interval
	if s, _ := c.Status(winner); s == nil || s.Role != "ACTIVE" {
		t.Fatalf("winner %s is not active: %+v", winner, s)
	}
	if !c.Holds(winner, lab.VIP.Addr()) || c.Holds(loser, lab.VIP.Addr()) {
		t.Fatalf("after the heal: %s holds %v, %s holds %v", winner, c.Holds(winner, lab.VIP.Addr()), loser, c.Holds(loser, lab.VIP.Addr()))
	}
	clientTalksTo(t, c, lab.VIP.Addr(), winner)
}

// clientTalksTo waits until the client, pinging addr, has node's
// interface as its neighbour entry for it: the client ends up talking to
// node.
func clientTalksTo(t *testing.T, c *lab.Cluster, addr netip.Addr, node string) {
	t.Helper()
	if !pollUntil(2*time.Second, func() bool {
		lab.Reach(c.Client, addr, 100*time.Millisecond)
		return c.ClientNeighbour(addr).String() == c.MAC(node).String()
	}) {
		t.Fatalf("client's neighbour entry for %s %v, want %s's %v", addr, c.ClientNeighbour(addr), node, c.MAC(node))
	}
}

func TestSplitBrainNewestSessionWins(t *testing.T) {
	c := cluster(t, lab.ConfigOptions{})
	settle(t, c)
	isolateUntilBothActive(t, c)
	ctx := context.Background()
	events := follow(t, c, "a")
	defer events.stop()
	if _, err := api(t, c, "a").Create(ctx, "a-during-split", []byte("x")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if _, err := api(t, c, "b").Create(ctx, "b-during-split", []byte("y")); err != nil {
		t.Fatal(err)
	}
	heal(t, c, "b")
	ev := events.wait(t, "sessions-dropped")
	if !slices.Contains(ev.IDs, "a-during-split") {
		t.Errorf("a's dropped sessions: %v", ev.IDs)
	}
	if _, err := api(t, c, "a").Get(ctx, "b-during-split"); err != nil {
		t.Errorf("a did not resync from b: %v", err)
	}
}

func TestSplitBrainLongestActiveWins(t *testing.T) {
	// Dual-stacked, with duplicate address detection on: during the
	// split both nodes hold the IPv6 VIP too, and the loser must let both
	// go.
	if daemonBin == "" {
		t.Skip("end-to-end tests need root for network namespaces")
	}
	c := clusterOn(t, pairWithDAD(t), lab.ConfigOptions{Extra: vip6Extra})
	if act := settle(t, c); act != "a" {
		t.Fatalf("setup: %s active", act)
	}
	isolateUntilBothActive(t, c)
	v6 := lab.VIP6.Addr()
	if !c.Holds("a", v6) || !c.Holds("b", v6) {
		t.Fatalf("during the split: a holds %s: %v, b: %v", v6, c.Holds("a", v6), c.Holds("b", v6))
	}
	heal(t, c, "a")
	if flags, ok := addrFlags(c, "a", v6); !ok || flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) != 0 || c.Holds("b", v6) {
		t.Fatalf("after the heal: a holds %s: %v (flags %#x), b: %v", v6, ok, flags, c.Holds("b", v6))
	}
	clientTalksTo(t, c, v6, "a")
	if err := lab.Reach(c.Client, v6, 2*time.Second); err != nil {
		t.Error(err)
	}
}

func TestSplitBrainLockedNodeStays(t *testing.T) {
	c := cluster(t, lab.ConfigOptions{})
	settle(t, c)
	lock(t, c, "a")
	deadline := time.Now().Add(3 * time.Second)
	for s, _ := c.Status("a"); s == nil || !s.Locked; s, _ = c.Status("a") {
		if time.Now().After(deadline) {
			t.Fatal("a did not notice its lock")
		}
		time.Sleep(20 * time.Millisecond)
	}
	isolateUntilBothActive(t, c)
	// b takes a new session, which would win rule 2 if a were unlocked.
	if _, err := api(t, c, "b").Create(context.Background(), "b-new", []byte("y")); err != nil {
		t.Fatal(err)
	}
	heal(t, c, "a")
	if s, _ := c.Status("a"); !s.Locked || s.Redundancy == "available" {
		t.Errorf("locked a's status: %+v", s)
	}
}

func lock(t *testing.T, c *lab.Cluster, node string) {
	t.Helper()
	hapairctl(t, c, node, "lock", "--reason", "test")
}

// An operator's command sent to a hapaird that does not run (stopped, or
// a host starved for seconds) times out at the client, which tells the
// operator it failed. The daemon must not apply it when it runs again:
// a lock, an unlock or a handover the operator was told did not happen
// would happen behind their back, an unlock in the middle of the
// maintenance it was to end. (Before, each was applied.)
func TestCommandsTheirClientGaveUpOnAreNotApplied(t *testing.T) {
	c := cluster(t, lab.ConfigOptions{})
	act := settle(t, c)
	giveUp := func(what string, send func(context.Context) error) {
		t.Helper()
		mark := len(logLines(c, act, "was not applied"))
		if err := c.Pause(act); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		err := send(ctx)
		cancel()
		if err == nil {
			t.Fatalf("%s answered by a stopped hapaird", what)
		}
		if err := c.Signal(act, syscall.SIGCONT, 0); err != nil {
			t.Fatal(err)
		}
		if !pollUntil(5*time.Second, func() bool { return len(logLines(c, act, "was not applied")) > mark }) {
			t.Errorf("%s given up on: the daemon did not say it set it aside", what)
		}
	}
	giveUp("lock", func(ctx context.Context) error { return c.Admin(act).Lock(ctx, true, "given up on\n") })
	if st, err := c.Status(act); err != nil || st.Locked {
		t.Errorf("locked by a lock its client gave up on: %+v, %v", st, err)
	}
	if _, err := os.Stat(filepath.Join(c.StateDir(act), "locked")); err == nil {
		t.Error("a lock file written for a lock its client gave up on")
	}
	giveUp("switchover", func(ctx context.Context) error { return c.Admin(act).Switchover(ctx, false) })
	if l := logLines(c, act, "to=STANDBY"); len(l) != 0 {
		t.Errorf("handed over for a switchover its client gave up on: %s", l[0])
	}
	// And the other way: locked for maintenance, an unlock given up on
	// leaves the node locked.
	lock(t, c, act)
	giveUp("unlock", func(ctx context.Context) error { return c.Admin(act).Lock(ctx, false, "") })
	if st, err := c.Status(act); err != nil || !st.Locked {
		t.Errorf("unlocked by an unlock its client gave up on: %+v, %v", st, err)
	}
}

func TestLockSetWhileStoppedHonouredAtStart(t *testing.T) {
	c := cluster(t, lab.ConfigOptions{})
	lock(t, c, "a")
	// Alone and preferred, an unlocked a would take the VIP after its
	// start-up window; locked, it must not change role by itself.
	if err := c.Start("a"); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitRole("a", "STANDBY", 3*time.Second); err != nil {
		t.Fatal(err)
	}
	s, err := c.Status("a")
	if err != nil || !s.Locked {
		t.Fatalf("a not locked at start: %+v %v", s, err)
	}
	time.Sleep(time.Second)
	if c.Holds("a", lab.VIP.Addr()) {
		t.Fatal("locked node took the VIP by itself")
	}
}
