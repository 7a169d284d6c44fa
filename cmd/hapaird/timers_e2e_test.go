package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hapair/hapair/lab"
)

// An operator changes the heartbeat profile the only way there is, one
// node at a time: the standby restarted with the new file, a switchover,
// then the other node. In between, each node runs its own timers: the
// standby at fast (dead interval 30 ms) hears an active that still sends
// every 100 ms. Nothing may fail over: each node judges its peer by the
// longer of the two dead intervals, which the frames carry.
func TestRollingProfileChangeFailsNothingOver(t *testing.T) {
	for _, tc := range []struct{ from, to string }{{"default", "fast"}, {"fast", "default"}} {
		t.Run(tc.from+"-to-"+tc.to, func(t *testing.T) {
			t.Parallel()
			c := cluster(t, lab.ConfigOptions{Profile: tc.from})
			act := settle(t, c)
			sb := other(act)
			src, err := os.ReadFile(c.Config)
			if err != nil {
				t.Fatal(err)
			}
			changed := strings.Replace(string(src), "profile = \""+tc.from+"\"", "profile = \""+tc.to+"\"", 1)
			if changed == string(src) {
				t.Fatal("no profile line in the lab's config")
			}
			newCfg := filepath.Join(c.Dir, "changed.toml")
			if err := os.WriteFile(newCfg, []byte(changed), 0o600); err != nil {
				t.Fatal(err)
			}
			holders := c.WatchHolders()
			defer holders.Stop()
			if err := c.RestartOn(sb, newCfg); err != nil {
				t.Fatal(err)
			}
			// The two run different timers now: long enough for any
			// false failover to show (a dead interval is 30-300 ms).
			for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
				if s, err := c.Status(sb); err != nil || s.Role != "STANDBY" {
					t.Fatalf("%s during the change: %+v %v", sb, s, err)
				}
			}
			switchover(t, c, act)
			if err := c.RestartOn(act, newCfg); err != nil {
				t.Fatal(err)
			}
			for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
				if s, err := c.Status(act); err != nil || s.Role != "STANDBY" {
					t.Fatalf("%s after the change: %+v %v", act, s, err)
				}
			}
			// The switchover is make-before-break: two holders for
			// about a millisecond, never none.
			none, both := holders.Stop()
			if both > 50*time.Millisecond || none > 0 {
				t.Errorf("during the change: two holders for %v, none for %v", both, none)
			}
			// Two nodes became active: the first at start-up, the
			// other by the switchover; nothing else.
			var took []string
			for _, n := range []string{"a", "b"} {
				b, _ := os.ReadFile(c.LogPath(n))
				for _, l := range strings.Split(string(b), "\n") {
					if strings.Contains(l, "msg=transition") && strings.Contains(l, "to=ACTIVE") {
						took = append(took, l)
					}
				}
			}
			if len(took) != 2 {
				t.Errorf("%d transitions to ACTIVE, want the start-up's and the switchover's:\n%s", len(took), strings.Join(took, "\n"))
			}
		})
	}
}
