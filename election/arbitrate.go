package election

// Verdict is the outcome of arbitration between two active nodes.
type Verdict int

// Verdicts, from the first node's point of view.
const (
	FirstStays Verdict = iota
	SecondStays
	NeitherMoves // both locked: an operator must act
)

// Arbitrate decides which of two active nodes stays active, from the two
// snapshots the nodes exchanged (design.md section 4). It is a pure
// function of its arguments, and symmetric: Arbitrate(a, b) and
// Arbitrate(b, a) name the same node, so both nodes always agree.
// The string names the rule that decided.
func Arbitrate(a, b Facts) (Verdict, string) {
	pick := func(first bool) Verdict {
		if first {
			return FirstStays
		}
		return SecondStays
	}
	// 1. A locked node keeps its role.
	switch {
	case a.Locked && b.Locked:
		return NeitherMoves, "both nodes locked"
	case a.Locked != b.Locked:
		return pick(a.Locked), "locked node keeps its role"
	}
	// 2. The node that processed a new session most recently, counting
	// only sessions since both were active (before that, only one of
	// them could take sessions, and that says nothing about the split).
	overlap := min(a.ActiveFor, b.ActiveFor)
	aNew := a.LastNewSession >= 0 && a.LastNewSession < overlap
	bNew := b.LastNewSession >= 0 && b.LastNewSession < overlap
	switch {
	case aNew && bNew && a.LastNewSession != b.LastNewSession:
		return pick(a.LastNewSession < b.LastNewSession), "processed a new session most recently"
	case aNew != bNew:
		return pick(aNew), "processed a new session most recently"
	}
	// 3. The node active longest.
	if a.ActiveFor != b.ActiveFor {
		return pick(a.ActiveFor > b.ActiveFor), "active longest"
	}
	// 4. The preferred node; the node id settles a misconfigured pair.
	if a.Preferred != b.Preferred {
		return pick(a.Preferred), "preferred node"
	}
	return pick(a.Node < b.Node), "lower node id"
}
