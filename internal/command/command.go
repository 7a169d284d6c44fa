// Package command runs a program with a deadline and, when the deadline
// passes, kills its whole process group: a check or hook that hangs, and
// forked (a shell script, systemctl), must not leave children behind. A
// program that exits in time is judged by its exit, whatever it started
// and left running (`helper &`, a daemon that kept its output open).
package command

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"syscall"
	"time"
)

// ErrTimeout is returned when the program was killed at its deadline.
var ErrTimeout = errors.New("timed out")

// maxOutput bounds what is kept of a program's output.
const maxOutput = 4096

// exitedOutputWait is how long output is read after the program exited,
// from what it left running that holds the pipe.
const exitedOutputWait = 100 * time.Millisecond

type limited struct{ bytes.Buffer }

func (l *limited) Write(p []byte) (int, error) {
	if room := maxOutput - l.Len(); room > 0 {
		l.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// Run runs argv with env added to the environment and returns its
// combined output (at most 4 KiB). A non-zero exit is an *exec.ExitError.
func Run(ctx context.Context, argv []string, env []string, timeout time.Duration) (string, error) {
	if len(argv) == 0 {
		return "", errors.New("command: empty command")
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(cmd.Environ(), env...)
	var out limited
	cmd.Stdout, cmd.Stderr = &out, &out
	// Its own group, so a timeout kills its children too; and killed with
	// the daemon, so a crashed daemon leaves no hook or probe running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// Once it exits, its output is what it wrote by then: what it left
	// running may hold the pipe for ever, and a healthy check that
	// waited for that timed out (a false failover).
	cmd.WaitDelay = exitedOutputWait
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("command: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if errors.Is(err, exec.ErrWaitDelay) {
			err = nil // it exited 0; something it started kept the pipe
		}
		return out.String(), err
	case <-ctx.Done():
		// The group: the program and everything it started.
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return out.String(), fmt.Errorf("command: %s: %w after %v", argv[0], ErrTimeout, timeout)
		}
		return out.String(), ctx.Err()
	}
}
