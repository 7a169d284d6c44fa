package main

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hapair/hapair/lab"
)

// A paused virtual machine (a snapshot, a live migration, a hypervisor
// that stole the CPU for seconds): the whole active node stops, its
// heartbeat core included, while its kernel and links run on, and then it
// resumes believing it is active. The standby has taken over meanwhile.
// Judged from outside: one holder at the end, the one the rules pick, the
// client talking to it, and nothing acknowledged lost.
//
//   - 1 s, less than the core's lease (3 s) and the VIP's (4 s): the
//     thawed node still holds its VIP, both are active, and the split is
//     settled by the rules of design.md section 4: the newest session, else
//     the node active longest, which is the thawed one. (In 1 run of 3 the
//     thawed node took the peer's frames queued while it was frozen for a
//     one-way link and yielded instead: heartbeat's sentWithin.)
//   - 5 s, past both leases: the kernel took the VIP from the frozen node
//     and its core fences it on waking, so the node that took over stays,
//     whatever happened meanwhile. The thawed node must not put the VIP back
//     even for a moment: its agent's first tick renewed the VIPs and put
//     the expired one back (for about 2 ms, in 3 runs of 20) before it
//     heard its core's fence.
//   - 5 s on a locked active: a locked node never changes role by itself,
//     so it claims its VIP back on waking and keeps it against the node
//     that took over, even though that one took a new session (rule 1 of
//     section 4 before rule 2); what that node wrote meanwhile is dropped.
func TestFrozenActiveThawed(t *testing.T) {
	for _, tc := range []struct {
		name       string
		pause      time.Duration
		newSession bool   // the new active takes a session while the old is frozen
		locked     bool   // the frozen active is locked
		winner     string // "old" or "new"
	}{
		{"1s-new-session", time.Second, true, false, "new"},
		{"1s", time.Second, false, false, "old"},
		{"5s", 5 * time.Second, false, false, "new"},
		{"5s-locked", 5 * time.Second, true, true, "old"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := cluster(t, lab.ConfigOptions{})
			act := settle(t, c)
			sb := other(act)
			ctx := context.Background()
			if tc.locked {
				lock(t, c, act)
			}
			if _, err := api(t, c, act).Create(ctx, "before", []byte("v")); err != nil {
				t.Fatal(err)
			}
			waitSynced(t, c, act)
			vip := lab.VIP.Addr()
			thaw := freeze(t, c, act)
			defer thaw()
			frozen := time.Now()
			if err := c.WaitRole(sb, "ACTIVE", 3*time.Second); err != nil {
				t.Fatal(err)
			}
			if tc.newSession {
				if _, err := api(t, c, sb).Create(ctx, "during", []byte("w")); err != nil {
					t.Fatal(err)
				}
			}
			// The frozen node's kernel removes its VIP at the end of
			// the lease; from then on it must never hold it again.
			// Watched every millisecond: the put-back lasted 2 ms.
			var lost, back time.Time
			stopWatch := make(chan struct{})
			watched := make(chan struct{})
			go func() {
				defer close(watched)
				for {
					select {
					case <-stopWatch:
						return
					default:
					}
					holds := c.Holds(act, vip)
					if lost.IsZero() && !holds {
						lost = time.Now()
					} else if !lost.IsZero() && holds && back.IsZero() {
						back = time.Now()
					}
					time.Sleep(time.Millisecond)
				}
			}()
			time.Sleep(time.Until(frozen.Add(tc.pause)))
			thaw()
			thawed := time.Now()
			winner, loser := act, sb
			if tc.winner == "new" {
				winner, loser = sb, act
			}
			settled := pollUntil(10*time.Second, func() bool {
				w, err1 := c.Status(winner)
				l, err2 := c.Status(loser)
				return err1 == nil && err2 == nil && w.Role == "ACTIVE" && l.Role == "STANDBY" && c.Holds(winner, vip) && !c.Holds(loser, vip)
			})
			if !settled {
				close(stopWatch)
				<-watched
				w, _ := c.Status(winner)
				l, _ := c.Status(loser)
				for _, n := range []string{act, sb} {
					for _, l := range logLines(c, n, "level=") {
						t.Log(l)
					}
				}
				t.Fatalf("%v after the thaw: %s (want active) %+v holds %v; %s %+v holds %v", time.Since(thawed), winner, w, c.Holds(winner, vip), loser, l, c.Holds(loser, vip))
			}
			clientTalksTo(t, c, vip, winner)
			close(stopWatch)
			<-watched
			if !back.IsZero() && !tc.locked {
				t.Errorf("%s held the VIP again %v after the thaw, once it had lost it %v after the freeze", act, back.Sub(thawed), lost.Sub(frozen))
				for _, l := range logLines(c, act, "level=") {
					t.Log(l)
				}
			}
			went := "never went"
			if !lost.IsZero() {
				went = fmt.Sprintf("went %v after the freeze", lost.Sub(frozen).Round(time.Millisecond))
			}
			t.Logf("%s active and the client on it %v after the thaw; the frozen node's VIP %s", winner, time.Since(thawed).Round(time.Millisecond), went)
			if tc.pause > 4*time.Second && lost.IsZero() {
				t.Errorf("the frozen %s kept its VIP through a %v pause past its 4s lease", act, tc.pause)
			}
			// Nothing acknowledged is lost: the loser resyncs from the
			// winner and has what it has.
			want := []string{"before"}
			if tc.newSession && tc.winner == "new" {
				want = append(want, "during")
			}
			waitSynced(t, c, winner)
			for _, id := range want {
				for _, n := range []string{winner, loser} {
					if _, err := api(t, c, n).Get(ctx, id); err != nil {
						t.Errorf("%s lacks session %q: %v", n, id, err)
					}
				}
			}
		})
	}
}

// freeze stops node's daemon and its children at once (a paused virtual
// machine, as far as the daemon can tell: its kernel runs on) and returns
// what resumes them, which may be called more than once.
func freeze(t *testing.T, c *lab.Cluster, node string) (thaw func()) {
	t.Helper()
	procs := append(lab.Children(c.Pid(node)), c.Pid(node))
	var once sync.Once
	thaw = func() {
		once.Do(func() {
			for _, p := range procs {
				syscall.Kill(p, syscall.SIGCONT)
			}
		})
	}
	if err := lab.Freeze(procs); err != nil {
		thaw()
		t.Fatal(err)
	}
	return thaw
}

// The same pause of a node whose peer is down (in maintenance, say): past
// the VIP's lease the kernel takes it, and nobody else can hold it, so
// the node that resumes claims it again, keeps it, and the client comes
// back to it. Renewals no longer put a lost VIP back, so this is the
// agent's doing; and the heartbeat core, which had fenced the node on
// waking, let the VIPs go two dead intervals after the agent had taken
// them again (its fence waits that long for a peer to take them).
func TestFrozenLoneActiveThawedTakesItsVIPBack(t *testing.T) {
	c := cluster(t, lab.ConfigOptions{})
	act := settle(t, c)
	if err := c.Signal(other(act), syscall.SIGTERM, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	vip := lab.VIP.Addr()
	if err := lab.Reach(c.Client, vip, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	thaw := freeze(t, c, act)
	defer thaw()
	// Past the 4 s lease: the kernel removes the VIP.
	if !pollUntil(6*time.Second, func() bool { return !c.Holds(act, vip) }) {
		t.Fatal("the frozen node's VIP outlived its lease")
	}
	thaw()
	thawed := time.Now()
	if !pollUntil(5*time.Second, func() bool { return c.Holds(act, vip) }) {
		s, err := c.Status(act)
		t.Fatalf("%v after the thaw the lone node does not hold its VIP: %+v %v", time.Since(thawed), s, err)
	}
	back := time.Since(thawed)
	// And it stays: the heartbeat core's fence, which lets the VIPs go
	// two dead intervals on when no peer takes them, must not take it
	// again.
	for time.Since(thawed) < 2*time.Second {
		if !c.Holds(act, vip) {
			t.Fatalf("the VIP went again %v after the thaw", time.Since(thawed))
		}
		time.Sleep(time.Millisecond)
	}
	if err := lab.Reach(c.Client, vip, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("VIP back %v after the thaw", back.Round(time.Millisecond))
	if s, err := c.Status(act); err != nil || s.Role != "ACTIVE" {
		t.Fatalf("the lone node after the thaw: %+v %v", s, err)
	}
}
