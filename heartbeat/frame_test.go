package heartbeat

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"testing"
	"time"
)

var testKey = bytes.Repeat([]byte{0x42}, 32)

func sampleFrame() Frame {
	return Frame{
		Flags: FlagLocked | FlagPreferred, Cluster: 0x01020304, Node: 1, Role: RoleActive,
		Path: 1, Generation: 7, Seq: 9, ActiveFor: 41 * time.Second, LastNewSession: -1,
		SyncWritten: 100, SyncAcked: 99,
	}
}

func TestFrameLayout(t *testing.T) {
	f := sampleFrame()
	b, err := f.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	want := "48504842" + "01" + "01" + "0011" + "01020304" + "01" + "02" + "00" + "01" +
		"0000000000000007" + "0000000000000009" + "000000000000a028" + "ffffffffffffffff" +
		"0000000000000064" + "0000000000000063" + hex.EncodeToString(make([]byte, 32))
	if got := hex.EncodeToString(b); got != want {
		t.Fatalf("layout:\n got %s\nwant %s", got, want)
	}
	var g Frame
	if err := g.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if g != f {
		t.Fatalf("round trip: got %+v, want %+v", g, f)
	}
}

func TestSignAndVerify(t *testing.T) {
	s, _ := NewSigner([][]byte{testKey})
	f := sampleFrame()
	b := s.AppendFrame(nil, &f)
	if ok, err := s.Verify(b); !ok || err != nil {
		t.Fatalf("own frame does not verify: %v %v", ok, err)
	}
	// Every byte is covered: flipping any one before the MAC breaks it.
	for i := 0; i < macOffset; i++ {
		c := bytes.Clone(b)
		c[i] ^= 0x01
		if ok, _ := s.Verify(c); ok && i != 14 {
			t.Errorf("flipping byte %d still verifies", i)
		}
	}
	// Rotation: a receiver holding the new key first and the old second
	// accepts frames signed with the old.
	old, _ := NewSigner([][]byte{bytes.Repeat([]byte{1}, 32)})
	rotated, _ := NewSigner([][]byte{testKey, bytes.Repeat([]byte{1}, 32)})
	ob := old.AppendFrame(nil, &f)
	ob[14] = 1 // the old key's id in the receiver's list
	// The key id is authenticated too, so the sender must name it: sign again.
	ob = signWithID(bytes.Repeat([]byte{1}, 32), 1, &f)
	if ok, err := rotated.Verify(ob); !ok || err != nil {
		t.Errorf("rotated receiver rejects the old key: %v %v", ok, err)
	}
}

func signWithID(key []byte, id uint8, f *Frame) []byte {
	s, _ := NewSigner([][]byte{key})
	b := s.AppendFrame(nil, f)
	b[14] = id
	m := s.macs[0]
	m.Reset()
	m.Write(b[:macOffset])
	copy(b[macOffset:], m.Sum(nil))
	return b
}

func TestUnmarshalRejects(t *testing.T) {
	f := sampleFrame()
	good, _ := f.MarshalBinary()
	future := bytes.Clone(good)
	future[4] = 2
	bad := bytes.Clone(good)
	bad[0] = 'X'
	for _, c := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, io.ErrUnexpectedEOF},
		{"short", good[:40], io.ErrUnexpectedEOF},
		{"magic", bad, ErrMagic},
		{"future version", future, ErrVersion},
		{"long", append(bytes.Clone(good), 0), ErrLength},
	} {
		var g Frame
		if err := g.UnmarshalBinary(c.b); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
}

func TestReceiverDropReasons(t *testing.T) {
	s, _ := NewSigner([][]byte{testKey})
	r := newReceiver(0x01020304, 2, s, 2, 0)
	f := sampleFrame()
	frame := func(mod func(*Frame)) []byte {
		g := f
		if mod != nil {
			mod(&g)
		}
		return s.AppendFrame(nil, &g)
	}
	wrongKey, _ := NewSigner([][]byte{bytes.Repeat([]byte{9}, 32)})
	forged := wrongKey.AppendFrame(nil, &f)
	unknownKey := frame(nil)
	unknownKey[14] = 5
	first := frame(func(g *Frame) { g.Seq = 20 })
	var out Frame
	if reason, ok := r.check(first, 1, &out); !ok {
		t.Fatalf("genuine frame dropped: %v", reason)
	}
	if out.Seq != 20 || out.Role != RoleActive {
		t.Fatalf("accepted frame content wrong: %+v", out)
	}
	for _, c := range []struct {
		name string
		b    []byte
		path int
		want DropReason
	}{
		{"truncated", first[:50], 1, DropShort},
		{"magic", append([]byte("XXXX"), first[4:]...), 1, DropMagic},
		{"other cluster", frame(func(g *Frame) { g.Cluster = 7 }), 1, DropCluster},
		{"own node", frame(func(g *Frame) { g.Node = 2; g.Seq = 30 }), 1, DropOwnNode},
		{"unknown key", unknownKey, 1, DropKeyID},
		{"forged", forged, 1, DropMAC},
		{"replayed", first, 1, DropReplay},
		{"wrong path", frame(func(g *Frame) { g.Seq = 31 }), 0, DropMalformed},
		{"old generation", frame(func(g *Frame) { g.Generation = 6; g.Seq = 40 }), 1, DropOldGeneration},
	} {
		if reason, ok := r.check(c.b, c.path, &out); ok || reason != c.want {
			t.Errorf("%s: got %v ok=%v, want %v", c.name, reason, ok, c.want)
		}
	}
	// A new generation resets the windows: sequence 1 is fresh again.
	if reason, ok := r.check(frame(func(g *Frame) { g.Generation = 8; g.Seq = 1 }), 1, &out); !ok {
		t.Errorf("new generation dropped: %v", reason)
	}
	if !r.genChanged || r.gen != 8 {
		t.Errorf("generation not raised: %d", r.gen)
	}
}
