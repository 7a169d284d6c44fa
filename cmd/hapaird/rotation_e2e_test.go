package main

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hapair/hapair/lab"
)

// Issue 14.1: the rolling key rotation the documentation gives, done one
// node at a time with both running: [old] -> [new, old] on each node ->
// [new] on each node. Heartbeats and replication never stop: the VIP has
// one holder throughout (make-before-break handoffs aside), nobody loses
// its peer, and every session written along the way reaches the standby.
func TestRollingKeyRotation(t *testing.T) {
	c := cluster(t, lab.ConfigOptions{})
	act := settle(t, c)
	if err := c.WaitSynced(act, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	holders := c.WatchHolders()
	defer holders.Stop()
	err := c.RotateKeys(func(active string) error {
		hapairctl(t, c, active, "switchover")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	none, both := holders.Stop()
	if none > 0 {
		t.Errorf("no node held the VIP for %v", none)
	}
	if both > 200*time.Millisecond {
		t.Errorf("both nodes held the VIP for %v", both)
	}
	for _, n := range []string{"a", "b"} {
		b, _ := os.ReadFile(c.LogPath(n))
		for _, l := range strings.Split(string(b), "\n") {
			for _, bad := range []string{"peer lost", "split brain", "authentication", "cannot be verified"} {
				if strings.Contains(l, bad) {
					t.Errorf("%s's log during the rotation: %s", n, l)
				}
			}
		}
	}
}
