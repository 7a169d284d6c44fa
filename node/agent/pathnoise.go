package agent

import "time"

// A lossy link (a failing cable or switch port, a congested segment)
// loses frames at random: every third lost in a row takes the path down
// until the next one comes, and the peer, losing ours, says it does not
// hear us. At 20 % loss at the fast profile that was about seven WARN
// lines a second on each node, with nothing in them that the first few
// did not say. A path that goes down (or one-way) unsteadyAt times within
// unsteadyWindow is unsteady: its changes are no longer logged one by
// one but summed up every unsteadyWindow, with the frames it lost, until
// a whole window passes without a change. A path that goes down once, or
// for good, is logged as before; the peer lost on every path always is.
const (
	unsteadyAt     = 3
	unsteadyWindow = dropLogEvery
)

// pathNoise decides which of one heartbeat path's changes are logged.
// Times come from the caller (the events'), so it is tested without a
// clock.
type pathNoise struct {
	// losses are the times of the path's last unsteadyAt-1 losses (down
	// or one-way), a ring; next is the oldest's slot.
	losses [unsteadyAt - 1]time.Time
	next   int
	// unsteady: the changes are summed up (summary), not logged.
	unsteady bool
	// Since the last summary: whether the path changed at all, and how
	// often it went down or one-way.
	changed        bool
	downs, oneWays int
}

// change records a change of the path at now: down, it went down; oneWay,
// the peer stopped hearing this node on it; neither, it came back. quiet
// says not to log the change on its own (the path is unsteady); began,
// that this change made it so (log that instead).
func (n *pathNoise) change(now time.Time, down, oneWay bool) (quiet, began bool) {
	n.changed = true
	if down {
		n.downs++
	}
	if oneWay {
		n.oneWays++
	}
	if n.unsteady {
		return true, false
	}
	if !down && !oneWay {
		return false, false
	}
	oldest := n.losses[n.next]
	n.losses[n.next] = now
	n.next = (n.next + 1) % len(n.losses)
	if oldest.IsZero() || now.Sub(oldest) >= unsteadyWindow {
		return false, false
	}
	n.unsteady = true
	return true, true
}

// summary is called every unsteadyWindow. For an unsteady path it says
// what happened since the last call; settled, that nothing did: the path
// is steady again, and its next changes are logged one by one.
func (n *pathNoise) summary() (unsteady bool, downs, oneWays int, settled bool) {
	unsteady, downs, oneWays, settled = n.unsteady, n.downs, n.oneWays, n.unsteady && !n.changed
	n.changed, n.downs, n.oneWays = false, 0, 0
	if settled {
		*n = pathNoise{}
	}
	return unsteady, downs, oneWays, settled
}
