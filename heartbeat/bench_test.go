package heartbeat

import (
	"slices"
	"testing"
	"time"

	"github.com/hapair/hapair/config"
	"github.com/hapair/hapair/lab"
)

func BenchmarkSign(b *testing.B) {
	s, _ := NewSigner([][]byte{testKey})
	f := sampleFrame()
	buf := make([]byte, 0, FrameLen)
	b.ReportAllocs()
	for b.Loop() {
		f.Seq++
		buf = s.AppendFrame(buf[:0], &f, 0)
	}
}

func BenchmarkVerify(b *testing.B) {
	s, _ := NewSigner([][]byte{testKey})
	f := sampleFrame()
	r := newReceiver(f.Cluster, 2, s, 2, 3, 0)
	frames := make([][]byte, 0, 1<<16)
	for i := range 1 << 16 {
		f.Seq = uint64(i + 1)
		frames = append(frames, s.AppendFrame(nil, &f, 0))
	}
	var out Frame
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i == len(frames) {
			b.StopTimer()
			r = newReceiver(f.Cluster, 2, s, 2, 3, 0)
			i = 0
			b.StartTimer()
		}
		if _, ok := r.check(frames[i], 1, 0, &out); !ok {
			b.Fatal("dropped")
		}
		i++
	}
}

// BenchmarkDetection measures the time from cutting both links to the
// peer-lost event, per profile, and reports p50/p99 over the runs.
func BenchmarkDetection(b *testing.B) {
	for _, name := range []string{"default", "fast"} {
		iv := config.Profiles[name].Interval
		b.Run(name, func(b *testing.B) {
			p, err := lab.New(lab.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			var lat []time.Duration
			for b.Loop() {
				lat = append(lat, detectOnce(b, p, iv))
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}

func detectOnce(b *testing.B, p *lab.Pair, iv time.Duration) time.Duration {
	b.StopTimer()
	defer b.StartTimer()
	a := startNode(b, p, "a", 1, iv)
	bn := startNode(b, p, "b", 2, iv)
	defer a.stop()
	defer bn.stop()
	bn.waitFor(b, PeerAlive, "", 0, 2*time.Second)
	// Let the paths settle so the cut lands at a random point of the cycle.
	time.Sleep(3 * iv)
	mark := bn.len()
	cut := time.Now()
	if err := p.Isolate("a", false); err != nil {
		b.Fatal(err)
	}
	ev, _ := bn.waitFor(b, PeerLost, "", mark, 10*iv+time.Second)
	if err := p.Isolate("a", true); err != nil {
		b.Fatal(err)
	}
	return ev.At.Sub(cut)
}
