package lab

import (
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// OnCPU runs f pinned at the scheduling asked for, and the thread is as it
// was afterwards, so it can go back to the runtime instead of ending.
func TestOnCPUPutsTheThreadBack(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("real-time scheduling needs root")
	}
	var allowed unix.CPUSet
	if err := unix.SchedGetaffinity(0, &allowed); err != nil {
		t.Fatal(err)
	}
	cpu := 0
	for !allowed.IsSet(cpu) {
		cpu++
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Held here too, so the checks after OnCPU read its thread.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var before unix.CPUSet
		if err := unix.SchedGetaffinity(0, &before); err != nil {
			t.Error(err)
			return
		}
		ran := false
		err := OnCPU(cpu, unix.SchedAttr{Policy: unix.SCHED_RR, Priority: 5}, func() {
			ran = true
			var in unix.CPUSet
			if err := unix.SchedGetaffinity(0, &in); err != nil || in.Count() != 1 || !in.IsSet(cpu) {
				t.Errorf("inside: affinity %v (%v), want CPU %d alone", in, err, cpu)
			}
			if a, err := unix.SchedGetAttr(0, 0); err != nil || a.Policy != unix.SCHED_RR || a.Priority != 5 {
				t.Errorf("inside: scheduling %+v (%v), want SCHED_RR 5", a, err)
			}
		})
		if err != nil || !ran {
			t.Errorf("OnCPU: %v, ran %v", err, ran)
		}
		var after unix.CPUSet
		if err := unix.SchedGetaffinity(0, &after); err != nil || after != before {
			t.Errorf("after: affinity %v (%v), want %v", after, err, before)
		}
		if a, err := unix.SchedGetAttr(0, 0); err != nil || a.Policy != unix.SCHED_NORMAL {
			t.Errorf("after: scheduling %+v (%v), want SCHED_NORMAL", a, err)
		}
	}()
	<-done
}
