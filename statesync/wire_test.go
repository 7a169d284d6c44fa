package statesync

import (
	"bytes"
	"encoding/hex"
	"testing"
)

func TestOpLayout(t *testing.T) {
	b := appendMsg(nil, &msg{typ: msgOp, seq: 2, kind: OpUpdate, id: []byte("c1"), data: []byte("9")})
	want := "00000013" + "05" + "0000000000000002" + "02" + "0002" + "6331" + "00000001" + "39"
	if got := hex.EncodeToString(b); got != want {
		t.Fatalf("got %s\nwant %s", got, want)
	}
	var m msg
	if err := decodeMsg(b[4:], &m); err != nil || m.seq != 2 || m.kind != OpUpdate || string(m.id) != "c1" || string(m.data) != "9" {
		t.Fatalf("decode: %v %+v", err, m)
	}
}

func FuzzDecodeMsg(f *testing.F) {
	for _, m := range []msg{
		{typ: msgHello, epoch: 1, seq: 2},
		{typ: msgSnapshot, epoch: 1, seq: 2, count: 3},
		{typ: msgEntry, version: 4, id: []byte("x"), data: []byte("yz")},
		{typ: msgResume, epoch: 5},
		{typ: msgOp, seq: 6, kind: OpCreate, id: []byte("id"), data: []byte("d")},
		{typ: msgAck, seq: 7},
		{typ: msgPing},
	} {
		f.Add(appendMsg(nil, &m)[4:])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var m msg
		if err := decodeMsg(b, &m); err != nil {
			return
		}
		// What decodes must encode back to the same bytes.
		out := appendMsg(nil, &m)[4:]
		if !bytes.Equal(out, b) {
			t.Fatalf("round trip:\n%x\n%x", b, out)
		}
	})
}
