package lab

import (
	"errors"
	"runtime"

	"golang.org/x/sys/unix"
)

// OnCPU runs f on the calling goroutine's thread pinned to cpu at
// scheduling attr (a real-time probe, a thread that holds a CPU as a
// hypervisor would), then puts the thread back as it was. It does not end
// the thread: Start gives each process a parent-death signal, which the
// kernel sends when the thread that started it ends, and any thread of
// this process may have. Only a thread that cannot be put back stays
// locked, to end with its goroutine (it must not run anything else): call
// OnCPU from a goroutine of its own.
func OnCPU(cpu int, attr unix.SchedAttr, f func()) error {
	runtime.LockOSThread()
	var was, set unix.CPUSet
	set.Set(cpu)
	err := unix.SchedGetaffinity(0, &was)
	var old *unix.SchedAttr
	if err == nil {
		old, err = unix.SchedGetAttr(0, 0)
	}
	if err == nil {
		err = unix.SchedSetaffinity(0, &set)
	}
	if err != nil {
		// Nothing changed.
		runtime.UnlockOSThread()
		return err
	}
	attr.Size = unix.SizeofSchedAttr
	if err = unix.SchedSetAttr(0, &attr, 0); err == nil {
		f()
	}
	if rerr := errors.Join(unix.SchedSetAttr(0, old, 0), unix.SchedSetaffinity(0, &was)); rerr != nil {
		return errors.Join(err, rerr)
	}
	runtime.UnlockOSThread()
	return err
}
