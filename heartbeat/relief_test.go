package heartbeat

import (
	"testing"
	"time"
)

// A loop that does not run for three dead intervals (its CPU taken, as a
// hypervisor takes a vCPU) is covered by its relief senders: the peer
// does not take it for lost. Without relief the same stall loses it, which
// shows the stall is one.
func TestReliefSendsForALoopThatDoesNotRun(t *testing.T) {
	if reliefCPUs() == nil {
		t.Skip("a single CPU: no relief senders")
	}
	for _, relief := range []bool{true, false} {
		t.Run(map[bool]string{true: "relief", false: "none"}[relief], func(t *testing.T) {
			inEachWorld(t, func(t *testing.T, w world) {
				a, b := startStallPair(t, w, relief)
				from := b.len()
				stall(a, 3*stallDead)
				if lost := b.count(PeerLost, from); relief && lost != 0 {
					t.Errorf("with relief, b took a stalled a for lost %d times", lost)
				} else if !relief && lost == 0 {
					t.Errorf("without relief, b did not take a stalled a for lost: the stall tests nothing")
				}
				// The relief's frames echo what a's loop last read,
				// older and older: a stalled a, not a link that lost
				// b's frames (b warned of a one-way link on every
				// path at every such stall).
				if n := b.count(PathUnheard, from); relief && n != 0 {
					t.Errorf("with relief, b took a stalled a for deaf on a path %d times", n)
				}
				if n := a.ep.Stats().Relieved; relief == (n == 0) {
					t.Errorf("relief %v: %d frames relieved", relief, n)
				}
				if lost := a.count(PeerLost, from); lost != 0 {
					t.Errorf("relief %v: a, stalled, took b for lost: its own pause", relief)
				}
			})
		})
	}
}

// A loop that stops for good is not covered for long: the peer takes the
// node for lost once the relief gives up (reliefFor dead intervals).
func TestReliefDoesNotCoverALoopThatStopped(t *testing.T) {
	if reliefCPUs() == nil {
		t.Skip("a single CPU: no relief senders")
	}
	inEachWorld(t, func(t *testing.T, w world) {
		a, b := startStallPair(t, w, true)
		from := b.len()
		release := make(chan struct{})
		t.Cleanup(func() { close(release) })
		park := func() { <-release }
		a.ep.park.Store(&park)
		stopped := time.Now()
		b.waitFor(t, PeerLost, "", from, 20*reliefFor*stallDead)
		if d := time.Since(stopped); d < (reliefFor-1)*stallDead {
			t.Errorf("b took a for lost %v after its loop stopped; the relief covers it for %v", d, reliefFor*stallDead)
		}
		if a.ep.Stats().Relieved == 0 {
			t.Error("no frame relieved")
		}
	})
}

// stallDead is the stall tests' dead interval: long enough that a loaded
// test machine (the race detector, other tests' namespaces) does not make
// b take a for lost by itself.
const stallDead = 100 * time.Millisecond

// startStallPair runs a (relief as asked) and b (none) and waits until
// each hears the other.
func startStallPair(t *testing.T, w world, relief bool) (a, b *node) {
	t.Helper()
	cfg := func(c *Config) { c.Dead, c.Relief = stallDead, relief }
	a = startOn(t, w.paths(t, "a"), 1, stallDead/5, cfg)
	b = startOn(t, w.paths(t, "b"), 2, stallDead/5, func(c *Config) { c.Dead = stallDead })
	a.ep.SetLocal(Local{Role: RoleActive, ActiveSince: time.Now()})
	for _, n := range []*node{a, b} {
		n.waitFor(t, PeerAlive, "", 0, 5*time.Second)
	}
	return a, b
}

// stall keeps n's loop from running for d, then lets it run again and
// waits until it has.
func stall(n *node, d time.Duration) {
	until := time.Now().Add(d)
	park := func() {
		if w := time.Until(until); w > 0 {
			time.Sleep(w)
		}
	}
	n.ep.park.Store(&park)
	time.Sleep(d)
	n.ep.park.Store(nil)
	// One more dead interval, for what b would say of the stall.
	time.Sleep(stallDead)
}

// A relief sends when no frame left for a wake-up period, and keeps
// sending at every wake-up once its own frame is the last, though it wakes
// a little early: it skipped every other wake-up (frames 2.5 ms apart at
// turbo, half its dead interval).
func TestReliefDue(t *testing.T) {
	const every = 1000 * time.Microsecond
	for _, c := range []struct {
		age          time.Duration
		relievedLast bool
		due          bool
	}{
		{999 * time.Microsecond, false, false},
		{1000 * time.Microsecond, false, true},
		{900 * time.Microsecond, true, true},
		{700 * time.Microsecond, true, false},
	} {
		var e Endpoint
		now := int64(time.Second)
		e.sentAt.Store(now - int64(c.age))
		e.relievedLast.Store(c.relievedLast)
		if got := e.reliefDue(now, every); got != c.due {
			t.Errorf("last frame %v ago, relief's %v: due %v, want %v", c.age, c.relievedLast, got, c.due)
		}
	}
}
