package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
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
	resume := stopCore(t, c, sb)
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

// The active's heartbeat core stopped alone (SIGSTOP, a debugger attached
// to it): the node falls silent, its standby takes over, and the agent,
// which runs on, must let the VIPs go. It renewed them beside the standby
// for as long as the core stayed stopped (21 s of two holders in the run
// that found it). Resumed, the node comes back a standby.
func TestStoppedCoreOnTheActiveLetsTheVIPsGo(t *testing.T) {
	c := cluster(t, lab.ConfigOptions{Lease: "10s"})
	act := settle(t, c)
	sb := other(act)
	vip := lab.VIP.Addr()
	holders := c.WatchHolders()
	defer holders.Stop()
	resume := stopCore(t, c, act)
	defer resume()
	stopped := time.Now()
	// Generous, well inside the 10 s kernel lease: the agent looks at
	// each idle tick (750 ms at the default profile).
	if !pollUntil(5*time.Second, func() bool { return c.Holds(sb, vip) && !c.Holds(act, vip) }) {
		t.Fatalf("%v after its core stopped: %s holds the VIP %v, %s %v", time.Since(stopped), act, c.Holds(act, vip), sb, c.Holds(sb, vip))
	}
	none, both := holders.Stop()
	t.Logf("the VIP off %s %v after its core stopped; two holders for %v, none for %v", act, time.Since(stopped).Round(time.Millisecond), both, none)
	if s, err := c.Status(act); err != nil || s.Role != "FAULT" {
		t.Errorf("%s with its core stopped: %+v, %v", act, s, err)
	}
	resume()
	if err := c.WaitRole(act, "STANDBY", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if s, err := c.Status(sb); err != nil || s.Role != "ACTIVE" || !c.Holds(sb, vip) || c.Holds(act, vip) {
		t.Fatalf("after the resume: %s %+v %v; VIP on %s %v", sb, s, err, act, c.Holds(act, vip))
	}
	clientTalksTo(t, c, vip, sb)
}

// stopCore stops node's heartbeat core alone (SIGSTOP), and returns what
// resumes it, which may be called more than once.
func stopCore(t *testing.T, c *lab.Cluster, node string) (resume func()) {
	t.Helper()
	kids := lab.Children(c.Pid(node))
	if len(kids) != 1 {
		t.Fatalf("daemon has children %v, want the heartbeat core alone", kids)
	}
	if err := unix.Kill(kids[0], unix.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	return func() { once.Do(func() { unix.Kill(kids[0], unix.SIGCONT) }) }
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

// At turbo, a CPU the host keeps from the heartbeat core does not stop its
// frames: a relief sender on another CPU sends them, and the core counts
// the frames relieved. The host here is a thread of this test, busy at
// SCHED_FIFO 99 (above the core's SCHED_RR) for 8 ms, longer than turbo's
// dead interval, on the one CPU the active's core's threads are pinned to
// (all but the relief senders, pinned already): what a hypervisor that
// does not run a vCPU does to them. Without the relief every hold is a
// stall, a dead interval with no frame sent, which the peer rightly takes
// for a loss. With it a hold stalls the core only when it catches the
// loop in the middle of its work (a few per cent of the time at turbo;
// relief never covers a loop that is not parked, by design), and then the
// standby may take over: roles are not judged, stalls are.
func TestHeldCPUIsRelievedAtTurbo(t *testing.T) {
	held, allowed := firstCPU(t)
	if allowed < 2 {
		t.Skip("relief senders need a second CPU")
	}
	// Under 10 ms: Go's runtime preempts a goroutine that has run that
	// long, and the holding thread then leaves the CPU for a moment, long
	// enough for the core's loop to start its work there and be held in
	// the middle of it.
	const holds, hold = 20, 8 * time.Millisecond
	c := cluster(t, lab.ConfigOptions{Profile: "turbo"})
	act := settle(t, c)
	before, err := c.Status(act)
	if err != nil {
		t.Fatal(err)
	}
	if dead := time.Duration(before.DeadMs * float64(time.Millisecond)); hold <= dead {
		t.Fatalf("a hold of %v is not longer than turbo's dead interval, %v", hold, dead)
	}
	kids := lab.Children(c.Pid(act))
	if len(kids) != 1 {
		t.Fatalf("daemon has children %v, want the heartbeat core alone", kids)
	}
	oneWay := len(logLines(c, other(act), "one-way path"))
	for range holds {
		// Again before each hold: the runtime may have started a thread
		// since.
		pinThreads(t, kids[0], held)
		if err := holdCPU(held, hold); err != nil {
			t.Fatal(err)
		}
		// Pacing: the holds are apart, as a host's stalls are.
		time.Sleep(50 * time.Millisecond)
	}
	// The core reports its counts to the agent now and then: wait until
	// they tell the holds' story one way or the other.
	tolerated := uint64(holds / 4)
	var after *control.Status
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		after, err = c.Status(act)
		if err == nil && (after.Frames.Relieved > before.Frames.Relieved || after.Frames.CoreStalls-before.Frames.CoreStalls > tolerated) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no relieved frame nor stall counted after %d holds of the core's CPU: %+v, %v", holds, after, err)
		}
	}
	relieved, stalls := after.Frames.Relieved-before.Frames.Relieved, after.Frames.CoreStalls-before.Frames.CoreStalls
	t.Logf("%d holds of %v: %d frames relieved, %d stalls, longest send gap %.1f ms, role %s", holds, hold, relieved, stalls, after.Frames.LongestSendGapMs, after.Role)
	if stalls > tolerated {
		t.Errorf("%d of %d holds of one CPU stalled the core's frames, want at most %d", stalls, holds, tolerated)
	}
	if relieved == 0 {
		t.Error("no frame relieved")
	}
	// The relief's frames, and the loop's first after a hold, echo what
	// the loop read before it: a late loop, which the peer must not
	// take for a link that no longer carries its frames (a stall, when
	// nothing left in time, may be taken for anything).
	if l := logLines(c, other(act), "one-way path"); stalls == 0 && len(l) > oneWay {
		t.Errorf("the peer took the held core for deaf on a path %d times: %s", len(l)-oneWay, l[oneWay])
	}
}

// Media servers run real-time threads of their own: Asterisk with `-p`
// (or highpriority in asterisk.conf) runs every thread at SCHED_RR 10.
// Busy on the heartbeat core's CPU (a burst of calls, a transcoding), such
// a thread must not keep the core from its frames. At the core's old
// priority, the same SCHED_RR 10, the core waited its turn behind the
// thread, up to its time slice (100 ms; gaps of 42 ms measured): at fast,
// every burst was a stall, and the standby took over from a live active.
func TestBusyRealTimeApplicationDoesNotHoldTheCore(t *testing.T) {
	cpu, _ := firstCPU(t)
	// Asterisk's scheduling; each burst as long as its time slice.
	app := unix.SchedAttr{Policy: unix.SCHED_RR, Priority: 10}
	const bursts, burst = 5, 100 * time.Millisecond
	c := cluster(t, lab.ConfigOptions{Profile: "fast"})
	act := settle(t, c)
	before, err := c.Status(act)
	if err != nil {
		t.Fatal(err)
	}
	kids := lab.Children(c.Pid(act))
	if len(kids) != 1 {
		t.Fatalf("daemon has children %v, want the heartbeat core alone", kids)
	}
	for range bursts {
		pinThreads(t, kids[0], cpu)
		if err := busyOn(cpu, app, burst); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond) // apart, as bursts are
	}
	after, err := c.Status(act)
	if err != nil {
		t.Fatal(err)
	}
	stalls := after.Frames.CoreStalls - before.Frames.CoreStalls
	t.Logf("%d bursts of %v at SCHED_RR 10 on the core's CPU: %d stalls, longest send gap %.1f ms", bursts, burst, stalls, after.Frames.LongestSendGapMs)
	// One stall of the machine's own may come at fast on a loaded CI
	// host; without the core above the application, every burst is one.
	if stalls > 1 {
		t.Errorf("%d of %d bursts of a real-time application stalled the core's frames", stalls, bursts)
	}
}

// firstCPU returns the first CPU this process may run on, and how many it
// may.
func firstCPU(t *testing.T) (cpu, allowed int) {
	t.Helper()
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		t.Fatal(err)
	}
	for !set.IsSet(cpu) {
		cpu++
	}
	return cpu, set.Count()
}

// pinThreads pins every thread of process pid that may run on more than
// one CPU to cpu.
func pinThreads(t *testing.T, pid, cpu int) {
	t.Helper()
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	var one unix.CPUSet
	one.Set(cpu)
	for _, task := range tasks {
		tid, _ := strconv.Atoi(task.Name())
		var set unix.CPUSet
		// A thread that ended meanwhile is no matter.
		if unix.SchedGetaffinity(tid, &set) == nil && set.Count() > 1 {
			if err := unix.SchedSetaffinity(tid, &one); err != nil && err != unix.ESRCH {
				t.Fatalf("pin thread %d to CPU %d: %v", tid, cpu, err)
			}
		}
	}
}

// holdCPU keeps every other thread off cpu for d: a thread of this
// process pinned there at SCHED_FIFO 99, busy until d is up.
func holdCPU(cpu int, d time.Duration) error {
	return busyOn(cpu, unix.SchedAttr{Policy: unix.SCHED_FIFO, Priority: 99}, d)
}

// busyOn runs a thread of this process pinned to cpu at attr's scheduling,
// busy until d is up.
func busyOn(cpu int, attr unix.SchedAttr, d time.Duration) error {
	done := make(chan error)
	go func() {
		done <- lab.OnCPU(cpu, attr, func() {
			for end := time.Now().Add(d); time.Now().Before(end); {
			}
		})
	}()
	return <-done
}
