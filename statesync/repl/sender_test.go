package repl

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/hapair/hapair/statesync/store"
	"github.com/hapair/hapair/statesync/wire"
)

// writeHook is the connection of a standby whose link is slower than the
// active's writes: while the active's first send waits on it, the
// application writes on, and the log runs past what was being sent.
type writeHook struct {
	bytes.Buffer
	once func()
}

func (w *writeHook) Write(p []byte) (int, error) {
	if w.once != nil {
		w.once()
		w.once = nil
	}
	return w.Buffer.Write(p)
}

// A standby that falls so far behind that the log overwrote what it had
// not been sent gets a snapshot, on the same connection. The log goes out
// in chunks, and a chunk may end inside an operation: a snapshot that
// followed it there cut the operation short, and the standby read the
// snapshot's first bytes as the rest of it (for a session, as its data),
// then lengths spelt by a session's bytes (a "malformed message" of
// 2021161080 bytes, "xxxx", in TestBusyReplicationLinkIsNoDeadPeer), and
// reconnected. What the active sends must parse, message by message.
func TestSnapshotAfterTheLogRanAheadStartsOnAMessage(t *testing.T) {
	for _, size := range []int{100, 20 << 10, 32 << 10, 100 << 10} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			st := store.New(store.Limits{MaxData: 128 << 10, MaxIDLen: 16, LogBytes: 512 << 10})
			payload := func(i int) []byte { return bytes.Repeat([]byte{byte('a' + i%26)}, size) }
			n := 0
			write := func() uint64 {
				n++
				kind := store.OpUpdate
				if n == 1 {
					kind = store.OpCreate
				}
				seq, err := st.Write(kind, "s0", payload(n), time.Now())
				if err != nil {
					t.Fatal(err)
				}
				return seq
			}
			// Some 150 KiB of ops, which the log holds (and at least
			// three): more than one chunk.
			for range max(3, 150<<10/wire.OpSize(2, size)) {
				write()
			}
			r := New(st, Config{})
			// The standby holds nothing of the log yet.
			epoch, _ := st.Seq()
			start, ok := st.Resume(epoch, 0)
			if !ok {
				t.Fatal("the log lost its first op already")
			}
			conn := &writeHook{}
			conn.once = func() {
				for range 2 * (512 << 10) / size {
					write()
				}
			}
			snd := &sender{bw: bufio.NewWriterSize(conn, 64<<10), pos: start}
			if _, err := snd.drain(r, true); err != nil {
				t.Fatal(err)
			}
			// What the standby reads: ops in order, then a snapshot
			// that holds the last write, then nothing.
			br := bufio.NewReader(&conn.Buffer)
			var m wire.Msg
			var buf []byte
			var err error
			var seqs []uint64
			for {
				if buf, err = wire.Read(br, buf, &m); err != nil {
					if err == io.EOF {
						t.Fatal("no snapshot came")
					}
					t.Fatalf("after %d ops: %v", len(seqs), err)
				}
				if m.Type == wire.Snapshot {
					break
				}
				if m.Type != wire.Op || m.Seq != uint64(len(seqs)+1) || !bytes.Equal(m.Data, payload(int(m.Seq))) {
					t.Fatalf("after %d ops: message of type %d, seq %d, %d bytes of data %.10q...", len(seqs), m.Type, m.Seq, len(m.Data), m.Data)
				}
				seqs = append(seqs, m.Seq)
			}
			if m.Seq != uint64(n) || m.Count != 1 {
				t.Fatalf("snapshot at %d of %d sessions, want %d of 1", m.Seq, m.Count, n)
			}
			if buf, err = wire.Read(br, buf, &m); err != nil || m.Type != wire.Entry || !bytes.Equal(m.Data, payload(n)) {
				t.Fatalf("the snapshot's entry: type %d, %.10q..., %v", m.Type, m.Data, err)
			}
			if _, err := wire.Read(br, buf, &m); err != io.EOF {
				t.Errorf("after the snapshot: %v, want the end", err)
			}
		})
	}
}
