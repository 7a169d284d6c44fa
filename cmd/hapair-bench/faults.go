package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/hapair/hapair/lab"
)

// The fault table: ordinary operations that must keep the promise of one
// active and no acknowledged session lost (issue 14), counted over many
// rounds with real daemons. The same rounds run, fewer, in the e2e tests.
type faultFigures struct {
	crashRounds, crashMissing, crashFailed int
	crashErr                               string
	rotations, rotationFailed              int
	none, both                             time.Duration
	rotationErr                            string
	lockRounds, takeovers, lockFailed      int
	lockErr                                string
}

func benchFaults(bin string, crash, rotations, locks int) faultFigures {
	var f faultFigures
	f.crashRestarts(bin, crash)
	f.rotate(bin, rotations)
	f.lockThenKill(bin, locks)
	return f
}

// crashRestarts kills -9 and restarts the active, half the rounds with a
// dead interval the restart beats, half at the fast profile.
func (f *faultFigures) crashRestarts(bin string, crash int) {
	for _, o := range []lab.ConfigOptions{
		{SyncMode: "sync", Interval: "100ms", Dead: "3s"}, // the restart beats the dead interval
		{SyncMode: "sync", Profile: "fast"},               // it does not
	} {
		c, _, done, err := startPair(bin, "crash", o)
		if err != nil {
			f.crashErr = err.Error()
			continue
		}
		acked := map[string]int{}
		for i := 0; i < crash/2; i++ {
			missing, err := c.CrashRestart(i, acked, 10*time.Second)
			f.crashRounds++
			f.crashMissing += missing
			if err != nil {
				f.crashFailed++
				f.crashErr = err.Error()
				fmt.Fprintf(os.Stderr, "   crash-restart round %d: %v\n", i, err)
				break
			}
		}
		done()
	}
	fmt.Fprintf(os.Stderr, "   crash-restart: %d rounds, %d acknowledged writes missing, %d failed\n", f.crashRounds, f.crashMissing, f.crashFailed)
}

// rotate runs the documented rolling key rotation, watching the VIP's
// holders throughout.
func (f *faultFigures) rotate(bin string, rotations int) {
	if c, _, done, err := startPair(bin, "rotate", lab.ConfigOptions{}); err != nil {
		f.rotationErr = err.Error()
	} else {
		h := c.WatchHolders()
		for i := 0; i < rotations; i++ {
			err := c.RotateKeys(func(active string) error {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				return c.Admin(active).Switchover(ctx, false)
			})
			f.rotations++
			if err != nil {
				f.rotationFailed++
				f.rotationErr = err.Error()
				fmt.Fprintf(os.Stderr, "   rotation %d: %v\n", i, err)
				break
			}
		}
		f.none, f.both = h.Stop()
		done()
	}
	fmt.Fprintf(os.Stderr, "   rotations: %d, longest with no holder %v, with two %v\n", f.rotations, f.none, f.both)
}

// lockThenKill locks the standby and kills the active at once.
func (f *faultFigures) lockThenKill(bin string, locks int) {
	if c, _, done, err := startPair(bin, "lock", lab.ConfigOptions{Profile: "fast"}); err != nil {
		f.lockErr = err.Error()
	} else {
		lock := func(node string, on bool) error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			text := ""
			if on {
				text = "bench"
			}
			return c.Admin(node).Lock(ctx, on, text)
		}
		for i := 0; i < locks; i++ {
			took, err := c.LockThenKill(500*time.Millisecond, lock)
			f.lockRounds++
			if took {
				f.takeovers++
			}
			if err != nil {
				f.lockFailed++
				f.lockErr = err.Error()
				fmt.Fprintf(os.Stderr, "   lock-then-kill round %d: %v\n", i, err)
				break
			}
		}
		done()
	}
	fmt.Fprintf(os.Stderr, "   lock-then-kill: %d rounds, %d takeovers\n", f.lockRounds, f.takeovers)
}

func renderFaults(f faultFigures) string {
	var b strings.Builder
	b.WriteString("\n### Faults operators cause\n\n")
	b.WriteString("Real daemons in namespaces. *kill -9 + restart*: the active's hapaird killed under a sync-mode write load (one client, one write at a time) and started again at once, half the rounds with a 3 s dead interval (the restart beats it), half at the fast profile; then every write ever acknowledged is read back from the standby, which must be the one holder within 10 s, the restarted node standby by way of INIT only. *Rotation*: the documented rolling key change ([old] -> [new, old] on each node -> [new] on each), each node restarted while standby (`switchover` between), the VIP's holders sampled every millisecond throughout; a make-before-break handoff has two holders for an instant by design. *Lock then kill*: `lock` on the standby (through the daemon), the active killed -9 at once, the standby watched for 500 ms at the fast profile (30 ms dead interval).\n\n")
	b.WriteString("| fault | rounds | result | target |\n|---|---|---|---|\n")
	note := func(failed int, err string) string {
		if failed == 0 && err == "" {
			return ""
		}
		return fmt.Sprintf(" (%d rounds failed: %s)", failed, err)
	}
	fmt.Fprintf(&b, "| kill -9 + immediate restart of the active | %d | acknowledged writes missing: %d%s | 0 |\n", f.crashRounds, f.crashMissing, note(f.crashFailed, f.crashErr))
	fmt.Fprintf(&b, "| rolling key rotation | %d | longest with no holder: %v; longest with two: %v%s | none: 0; two: a handoff |\n", f.rotations, f.none.Round(time.Millisecond), f.both.Round(time.Millisecond), note(f.rotationFailed, f.rotationErr))
	fmt.Fprintf(&b, "| lock the standby, kill the active at once | %d | takeovers: %d%s | 0 |\n", f.lockRounds, f.takeovers, note(f.lockFailed, f.lockErr))
	return b.String()
}
