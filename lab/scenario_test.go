package lab

import (
	"net/netip"
	"os"
	"testing"
	"time"
)

// The bench's VIP column is read by watchVIP: it must time the address's
// arrival by the kernel's notification, not the next time it looks, and it
// must say when the address never came.
func TestWatchVIPTimesTheArrival(t *testing.T) {
	p := newPair(t)

	seen, stop, err := p.watchVIP("b", 300*time.Millisecond, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if at := <-seen; !at.IsZero() {
		t.Errorf("VIP never added, yet seen at %v", at)
	}
	stop()

	// It looks again only every 20 s: a reading before then came from
	// the notification.
	seen, stop, err = p.watchVIP("b", time.Minute, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	before := time.Now()
	if err := p.addr(p.B, Public, VIP); err != nil {
		t.Fatal(err)
	}
	select {
	case at := <-seen:
		if at.Before(before) {
			t.Errorf("seen %v before it was added", before.Sub(at))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("VIP added, not seen in 10s: no notification read")
	}
	if !p.Holds("b", VIP.Addr()) || p.Holds("a", VIP.Addr()) {
		t.Error("the VIP is not where it was added")
	}
}

// With many VIPs the bench times the one its holder adds last (Probe): the
// others' notifications come first and must not end the watch.
func TestWatchVIPTimesTheProbedAddress(t *testing.T) {
	p := newPair(t)
	p.Probe = netip.MustParseAddr("192.0.2.200")

	seen, stop, err := p.watchVIP("b", time.Minute, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if err := p.addr(p.B, Public, VIP); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	if err := p.addr(p.B, Public, netip.PrefixFrom(p.Probe, VIP.Bits())); err != nil {
		t.Fatal(err)
	}
	select {
	case at := <-seen:
		if at.Before(before) {
			t.Errorf("seen %v before the probed address was added: the first VIP ended the watch", before.Sub(at))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("probed address added, not seen in 10s")
	}
}

// newPair builds a lab pair that the test's end removes.
func newPair(t *testing.T) *Pair {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	p, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}
