package node

import (
	"testing"
	"time"
)

// An idle agent renews the core's lease with every tick, so the tick must
// come several times per lease, and twice per watchdog half-period.
func TestIdleTickStaysInsideLeaseAndWatchdog(t *testing.T) {
	for _, c := range []struct {
		dead, watchdog, want time.Duration
	}{
		{300 * time.Millisecond, 0, 750 * time.Millisecond}, // default: lease 3 s
		{27 * time.Millisecond, 0, 500 * time.Millisecond},  // fast: lease 2 s
		{5 * time.Millisecond, 0, 500 * time.Millisecond},   // turbo: lease 2 s
		{300 * time.Millisecond, 5 * time.Second, 750 * time.Millisecond},
		{300 * time.Millisecond, time.Second, 250 * time.Millisecond}, // a short watchdog wins
	} {
		got := idleTick(c.dead, c.watchdog)
		if got != c.want {
			t.Errorf("idleTick(%v, %v) = %v, want %v", c.dead, c.watchdog, got, c.want)
		}
		if lease := coreLease(c.dead); got > lease/4 {
			t.Errorf("idleTick(%v, %v) = %v: over a quarter of the lease %v", c.dead, c.watchdog, got, lease)
		}
	}
}
