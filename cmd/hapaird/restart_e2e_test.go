package main

import (
	"testing"
	"time"

	"github.com/hapair/hapair/lab"
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
		o    lab.ConfigOptions
	}{
		{"restart faster than the dead interval", lab.ConfigOptions{SyncMode: "sync", Interval: "100ms", Dead: "3s"}},
		{"restart slower than the dead interval", lab.ConfigOptions{SyncMode: "sync", Profile: "fast"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := cluster(t, tc.o)
			acked := map[string]int{}
			for round := range 10 {
				missing, err := c.CrashRestart(round, acked, 10*time.Second)
				if err != nil {
					t.Fatalf("round %d: %v", round, err)
				}
				if missing > 0 {
					t.Fatalf("round %d: %d acknowledged writes missing on the standby", round, missing)
				}
			}
		})
	}
}
