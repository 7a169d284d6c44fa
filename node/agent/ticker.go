package agent

import "time"

// defaultIdleTick is how often the loop ticks while quiet when Options do
// not say (node sets a quarter of the core's lease).
const defaultIdleTick = 250 * time.Millisecond

// ticker is the loop's clock: every half interval while the machine has
// something due or writes come, every idle period otherwise. Each period
// counts from the last tick.
type ticker struct {
	t          *time.Timer
	busy, idle time.Duration
	last, due  time.Time // the last tick, and when the timer fires
}

func newTicker(interval, idle time.Duration) *ticker {
	busy := max(interval/2, time.Millisecond)
	if idle <= 0 {
		idle = defaultIdleTick
	}
	now := time.Now()
	return &ticker{t: time.NewTimer(busy), busy: busy, idle: max(idle, busy), last: now, due: now.Add(busy)}
}

// fired records a tick.
func (k *ticker) fired(now time.Time) { k.last, k.due = now, time.Time{} }

// next arms the timer for the next tick, sooner when the loop is no
// longer quiet; a timer armed for sooner than wanted is left alone.
func (k *ticker) next(quiet bool) {
	period := k.busy
	if quiet {
		period = k.idle
	}
	want := k.last.Add(period)
	if k.due.IsZero() || want.Before(k.due) {
		k.t.Reset(time.Until(want))
		k.due = want
	}
}
