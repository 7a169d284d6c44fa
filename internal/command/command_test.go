package command

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestRunOutputAndExit(t *testing.T) {
	out, err := Run(context.Background(), []string{"sh", "-c", "echo hi $X; exit 3"}, []string{"X=there"}, time.Second)
	if strings.TrimSpace(out) != "hi there" {
		t.Errorf("output %q", out)
	}
	if err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("err %v", err)
	}
}

func TestTimeoutKillsTheGroup(t *testing.T) {
	pidFile := t.TempDir() + "/child"
	start := time.Now()
	// The shell starts a grandchild that would outlive a plain kill.
	_, err := Run(context.Background(), []string{"sh", "-c", "sleep 60 & echo $! > " + pidFile + "; wait"}, nil, 200*time.Millisecond)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("err %v, want a timeout", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("took %v", time.Since(start))
	}
	b, _ := os.ReadFile(pidFile)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	deadline := time.Now().Add(2 * time.Second)
	for pid > 0 && syscall.Kill(pid, 0) == nil {
		// A zombie still answers signal 0 until reaped; check its state.
		st, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if strings.Contains(string(st), ") Z") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("grandchild %d survived the timeout", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A check or hook that starts something in the background (a helper, a
// daemon that keeps its parent's output open, `curl ... &`) and exits: its
// result is its exit, when it exits. Waiting for the output to close made
// a healthy check time out, a false failover; keepalived judges a script
// by its exit too. What it left running is its own.
func TestExitIsTheResultWhatItLeftRunningAside(t *testing.T) {
	pidFile := t.TempDir() + "/child"
	start := time.Now()
	out, err := Run(context.Background(), []string{"sh", "-c", "sleep 60 & echo $! > " + pidFile + "; echo healthy"}, nil, 3*time.Second)
	took := time.Since(start)
	b, _ := os.ReadFile(pidFile)
	if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); pid > 0 {
		syscall.Kill(pid, syscall.SIGKILL) // the test's own, by its pid
	}
	if err != nil || strings.TrimSpace(out) != "healthy" {
		t.Errorf("%q, %v", out, err)
	}
	if took > time.Second {
		t.Errorf("the result took %v: it waited for what the program left running", took)
	}
}
