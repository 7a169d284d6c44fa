package lab

import (
	"testing"
	"time"
)

// TestProberGap reads outages from recorded probes: a prober that sent
// late is not an outage, a lost probe is, and a late reply counts for its
// round trip.
func TestProberGap(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ms := func(f float64) time.Time { return t0.Add(time.Duration(f * float64(time.Millisecond))) }
	// probes: sent at these milliseconds; replies: seq -> reply time.
	for _, c := range []struct {
		name    string
		sent    []float64
		replies [][2]float64 // seq, reply ms, in arrival order
		since   float64
		after   bool // GapAfter rather than LongestGap
		want    float64
		lost    int
	}{
		{"every probe answered, the prober sent 3 ms late",
			[]float64{0, 1, 2, 5, 6}, [][2]float64{{0, 0.1}, {1, 1.1}, {2, 2.1}, {3, 5.1}, {4, 6.1}}, 0, false, 0.1, 0},
		{"a late reply counts for its round trip",
			[]float64{0, 1, 2, 3}, [][2]float64{{0, 0.1}, {1, 1.1}, {2, 4.5}, {3, 4.6}}, 0, false, 2.5, 0},
		{"two probes lost: from the reply before to the reply after",
			[]float64{0, 1, 2, 3, 4}, [][2]float64{{0, 0.1}, {1, 1.1}, {4, 4.1}}, 0, false, 3, 2},
		{"a reply out of order is not a loss",
			[]float64{0, 1, 2, 3}, [][2]float64{{0, 0.1}, {2, 2.1}, {1, 2.2}, {3, 3.1}}, 0, false, 1.2, 0},
		{"replies before since only open the first gap",
			[]float64{0, 1, 2, 3, 4, 5}, [][2]float64{{0, 0.1}, {1, 1.1}, {5, 5.1}}, 3, false, 4, 3},
		{"GapAfter counts from the cut",
			[]float64{0, 1, 2, 3, 4, 5}, [][2]float64{{0, 0.1}, {1, 1.1}, {2, 2.1}, {5, 5.1}}, 2.5, true, 2.6, 2},
		{"no reply after since: no outage measured",
			[]float64{0, 1, 2}, [][2]float64{{0, 0.1}}, 1, false, 0, 0},
	} {
		p := &Prober{}
		for _, s := range c.sent {
			p.sent = append(p.sent, ms(s))
		}
		for _, r := range c.replies {
			p.replies = append(p.replies, reply{seq: int(r[0]), at: ms(r[1])})
		}
		var got time.Duration
		var lost int
		if c.after {
			got, lost = p.GapAfter(ms(c.since))
		} else {
			got, lost = p.LongestGap(ms(c.since))
		}
		if want := ms(c.want).Sub(t0); got.Round(time.Microsecond) != want || lost != c.lost {
			t.Errorf("%s: gap %v with %d lost, want %v with %d", c.name, got, lost, want, c.lost)
		}
	}
}
