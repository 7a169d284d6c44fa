package heartbeat

import (
	"bytes"
	"encoding/binary"
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
		Path: 1, Dead: 300 * time.Millisecond, Key: 0x0a0b0c0d, Held: [HeldKeys]uint32{0x0a0b0c0d, 0x01020304},
		Generation: 7, Seq: 9, ActiveFor: 41 * time.Second, LastNewSession: -1,
		SyncWritten: 100, SyncAcked: 99, EchoGeneration: 3, EchoSeq: 5,
	}
}

func TestFrameLayout(t *testing.T) {
	f := sampleFrame()
	b, err := f.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	want := "48504842" + "02" + "01" + "0011" + "01020304" + "01" + "02" + "01" + "5e" +
		"0a0b0c0d" + "0a0b0c0d" + "01020304" + "00000000" +
		"0000000000000007" + "0000000000000009" + "000000000000a028" + "ffffffffffffffff" +
		"0000000000000064" + "0000000000000063" + "0000000000000003" + "0000000000000005" +
		hex.EncodeToString(make([]byte, 32))
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
	b := s.AppendFrame(nil, &f, 0)
	if ok, err := s.Verify(b); !ok || err != nil {
		t.Fatalf("own frame does not verify: %v %v", ok, err)
	}
	// Every byte is covered: flipping any one before the MAC breaks it
	// (in the key fingerprint, it names a key not held).
	for i := 0; i < macOffset; i++ {
		c := bytes.Clone(b)
		c[i] ^= 0x01
		if ok, _ := s.Verify(c); ok {
			t.Errorf("flipping byte %d still verifies", i)
		}
	}
}

// Issue 14.1: a key is named by its fingerprint, not a position in a list,
// so nodes whose lists differ during a rolling rotation ([old] beside
// [new, old], then [new, old] beside [new]) verify each other's frames,
// and each signs with the newest key the other holds.
func TestRotationByFingerprint(t *testing.T) {
	oldKey, newKey := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	old, _ := NewSigner([][]byte{oldKey})
	both, _ := NewSigner([][]byte{newKey, oldKey})
	fresh, _ := NewSigner([][]byte{newKey})
	f := sampleFrame()
	for _, c := range []struct {
		name         string
		sender, recv *Signer
		want         int // key the sender chooses from the receiver's held keys
	}{
		{"[new, old] to [old]", both, old, 1},
		{"[old] to [new, old]", old, both, 0},
		{"[new, old] to [new, old]", both, both, 0},
		{"[new] to [new, old]", fresh, both, 0},
		{"[new, old] to [new]", both, fresh, 0},
	} {
		key, ok := c.sender.Choose(c.recv.Held())
		if !ok || key != c.want {
			t.Errorf("%s: chose key %d (%v), want %d", c.name, key, ok, c.want)
			continue
		}
		b := c.sender.AppendFrame(nil, &f, key)
		if ok, err := c.recv.Verify(b); !ok || err != nil {
			t.Errorf("%s: frame does not verify: %v %v", c.name, ok, err)
		}
	}
	if _, ok := fresh.Choose(old.Held()); ok {
		t.Error("[new] found a key in common with [old]")
	}
	if _, err := fresh.Verify(old.AppendFrame(nil, &f, 0)); !errors.Is(err, errKeyID) {
		t.Errorf("a frame under a key not held: %v", err)
	}
	if _, err := NewSigner([][]byte{oldKey, oldKey}); err == nil {
		t.Error("the same key twice was accepted")
	}
}

func TestUnmarshalRejects(t *testing.T) {
	f := sampleFrame()
	good, _ := f.MarshalBinary()
	future := bytes.Clone(good)
	future[4] = 3
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
	r := newReceiver(0x01020304, 2, s, 2, 3, 0)
	f := sampleFrame()
	frame := func(mod func(*Frame)) []byte {
		g := f
		if mod != nil {
			mod(&g)
		}
		return s.AppendFrame(nil, &g, 0)
	}
	wrongKey, _ := NewSigner([][]byte{bytes.Repeat([]byte{9}, 32)})
	unknownKey := wrongKey.AppendFrame(nil, &f, 0)
	// Forged: names our key but was signed with another.
	forged := bytes.Clone(unknownKey)
	binary.BigEndian.PutUint32(forged[16:20], Fingerprint(testKey))
	first := frame(func(g *Frame) { g.Seq = 20 })
	var out Frame
	if reason, ok := r.check(first, 1, 0, &out); !ok {
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
		{"another pair's, its own key", func() []byte { g := f; g.Cluster = 7; return wrongKey.AppendFrame(nil, &g, 0) }(), 1, DropCluster},
		{"another cluster in this node's name", frame(func(g *Frame) { g.Cluster = 7; g.Node = 2 }), 1, DropCluster},
		{"another cluster, forged", func() []byte { b := frame(func(g *Frame) { g.Cluster = 7 }); b[len(b)-1] ^= 1; return b }(), 1, DropCluster},
		{"the peer under another cluster name", frame(func(g *Frame) { g.Cluster = 7 }), 1, DropPeerCluster},
		{"own node, come back", frame(func(g *Frame) { g.Node = 2; g.Generation = 3; g.Seq = 30 }), 1, DropOwnNode},
		{"own node, another generation: a twin", frame(func(g *Frame) { g.Node = 2; g.Seq = 30 }), 1, DropTwin},
		{"own node, forged", func() []byte {
			b := frame(func(g *Frame) { g.Node = 2; g.Seq = 30 })
			b[len(b)-1] ^= 1
			return b
		}(), 1, DropMAC},
		{"unknown key", unknownKey, 1, DropKeyID},
		{"forged", forged, 1, DropMAC},
		{"replayed", first, 1, DropReplay},
		{"wrong path", frame(func(g *Frame) { g.Seq = 31 }), 0, DropMalformed},
		{"old generation", frame(func(g *Frame) { g.Generation = 6; g.Seq = 40; g.EchoGeneration = 0 }), 1, DropOldGeneration},
		{"stale echo", frame(func(g *Frame) { g.Seq = 41; g.EchoGeneration = 2 }), 1, DropStale},
	} {
		if reason, ok := r.check(c.b, c.path, 0, &out); ok || reason != c.want {
			t.Errorf("%s: got %v ok=%v, want %v", c.name, reason, ok, c.want)
		}
	}
	// A new generation resets the windows: sequence 1 is fresh again.
	if reason, ok := r.check(frame(func(g *Frame) { g.Generation = 8; g.Seq = 1 }), 1, 0, &out); !ok {
		t.Errorf("new generation dropped: %v", reason)
	}
	if !r.genChanged || r.gen != 8 {
		t.Errorf("generation not raised: %d", r.gen)
	}
}

// Issue 14.5: a node that restarts must not take frames recorded before
// its start for the peer's: fresh frames echo this boot's generation.
func TestReceiverAfterRestartWantsFreshFrames(t *testing.T) {
	s, _ := NewSigner([][]byte{testKey})
	frame := func(gen, seq, echo uint64) []byte {
		f := sampleFrame()
		f.Generation, f.Seq, f.EchoGeneration = gen, seq, echo
		return s.AppendFrame(nil, &f, 0)
	}
	// Before the restart this node was generation 3 and heard the peer's
	// generation 7 up to sequence 100; now it is generation 4.
	recorded := frame(7, 90, 3)
	r := newReceiver(0x01020304, 2, s, 2, 4, 7)
	var out Frame
	for _, c := range []struct {
		name string
		b    []byte
		want DropReason
		ok   bool
	}{
		{"recorded before the restart", recorded, DropStale, false},
		{"the peer's start-up, recorded before", frame(7, 2, 0), DropStale, false},
		{"an older boot of the peer", frame(6, 500, 0), DropOldGeneration, false},
		{"fresh: echoes this boot", frame(7, 101, 4), 0, true},
		{"the recording again, now the peer is confirmed", recorded, DropStale, false},
		{"fresh again", frame(7, 102, 4), 0, true},
		{"the peer's counter went back, but it echoes us", frame(2, 1, 4), 0, true},
		{"its earlier generation, not fresh", frame(7, 103, 3), DropStale, false},
	} {
		reason, ok := r.check(c.b, 1, 0, &out)
		if ok != c.ok || (!ok && reason != c.want) {
			t.Errorf("%s: got %v ok=%v, want %v ok=%v", c.name, reason, ok, c.want, c.ok)
		}
	}
	// A peer that starts while we run says nothing of us at first: its
	// own new generation is trusted without an echo.
	r = newReceiver(0x01020304, 2, s, 2, 4, 7)
	if reason, ok := r.check(frame(8, 1, 0), 1, 0, &out); !ok {
		t.Errorf("a new boot of the peer: %v", reason)
	}
	if reason, ok := r.check(frame(8, 2, 0), 1, 0, &out); !ok {
		t.Errorf("its second frame: %v", reason)
	}
}

// A standby restarted while the active had not yet read its last frames
// on one path (it reads them when it wakes to send): the new boot's frames
// came first on the other, then the old boot's last one, which echoes this
// node's boot. It is not the peer's counter going back (that peer has
// heard this node since its newer boot came) and is dropped; before, it
// was taken for current, and the old boot's stop was handled a second
// time beside the new standby.
func TestOldBootsFrameReadLateIsDropped(t *testing.T) {
	s, _ := NewSigner([][]byte{testKey})
	frame := func(path uint8, gen, seq, echoSeq uint64) []byte {
		f := sampleFrame()
		f.Path, f.Generation, f.Seq, f.EchoGeneration, f.EchoSeq = path, gen, seq, 4, echoSeq
		return s.AppendFrame(nil, &f, 0)
	}
	r := newReceiver(0x01020304, 2, s, 2, 4, 0)
	var out Frame
	for _, c := range []struct {
		name  string
		path  uint8
		b     []byte
		mySeq uint64
		want  DropReason
		ok    bool
	}{
		{"the standby's boot 7", 1, frame(1, 7, 40, 30), 31, 0, true},
		{"its last frame, on path 1", 1, frame(1, 7, 41, 31), 32, 0, true},
		{"its new boot 9, first on path 1", 1, frame(1, 9, 1, 0), 40, 0, true},
		{"boot 7's last frame on path 0, read late", 0, frame(0, 7, 41, 31), 41, DropOldGeneration, false},
		{"boot 9 goes on", 0, frame(0, 9, 2, 41), 42, 0, true},
		{"a boot 3 after it (its state lost), heard this node since", 1, frame(1, 3, 1, 50), 51, 0, true},
	} {
		reason, ok := r.check(c.b, int(c.path), c.mySeq, &out)
		if ok != c.ok || (!ok && reason != c.want) {
			t.Errorf("%s: got %v ok=%v, want %v ok=%v", c.name, reason, ok, c.want, c.ok)
		}
	}
}

// The dead interval's byte holds every profile's exactly, rounds anything
// else up (a receiver judges by it: never shorter than the sender's), and
// says nothing beyond 63 s.
func TestDeadIntervalByte(t *testing.T) {
	for _, c := range []struct{ in, want time.Duration }{
		{0, 0}, {-time.Second, 0},
		{5 * time.Millisecond, 5 * time.Millisecond},
		{30 * time.Millisecond, 30 * time.Millisecond},
		{300 * time.Millisecond, 300 * time.Millisecond},
		{2 * time.Second, 2 * time.Second},
		{1500 * time.Microsecond, 2 * time.Millisecond},
		{64 * time.Millisecond, 70 * time.Millisecond},
		{6301 * time.Millisecond, 7 * time.Second},
		{63 * time.Second, 63 * time.Second},
		{64 * time.Second, 0},
	} {
		if got := getDead(putDead(c.in)); got != c.want {
			t.Errorf("%v: reads back %v, want %v", c.in, got, c.want)
		}
	}
}
