package agent

import (
	"testing"
	"time"
)

// A path that goes down now and then is logged change by change; one that
// goes down three times within the window is unsteady: summed up, not
// logged, until a whole window passes without a change.
func TestUnsteadyPathIsSummedUpUntilStill(t *testing.T) {
	var n pathNoise
	t0 := time.Unix(1000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	step := func(what string, d time.Duration, down, oneWay, wantQuiet, wantBegan bool) {
		t.Helper()
		if quiet, began := n.change(at(d), down, oneWay); quiet != wantQuiet || began != wantBegan {
			t.Errorf("%s at %v: quiet %v began %v, want %v %v", what, d, quiet, began, wantQuiet, wantBegan)
		}
	}
	// Two losses 11 s apart, each with its recovery: logged.
	step("down", 0, true, false, false, false)
	step("up", 30*time.Millisecond, false, false, false, false)
	step("down", 11*time.Second, true, false, false, false)
	step("up", 11*time.Second+30*time.Millisecond, false, false, false, false)
	// A one-way loss 12 s after the first: the first is out of the
	// window, so two in it.
	step("one-way", 12*time.Second, false, true, false, false)
	step("heard", 12*time.Second+10*time.Millisecond, false, false, false, false)
	if unsteady, _, _, _ := n.summary(); unsteady {
		t.Fatal("unsteady after two losses within the window")
	}
	// The third within 10 s of the second: unsteady from here on.
	step("down", 20*time.Second, true, false, true, true)
	step("up", 20*time.Second+30*time.Millisecond, false, false, true, false)
	step("down", 21*time.Second, true, false, true, false)
	step("one-way", 21*time.Second+30*time.Millisecond, false, true, true, false)
	unsteady, downs, oneWays, settled := n.summary()
	if !unsteady || downs != 2 || oneWays != 1 || settled {
		t.Errorf("first summary: unsteady %v, %d down, %d one-way, settled %v; want true, 2, 1, false", unsteady, downs, oneWays, settled)
	}
	// A window with one change is not still.
	step("heard", 25*time.Second, false, false, true, false)
	if unsteady, downs, oneWays, settled = n.summary(); !unsteady || downs != 0 || oneWays != 0 || settled {
		t.Errorf("second summary: unsteady %v, %d down, %d one-way, settled %v; want true, 0, 0, false", unsteady, downs, oneWays, settled)
	}
	// A still window: settled, and steady again.
	if unsteady, _, _, settled = n.summary(); !unsteady || !settled {
		t.Errorf("third summary (nothing changed): unsteady %v, settled %v; want both", unsteady, settled)
	}
	if unsteady, _, _, settled = n.summary(); unsteady || settled {
		t.Errorf("after settling: unsteady %v, settled %v; want neither", unsteady, settled)
	}
	// Its next loss is logged on its own: the old losses are forgotten.
	step("down", 40*time.Second, true, false, false, false)
}
