package store

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/hapair/hapair/statesync/wire"
)

// The ring is checked against a model (every op ever logged) over many
// wrap-arounds: what it still holds reads back byte for byte from any op
// on, and what it dropped is reported as gone.
func TestOpLogAgainstModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	l := opLog{ring: make([]byte, 1000), first: 1}
	var all [][]byte
	for seq := uint64(1); seq <= 2000; seq++ {
		data := bytes.Repeat([]byte{byte(seq)}, rng.IntN(200))
		f := wire.Append(nil, &wire.Msg{Type: wire.Op, Seq: seq, Kind: uint8(OpUpdate), ID: []byte("id"), Data: data})
		l.append(f)
		all = append(all, f)
		if l.end-l.start > int64(len(l.ring)) {
			t.Fatalf("seq %d: log holds %d bytes in a ring of %d", seq, l.end-l.start, len(l.ring))
		}
		from := uint64(rng.IntN(int(seq)+1)) + 1 // up to the next op to come
		pos, ok := l.find(from)
		if ok != (from >= l.first) {
			t.Fatalf("seq %d: find(%d) ok=%v, oldest kept %d", seq, from, ok, l.first)
		}
		if !ok {
			continue
		}
		got, end, ok := l.read(nil, pos, 1<<20)
		want := bytes.Join(all[from-1:], nil)
		if !ok || end != l.end || !bytes.Equal(got, want) {
			t.Fatalf("seq %d: read from op %d: %d bytes, want %d (ok %v)", seq, from, len(got), len(want), ok)
		}
		// A read of max bytes holds whole ops, as few as make max or
		// all there are: a snapshot may follow it (oplog.go).
		if pos < l.end {
			limit := rng.IntN(400) + 1
			got, end, _ := l.read(nil, pos, limit)
			rest, k := all[from-1:], 1
			for k < len(rest) && len(bytes.Join(rest[:k], nil)) < limit {
				k++
			}
			if want := bytes.Join(rest[:k], nil); !bytes.Equal(got, want) || end != pos+int64(len(want)) {
				t.Fatalf("seq %d: read of %d bytes from op %d: %d bytes, want %d (%d ops)", seq, limit, from, len(got), len(want), k)
			}
		}
		// Positions and sequences agree on what is kept.
		if kept := len(bytes.Join(all[l.first-1:], nil)); kept != int(l.end-l.start) {
			t.Fatalf("seq %d: positions say %d bytes kept, the ops %d", seq, l.end-l.start, kept)
		}
	}
	if _, _, ok := l.read(nil, l.start-1, 10); ok {
		t.Error("reading an overwritten position succeeded")
	}
	l.reset(2000)
	if pos, ok := l.find(2001); !ok || pos != l.end {
		t.Errorf("after reset: find(next) = %d %v, want %d", pos, ok, l.end)
	}
	if _, ok := l.find(2000); ok {
		t.Error("after reset the log still claims an old op")
	}
}

// The write path's cost per 256-byte update in batches of 256, as the
// stream applies them: the only allocation should be the session's new
// data, which the store keeps.
func BenchmarkWriteBatch(b *testing.B) {
	s := New(Limits{})
	data := bytes.Repeat([]byte{'x'}, 256)
	ids := make([][]byte, 10000)
	for i := range ids {
		ids[i] = fmt.Appendf(nil, "call-%d", i)
		s.Write(OpCreate, string(ids[i]), data, time.Now())
	}
	batch := make([]Write, 256)
	b.SetBytes(256 * 256)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		now := time.Now()
		for k := range batch {
			batch[k] = Write{Kind: OpUpdate, ID: ids[(i*256+k)%len(ids)], Data: data}
		}
		s.WriteBatch(batch, now)
		if batch[0].Err != nil {
			b.Fatal(batch[0].Err)
		}
	}
}

// The standby's side: applying a batch of replicated updates.
func BenchmarkApply(b *testing.B) {
	s := New(Limits{})
	data, id := bytes.Repeat([]byte{'x'}, 256), []byte("call")
	ops := make([]Op, 256)
	var seq uint64
	b.SetBytes(256 * 256)
	b.ReportAllocs()
	for b.Loop() {
		for k := range ops {
			seq++
			ops[k] = Op{Seq: seq, Kind: OpCreate, ID: id, Data: data}
			if seq > 1 {
				ops[k].Kind = OpUpdate
			}
		}
		if err := s.Apply(time.Now(), 0, ops...); err != nil {
			b.Fatal(err)
		}
	}
}

func TestStoreLimits(t *testing.T) {
	s := New(Limits{MaxSessions: 2, MaxData: 8})
	write(t, s, OpCreate, "a", "x")
	write(t, s, OpCreate, "b", "x")
	for _, c := range []struct {
		kind     OpKind
		id, data string
		want     error
	}{
		{OpCreate, "c", "x", ErrFull},
		{OpCreate, "a", "x", ErrExists},
		{OpUpdate, "zz", "x", ErrNotFound},
		{OpUpdate, "a", "123456789", ErrTooLarge},
		{OpCreate, "", "x", ErrBadID},
		{OpCreate, string(make([]byte, 257)), "x", ErrBadID},
	} {
		if _, err := s.Write(c.kind, c.id, []byte(c.data), time.Now()); !errors.Is(err, c.want) {
			t.Errorf("%v %q: %v, want %v", c.kind, c.id, err, c.want)
		}
	}
}

// Issue 14.7: what all sessions hold is bounded (sessions.max_memory), with
// a clear error past it; a delete gives the room back.
func TestStoreMemoryLimit(t *testing.T) {
	s := New(Limits{MaxMemory: 10 * sessionCost(6, 1000)})
	data := bytes.Repeat([]byte{'x'}, 1000)
	for i := range 10 {
		if _, err := s.Write(OpCreate, fmt.Sprintf("call-%d", i), data, time.Now()); err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
	}
	_, err := s.Write(OpCreate, "call-x", data, time.Now())
	if !errors.Is(err, ErrFull) || !strings.Contains(err.Error(), "sessions.max_memory") {
		t.Fatalf("past the limit: %v", err)
	}
	if _, err := s.Write(OpUpdate, "call-1", append(data, 'y'), time.Now()); !errors.Is(err, ErrFull) {
		t.Fatalf("an update past the limit: %v", err)
	}
	if _, err := s.Write(OpUpdate, "call-1", data[:10], time.Now()); err != nil {
		t.Fatalf("an update that shrinks: %v", err)
	}
	if _, err := s.Write(OpDelete, "call-2", nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write(OpCreate, "call-x", data, time.Now()); err != nil {
		t.Fatalf("after a delete: %v", err)
	}
}

func write(t *testing.T, s *Store, kind OpKind, id, data string) uint64 {
	t.Helper()
	seq, err := s.Write(kind, id, []byte(data), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

// A standby that becomes active starts a new stream (SetEpoch); ops of the
// stream it followed that were still on their way are refused. Applied,
// they were in this store and in nothing its own standby is sent (the log
// restarts at each apply, and the new stream's snapshot may predate them):
// that standby stayed behind for good (seen in a soak, one write), and a
// failover to it lost them.
func TestApplyAfterPromotionIsRefused(t *testing.T) {
	s := New(Limits{})
	now := time.Now()
	s.Load(7, 10, nil, now)
	op := func(seq uint64) Op {
		return Op{Seq: seq, Kind: OpCreate, ID: []byte(fmt.Sprint("s", seq)), Data: []byte("x")}
	}
	if err := s.Apply(now, 7, op(11)); err != nil {
		t.Fatal(err)
	}
	s.SetEpoch(8)
	if err := s.Apply(now, 7, op(12)); !errors.Is(err, ErrNotFollowing) {
		t.Fatalf("an op of the old stream after the new one began: %v", err)
	}
	if epoch, seq := s.Seq(); epoch != 8 || seq != 11 || s.Len() != 1 {
		t.Errorf("after the refused op: stream %d at %d, %d sessions", epoch, seq, s.Len())
	}
}

// A leader behind its standby by more than a chunk reads whole ops, so it
// walks their lengths: the cost per 64 KiB chunk of 256-byte updates,
// under the store's lock.
func BenchmarkReadLogBehind(b *testing.B) {
	s := New(Limits{})
	data := bytes.Repeat([]byte{'x'}, 256)
	for i := range 60_000 {
		kind := OpUpdate
		if i < 1000 {
			kind = OpCreate
		}
		if _, err := s.Write(kind, fmt.Sprintf("call-%d", i%1000), data, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
	start := s.log.start
	var out []byte
	b.SetBytes(64 << 10)
	for b.Loop() {
		out, _, _ = s.ReadLog(out[:0], start, 64<<10)
		if len(out) < 60<<10 {
			b.Fatalf("read %d bytes", len(out))
		}
	}
}
