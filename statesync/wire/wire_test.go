package wire

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
)

func TestOpLayout(t *testing.T) {
	b := Append(nil, &Msg{Type: Op, Seq: 2, Kind: KindUpdate, ID: []byte("c1"), Data: []byte("9")})
	want := "00000013" + "05" + "0000000000000002" + "02" + "0002" + "6331" + "00000001" + "39"
	if got := hex.EncodeToString(b); got != want {
		t.Fatalf("got %s\nwant %s", got, want)
	}
	var m Msg
	if err := Decode(b[4:], &m); err != nil || m.Seq != 2 || m.Kind != KindUpdate || string(m.ID) != "c1" || string(m.Data) != "9" {
		t.Fatalf("decode: %v %+v", err, m)
	}
}

func FuzzDecodeMsg(f *testing.F) {
	for _, m := range []Msg{
		{Type: Hello, Epoch: 1, Seq: 2},
		{Type: Snapshot, Epoch: 1, Seq: 2, Count: 3},
		{Type: Entry, Version: 4, ID: []byte("x"), Data: []byte("yz")},
		{Type: Resume, Epoch: 5},
		{Type: Op, Seq: 6, Kind: KindCreate, ID: []byte("id"), Data: []byte("d")},
		{Type: Ack, Seq: 7},
		{Type: Ping},
		{Type: Config, Sums: map[string]uint64{"vip": 1, "node": 2}, Release: "1.2.3"},
	} {
		f.Add(Append(nil, &m)[4:])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var m Msg
		if err := Decode(b, &m); err != nil {
			return
		}
		// What decodes must encode back to the same bytes, but for
		// what a later version appended (which this one skips).
		out := Append(nil, &m)[4:]
		if len(out) > len(b) || !bytes.Equal(out, b[:len(out)]) {
			t.Fatalf("round trip:\n%x\n%x", b, out)
		}
	})
}

// A later version's messages: a type this one does not know is ErrUnknown
// (a reader skips it), fields appended to a known one are skipped, and a
// message cut short is still malformed.
func TestALaterVersionsMessagesAreRead(t *testing.T) {
	hello := Append(nil, &Msg{Type: Hello, Epoch: 3, Seq: 9})[4:]
	var m Msg
	if err := Decode(append(bytes.Clone(hello), 1, 2, 3, 4, 5, 6, 7, 8), &m); err != nil || m.Type != Hello || m.Epoch != 3 || m.Seq != 9 {
		t.Errorf("a hello with a field appended: %v %+v", err, m)
	}
	err := Decode([]byte{200, 1, 2, 3}, &m)
	if !errors.Is(err, ErrUnknown) || errors.Is(err, ErrMalformed) {
		t.Errorf("a message of a new type: %v, want ErrUnknown", err)
	}
	if err := Decode(hello[:len(hello)-1], &m); !errors.Is(err, ErrMalformed) {
		t.Errorf("a hello cut short: %v, want ErrMalformed", err)
	}
}

func TestConfigLayout(t *testing.T) {
	b := Append(nil, &Msg{Type: Config, Sums: map[string]uint64{"vip": 0x0102030405060708, "hook": 9}, Release: "1.0"})
	want := "0000001f" + "08" + "02" + "04" + "686f6f6b" + "0000000000000009" + "03" + "766970" + "0102030405060708" + "03" + "312e30"
	if got := hex.EncodeToString(b); got != want {
		t.Fatalf("got %s\nwant %s", got, want)
	}
	var m Msg
	if err := Decode(b[4:], &m); err != nil || len(m.Sums) != 2 || m.Sums["vip"] != 0x0102030405060708 || m.Sums["hook"] != 9 || m.Release != "1.0" {
		t.Fatalf("decode: %v %+v", err, m)
	}
	// Without a release (a sender that has none leaves it out): empty.
	body, _ := hex.DecodeString("08" + "01" + "03" + "766970" + "0000000000000001")
	if err := Decode(body, &m); err != nil || m.Sums["vip"] != 1 || m.Release != "" {
		t.Errorf("without a release: %v %+v", err, m)
	}
	// Out of order, or an id twice: not what any version writes.
	for _, bad := range []string{
		"08" + "02" + "03" + "766970" + "0000000000000001" + "04" + "686f6f6b" + "0000000000000002",
		"08" + "02" + "03" + "766970" + "0000000000000001" + "03" + "766970" + "0000000000000002",
		"08" + "01" + "03" + "766970" + "00000000000001", // cut short
		"08" + "00" + "05" + "312e30", // a release cut short
	} {
		body, _ := hex.DecodeString(bad)
		if err := Decode(body, &m); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", bad, err)
		}
	}
}
