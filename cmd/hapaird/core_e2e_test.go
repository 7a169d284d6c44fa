package main

import (
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
