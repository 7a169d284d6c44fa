package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hapair/hapair/internal/control"
	"github.com/hapair/hapair/lab"
)

// TestStalledJournalHoldsUpNoFailover gives the standby's daemon a stderr
// that nobody reads, as its journal stream is while journald is stalled (a
// busy disk, a vacuum, journald restarting): the pipe fills and a write to
// it blocks until the reader comes back. The standby must take over all
// the same when the active's host is lost, keep the VIP, and write what it
// logged meanwhile once the journal reads again.
func TestStalledJournalHoldsUpNoFailover(t *testing.T) {
	c := cluster(t, lab.ConfigOptions{})
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	sb := restartStandbyWith(t, c, lab.StartOptions{Log: w})
	w.Close() // the daemon's copy is the writer now
	// Fill the pipe through an open file description of its own, which
	// alone is non-blocking: the daemon's stays blocking, as a journal
	// stream is.
	fill, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", r.Fd()), os.O_WRONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("x"), 4095)
	chunk = append(chunk, '\n')
	for {
		if _, err := unix.Write(int(fill.Fd()), chunk); errors.Is(err, unix.EAGAIN) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	// Single bytes fill what a whole chunk did not fit into.
	for {
		if _, err := unix.Write(int(fill.Fd()), []byte("\n")); errors.Is(err, unix.EAGAIN) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	fill.Close()

	st := takesOverAndStays(t, c, sb, "the standby's journal stalled")
	if st.LogDropped != 0 {
		t.Errorf("%s dropped %d log lines; its queue holds far more than a failover writes", sb, st.LogDropped)
	}

	// The journal reads again: what was logged meanwhile comes out.
	var mu sync.Mutex
	var out bytes.Buffer
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := r.Read(buf)
			mu.Lock()
			out.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		got := out.String()
		mu.Unlock()
		if strings.Contains(got, "to=ACTIVE") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's log, once read again, lacks its transition to ACTIVE:\n%s", sb, strings.ReplaceAll(got, strings.Repeat("x", 4095), "[filler]"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// restartStandbyWith settles c, restarts its standby with o and returns
// it, once the pair has settled again with the same active.
func restartStandbyWith(t *testing.T, c *lab.Cluster, o lab.StartOptions) string {
	t.Helper()
	act := settle(t, c)
	sb := other(act)
	if err := c.Signal(sb, syscall.SIGTERM, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := c.StartWith(sb, o); err != nil {
		t.Fatal(err)
	}
	if got := settle(t, c); got != act {
		t.Fatalf("%s became active when its peer restarted", got)
	}
	return sb
}

// takesOverAndStays loses the active's host and checks that sb takes over
// and goes on as the active: it renews its VIP and its core's lease of
// it, which a loop blocked on a write would not. It watches for longer
// than the lab's VIP lease (4 s) and the core's lease.
func takesOverAndStays(t *testing.T, c *lab.Cluster, sb, with string) *control.Status {
	t.Helper()
	res, err := c.Run("host-loss", time.Millisecond)
	if err != nil {
		t.Fatalf("host loss with %s: %v", with, err)
	}
	t.Log(res)
	until := time.Now().Add(6 * time.Second)
	for time.Now().Before(until) {
		if !c.Holds(sb, lab.VIP.Addr()) {
			t.Fatalf("%s lost the VIP it took over, with %s", sb, with)
		}
		time.Sleep(50 * time.Millisecond)
	}
	st, err := c.Status(sb)
	if err != nil || st.Role != "ACTIVE" {
		t.Fatalf("%s after the failover with %s: %+v, %v", sb, with, st, err)
	}
	return st
}

// TestStalledSystemdHoldsUpNoFailover runs the standby as systemd would,
// with a watchdog, and with a notify socket that PID 1 does not read (a
// long daemon-reload, which every package installation runs): its queue
// is full, as it is when services' messages wait on a busy PID 1 (the
// kernel's default allows 10). A readiness message, a status line or a
// watchdog ping must not hold up the agent's loop: the standby starts,
// takes over the lost active, and stays active.
func TestStalledSystemdHoldsUpNoFailover(t *testing.T) {
	c := cluster(t, lab.ConfigOptions{})
	path, pid1 := notifySocket(t)
	// Another service's messages, waiting.
	service, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer service.Close()
	service.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	queued := 0
	for ; ; queued++ {
		if _, err := service.Write([]byte("WATCHDOG=1")); err != nil {
			break
		}
	}
	if queued == 0 {
		t.Fatal("could not queue a message on the notify socket")
	}
	env := []string{"NOTIFY_SOCKET=" + path, "WATCHDOG_USEC=2000000"}
	sb := restartStandbyWith(t, c, lab.StartOptions{Env: env})
	takesOverAndStays(t, c, sb, "PID 1 not reading its notify socket")
	// PID 1 reads again: what the daemon said meanwhile arrives, the
	// watchdog pings among it.
	buf := make([]byte, 4096)
	deadline := time.Now().Add(5 * time.Second)
	pid1.SetReadDeadline(deadline)
	for {
		n, err := pid1.Read(buf)
		if err != nil {
			t.Fatalf("no READY=1 from %s once the notify socket was read: %v", sb, err)
		}
		if strings.Contains(string(buf[:n]), "READY=1") {
			break
		}
	}
}

// notifySocket is a notify socket for a daemon run as systemd would
// (NOTIFY_SOCKET=path), read by the test as PID 1 would; closed at the
// test's end.
func notifySocket(t *testing.T) (path string, pid1 *net.UnixConn) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "notify")
	pid1, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pid1.Close() })
	return path, pid1
}

// TestStopTellsSystemdHowLongItMayTake stops an active whose standby's
// agent hangs (its heartbeat core still says STANDBY), so the stop waits
// out its bounds before it lets go. It tells systemd, with STOPPING=1, how
// long that may take (EXTEND_TIMEOUT_USEC), and ends within it: with a
// dead interval of 5 s or more the bounds pass the unit's TimeoutStopSec
// (20 s), whose kill would end the handover midway.
func TestStopTellsSystemdHowLongItMayTake(t *testing.T) {
	c := cluster(t, lab.ConfigOptions{})
	path, pid1 := notifySocket(t)
	node := restartStandbyWith(t, c, lab.StartOptions{Env: []string{"NOTIFY_SOCKET=" + path}})
	act := other(node)
	if err := c.Admin(act).Switchover(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitRole(node, "ACTIVE", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitRole(act, "STANDBY", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	// The standby's agent hangs; its core goes on.
	if err := c.Pause(act); err != nil {
		t.Fatal(err)
	}
	defer c.Signal(act, syscall.SIGCONT, 0)
	start := time.Now()
	if err := c.Signal(node, syscall.SIGTERM, 0); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	pid1.SetReadDeadline(time.Now().Add(10 * time.Second))
	var asked time.Duration
	for asked == 0 {
		n, err := pid1.Read(buf)
		if err != nil {
			t.Fatalf("no STOPPING=1 with EXTEND_TIMEOUT_USEC: %v", err)
		}
		for _, l := range strings.Split(string(buf[:n]), "\n") {
			if v, ok := strings.CutPrefix(l, "EXTEND_TIMEOUT_USEC="); ok {
				us, err := strconv.ParseInt(v, 10, 64)
				if err != nil || us <= 0 {
					t.Fatalf("EXTEND_TIMEOUT_USEC=%q", v)
				}
				asked = time.Duration(us) * time.Microsecond
			}
		}
	}
	if err := c.WaitExit(node, asked); err != nil {
		t.Fatalf("the stop did not end within the %v it asked systemd for: %v", asked, err)
	}
	took := time.Since(start)
	t.Logf("asked for %v, took %v", asked, took)
	if len(loggedLines(c, node, "did not take over", 1)) == 0 {
		t.Error("the stop did not wait for the hung standby: the test does not show the bound covers the wait")
	}
}
