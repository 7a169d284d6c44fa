package main

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hapair/hapair/heartbeat"
	"github.com/hapair/hapair/vip"
	"golang.org/x/sys/unix"
)

// coreEnv marks the heartbeat core: hapaird started by itself with the
// socket to its parent as file descriptor 3 (heartbeat.ServeCore). An
// environment variable rather than an argument, so no command line an
// operator types can start one.
const coreEnv = "HAPAIRD_HEARTBEAT_CORE"

// coreRTPriority is the core's SCHED_RR priority: above every normal task,
// below the kernel's threaded interrupts (50) that deliver its frames.
const coreRTPriority = 10

// runCore is the child's main.
func runCore() int {
	conn, err := net.FileConn(os.NewFile(3, "hapaird-core"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "hapaird heartbeat core:", err)
		return 1
	}
	if err := heartbeat.ServeCore(conn, isolate, fence); err != nil {
		fmt.Fprintln(os.Stderr, "hapaird heartbeat core:", err)
		return 1
	}
	return 0
}

// fence releases the node's VIPs for a core whose agent stopped renewing
// its lease: a hung agent must not keep them until their kernel lease runs
// out while the peer, told FAULT, takes them over.
func fence(cfg heartbeat.CoreConfig) {
	var addrs []vip.Addr
	for _, s := range cfg.VIPs {
		p, ifn, _ := strings.Cut(s, " ")
		if pr, err := netip.ParsePrefix(p); err == nil {
			addrs = append(addrs, vip.Addr{Prefix: pr, Interface: ifn})
		}
	}
	m, err := vip.New(addrs, vip.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "hapaird heartbeat core: fencing:", err)
		return
	}
	defer m.Close()
	if _, err := m.Cleanup(); err != nil {
		fmt.Fprintln(os.Stderr, "hapaird heartbeat core: fencing:", err)
	}
}

// isolate gives the core what lets it run on time on a busy node: locked
// memory (no page fault waits for a busy disk) and real-time scheduling
// for every thread (threads made later inherit it).
func isolate(cfg heartbeat.CoreConfig) heartbeat.CoreHello {
	// One P: the core's goroutines need little CPU, and fewer threads
	// spinning at real-time priority take less from the rest.
	runtime.GOMAXPROCS(1)
	var h heartbeat.CoreHello
	if err := unix.Mlockall(unix.MCL_CURRENT | unix.MCL_FUTURE); err != nil {
		h.LockError = err.Error()
	} else {
		h.Locked = true
	}
	if cfg.RTPriority <= 0 {
		h.RTError = "not asked for"
		return h
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		h.RTError = err.Error()
		return h
	}
	attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_RR, Priority: uint32(cfg.RTPriority)}
	for _, t := range tasks {
		tid, _ := strconv.Atoi(t.Name())
		if err := unix.SchedSetAttr(tid, &attr, 0); err != nil {
			h.RTError = fmt.Sprintf("SCHED_RR %d: %v", cfg.RTPriority, err)
			return h
		}
	}
	h.RealTime = true
	return h
}

// canRealTime says whether this process may take the real-time priority the
// heartbeat core asks for: it tries on a thread of its own and goes back.
func canRealTime() error {
	done := make(chan error)
	go func() {
		// The thread ends with the goroutine, scheduling and all.
		runtime.LockOSThread()
		attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_RR, Priority: coreRTPriority}
		done <- unix.SchedSetAttr(0, &attr, 0)
	}()
	return <-done
}

// startCore runs the heartbeat core as a child of this process: the same
// executable (/proc/self/exe, so an upgrade that replaced the file still
// starts this version), connected by a SEQPACKET socket pair.
func startCore() (net.Conn, func() error, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	mine, theirs := os.NewFile(uintptr(fds[0]), "core"), os.NewFile(uintptr(fds[1]), "core-child")
	defer theirs.Close()
	conn, err := net.FileConn(mine)
	mine.Close()
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command("/proc/self/exe")
	cmd.Env = append(os.Environ(), coreEnv+"=1")
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.Stderr = os.Stderr
	// The core must never outlive the agent: it dies with this process
	// (and, should that not fire, on the socket's end-of-file).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		conn.Close()
		return nil, nil, err
	}
	stop := func() error {
		conn.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			return err
		case <-time.After(2 * time.Second):
			cmd.Process.Kill()
			return <-done
		}
	}
	return conn, stop, nil
}
