package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hapair/hapair/lab"
)

// In sync mode, a standby that applies slower than the application writes
// (here its replication link carries 256 kbit/s, as a standby on a busy
// disk or a loaded CPU applies only so fast): once a write it was too slow
// for has degraded sync, it stays degraded for as long as the stream
// outruns it, instead of coming back at each catch-up with what was
// written at the degrade, only for the next write to wait out the timeout
// for the thousands it lacks and degrade again. Once the application
// slows below the standby's pace, sync comes back. Real daemons, real TCP
// replication, the kernel's token bucket on the active's side of the link.
func TestSlowStandbyKeepsSyncDegradedWhileTheStreamOutrunsIt(t *testing.T) {
	t.Parallel()
	c := cluster(t, lab.ConfigOptions{SyncMode: "sync", Extra: "\n[sessions]\nsync_timeout = \"200ms\"\n"})
	act := settle(t, c)
	waitSynced(t, c, act)
	shapeRepl(t, c, act, "256kbit")
	events := follow(t, c, act)
	defer events.stop()
	degrades := func() int {
		events.mu.Lock()
		defer events.mu.Unlock()
		n := 0
		for _, ev := range events.events {
			if ev.Type == "sync-degraded" {
				n++
			}
		}
		return n
	}
	w, stopWrites := writeLoad(t, c, act, 0)
	stop := sync.OnceValue(stopWrites) // here on failure, and below
	defer stop()
	// 32 KiB take a second across the link: the standby applies it past
	// the timeout, and sync degrades.
	cl := api(t, c, act)
	if _, err := cl.Create(context.Background(), "big", bytes.Repeat([]byte("b"), 32<<10)); err != nil {
		t.Fatal(err)
	}
	events.wait(t, "sync-degraded")
	// The writer outruns the standby: it falls behind by the
	// backpressure's bound, and stays there.
	if !pollUntil(10*time.Second, func() bool {
		s, err := c.Status(act)
		return err == nil && s.Sync.Written-s.Sync.Acked > 1000
	}) {
		s, _ := c.Status(act)
		t.Fatalf("the standby never fell behind a writer flat out: %+v", s.Sync)
	}
	// Watched until the standby has applied what was written when the
	// watch began, past what was written at the degrade: where sync came
	// back before, and the next write waited out the timeout.
	before, count, start := degrades(), w.Count(), time.Now()
	var s statusSync
	from := uint64(0)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the standby did not apply, within 30 s, what was written when the watch began: %+v", s)
		}
		st, err := c.Status(act)
		if err != nil {
			continue
		}
		s = statusSync{st.Sync.Degraded, st.Sync.DegradedReason, -1, st.Sync.Written - st.Sync.Acked}
		if p := st.Sync.StandbyPace; p != nil {
			s.pace = *p
		}
		if from == 0 {
			from = st.Sync.Written
		}
		if st.Sync.Acked >= from && time.Since(start) > time.Second {
			break
		}
	}
	// A turn of the old cycle: a write waits out the timeout, and sync
	// degrades again.
	time.Sleep(time.Second)
	n := degrades() - before
	t.Logf("%d writes in %v beside the slow standby; sync degraded %d more times; last status %+v", w.Count()-count, time.Since(start).Round(time.Millisecond), n, s)
	if n != 0 {
		t.Errorf("sync degraded %d more times under a stream that outran the standby: restored in turn", n)
	}
	if !s.degraded || !strings.Contains(s.reason, "did not apply a write within 200ms") || s.pace <= 0 {
		t.Errorf("status while the standby is slow: %+v", s)
	}
	// The application slows below the standby's pace: sync comes back.
	stop()
	writeSlowlyUntilRestored(t, c, act, "big", "with the writer slower than the standby")
	events.wait(t, "sync-restored")
}

// writeSlowlyUntilRestored updates session on node every 10 ms until the
// node's sync mode is no longer degraded, for at most 2,000 writes; when
// says in what case sync should have come back.
func writeSlowlyUntilRestored(t *testing.T, c *lab.Cluster, node, session, when string) {
	t.Helper()
	cl := api(t, c, node)
	for i := 0; ; i++ {
		if i == 2000 {
			t.Fatal("sync not restored " + when)
		}
		if _, err := cl.Update(context.Background(), session, []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		if st, err := c.Status(node); err == nil && !st.Sync.Degraded {
			return
		}
		time.Sleep(10 * time.Millisecond) // the application's own pace
	}
}

// statusSync is what the slow-standby test keeps of the active's status.
type statusSync struct {
	degraded bool
	reason   string
	pace     float64 // -1: not measured
	behind   uint64
}

// In sync mode, a standby whose daemon hangs (SIGSTOP; its heartbeat core,
// host and links run on, so its replication connection stays up) applies
// nothing while the application writes on: sync degrades, and status says
// the standby applied no writes lately, where it said nothing about its
// pace before (only a standby past the degrade's floor was measured).
// Resumed, it catches up and sync comes back.
func TestHungStandbyShowsNoWritesApplied(t *testing.T) {
	t.Parallel()
	c := cluster(t, lab.ConfigOptions{SyncMode: "sync", Extra: "\n[sessions]\nsync_timeout = \"200ms\"\n"})
	act := settle(t, c)
	sb := other(act)
	waitSynced(t, c, act)
	events := follow(t, c, act)
	defer events.stop()
	if err := c.Signal(sb, syscall.SIGSTOP, 0); err != nil {
		t.Fatal(err)
	}
	resume := sync.OnceValue(func() error { return c.Signal(sb, syscall.SIGCONT, 0) })
	defer resume()
	_, stopWrites := writeLoad(t, c, act, 0)
	stop := sync.OnceValue(stopWrites)
	defer stop()
	events.wait(t, "sync-degraded")
	var last string
	if !pollUntil(10*time.Second, func() bool {
		s, err := c.Status(act)
		if err != nil {
			return false
		}
		last = s.Text()
		return s.Sync.Degraded && s.Sync.StandbyPace != nil
	}) {
		t.Fatalf("no pace measured for the hung standby within 10 s:\n%s", last)
	}
	if !strings.Contains(last, "the standby applied no writes lately") {
		t.Errorf("status beside the hung standby:\n%s", last)
	}
	stop()
	if err := resume(); err != nil {
		t.Fatal(err)
	}
	if _, err := api(t, c, act).Create(context.Background(), "after", nil); err != nil {
		t.Fatal(err)
	}
	writeSlowlyUntilRestored(t, c, act, "after", "once the standby resumed")
	events.wait(t, "sync-restored")
}
