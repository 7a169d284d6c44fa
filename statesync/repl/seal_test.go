package repl

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hapair/hapair/statesync/store"
	"github.com/hapair/hapair/statesync/wire"
)

// relay sits on the path between a follower and its leader (issue 14.4):
// it relays the challenge-response untouched, then tampers once with what
// the leader sends (tamper gets the bytes after the handshake and returns
// what to forward instead). Later connections pass untouched.
type relay struct {
	ln     net.Listener
	mu     sync.Mutex
	done   bool // tampered already
	tamper func([]byte) []byte
	wg     sync.WaitGroup
}

// handshakeLen is what the leader sends before sealing starts: its nonce,
// a proof count and one proof per key.
const handshakeLen = 32 + 1 + 32

func startRelay(t *testing.T, leader string, tamper func([]byte) []byte) *relay {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{ln: ln, tamper: tamper}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", leader)
			if err != nil {
				c.Close()
				continue
			}
			r.mu.Lock()
			once := !r.done
			r.done = true
			r.mu.Unlock()
			r.wg.Add(2)
			go func() { defer r.wg.Done(); io.Copy(up, c); up.Close() }()
			go func() {
				defer r.wg.Done()
				defer c.Close()
				if once {
					hs := make([]byte, handshakeLen)
					if _, err := io.ReadFull(up, hs); err != nil {
						return
					}
					c.Write(hs)
					buf := make([]byte, 4096)
					n, err := up.Read(buf)
					if err != nil {
						return
					}
					c.Write(r.tamper(buf[:n]))
				}
				io.Copy(c, up)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); r.wg.Wait() })
	return r
}

func TestTamperedReplicationIsRejected(t *testing.T) {
	for _, c := range []struct {
		name   string
		tamper func([]byte) []byte
	}{
		// One bit of the first record (the snapshot with the session).
		{"altered", func(b []byte) []byte { b = bytes.Clone(b); b[len(b)-20] ^= 1; return b }},
		// An operation in the clear before the leader's first record,
		// as the stream was before it was sealed.
		{"injected", func(b []byte) []byte {
			op := wire.Append(nil, &wire.Msg{Type: wire.Op, Seq: 1, Kind: wire.KindCreate, ID: []byte("evil"), Data: []byte("x")})
			return append(op, b...)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			leader := startNode(t, store.New(store.Limits{}), "", [][]byte{key}, true)
			write(t, leader.store, store.OpCreate, "call-1", "digits=42")
			r := startRelay(t, leader.ln.Addr().String(), c.tamper)
			follower := startNode(t, store.New(store.Limits{}), r.ln.Addr().String(), [][]byte{key}, false)
			// The tampered connection ends and is counted; the next one,
			// untouched, brings the real session.
			waitFor(t, "the tampered connection to be rejected", func() bool { return follower.repl.Stats().Rejected == 1 })
			waitFor(t, "the session over the next connection", func() bool {
				v, ok := follower.store.Get("call-1")
				return ok && string(v.Data) == "digits=42"
			})
			if _, ok := follower.store.Get("evil"); ok {
				t.Error("the injected operation was applied")
			}
			if follower.store.Len() != 1 {
				t.Errorf("follower holds %d sessions", follower.store.Len())
			}
		})
	}
}

// The leader's side too: an acknowledgement forged on the way is not taken,
// so a sync write is never reported replicated when it was not.
func TestForgedAckIsRejected(t *testing.T) {
	a, b := socketPair(t)
	keyA, keyB := bytes.Repeat([]byte{7}, 32), bytes.Repeat([]byte{8}, 32)
	lead, err := newSealedConn(a, keyA, keyB, nil)
	if err != nil {
		t.Fatal(err)
	}
	rejected := 0
	lead.open.onReject = func() { rejected++ }
	// The path writes an ack in the clear where the follower's sealed
	// records would come.
	b.Write(wire.Append(nil, &wire.Msg{Type: wire.Ack, Seq: 99}))
	lead.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 64)
	if _, err := lead.Read(buf); err != ErrSealed || rejected != 1 {
		t.Fatalf("forged ack: %v, rejected %d", err, rejected)
	}
	// And a genuine record from the follower opens.
	fol, _ := newSealedConn(b, keyB, keyA, nil)
	a2, b2 := socketPair(t)
	lead, _ = newSealedConn(a2, keyA, keyB, nil)
	fol.Conn = b2
	fol.Write(wire.Append(nil, &wire.Msg{Type: wire.Ack, Seq: 5}))
	n, err := lead.Read(buf)
	var m wire.Msg
	if err != nil || wire.Decode(buf[4:n], &m) != nil || m.Type != wire.Ack || m.Seq != 5 {
		t.Fatalf("genuine ack: %v %+v", err, m)
	}
}

// BenchmarkSealOpen is the cost sealing adds to one 256-byte operation in
// its own record (the sync path's worst case; the async stream batches many
// per record).
func BenchmarkSealOpen(b *testing.B) {
	a, c := net.Pipe()
	defer a.Close()
	defer c.Close()
	k1, k2 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	s, _ := newSealedConn(a, k1, k2, nil)
	o, _ := newSealedConn(c, k2, k1, nil)
	op := wire.Append(nil, &wire.Msg{Type: wire.Op, Seq: 1, Kind: wire.KindUpdate, ID: []byte("call-0000001"), Data: bytes.Repeat([]byte{'s'}, 256)})
	var hdr [4]byte
	b.SetBytes(int64(len(op)))
	b.ReportAllocs()
	for b.Loop() {
		binary.BigEndian.PutUint32(hdr[:], uint32(len(op)+tagLen))
		s.wbuf = s.seal.Seal(append(s.wbuf[:0], hdr[:]...), recordNonce(s.sent), op, hdr[:])
		s.sent++
		if err := o.open.feed(s.wbuf); err != nil {
			b.Fatal(err)
		}
		o.open.out = o.open.out[:0]
	}
}

// Issue 14.7: the active's listener hears only its peer, and only a few
// connections at a time before they prove the key.
func TestListenerRefusesStrangersAndFloods(t *testing.T) {
	leader := startNodeCfg(t, store.New(store.Limits{}), Config{Keys: [][]byte{key}, Peer: "127.0.0.1:9"}, true)
	stranger := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	c, err := stranger.Dial("tcp", leader.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitFor(t, "the stranger refused", func() bool { return leader.repl.Stats().Refused == 1 })
	// From the peer's address, but silent: maxUnproven of them hold the
	// slots; the next is refused at once.
	var idle []net.Conn
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	for range maxUnproven + 1 {
		c, err := net.Dial("tcp", leader.ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	waitFor(t, "the flood refused", func() bool { return leader.repl.Stats().Refused == 2 })
}
