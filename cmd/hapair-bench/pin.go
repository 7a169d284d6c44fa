package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/hapair/hapair/lab"
)

// A pair on one machine shares its CPUs between both nodes, which two
// servers do not: a node that polls for its peer's answer then takes the
// CPU the peer needs to give it. The sync latency is also measured with
// each node on CPUs of its own, as on two machines, the client beside the
// active as an application is.

// maxCPUs is how many CPUs a CPUSet holds (the kernel's CPU_SETSIZE).
const maxCPUs = 1024

// asTwoMachines gives the first half of this process's CPUs to active's
// processes (with their children) and to this one, the client, and the
// other half to standby's. undo gives this process all of them back; the
// daemons end with the run.
func asTwoMachines(active, standby []int) (undo func(), err error) {
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		return nil, err
	}
	var cpus []int
	for c := range maxCPUs {
		if all.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	if len(cpus) < 2 {
		return nil, errors.New("a CPU for each node needs two")
	}
	var a, s unix.CPUSet
	for i, c := range cpus {
		if i < len(cpus)/2 {
			a.Set(c)
		} else {
			s.Set(c)
		}
	}
	undo = func() { pinThreads(os.Getpid(), &all) }
	// This process's own threads only: its children are the daemons.
	err = pinThreads(os.Getpid(), &a)
	for _, p := range active {
		err = errors.Join(err, pinTree(p, &a))
	}
	for _, p := range standby {
		err = errors.Join(err, pinTree(p, &s))
	}
	if err != nil {
		undo()
		return nil, err
	}
	return undo, nil
}

// pinThreads sets the CPUs of every thread of pid; a thread that ended
// meanwhile is no error.
func pinThreads(pid int, set *unix.CPUSet) error {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, _ := strconv.Atoi(t.Name())
		if err := unix.SchedSetaffinity(tid, set); err != nil && err != unix.ESRCH {
			return fmt.Errorf("pin thread %d of %d: %w", tid, pid, err)
		}
	}
	return nil
}

// pinTree pins pid's threads and its descendants' (hapaird's heartbeat
// core).
func pinTree(pid int, set *unix.CPUSet) error {
	err := pinThreads(pid, set)
	for _, c := range lab.Children(pid) {
		err = errors.Join(err, pinTree(c, set))
	}
	return err
}
