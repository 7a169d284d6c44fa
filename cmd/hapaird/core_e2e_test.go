package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hapair/hapair/internal/control"
	"github.com/hapair/hapair/lab"
	"golang.org/x/sys/unix"
)

// The heartbeat core runs as the daemon's child with real-time scheduling
// on every thread and its memory locked, and says so in status; locking
// costs only what the core touches (locking every mapping at once made it
// 120 MB of RSS, most of it Go's heap arenas and the agent's code).
func TestHeartbeatCoreIsIsolated(t *testing.T) {
	c := cluster(t, lab.ConfigOptions{Profile: "fast"})
	act := settle(t, c)
	s, err := c.Status(act)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Core.RealTime || !s.Core.MemoryLocked {
		t.Errorf("status: heartbeat core %+v, want real-time and memory locked (the lab runs as root)", s.Core)
	}
	kids := lab.Children(c.Pid(act))
	if len(kids) != 1 {
		t.Fatalf("daemon has children %v, want the heartbeat core alone", kids)
	}
	core := kids[0]
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", core))
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		tid, _ := strconv.Atoi(task.Name())
		attr, err := unix.SchedGetAttr(tid, 0)
		if err != nil {
			t.Fatal(err)
		}
		if attr.Policy != unix.SCHED_RR || attr.Priority == 0 {
			t.Errorf("core thread %d: policy %d priority %d, want SCHED_RR", tid, attr.Policy, attr.Priority)
		}
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", core))
	if err != nil {
		t.Fatal(err)
	}
	kb := func(key string) int {
		for _, l := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(l, key+":"); ok {
				n, _ := strconv.Atoi(strings.Fields(v)[0])
				return n
			}
		}
		t.Fatalf("no %s in the core's status", key)
		return 0
	}
	if kb("VmLck") == 0 {
		t.Error("the core locked no memory")
	}
	// Generous: the figure is in the benchmark; this catches a core that
	// locks all it maps.
	if rss := kb("VmRSS"); rss > 48<<10 {
		t.Errorf("heartbeat core RSS %d KiB, want well under 48 MiB", rss)
	}
}

// A node that sends no frame for a whole dead interval counts a stall and
// says how long its longest gap was: what tells a failover the host caused
// (it kept the heartbeat core off its CPU) from one the daemon did. The
// standby's core is stopped until the active has lost it, then let go.
func TestStalledCoreIsCounted(t *testing.T) {
	c := cluster(t, lab.ConfigOptions{Profile: "fast"})
	act := settle(t, c)
	sb := other(act)
	kids := lab.Children(c.Pid(sb))
	if len(kids) != 1 {
		t.Fatalf("daemon has children %v, want the heartbeat core alone", kids)
	}
	if err := unix.Kill(kids[0], unix.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			unix.Kill(kids[0], unix.SIGCONT)
		}
	}
	defer resume()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if s, err := c.Status(act); err == nil && !s.Peer.Seen {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the active still hears a standby whose heartbeat core is stopped")
		}
		time.Sleep(5 * time.Millisecond)
	}
	resume()
	var s *control.Status
	for {
		var err error
		if s, err = c.Status(sb); err == nil && s.Frames.CoreStalls > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stopped standby counted no stall: %+v", s)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if s.Frames.LongestSendGapMs < s.DeadMs {
		t.Errorf("longest send gap %.1f ms, want at least the dead interval (%g ms)", s.Frames.LongestSendGapMs, s.DeadMs)
	}
	// A stopped core's own lateness is never the peer's silence: the
	// standby stays standby, unless the host stalled the active too.
	if s.Role != "STANDBY" {
		skipIfHostStalled(t, c, act, nil)
		t.Errorf("the standby became %s after its core was stopped", s.Role)
	}
}

// The active's heartbeat core reads its standby's frames when it wakes to
// send (a wake-up less per frame); the standby's reads them as they come,
// since the active's FAULT or leaving frame is what its claim waits on. A
// switchover swaps them, seen from outside in each daemon's status.
func TestActiveCorePollsItsStandby(t *testing.T) {
	c := cluster(t, lab.ConfigOptions{Profile: "fast"})
	act := settle(t, c)
	stb := map[string]string{"a": "b", "b": "a"}[act]
	frames := func(n string) control.Frames {
		t.Helper()
		s, err := c.Status(n)
		if err != nil {
			t.Fatal(err)
		}
		return s.Frames
	}
	waitPolling := func(n string) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); frames(n).Polled == 0; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s, active, polled no frame in 5 s", n)
			}
		}
	}
	// notPolling says n polled nothing while it received 100 frames.
	notPolling := func(n string) {
		t.Helper()
		f := frames(n)
		for deadline := time.Now().Add(5 * time.Second); frames(n).Received < f.Received+100; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s received %d frames in 5 s", n, frames(n).Received-f.Received)
			}
		}
		if p := frames(n).Polled; p != f.Polled {
			t.Errorf("%s, standby, polled %d of its peer's frames; want each read as it comes", n, p-f.Polled)
		}
	}
	waitPolling(act)
	notPolling(stb)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Admin(act).Switchover(ctx, false); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitRole(act, "STANDBY", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	waitPolling(stb)
	notPolling(act)
}
