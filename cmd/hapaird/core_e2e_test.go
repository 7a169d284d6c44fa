package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

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
