package election

import (
	"math/rand/v2"
	"testing"
	"time"
)

const never = -1

func facts(node uint8, activeFor, lastNew time.Duration) Facts {
	return Facts{Node: node, ActiveFor: activeFor, LastNewSession: lastNew}
}

// One row per rule of design.md section 4, each checked both ways round.
func TestArbitrateRules(t *testing.T) {
	s := time.Second
	locked := func(f Facts) Facts { f.Locked = true; return f }
	preferred := func(f Facts) Facts { f.Preferred = true; return f }
	for _, c := range []struct {
		name string
		a, b Facts
		want Verdict
		rule string
	}{
		{"1 exactly one locked wins over everything", locked(facts(1, 5*s, never)), facts(2, 50*s, 1*s), FirstStays, "locked node keeps its role"},
		{"1 both locked: neither moves", locked(facts(1, 5*s, 1*s)), locked(facts(2, 50*s, never)), NeitherMoves, "both nodes locked"},
		{"2 newer new session wins", facts(1, 60*s, 3*s), facts(2, 10*s, 2*s), SecondStays, "processed a new session most recently"},
		{"2 only one took a session during the split", facts(1, 60*s, never), facts(2, 10*s, 9*s), SecondStays, "processed a new session most recently"},
		{"2 sessions before the split do not count", facts(1, 600*s, 30*s), facts(2, 10*s, never), FirstStays, "active longest"},
		{"3 active longest", facts(1, 10*s, never), facts(2, 11*s, never), SecondStays, "active longest"},
		{"4 preferred", facts(1, 10*s, never), preferred(facts(2, 10*s, never)), SecondStays, "preferred node"},
		{"4 equal in all: lower id", facts(2, 10*s, never), facts(1, 10*s, never), SecondStays, "lower node id"},
	} {
		v, rule := Arbitrate(c.a, c.b)
		if v != c.want || rule != c.rule {
			t.Errorf("%s: got %v %q, want %v %q", c.name, v, rule, c.want, c.rule)
		}
		rv, rrule := Arbitrate(c.b, c.a)
		if rrule != rule || (v == NeitherMoves) != (rv == NeitherMoves) || (v != NeitherMoves && rv == v) {
			t.Errorf("%s: not symmetric: %v/%q then %v/%q", c.name, v, rule, rv, rrule)
		}
	}
}

// reference applies design.md section 4 literally, for the property test.
func reference(a, b Facts) Verdict {
	if a.Locked && b.Locked {
		return NeitherMoves
	}
	if a.Locked || b.Locked {
		if a.Locked {
			return FirstStays
		}
		return SecondStays
	}
	both := min(a.ActiveFor, b.ActiveFor)
	sa := a.LastNewSession >= 0 && a.LastNewSession < both
	sb := b.LastNewSession >= 0 && b.LastNewSession < both
	if sa || sb {
		if !sb || (sa && a.LastNewSession < b.LastNewSession) {
			return FirstStays
		}
		if !sa || b.LastNewSession < a.LastNewSession {
			return SecondStays
		}
	}
	if a.ActiveFor != b.ActiveFor {
		if a.ActiveFor > b.ActiveFor {
			return FirstStays
		}
		return SecondStays
	}
	if a.Preferred != b.Preferred {
		if a.Preferred {
			return FirstStays
		}
		return SecondStays
	}
	if a.Node < b.Node {
		return FirstStays
	}
	return SecondStays
}

// Random facts: both sides' decisions must be complementary and match the
// rule order. (Clock offsets between nodes are exercised by the harness,
// where each machine runs on its own skewed clock.)
func TestArbitrateProperty(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	age := func() time.Duration {
		if r.IntN(4) == 0 {
			return never
		}
		return time.Duration(r.IntN(5000)) * time.Millisecond
	}
	for i := 0; i < 100000; i++ {
		a := Facts{Node: 1, Locked: r.IntN(5) == 0, Preferred: r.IntN(2) == 0, ActiveFor: time.Duration(r.IntN(5000)) * time.Millisecond, LastNewSession: age()}
		b := Facts{Node: 2, Locked: r.IntN(5) == 0, Preferred: !a.Preferred, ActiveFor: time.Duration(r.IntN(5000)) * time.Millisecond, LastNewSession: age()}
		va, _ := Arbitrate(a, b)
		vb, _ := Arbitrate(b, a)
		if va != reference(a, b) {
			t.Fatalf("facts %+v %+v: got %v, reference %v", a, b, va, reference(a, b))
		}
		switch va {
		case NeitherMoves:
			if vb != NeitherMoves {
				t.Fatalf("one side moves, the other not: %+v %+v", a, b)
			}
		case FirstStays:
			if vb != SecondStays {
				t.Fatalf("both stay: %+v %+v", a, b)
			}
		case SecondStays:
			if vb != FirstStays {
				t.Fatalf("both step down: %+v %+v", a, b)
			}
		}
	}
}
