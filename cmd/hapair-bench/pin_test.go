package main

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hapair/hapair/lab"
)

// TestAsTwoMachinesSplitsTheCPUs pins a stand-in active (a shell with a
// child, as hapaird has its heartbeat core) and a stand-in standby, and
// wants the two halves disjoint and whole, the child with its parent, this
// process beside the active, and undo to give this process every CPU back.
func TestAsTwoMachinesSplitsTheCPUs(t *testing.T) {
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		t.Fatal(err)
	}
	if all.Count() < 2 {
		t.Skip("needs two CPUs")
	}
	start := func(args ...string) *exec.Cmd {
		c := exec.Command(args[0], args[1:]...)
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
		return c
	}
	act := start("sh", "-c", "sleep 60 & wait")
	sb := start("sleep", "60")
	var child int
	for deadline := time.Now().Add(5 * time.Second); child == 0; time.Sleep(10 * time.Millisecond) {
		if c := lab.Children(act.Process.Pid); len(c) > 0 {
			child = c[0]
		} else if time.Now().After(deadline) {
			t.Fatal("the shell started no child")
		}
	}
	// Killing the shell leaves its child: ended by its PID, before the
	// shell's cleanup (cleanups run last first).
	t.Cleanup(func() { syscall.Kill(child, syscall.SIGKILL) })
	undo, err := asTwoMachines([]int{act.Process.Pid}, []int{sb.Process.Pid})
	if err != nil {
		t.Fatal(err)
	}
	cpus := func(pid int) unix.CPUSet {
		var s unix.CPUSet
		if err := unix.SchedGetaffinity(pid, &s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	a, s, self := cpus(act.Process.Pid), cpus(sb.Process.Pid), cpus(os.Getpid())
	if cpus(child) != a || self != a {
		t.Errorf("the active's child on %v, this process on %v, want the active's %v", cpus(child), self, a)
	}
	var both unix.CPUSet
	for c := range maxCPUs {
		if a.IsSet(c) && s.IsSet(c) {
			t.Errorf("CPU %d given to both nodes", c)
		}
		if a.IsSet(c) || s.IsSet(c) {
			both.Set(c)
		}
	}
	if both != all || a.Count() == 0 || s.Count() == 0 {
		t.Errorf("the nodes got %v and %v of %v", a, s, all)
	}
	undo()
	if got := cpus(os.Getpid()); got != all {
		t.Errorf("after undo this process runs on %v, want %v", got, all)
	}
}
