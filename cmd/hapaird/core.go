package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/hapair/hapair/heartbeat"
	"github.com/hapair/hapair/node"
	"golang.org/x/sys/unix"
)

// coreEnv marks the heartbeat core: hapaird started by itself with the
// socket to its parent as file descriptor 3 (heartbeat.ServeCore). An
// environment variable rather than an argument, so no command line an
// operator types can start one.
const coreEnv = "HAPAIRD_HEARTBEAT_CORE"

// runCore is the child's main.
func runCore() int {
	// The core lives as long as its agent, and past its death only to
	// hand over (the socket's end), whoever else signals it. systemd
	// stops a unit by sending SIGTERM to every process in it at once,
	// and Ctrl-C reaches the whole foreground process group: a core that
	// died of it could not send the frames of its agent's handover, and
	// a graceful stop was a host loss
	// (TestGracefulStopWhenEveryProcessIsSignalled). It starts no
	// program, so nothing inherits the ignored signals.
	signal.Ignore(syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGPIPE)
	conn, err := net.FileConn(os.NewFile(3, "hapaird-core"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "hapaird heartbeat core:", err)
		return 1
	}
	// fd 5: the page it writes when it sends in, for its agent to read.
	sent, err := heartbeat.OpenSentPage(os.NewFile(5, "hapaird-core-sent"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "hapaird heartbeat core:", err)
		return 1
	}
	if err := node.ServeCore(conn, sent); err != nil {
		fmt.Fprintln(os.Stderr, "hapaird heartbeat core:", err)
		return 1
	}
	return 0
}

// startCore runs the heartbeat core as a child of this process: the same
// executable (/proc/self/exe, so an upgrade that replaced the file still
// starts this version), connected by a SEQPACKET socket pair.
func startCore(lock, sent *os.File) (net.Conn, func() error, error) {
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
	// fd 4: the instance lock, held by the core until it ends, so a
	// daemon started after this one died waits for its handover.
	cmd.ExtraFiles = []*os.File{theirs, lock, sent}
	cmd.Stderr = os.Stderr
	// The core ends when the agent does, on the socket's end-of-file:
	// after a goodbye at once, and after the agent died only once it has
	// told the peer FAULT and released the VIPs, within two dead
	// intervals (heartbeat.ServeCore). SIGKILL at the agent's death, as
	// before, left the peer to wait out a dead interval and the VIPs to
	// their kernel lease. SIGCONT wakes a core stopped with its agent
	// (SIGSTOP of the whole daemon, then kill -9), which would otherwise
	// never read that end-of-file; to a running core it is nothing.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGCONT}
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
