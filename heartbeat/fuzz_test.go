package heartbeat

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func FuzzUnmarshal(f *testing.F) {
	s, _ := NewSigner([][]byte{testKey})
	fr := sampleFrame()
	f.Add(s.AppendFrame(nil, &fr, 0))
	f.Add([]byte("HPHB\x02\x01"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var g Frame
		if err := g.UnmarshalBinary(b); err != nil {
			return
		}
		out, err := g.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		// Ages above the representable range read as "none"; every other
		// byte must survive the round trip.
		var h Frame
		if err := h.UnmarshalBinary(out); err != nil || h != g {
			t.Fatalf("re-unmarshal: %v\n%+v\n%+v", err, h, g)
		}
		// Byte 15, the dead interval, is written in its canonical
		// code (the same duration, compared above).
		if !bytes.Equal(out[:15], b[:15]) || !bytes.Equal(out[16:48], b[16:48]) || !bytes.Equal(out[64:], b[64:]) {
			t.Fatalf("round trip changed bytes:\n%x\n%x", b, out)
		}
		r := newReceiver(fr.Cluster, 2, s, 2, 3, 0)
		r.check(b, 1, 0, &h) // must not panic
	})
}

// FuzzWindow drives the replay window with a sequence of numbers and
// compares it with the obvious model: accept a number once, if it is ahead
// of everything seen or no more than WindowSize behind the newest.
func FuzzWindow(f *testing.F) {
	f.Add([]byte{1, 0, 2, 0, 1, 0})
	f.Add(binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, 2000), 5))
	f.Fuzz(func(t *testing.T, data []byte) {
		var w Window
		seen := map[uint64]bool{}
		var newest uint64
		for len(data) >= 2 {
			seq := uint64(binary.BigEndian.Uint16(data))
			data = data[2:]
			want := seq != 0 && !seen[seq] && (seq > newest || newest-seq <= WindowSize)
			if got := w.Accept(seq); got != want {
				t.Fatalf("Accept(%d) = %v, model says %v (newest %d)", seq, got, want, newest)
			}
			if want {
				seen[seq] = true
				newest = max(newest, seq)
			}
		}
	})
}
