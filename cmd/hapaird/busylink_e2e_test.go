package main

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hapair/hapair/internal/control"
	"github.com/hapair/hapair/lab"
	"github.com/hapair/hapair/statesync/store"
)

// The replication link is busy: the active's side of it is a 10 Mbit/s
// link whose queue (pfifo_fast, the kernel's classic one) the replication
// of 32 KiB sessions written flat out keeps full. The UDP heartbeat path
// runs on that link. Its frames were queued behind the stream, which took
// the queue's time to drain, far past the fast profile's dead interval:
// the path went down while its link was only busy. Then the dedicated
// heartbeat link fails (its frames lost at the standby's ingress), and
// the standby took the busy link for a dead peer. Marked as network
// control, the frames go ahead of the stream: the path stays up, and the
// standby stays standby.
func TestBusyReplicationLinkIsNoDeadPeer(t *testing.T) {
	t.Parallel()
	c := cluster(t, lab.ConfigOptions{Profile: "fast"})
	act := settle(t, c)
	sb := other(act)
	waitSynced(t, c, act)
	shapeRepl(t, c, act, "10mbit")
	before := udpPath(t, c, sb)

	// The stream: 32 KiB sessions rewritten as fast as the active takes
	// them, over a stream of their own.
	st, err := api(t, c, act).Stream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var floodErr error
	flooding := make(chan struct{})
	go func() {
		defer close(flooding)
		data := bytes.Repeat([]byte("x"), 32<<10)
		for i := 0; ctx.Err() == nil; i++ {
			kind := store.OpUpdate
			if i < 16 {
				kind = store.OpCreate
			}
			if _, floodErr = st.Do(kind, fmt.Sprintf("bulk-%d", i%16), data); floodErr != nil {
				return
			}
		}
	}()
	defer func() {
		cancel()
		st.Close()
		<-flooding
	}()
	// The link is full once the standby is more than a second's worth of
	// it behind (10 Mbit/s is 38 of these writes a second).
	if !pollUntil(10*time.Second, func() bool {
		s, err := c.Status(act)
		return err == nil && s.Sync.Written-s.Sync.Acked > 50
	}) {
		t.Fatal("the replication stream never filled its link")
	}
	dropPathAt(t, c, sb, 0) // the dedicated link's frames, lost
	holders := c.WatchHolders()
	// 3 s: a hundred dead intervals at the fast profile.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if s, err := c.Status(sb); err == nil && s.Role != "STANDBY" {
			t.Fatalf("%s became %s with the replication link busy: %+v", sb, s.Role, s.Paths)
		}
	}
	_, both := holders.Stop()
	s, _ := c.Status(act)
	after := udpPath(t, c, sb)
	t.Logf("%s behind by %d writes; %s's UDP path before %+v, after %+v", sb, s.Sync.Written-s.Sync.Acked, sb, before, after)
	if both > 0 || c.Holds(sb, lab.VIP.Addr()) {
		t.Errorf("two holders for %v; %s holds the VIP: %v", both, sb, c.Holds(sb, lab.VIP.Addr()))
	}
	if !after.Up || after.WentDown != before.WentDown {
		t.Errorf("%s's UDP path went down on a link that was only busy: before %+v, after %+v", sb, before, after)
	}
	select {
	case <-flooding:
		t.Fatalf("the stream ended: %v", floodErr)
	default:
	}
	// The standby fell behind by more than the active's log holds and
	// was sent a snapshot on the same connection: it must begin where an
	// operation does (a snapshot cut into one was read as the rest of the
	// operation, then as a message of a length spelt by its data). The
	// cluster's cleanup fails the test on a malformed message in either
	// log (clusterOn).
}

// shapeRepl makes node's side of the replication link a slow one of rate
// (lab's Shape), for the rest of the test.
func shapeRepl(t *testing.T, c *lab.Cluster, node, rate string) {
	t.Helper()
	undo, err := c.Shape(node, lab.Repl, rate)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { undo() })
}

// udpPath is node's UDP heartbeat path as its status says.
func udpPath(t *testing.T, c *lab.Cluster, node string) control.Path {
	t.Helper()
	s, err := c.Status(node)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range s.Paths {
		if p.Name == "udp" {
			return p
		}
	}
	t.Fatalf("%s has no UDP path: %+v", node, s.Paths)
	return control.Path{}
}
