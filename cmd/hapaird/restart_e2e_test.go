package main

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hapair/hapair/internal/labnet"
	"github.com/hapair/hapair/statesync"
)

// Issue 14.2 and design.md section 3: "A node that starts or restarts
// never becomes active over a peer that holds newer session state; a peer
// whose boot generation changed is a peer that restarted: the standby,
// holding every acknowledged write, takes over, and the restarted node
// resyncs from it." The active's hapaird is killed -9 under a sync-mode
// write load and started again at once, round after round, so both nodes
// take their turn as the restarted one (a is the preferred node): with a
// dead interval far longer than the restart, and with one far shorter.
func TestActiveCrashRestartLosesNoAcknowledgedWrite(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    labnet.ConfigOptions
	}{
		{"restart faster than the dead interval", labnet.ConfigOptions{SyncMode: "sync", Interval: "100ms", Dead: "3s"}},
		{"restart slower than the dead interval", labnet.ConfigOptions{SyncMode: "sync", Profile: "fast"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := cluster(t, tc.o)
			acked := map[string]int{}
			for round := range 10 {
				crashRestartRound(t, c, round, acked)
			}
		})
	}
}

func crashRestartRound(t *testing.T, c *labnet.Cluster, round int, acked map[string]int) {
	t.Helper()
	act := settle(t, c)
	if err := c.WaitSynced(act, 10*time.Second); err != nil {
		t.Fatalf("round %d: %v", round, err)
	}
	sb := other(act)
	st, err := api(c, act).Stream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	mine := map[string]int{}
	n := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			id, kind := fmt.Sprintf("r%d-s%d", round, i%16), statesync.OpUpdate
			if i < 16 {
				kind = statesync.OpCreate
			}
			if _, err := st.Do(kind, id, []byte(strconv.Itoa(i))); err != nil {
				return // the node died: this write was never acknowledged
			}
			mu.Lock()
			mine[id] = i
			n++
			mu.Unlock()
		}
	}()
	// Under load: at least 50 acknowledged writes before the crash.
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		enough := n >= 50
		mu.Unlock()
		if enough {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("round %d: fewer than 50 writes in 10s", round)
		}
		time.Sleep(time.Millisecond)
	}
	if err := c.Kill(act); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(act); err != nil {
		t.Fatal(err)
	}
	st.Close()
	<-done
	for id, v := range mine {
		acked[id] = v
	}

	// Within the failover bound, one holder: the standby that held every
	// acknowledged write. (Until the restarted daemon has removed it, the
	// killed one's VIP is still on its interface, as after any crash.)
	vip := labnet.VIP.Addr()
	deadline = time.Now().Add(10 * time.Second)
	for !c.Holds(sb, vip) || c.Holds(act, vip) {
		if time.Now().After(deadline) {
			t.Fatalf("round %d: 10s after %s restarted, %s holds the VIP: %v, %s: %v", round, act, sb, c.Holds(sb, vip), act, c.Holds(act, vip))
		}
		time.Sleep(time.Millisecond)
	}
	if err := c.WaitRole(act, "STANDBY", 10*time.Second); err != nil {
		t.Fatalf("round %d: %v", round, err)
	}
	// The restarted node went from INIT to STANDBY, never by ACTIVE.
	if s, err := c.Status(act); err != nil || s.LastTransition == nil || s.LastTransition.From != "INIT" {
		t.Fatalf("round %d: the restarted %s: %+v %v", round, act, s.LastTransition, err)
	}
	if c.Holds(act, vip) {
		t.Fatalf("round %d: both nodes hold the VIP", round)
	}
	for id, want := range acked {
		got, err := api(c, sb).Get(context.Background(), id)
		if err != nil || got.Data == nil {
			t.Fatalf("round %d: acknowledged %s=%d missing on %s: %v", round, id, want, sb, err)
		}
		if v, _ := strconv.Atoi(*got.Data); v < want {
			t.Fatalf("round %d: %s is %d on %s, acknowledged %d", round, id, v, sb, want)
		}
	}
}
