package agent

import "time"

// idleTick is how often the loop ticks while quiet: often enough for the
// watchdog (half its period, 2.5 s in the unit) and the heartbeat core's
// lease (renewed at a quarter of at least 2 s), seldom enough that an idle
// node does not wake for nothing.
const idleTick = 250 * time.Millisecond

// ticker is the loop's clock: every half interval while the machine has
// something due or writes come, every idleTick otherwise. Each period
// counts from the last tick.
type ticker struct {
	t          *time.Timer
	busy, idle time.Duration
	last, due  time.Time // the last tick, and when the timer fires
}

func newTicker(interval time.Duration) *ticker {
	busy := max(interval/2, time.Millisecond)
	now := time.Now()
	return &ticker{t: time.NewTimer(busy), busy: busy, idle: max(idleTick, busy), last: now, due: now.Add(busy)}
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
