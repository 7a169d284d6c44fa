package election

import (
	"flag"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from this run")

type scenario struct {
	name string
	run  func(h *harness)
}

var scenarios = []scenario{
	{"flapping-link-held-down", func(h *harness) {
		h.holdDown = 2 * time.Second
		h.start(0)
		h.start(1)
		h.advance(time.Second)
		for range 6 { // down and up every 400 ms
			h.cut()
			h.advance(400 * time.Millisecond)
			h.heal()
			h.advance(400 * time.Millisecond)
		}
		// Then the link stays down: b takes over once a has been silent
		// for the hold-down.
		h.cut()
		h.advance(3 * time.Second)
	}},
	{"startup-crash-return", func(h *harness) {
		h.start(0)
		h.start(1)
		h.advance(time.Second)
		h.crash(0)
		h.advance(time.Second)
		h.start(0)
		h.advance(2 * time.Second)
	}},
	{"graceful-stop", func(h *harness) {
		h.start(0)
		h.start(1)
		h.advance(time.Second)
		h.logf("a stop requested")
		h.step(0, Event{Kind: Stop})
		h.advance(time.Second)
	}},
	{"split-brain-new-session-wins", func(h *harness) {
		h.start(0)
		h.start(1)
		h.advance(time.Second)
		h.cut()
		h.advance(2 * time.Second)
		h.logf("b takes a new session")
		h.step(1, Event{Kind: NewSession})
		h.advance(500 * time.Millisecond)
		h.heal()
		h.advance(time.Second)
	}},
	// A one-way loss that heals before the seeing node yields: a takes a
	// session just before b (deaf) takes over, b one after; b's is the
	// newest and b stays. Frozen when a first saw b active, a's facts
	// made its session look newer.
	{"one-way-heal-newest-session-wins", func(h *harness) {
		h.start(0)
		h.start(1)
		h.advance(time.Second)
		h.deafen(1)
		h.advance(150 * time.Millisecond)
		h.logf("a takes a new session")
		h.step(0, Event{Kind: NewSession})
		h.advance(150 * time.Millisecond)
		h.logf("b takes a new session")
		h.step(1, Event{Kind: NewSession})
		h.advance(100 * time.Millisecond)
		h.heal()
		h.advance(time.Second)
	}},
	{"split-brain-longest-active-wins", func(h *harness) {
		h.start(0)
		h.start(1)
		h.advance(time.Second)
		h.cut()
		h.advance(2 * time.Second)
		h.heal()
		h.advance(time.Second)
	}},
	{"split-brain-locked-b-stays", func(h *harness) {
		h.start(0)
		h.start(1)
		h.advance(time.Second)
		h.cut()
		h.advance(2 * time.Second)
		h.logf("b locked")
		h.step(1, Event{Kind: Lock, Locked: true})
		h.step(0, Event{Kind: NewSession})
		h.heal()
		h.advance(time.Second)
	}},
	{"locked-standby-does-not-take-over", func(h *harness) {
		h.start(0)
		h.start(1)
		h.advance(time.Second)
		h.logf("b locked")
		h.step(1, Event{Kind: Lock, Locked: true})
		h.crash(0)
		h.advance(2 * time.Second)
		h.logf("b unlocked")
		h.step(1, Event{Kind: Lock, Locked: false})
		h.advance(100 * time.Millisecond)
	}},
}

// TestTranscripts runs each scenario in the two-node harness and compares
// its log of transitions with testdata/NAME.golden (go test -update
// rewrites them; read the diff before committing).
func TestTranscripts(t *testing.T) {
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			h := newHarness()
			sc.run(h)
			h.logf("end: %s", h.roles())
			got := strings.Join(h.log, "\n") + "\n"
			path := "testdata/" + sc.name + ".golden"
			if *update {
				os.MkdirAll("testdata", 0o755)
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create)", err)
			}
			if got != string(want) {
				t.Errorf("transcript differs from %s:\n--- got\n%s--- want\n%s", path, got, want)
			}
		})
	}
}

// TestRandomSchedules runs random cuts, heals, crashes and restarts on
// skewed clocks and checks two properties at every millisecond:
//   - once the nodes have heard each other for a few intervals, they are
//     not both ACTIVE (at most one holds the VIPs);
//   - a live node whose peer is down becomes ACTIVE within the start-up
//     window plus the dead interval.
func TestRandomSchedules(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	for run := 0; run < 200; run++ {
		h := newHarness()
		h.nodes[1].offset = time.Duration(r.Int64N(int64(48*time.Hour))) - 24*time.Hour
		h.start(0)
		h.start(1)
		var together, alone time.Duration
		for op := 0; op < 12; op++ {
			switch r.IntN(5) {
			case 0:
				h.cut()
			case 1:
				h.heal()
			case 2:
				if i := r.IntN(2); h.nodes[i].up && h.nodes[1-i].up {
					h.crash(i)
				}
			case 3:
				for i, n := range h.nodes {
					if !n.up {
						h.start(i)
					}
				}
			case 4:
				if r.IntN(3) == 0 {
					h.step(r.IntN(2), Event{Kind: NewSession})
				}
			}
			steps := 1 + r.IntN(2000)
			for s := 0; s < steps; s++ {
				h.tick()
				h.now = h.now.Add(time.Millisecond)
				a, b := h.nodes[0], h.nodes[1]
				if h.linked && a.up && b.up && a.alive && b.alive {
					together += time.Millisecond
				} else {
					together = 0
				}
				if together > 3*hInterval && h.bothActive() {
					t.Fatalf("run %d: both ACTIVE after hearing each other for %v\n%s", run, together, strings.Join(h.log, "\n"))
				}
				if together > 3*hInterval && a.holds && b.holds {
					t.Fatalf("run %d: both hold the VIPs\n%s", run, strings.Join(h.log, "\n"))
				}
				if a.up != b.up {
					alone += time.Millisecond
				} else {
					alone = 0
				}
				if alone > 3*hDead+hDead+hInterval {
					live := a
					if !a.up {
						live = b
					}
					if live.m.Role() != Active || !live.holds {
						t.Fatalf("run %d: %s alone for %v but %v\n%s", run, live.name, alone, live.m.Role(), strings.Join(h.log, "\n"))
					}
				}
			}
		}
	}
}

// A link that goes down and up every 400 ms for a minute: without a
// hold-down every flap is a takeover and an arbitration; with one, the
// first flap fails over (the pair cannot tell it from a failure) and the
// rest change nothing, while a failure after a quiet spell still fails
// over within the dead interval.
func TestHoldDownBoundsTransitionsOnAFlappingLink(t *testing.T) {
	flap := func(holdDown time.Duration) (transitions int, h *harness) {
		h = newHarness()
		h.holdDown = holdDown
		h.start(0)
		h.start(1)
		h.advance(time.Second)
		before := strings.Count(strings.Join(h.log, "\n"), "transition")
		for range 75 {
			h.cut()
			h.advance(400 * time.Millisecond)
			h.heal()
			h.advance(400 * time.Millisecond)
		}
		h.advance(time.Second)
		return strings.Count(strings.Join(h.log, "\n"), "transition") - before, h
	}
	undamped, _ := flap(0)
	damped, h := flap(2 * time.Second)
	if undamped < 75 {
		t.Errorf("without a hold-down %d transitions in 75 flaps: the test does not flap", undamped)
	}
	if damped > 2 || h.roles() != "a=ACTIVE+vip b=STANDBY" {
		t.Fatalf("with a hold-down: %d transitions, %s\n%s", damped, h.roles(), strings.Join(h.log, "\n"))
	}
	if f, _ := h.nodes[1].m.Flaps(); f < 75 {
		t.Errorf("b counted %d returns of its peer, want 75 or more", f)
	}
	// Quiet for longer than the hold-down, then a real failure: the
	// standby takes over within the dead interval, undamped.
	h.advance(3 * time.Second)
	h.crash(0)
	h.advance(hDead + 2*hInterval)
	if h.nodes[1].m.Role() != Active {
		t.Fatalf("after a quiet spell b did not take over within the dead interval: %s\n%s", h.roles(), strings.Join(h.log, "\n"))
	}
}
