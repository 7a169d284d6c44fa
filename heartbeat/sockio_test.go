package heartbeat

import (
	"context"
	"testing"
	"time"

	"github.com/hapair/hapair/lab"
	"github.com/hapair/hapair/lab/labtest"
)

// A frame that waited in the socket while its reader did not run counts
// from when the kernel received it: a stalled core must not take the
// peer's frames for late ones (nor, at a dead interval's end, for none).
// The UDP path only: frames that cross a veth to a packet socket come
// stamped when read (SO_TIMESTAMPNS and SO_TIMESTAMPING alike, kernel
// 6.18), so there the core relies on reading what is queued before it
// declares the path down.
func TestReadGivesKernelReceiveTime(t *testing.T) {
	p := labtest.NewPair(t, lab.Options{})
	a, b := labPaths(t, p, "a"), labPaths(t, p, "b")
	defer closePaths(a, b)
	for i, path := range b {
		if path.Name != "udp" {
			continue
		}
		t.Run(path.Name, func(t *testing.T) {
			io := newSockIO(path.Conn, path.ifindex, EtherType)
			if io == nil {
				t.Fatal("no socket I/O for a socket")
			}
			sent := time.Now()
			if _, err := a[i].Conn.WriteTo([]byte("hapair-test-frame"), a[i].Peer); err != nil {
				t.Fatal(err)
			}
			// The reader is late: 50 ms after the frame came.
			time.Sleep(50 * time.Millisecond)
			var buf [FrameLen + 1]byte
			n, at, _, err := io.read(buf[:])
			if err != nil {
				t.Fatal(err)
			}
			read := time.Now()
			if string(buf[:n]) != "hapair-test-frame" {
				t.Fatalf("read %q", buf[:n])
			}
			if at.Before(sent) || read.Sub(at) < 40*time.Millisecond {
				t.Errorf("receive time %v after sending, %v before reading; want the kernel's, about 50 ms before reading", at.Sub(sent), read.Sub(at))
			}
		})
	}
}

// Sending a frame on both paths, reading it and judging it allocate
// nothing: the heartbeat core runs with locked memory at real-time
// priority, where a garbage collection is a pause it cannot afford.
func TestHotPathAllocatesNothing(t *testing.T) {
	p := labtest.NewPair(t, lab.Options{})
	pa, pb := labPaths(t, p, "a"), labPaths(t, p, "b")
	cfg := func(node uint8, gen uint64) Config {
		return Config{Cluster: testCluster, Node: node, Keys: [][]byte{testKey}, Interval: 10 * time.Millisecond, Dead: 30 * time.Millisecond, Generation: gen, Refresh: time.Hour}
	}
	a, err := New(cfg(1, 11), pa...)
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(cfg(2, 22), pb...)
	if err != nil {
		t.Fatal(err)
	}
	defer closePaths(pa, pb)
	ctx := context.Background()
	out := make([]byte, 0, FrameLen)
	alive := false
	var r rxFrame
	round := func() {
		a.sendAll(out)
		for i, path := range b.paths {
			var err error
			r.n, r.at, r.mac, err = path.io.read(r.buf[:])
			if err != nil {
				t.Fatal(err)
			}
			r.path, r.hasMAC = i, path.io.link
			b.receive(ctx, &r, &alive)
		}
	}
	// The first frames are news (path up, peer alive, a new
	// generation to persist): events that allocate nothing either, but
	// are said once.
	round()
	for len(b.events) > 0 {
		<-b.events
	}
	<-b.persist
	if allocs := testing.AllocsPerRun(200, round); allocs != 0 {
		t.Errorf("%v allocations per frame sent, read and judged; want 0", allocs)
	}
	if got := b.Stats().Received; got < 400 {
		t.Errorf("b judged %d frames authentic, want every one of over 400", got)
	}
}

func closePaths(sets ...[]Path) {
	for _, s := range sets {
		for _, p := range s {
			p.Conn.Close()
		}
	}
}
