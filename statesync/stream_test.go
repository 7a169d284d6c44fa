package statesync

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hapair/hapair/statesync/repl"
	"github.com/hapair/hapair/statesync/store"
)

// streamConn starts an active node's API on a unix socket and opens the
// binary stream on it by hand, so a test can send any bytes.
func streamConn(t *testing.T, lim store.Limits) (*store.Store, net.Conn, *bufio.Reader) {
	t.Helper()
	st := store.New(lim)
	svc := NewService(st, repl.New(st, repl.Config{}), ServiceConfig{})
	c, br := openStream(t, svc)
	return st, c, br
}

// openStream makes svc active and opens the binary stream on its API.
func openStream(t *testing.T, svc *Service) (net.Conn, *bufio.Reader) {
	t.Helper()
	svc.SetRole(1, "ACTIVE", true, "a", 1)
	mux := http.NewServeMux()
	svc.Register(mux)
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprint(c, "POST /v1/stream HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: hapair-stream\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	return c, br
}

func request(kind store.OpKind, id string, data []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(3+len(id)+len(data)))
	b = append(b, byte(kind))
	b = binary.BigEndian.AppendUint16(b, uint16(len(id)))
	return append(append(b, id...), data...)
}

func answer(t *testing.T, br *bufio.Reader) (seq uint64, errText string) {
	t.Helper()
	var hdr [4]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, binary.BigEndian.Uint32(hdr[:]))
	if _, err := io.ReadFull(br, b); err != nil {
		t.Fatal(err)
	}
	if b[0] != 0 {
		return 0, string(b[9:])
	}
	return binary.BigEndian.Uint64(b[1:9]), ""
}

// Requests pipelined in one write are answered one by one, in order: a
// malformed or refused one in the middle of a batch gets its own error and
// does not disturb its neighbours, and a request larger than the read
// buffer goes through whole.
func TestStreamBatchAnswersInOrder(t *testing.T) {
	st, c, br := streamConn(t, store.Limits{MaxData: 200 << 10})
	big := bytes.Repeat([]byte{7}, 150<<10)
	var out []byte
	out = append(out, request(store.OpCreate, "one", []byte("1"))...)
	out = append(out, request(9, "bad-kind", nil)...)
	out = append(out, request(store.OpUpdate, "nobody", []byte("x"))...)
	out = append(out, request(store.OpCreate, "big", big)...)
	out = append(out, request(store.OpUpdate, "one", []byte("2"))...)
	if _, err := c.Write(out); err != nil {
		t.Fatal(err)
	}
	want := []string{"", "malformed request", "no such session", "", ""}
	var seqs []uint64
	for i, w := range want {
		seq, text := answer(t, br)
		if !strings.Contains(text, w) || (w == "") != (text == "") {
			t.Errorf("answer %d: %q, want an error containing %q", i, text, w)
		}
		if text == "" {
			seqs = append(seqs, seq)
		}
	}
	if fmt.Sprint(seqs) != "[1 2 3]" {
		t.Errorf("sequences %v, want [1 2 3]", seqs)
	}
	if v, _ := st.Get("one"); string(v.Data) != "2" || v.Version != 2 {
		t.Errorf("one = %q v%d", v.Data, v.Version)
	}
	if v, _ := st.Get("big"); !bytes.Equal(v.Data, big) {
		t.Errorf("big session has %d bytes, want %d", len(v.Data), len(big))
	}
	// A length no request can have ends the stream.
	c.Write([]byte{0, 0, 0, 1, 1})
	if _, err := br.ReadByte(); err == nil {
		t.Error("the stream went on after a bad length")
	}
}

// Issue 14.6: a role change never waits for the store. A promotion that
// does (the store is busy: a snapshot load, a listing of every session)
// is overtaken by a later demotion, which returns at once and wins.
func TestDemotionOvertakesABlockedPromotion(t *testing.T) {
	st := store.New(store.Limits{})
	busy := &busyStore{Store: st, done: make(chan struct{})} // the store is busy
	svc := NewService(st, repl.New(busy, repl.Config{Keys: [][]byte{key}}), ServiceConfig{})
	promoted := make(chan struct{})
	go func() {
		defer close(promoted)
		svc.SetRole(1, "ACTIVE", true, "a", 7)
	}()
	demoted := make(chan struct{})
	go func() {
		defer close(demoted)
		svc.SetRole(2, "STANDBY", false, "b", 0)
	}()
	select {
	case <-demoted:
	case <-time.After(2 * time.Second):
		t.Fatal("the demotion waited for the store")
	}
	close(busy.done)
	<-promoted
	svc.mu.RLock()
	role, active := svc.role, svc.active
	svc.mu.RUnlock()
	if role != "STANDBY" || active {
		t.Fatalf("after both: %s active=%v, want the later STANDBY", role, active)
	}
	if svc.repl.Active() {
		t.Fatal("the replicator leads after the demotion")
	}
}

// busyStore's SetEpoch waits for done: a store held by a snapshot load or
// a listing of every session.
type busyStore struct {
	*store.Store
	done chan struct{}
}

func (s *busyStore) SetEpoch(e uint64) {
	<-s.done
	s.Store.SetEpoch(e)
}

var key = bytes.Repeat([]byte{3}, 32)
