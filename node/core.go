package node

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/hapair/hapair/heartbeat"
	"github.com/hapair/hapair/vip"
	"golang.org/x/sys/unix"
)

// RTPriority is the heartbeat core's SCHED_RR priority: above every normal
// task and the real-time threads media servers run at (Asterisk's `-p`
// and highpriority are SCHED_RR 10, rtkit's clients 20 at most), below
// the kernel's threaded interrupts (50) that deliver its frames. At 10
// it shared Asterisk's priority and waited behind a busy thread, up to
// its time slice (design-notes.md, "The heartbeat core").
const RTPriority = 40

// ServeCore is the heartbeat core's main, in the child process a node's
// StartCore started, on its end of the socket; it writes when it sends in
// sent, if the agent gave it one.
func ServeCore(conn net.Conn, sent *heartbeat.SentPage) error {
	return heartbeat.ServeCore(conn, sent, isolate, fence)
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
	// Locked as faulted in: what the core touches stays in memory, and
	// what it never touches (most of this executable, which is also the
	// agent's, and the 64 MB arenas the Go runtime maps at a time) is
	// not made resident for it. Locking every mapping at once made the
	// core 120 MB of RSS (450 MB in a race build). A page first touched
	// later (the fencing path) is read in then; kernels before 4.4 lack
	// MCL_ONFAULT and lock it all.
	err := unix.Mlockall(unix.MCL_CURRENT | unix.MCL_FUTURE | unix.MCL_ONFAULT)
	if errors.Is(err, unix.EINVAL) {
		err = unix.Mlockall(unix.MCL_CURRENT | unix.MCL_FUTURE)
	}
	if err != nil {
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

// CanRealTime says whether this process may take the real-time priority the
// heartbeat core asks for: it tries on a thread of its own and goes back.
func CanRealTime() error {
	done := make(chan error)
	go func() {
		// The thread ends with the goroutine, scheduling and all.
		runtime.LockOSThread()
		attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_RR, Priority: RTPriority}
		done <- unix.SchedSetAttr(0, &attr, 0)
	}()
	return <-done
}
