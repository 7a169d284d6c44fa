package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

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
	act := settle(t, c)
	sb := other(act)
	if err := c.Signal(sb, syscall.SIGTERM, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	err = c.StartLogTo(sb, w)
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	if got := settle(t, c); got != act {
		t.Fatalf("%s became active when its peer restarted", got)
	}
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

	holders := c.WatchHolders()
	defer holders.Stop()
	res, err := c.Run("host-loss", time.Millisecond)
	if err != nil {
		t.Fatalf("host loss with the standby's journal stalled: %v", err)
	}
	t.Log(res)
	// The new active must go on as one: it renews its VIP and its core's
	// lease of it, which a loop blocked on a log line would not. Watched
	// for longer than the lab's VIP lease (4 s) and the core's lease.
	until := time.Now().Add(6 * time.Second)
	for time.Now().Before(until) {
		if !c.Holds(sb, lab.VIP.Addr()) {
			t.Fatalf("%s lost the VIP it took over", sb)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st, err := c.Status(sb); err != nil || st.Role != "ACTIVE" {
		t.Fatalf("%s after the failover: %+v, %v", sb, st, err)
	} else if st.LogDropped != 0 {
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
