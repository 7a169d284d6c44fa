package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hapair/hapair/lab"
)

// An operation an operator (or the machine room) does to a pair: what it
// does to act, the active, and sb, its standby. It returns whether the
// writes acknowledged meanwhile must all be on the active afterwards (not
// after an isolation: a split brain's loser drops its sessions, and says
// so). apart says the nodes cannot see each other for a while: both hold
// the VIP meanwhile, as designed for an isolation, and in the lab for a
// paused machine too (its kernel, which the lab's nodes share, goes on
// answering for the VIP, which a paused virtual machine's does not).
type operation struct {
	name  string
	do    func(t *testing.T, c *lab.Cluster, act, sb string) (keepsWrites bool)
	apart bool
}

var operations = []operation{
	{"switchover", func(t *testing.T, c *lab.Cluster, act, sb string) bool {
		if err := c.Admin(act).Switchover(context.Background(), false); err != nil {
			t.Logf("switchover: %v", err) // refused is an outcome, not a fault
		}
		return true
	}, false},
	{"stop the active", func(t *testing.T, c *lab.Cluster, act, sb string) bool {
		return send(t, c, act, syscall.SIGTERM)
	}, false},
	{"stop the standby", func(t *testing.T, c *lab.Cluster, act, sb string) bool {
		return send(t, c, sb, syscall.SIGTERM)
	}, false},
	{"kill -9 the active", func(t *testing.T, c *lab.Cluster, act, sb string) bool {
		return send(t, c, act, syscall.SIGKILL)
	}, false},
	{"kill -9 the standby", func(t *testing.T, c *lab.Cluster, act, sb string) bool {
		return send(t, c, sb, syscall.SIGKILL)
	}, false},
	{"lock the standby, kill -9 the active, restart it, unlock", func(t *testing.T, c *lab.Cluster, act, sb string) bool {
		lock(t, c, sb)
		send(t, c, act, syscall.SIGKILL)
		time.Sleep(time.Second)
		if s, err := c.Status(sb); err != nil || s.Role != "STANDBY" || c.Holds(sb, lab.VIP.Addr()) {
			t.Errorf("the locked standby changed: %+v, %v", s, err)
		}
		if err := c.Start(act); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		hapairctl(t, c, sb, "unlock")
		return true
	}, false},
	{"lock the active, kill -9 it, unlock", func(t *testing.T, c *lab.Cluster, act, sb string) bool {
		lock(t, c, act)
		send(t, c, act, syscall.SIGKILL)
		time.Sleep(time.Second)
		hapairctl(t, c, act, "unlock")
		return true
	}, false},
	{"the active's hapaird hangs 2 s", func(t *testing.T, c *lab.Cluster, act, sb string) bool {
		return hangAgent(t, c, act)
	}, false},
	{"the standby's hapaird hangs 2 s", func(t *testing.T, c *lab.Cluster, act, sb string) bool {
		return hangAgent(t, c, sb)
	}, false},
	{"the active's machine pauses 2 s", func(t *testing.T, c *lab.Cluster, act, sb string) bool {
		thaw := freeze(t, c, act)
		time.Sleep(2 * time.Second)
		thaw()
		return true
	}, true},
	{"cut the pair apart 1 s", func(t *testing.T, c *lab.Cluster, act, sb string) bool {
		if err := c.SeparatePair(false); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		if err := c.SeparatePair(true); err != nil {
			t.Fatal(err)
		}
		return false
	}, true},
	{"the active's media server dies", func(t *testing.T, c *lab.Cluster, act, sb string) bool {
		return mediaDies(t, c, act, false)
	}, false},
	{"the standby's media server dies", func(t *testing.T, c *lab.Cluster, act, sb string) bool {
		return mediaDies(t, c, sb, false)
	}, false},
	{"lock the active, its media server dies, unlock", func(t *testing.T, c *lab.Cluster, act, sb string) bool {
		return mediaDies(t, c, act, true)
	}, false},
	{"kill -9 the active and start it again at once", func(t *testing.T, c *lab.Cluster, act, sb string) bool {
		send(t, c, act, syscall.SIGKILL)
		if err := c.Start(act); err != nil {
			t.Fatal(err)
		}
		return true
	}, false},
	{"switchover, then kill -9 the new active at once", func(t *testing.T, c *lab.Cluster, act, sb string) bool {
		if err := c.Admin(act).Switchover(context.Background(), false); err != nil {
			t.Logf("switchover: %v", err)
		}
		return send(t, c, sb, syscall.SIGKILL)
	}, false},
	{"rotate the key as the guide says, one node at a time", func(t *testing.T, c *lab.Cluster, act, sb string) bool {
		err := c.RotateKeys(func(active string) error {
			return c.Admin(active).Switchover(context.Background(), false)
		})
		if err != nil {
			t.Fatal(err)
		}
		return true
	}, false},
	// Both paths, one way: the standby takes over, and the old active,
	// which hears that it is not heard, yields within two dead intervals
	// (both hold the VIP meanwhile, as designed).
	{"the standby stops hearing the active 3 s", func(t *testing.T, c *lab.Cluster, act, sb string) bool {
		heal := dropHeartbeatsAt(t, c, sb, true)
		time.Sleep(3 * time.Second)
		heal()
		return true
	}, true},
	// The OOM killer's pick, or a kill -9 of the wrong pid: no frame
	// leaves the node, and its agent must not keep the VIP.
	{"kill -9 the active's heartbeat core", func(t *testing.T, c *lab.Cluster, act, sb string) bool {
		return killCore(t, c, act)
	}, false},
	// The active kept the VIPs in fault while its standby was away: the
	// standby, back without the sessions written meanwhile, must take
	// over with them.
	{"stop the standby, the active's media server dies, start the standby", func(t *testing.T, c *lab.Cluster, act, sb string) bool {
		send(t, c, sb, syscall.SIGTERM)
		if err := c.KillMedia(act); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
		if err := c.Start(sb); err != nil {
			t.Fatal(err)
		}
		if err := c.WaitRole(sb, "ACTIVE", 10*time.Second); err != nil {
			t.Error(err)
		}
		return true
	}, false},
	// An upgrade rolled out to both nodes at once: nothing survives both
	// stopping (the sessions live in the two daemons), but the pair must
	// come back with one active.
	{"stop both nodes at once", func(t *testing.T, c *lab.Cluster, act, sb string) bool {
		for _, n := range []string{act, sb} {
			if err := c.Signal(n, syscall.SIGTERM, 0); err != nil {
				t.Fatal(err)
			}
		}
		for _, n := range []string{act, sb} {
			if err := c.WaitExit(n, 10*time.Second); err != nil {
				t.Fatal(err)
			}
		}
		return false
	}, false},
	// Configuration management, or a tidy operator, deletes an address
	// it does not know of: the active puts it back, and nothing moves.
	{"delete the VIP by hand on the active", func(t *testing.T, c *lab.Cluster, act, sb string) bool {
		if out, err := lab.Command(c.Node(act), "ip", "addr", "del", lab.VIP.String(), "dev", lab.Public).CombinedOutput(); err != nil {
			t.Fatalf("ip addr del: %v %s", err, out)
		}
		if !pollUntil(5*time.Second, func() bool { return c.Holds(act, lab.VIP.Addr()) }) {
			t.Errorf("%s did not put the VIP back", act)
		}
		return true
	}, false},
	// The replication link's switch port, or its firewall: sync writes
	// wait out the timeout once and degrade; the heartbeats' raw path
	// keeps the pair, and the stream resumes when the link is back.
	{"cut the replication link 2 s", func(t *testing.T, c *lab.Cluster, act, sb string) bool {
		return cutFor2s(t, c, c.CutReplication, act, sb)
	}, false},
	// The dedicated heartbeat link alone: degraded, nothing moves.
	{"cut the heartbeat link 2 s", func(t *testing.T, c *lab.Cluster, act, sb string) bool {
		return cutFor2s(t, c, c.CutHeartbeat, act, sb)
	}, false},
	// A hypervisor's pause, or a live migration, of the standby: its
	// core stops too, and nothing may move when it resumes.
	{"the standby's machine pauses 2 s", func(t *testing.T, c *lab.Cluster, act, sb string) bool {
		thaw := freeze(t, c, sb)
		time.Sleep(2 * time.Second)
		thaw()
		wholeAgain(t, c, act, sb)
		return true
	}, false},
	{"kill -9 the standby's heartbeat core", func(t *testing.T, c *lab.Cluster, act, sb string) bool {
		return killCore(t, c, sb)
	}, false},
	// A standby that crashes as it starts, over and over, as a unit
	// with Restart=always does to a bad host.
	{"kill -9 the standby three times in a row", func(t *testing.T, c *lab.Cluster, act, sb string) bool {
		for range 3 {
			send(t, c, sb, syscall.SIGKILL)
			if err := c.Start(sb); err != nil {
				t.Fatal(err)
			}
			time.Sleep(rand.N(300 * time.Millisecond))
		}
		return true
	}, false},
	// Two operators, or a script run twice: one handover, not two, so
	// either answer that says it succeeded leaves sb active.
	{"two switchovers at once", func(t *testing.T, c *lab.Cluster, act, sb string) bool {
		errs := make(chan error, 2)
		for range 2 {
			go func() { errs <- c.Admin(act).Switchover(context.Background(), false) }()
		}
		done, want := 0, act
		for range 2 {
			if err := <-errs; err != nil {
				t.Logf("switchover: %v", err)
			} else {
				done, want = done+1, sb
			}
		}
		if err := c.WaitRole(want, "ACTIVE", 5*time.Second); err != nil {
			t.Errorf("%d of two switchovers said they were done: %v", done, err)
		}
		return true
	}, false},
	{"lock the standby, switchover, unlock", func(t *testing.T, c *lab.Cluster, act, sb string) bool {
		lock(t, c, sb)
		err := c.Admin(act).Switchover(context.Background(), false)
		if err == nil || !strings.Contains(err.Error(), "locked") {
			t.Errorf("a switchover to a locked standby: %v, want refused because it is locked", err)
		}
		hapairctl(t, c, sb, "unlock")
		return true
	}, false},
	// A cable pulled, or a switch port down: the active is in fault,
	// and hands over with its sessions.
	{"the active's public link down 2 s", func(t *testing.T, c *lab.Cluster, act, sb string) bool {
		if err := c.SetLink(c.Node(act), lab.Public, false); err != nil {
			t.Fatal(err)
		}
		if err := c.WaitRole(sb, "ACTIVE", 5*time.Second); err != nil {
			t.Error(err)
		}
		time.Sleep(2 * time.Second)
		if err := c.SetLink(c.Node(act), lab.Public, true); err != nil {
			t.Fatal(err)
		}
		return true
	}, false},
	{"switchover, then switchover back at once", func(t *testing.T, c *lab.Cluster, act, sb string) bool {
		if err := c.Admin(act).Switchover(context.Background(), false); err != nil {
			t.Logf("switchover: %v", err)
		}
		if err := c.Admin(sb).Switchover(context.Background(), false); err != nil {
			t.Logf("switchover back: %v", err)
		}
		return true
	}, false},
	{"the active's machine shuts down: its media server and hapaird stop at once", func(t *testing.T, c *lab.Cluster, act, sb string) bool {
		return shutDown(t, c, act)
	}, false},
	{"the standby's machine shuts down: its media server and hapaird stop at once", func(t *testing.T, c *lab.Cluster, act, sb string) bool {
		return shutDown(t, c, sb)
	}, false},
	// A switchover run while the standby's hapaird is stopped (a
	// debugger on it, a stopped container): refused at the bound, and
	// the standby, resumed after it, must not act on the "leaving" its
	// core queued meanwhile (it took over beside the active).
	{"switchover while the standby's hapaird is stopped", func(t *testing.T, c *lab.Cluster, act, sb string) bool {
		switchoverBesideAStoppedStandby(t, c, act, sb)
		return true
	}, false},
	// Two faults: the standby's hapaird hangs past its lease, and the
	// active crashes and is restarted meanwhile. The restarted node must
	// take over (the writes only the stopped standby held are lost),
	// and the standby, running again, must not take over from it.
	{"the standby's hapaird stops, the active is killed and started again", func(t *testing.T, c *lab.Cluster, act, sb string) bool {
		splits := len(logLines(c, sb, "split brain"))
		if err := c.Pause(sb); err != nil {
			t.Fatal(err)
		}
		if err := c.Kill(act); err != nil {
			t.Fatal(err)
		}
		if err := c.Start(act); err != nil {
			t.Fatal(err)
		}
		err := c.WaitRole(act, "ACTIVE", 10*time.Second)
		if err := c.Signal(sb, syscall.SIGCONT, 0); err != nil {
			t.Fatal(err)
		}
		if err != nil {
			t.Fatalf("nobody took the VIP beside the stopped standby: %v", err)
		}
		if next, err := c.Settle(10 * time.Second); err != nil || next != act {
			t.Fatalf("settled with %q active (%v), want %s", next, err, act)
		}
		if l := logLines(c, sb, "split brain"); len(l) > splits {
			t.Errorf("the standby running again made a split brain: %s", l[splits])
		}
		return false
	}, false},
}

// switchoverBesideAStoppedStandby stops sb's hapaird, runs a switchover
// on act, which must be refused at the bound, resumes sb half a bound
// later (its queued frames are read late), and checks that the pair
// settles with act still active and sb never having taken over.
func switchoverBesideAStoppedStandby(t *testing.T, c *lab.Cluster, act, sb string) {
	t.Helper()
	took := len(logLines(c, sb, "to=ACTIVE"))
	if err := c.Pause(sb); err != nil {
		t.Fatal(err)
	}
	if err := c.Admin(act).Switchover(context.Background(), false); err == nil {
		t.Error("a switchover beside a stopped standby succeeded")
	}
	time.Sleep(500 * time.Millisecond) // past half the bound: read late
	if err := c.Signal(sb, syscall.SIGCONT, 0); err != nil {
		t.Fatal(err)
	}
	if next, err := c.Settle(10 * time.Second); err != nil || next != act {
		t.Fatalf("settled with %q active (%v), want %s, which stayed active", next, err, act)
	}
	if l := logLines(c, sb, "to=ACTIVE"); len(l) > took {
		t.Errorf("the resumed standby took over: %s", l[took])
	}
}

// shutDown stops node's media server and its hapaird at once, as systemd
// does at a reboot or poweroff: the two units stop in parallel, so the
// check fails (a fault, which hands over) while the stop hands over too.
func shutDown(t *testing.T, c *lab.Cluster, node string) bool {
	t.Helper()
	media := make(chan error, 1)
	go func() { media <- c.KillMedia(node) }()
	send(t, c, node, syscall.SIGTERM)
	if err := <-media; err != nil {
		t.Fatal(err)
	}
	return true
}

// killCore kills node's heartbeat core (the OOM killer's pick, or a kill
// -9 of the wrong pid) and waits for its hapaird to end, in error (systemd
// starts it again).
func killCore(t *testing.T, c *lab.Cluster, node string) bool {
	t.Helper()
	cores := lab.Children(c.Pid(node))
	if len(cores) != 1 {
		t.Fatalf("%s's daemon has children %v, want its heartbeat core", node, cores)
	}
	if err := syscall.Kill(cores[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var exit *exec.ExitError
	if err := c.WaitExit(node, 10*time.Second); !errors.As(err, &exit) {
		t.Fatalf("%s's hapaird after its core was killed: %v", node, err)
	}
	return true
}

// cutFor2s takes a link down with set(false), and up again 2 s later; the
// pair must then be as it was.
func cutFor2s(t *testing.T, c *lab.Cluster, set func(up bool) error, act, sb string) bool {
	t.Helper()
	if err := set(false); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if err := set(true); err != nil {
		t.Fatal(err)
	}
	wholeAgain(t, c, act, sb)
	return true
}

// wholeAgain checks that a pair whose link or node came back is as it was,
// act active and sb its standby, and says neither path is down.
func wholeAgain(t *testing.T, c *lab.Cluster, act, sb string) {
	t.Helper()
	whole := func() (bool, string) {
		a, erra := c.Status(act)
		b, errb := c.Status(sb)
		if erra != nil || errb != nil {
			return false, fmt.Sprint(erra, errb)
		}
		return a.Role == "ACTIVE" && b.Role == "STANDBY" && !a.Degraded && !b.Degraded,
			fmt.Sprintf("%s %s degraded %v, %s %s degraded %v", act, a.Role, a.Degraded, sb, b.Role, b.Degraded)
	}
	if !pollUntil(5*time.Second, func() bool { ok, _ := whole(); return ok }) {
		_, got := whole()
		t.Errorf("the pair is not as it was: %s", got)
	}
}

// send signals node's hapaird and waits for it to end.
func send(t *testing.T, c *lab.Cluster, node string, sig syscall.Signal) bool {
	t.Helper()
	if err := c.Signal(node, sig, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	return true
}

// hangAgent stops node's hapaird, not its heartbeat core, for 2 s.
func hangAgent(t *testing.T, c *lab.Cluster, node string) bool {
	t.Helper()
	if err := c.Pause(node); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if err := c.Signal(node, syscall.SIGCONT, 0); err != nil {
		t.Fatal(err)
	}
	return true
}

// mediaDies kills node's media server (its critical check fails) and starts
// it again a second later; locked, node is locked first (it must keep its
// role meanwhile, and its peer must leave it alone) and unlocked before.
func mediaDies(t *testing.T, c *lab.Cluster, node string, locked bool) bool {
	t.Helper()
	if locked {
		lock(t, c, node)
	}
	if err := c.KillMedia(node); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if locked {
		if s, err := c.Status(other(node)); err != nil || s.Role != "STANDBY" {
			t.Errorf("%s beside its locked active in fault: %+v, %v", other(node), s, err)
		}
		hapairctl(t, c, node, "unlock")
		time.Sleep(500 * time.Millisecond)
	}
	if err := c.StartMedia(node); err != nil {
		t.Fatal(err)
	}
	return true
}

// TestOperatorOperationsUnderWrites does every operation above in turn to a
// pair in sync mode under a write stream, and after each one checks what an
// operator is promised: the pair settles with one active holding the VIP
// and a standby in sync, the VIP was never on both nodes for long (the
// nodes kept apart aside), and no acknowledged write is missing on the
// active.
// Each operation's own test says more; this one catches what they do to
// each other. HAPAIR_SOAK=10m runs them in random order for that long
// (SOAK_PROFILE=fast or turbo, SOAK_OPS=a comma-separated list of their
// numbers), as the soaks that found the lock's faults did.
func TestOperatorOperationsUnderWrites(t *testing.T) {
	soak, _ := time.ParseDuration(os.Getenv("HAPAIR_SOAK"))
	ops := operations
	if s := os.Getenv("SOAK_OPS"); s != "" {
		ops = nil
		for _, f := range strings.Split(s, ",") {
			i, err := strconv.Atoi(f)
			if err != nil || i < 0 || i >= len(operations) {
				t.Fatalf("SOAK_OPS: %q is not an operation's number (0-%d)", f, len(operations)-1)
			}
			ops = append(ops, operations[i])
		}
	}
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 0))
	c := cluster(t, lab.ConfigOptions{Profile: os.Getenv("SOAK_PROFILE"), SyncMode: "sync", Media: true})
	act := settle(t, c)
	waitSynced(t, c, act)
	acked := map[string]int{}
	end := time.Now().Add(soak)
	for round := 0; ; round++ {
		var op operation
		if soak == 0 {
			if round == len(ops) {
				break
			}
			op = ops[round]
		} else {
			if time.Now().After(end) {
				break
			}
			op = ops[rng.IntN(len(ops))]
		}
		w, stop := writeLoad(t, c, act, round)
		holders := c.WatchHolders()
		keeps := op.do(t, c, act, other(act))
		for id, v := range stop() {
			acked[id] = v
		}
		next, err := c.Settle(20 * time.Second)
		if err != nil {
			t.Fatalf("round %d (seed %d), %s: %v", round, seed, op.name, err)
		}
		// Watched until the pair has settled: an operation returns as
		// soon as it has done its part (a kill returns once the agent
		// is gone), before the handover it starts, and the restart of
		// a node the lab brings back is an operation's end too.
		_, both := holders.Stop()
		// Generous: a planned handover overlaps for milliseconds.
		if !op.apart && both > 500*time.Millisecond {
			t.Errorf("round %d, %s: the VIP on both nodes for %v", round, op.name, both)
		}
		if err := c.WaitSynced(next, 10*time.Second); err != nil {
			t.Fatalf("round %d, %s: %v", round, op.name, err)
		}
		if !keeps {
			acked = map[string]int{}
		} else if m := c.Missing(next, acked); m > 0 {
			t.Errorf("round %d, %s: %d of %d acknowledged sessions missing or older on %s", round, op.name, m, len(acked), next)
			acked = map[string]int{} // one loss, reported once
		}
		t.Logf("round %d, %s: %d writes (the longest %v), %s active, two holders for %v", round, op.name, w.Count(), w.Longest(), next, both)
		act = next
	}
}
