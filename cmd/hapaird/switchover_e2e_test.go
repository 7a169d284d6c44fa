package main

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hapair/hapair/lab"
)

// The replication link fails (a cable, a switch) and the operator restarts
// the standby, then switches over: the restarted standby holds no session,
// and the active's acknowledgements from the connection before its restart
// said it held them all. The switchover must wait for the standby's own
// word (its heartbeats, on the dedicated link that still works), and be
// refused while it holds less; once the link is back and the standby has
// resynchronised, the same switchover loses nothing.
func TestSwitchoverToARestartedStandbyWaitsForItsSessions(t *testing.T) {
	c := cluster(t, lab.ConfigOptions{})
	act := settle(t, c)
	sb := other(act)
	ctx := context.Background()
	cl := api(t, c, act)
	const sessions = 20
	for i := range sessions {
		if _, err := cl.Create(ctx, fmt.Sprintf("s%d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	waitSynced(t, c, act)
	if err := c.CutReplication(false); err != nil {
		t.Fatal(err)
	}
	if !pollUntil(10*time.Second, func() bool {
		s, err := c.Status(act)
		return err == nil && !s.Sync.Connected
	}) {
		t.Fatal("the active did not see its replication link fail")
	}
	if err := c.Signal(sb, syscall.SIGTERM, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(sb); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitRole(sb, "STANDBY", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err := c.Admin(act).Switchover(sctx, false)
	cancel()
	if err == nil || !strings.Contains(err.Error(), "not handing over") {
		l, _ := api(t, c, sb).List(ctx)
		t.Fatalf("switchover to a standby holding %d of %d sessions: %v", len(l), sessions, err)
	}
	t.Log(err)
	if s, err := c.Status(act); err != nil || s.Role != "ACTIVE" || !c.Holds(act, lab.VIP.Addr()) || c.Holds(sb, lab.VIP.Addr()) {
		t.Fatalf("after the refusal %s: %+v %v", act, s, err)
	}
	// The refusal let the writes it held go on.
	if _, err := cl.Create(ctx, "after", []byte("v")); err != nil {
		t.Fatal(err)
	}

	if err := c.CutReplication(true); err != nil {
		t.Fatal(err)
	}
	waitSynced(t, c, act)
	switchover(t, c, act)
	if l, err := api(t, c, sb).List(ctx); err != nil || len(l) != sessions+1 {
		t.Errorf("the new active holds %d sessions, want %d (%v)", len(l), sessions+1, err)
	}
}
