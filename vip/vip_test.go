package vip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hapair/hapair/lab"
	"github.com/hapair/hapair/lab/labtest"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"golang.org/x/net/icmp"
	"golang.org/x/sys/unix"
)

func manager(t testing.TB, ns string, lease time.Duration, addrs ...netip.Prefix) *Manager {
	t.Helper()
	var as []Addr
	for _, p := range addrs {
		as = append(as, Addr{Prefix: p, Interface: lab.Public})
	}
	m, err := New(as, Options{NetNS: ns, Lease: lease})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func mac(t testing.TB, p *lab.Pair, ns string) net.HardwareAddr {
	l, err := p.Handle(ns).LinkByName(lab.Public)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().HardwareAddr
}

// neighbour reads the client's neighbour entry for ip.
func neighbour(t testing.TB, p *lab.Pair, ip netip.Addr) net.HardwareAddr {
	h := p.Handle(p.Client)
	br, err := h.LinkByName(lab.Bridge)
	if err != nil {
		t.Fatal(err)
	}
	family := netlink.FAMILY_V4
	if ip.Is6() {
		family = netlink.FAMILY_V6
	}
	list, err := h.NeighList(br.Attrs().Index, family)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range list {
		if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap() == ip {
			return n.HardwareAddr
		}
	}
	return nil
}

func waitNeighbour(t testing.TB, p *lab.Pair, ip netip.Addr, want net.HardwareAddr) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for {
		got := neighbour(t, p, ip)
		if got.String() == want.String() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("client's neighbour entry for %s is %v, want %v", ip, got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestMoveUpdatesClientWithoutAsking(t *testing.T) {
	for _, vip := range []netip.Prefix{lab.VIP, lab.VIP6} {
		t.Run(vip.Addr().String(), func(t *testing.T) {
			p := labtest.NewPair(t, lab.Options{})
			a := manager(t, p.A, 0, vip)
			b := manager(t, p.B, 0, vip)
			if err := a.Claim(); err != nil {
				t.Fatal(err)
			}
			if err := lab.Reach(p.Client, vip.Addr(), 2*time.Second); err != nil {
				t.Fatal(err)
			}
			waitNeighbour(t, p, vip.Addr(), mac(t, p, p.A))

			if err := a.Release(); err != nil {
				t.Fatal(err)
			}
			if err := b.Claim(); err != nil {
				t.Fatal(err)
			}
			// No traffic from the client in between: only the
			// announcement can have moved its entry.
			waitNeighbour(t, p, vip.Addr(), mac(t, p, p.B))
			if err := lab.Reach(p.Client, vip.Addr(), 2*time.Second); err != nil {
				t.Fatal(err)
			}
			if present, _ := a.Present(); len(present) != 0 {
				t.Errorf("a still holds %v", present)
			}
		})
	}
}

func TestLeaseExpiresWithoutRenewal(t *testing.T) {
	p := labtest.NewPair(t, lab.Options{})
	m := manager(t, p.A, 2*time.Second, lab.VIP, lab.VIP6)
	start := time.Now()
	if err := m.Claim(); err != nil {
		t.Fatal(err)
	}
	// Renewals keep it past the lease.
	for time.Since(start) < 3*time.Second {
		if err := m.Renew(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if present, _ := m.Present(); len(present) != 2 {
		t.Fatalf("renewed VIPs gone: %v", present)
	}
	// A hung daemon renews nothing: the kernel removes both.
	hung := time.Now()
	for {
		present, err := m.Present()
		if err != nil {
			t.Fatal(err)
		}
		if len(present) == 0 {
			t.Logf("VIPs removed by the kernel %v after the last renewal", time.Since(hung))
			break
		}
		if time.Since(hung) > 2*time.Second+1500*time.Millisecond {
			t.Fatalf("VIPs %v still there %v after the last renewal of a 2s lease", present, time.Since(hung))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The daemon resumes (a frozen virtual machine thawed): its late
	// renewal puts nothing back. Whether to claim again is the agent's
	// to decide, once it has heard its peer and its heartbeat core.
	if err := m.Renew(); err != nil {
		t.Fatal(err)
	}
	if present, _ := m.Present(); len(present) != 0 {
		t.Fatalf("a renewal after the lease ran out put back %v", present)
	}
	if err := m.Claim(); err != nil {
		t.Fatal(err)
	}
	if present, _ := m.Present(); len(present) != 2 {
		t.Fatalf("claimed again: %v", present)
	}
}

// A cleanup is also given the VIPs a previous run recorded, and finds a
// VIP whose prefix the config now gives otherwise: it removes each as
// the kernel lists it, once, and says so with the kernel's prefix.
func TestCleanupOfARecordedVIPAndAnEditedPrefix(t *testing.T) {
	p := labtest.NewPair(t, lab.Options{})
	moved := netip.MustParsePrefix("192.0.2.101/24")
	crashed := manager(t, p.A, 0, lab.VIP, moved)
	if err := crashed.Claim(); err != nil {
		t.Fatal(err)
	}
	// The config now names lab.VIP as a /25, and moved no more; the
	// record names moved, and lab.VIP as it was. A removal that named the /25 failed as "not
	// there" (EADDRNOTAVAIL), which reads as gone.
	edited := manager(t, p.A, 0, netip.PrefixFrom(lab.VIP.Addr(), 25))
	removed, err := edited.Cleanup(Addr{Prefix: moved, Interface: lab.Public}, Addr{Prefix: lab.VIP, Interface: lab.Public})
	if err != nil {
		t.Fatal(err)
	}
	want := []Addr{{Prefix: lab.VIP, Interface: lab.Public}, {Prefix: moved, Interface: lab.Public}}
	if len(removed) != 2 || removed[0] != want[0] || removed[1] != want[1] {
		t.Fatalf("removed %v, want %v", removed, want)
	}
	if present, _ := crashed.Present(); len(present) != 0 {
		t.Fatalf("still on the host: %v", present)
	}
}

func TestCleanupReleaseAndForeign(t *testing.T) {
	p := labtest.NewPair(t, lab.Options{})
	crashed := manager(t, p.A, 0, lab.VIP, lab.VIP6)
	if err := crashed.Claim(); err != nil {
		t.Fatal(err)
	}
	// A new manager (a restarted daemon) finds and removes the stale VIPs.
	m := manager(t, p.A, 0, lab.VIP, lab.VIP6)
	removed, err := m.Cleanup()
	if err != nil || len(removed) != 2 {
		t.Fatalf("cleanup removed %v, %v; want both", removed, err)
	}
	if err := m.Release(); err != nil {
		t.Errorf("release of nothing: %v", err)
	}
	if err := m.Release(); err != nil {
		t.Errorf("second release: %v", err)
	}
	// An operator's permanent address is neither taken nor removed.
	h := p.Handle(p.A)
	l, _ := h.LinkByName(lab.Public)
	if err := h.AddrAdd(l, m.nlAddr(Addr{Prefix: lab.VIP}, false)); err != nil {
		t.Fatal(err)
	}
	if err := m.Claim(); !errors.Is(err, ErrForeign) {
		t.Errorf("claim over a permanent address: %v, want ErrForeign", err)
	}
	if removed, _ := m.Cleanup(); len(removed) != 1 || removed[0].Prefix != lab.VIP6 {
		t.Errorf("cleanup removed %v, want only the IPv6 VIP", removed)
	}
	if present, _ := m.Present(); len(present) != 1 {
		t.Errorf("the permanent address is gone: %v", present)
	}
	if perm, err := m.Permanent(); err != nil || len(perm) != 1 || perm[0].Prefix != lab.VIP {
		t.Errorf("permanent: %v, %v; want the IPv4 VIP alone", perm, err)
	}
	if err := m.Claim(); !errors.Is(err, ErrForeign) {
		t.Fatal(err)
	}
	if perm, _ := m.Permanent(); len(perm) != 1 {
		t.Errorf("permanent with the IPv6 VIP leased beside it: %v", perm)
	}
	// Claiming twice is idempotent.
	b := manager(t, p.B, 0, lab.VIP)
	if err := b.Claim(); err != nil {
		t.Fatal(err)
	}
	if err := b.Claim(); err != nil {
		t.Errorf("second claim: %v", err)
	}
}

func TestClaimMissingInterface(t *testing.T) {
	p := labtest.NewPair(t, lab.Options{})
	m, err := New([]Addr{{Prefix: lab.VIP, Interface: "nosuch0"}}, Options{NetNS: p.A})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	err = m.Claim()
	if err == nil || !strings.Contains(err.Error(), "nosuch0") {
		t.Fatalf("claim on a missing interface: %v", err)
	}
}

func TestWatch(t *testing.T) {
	p := labtest.NewPair(t, lab.Options{})
	m := manager(t, p.A, 0, lab.VIP)
	w, err := m.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	events := runWatch(t, w)
	if err := m.Claim(); err != nil {
		t.Fatal(err)
	}
	// Removed by hand.
	removeByHand(t, p, m)
	expect(t, events, Removed)
	// The switch port goes dark: carrier lost, then back.
	if err := p.SetLink(p.Client, "pa", false); err != nil {
		t.Fatal(err)
	}
	expect(t, events, CarrierDown)
	if err := p.SetLink(p.Client, "pa", true); err != nil {
		t.Fatal(err)
	}
	expect(t, events, CarrierUp)
	// Our own release is not reported as a removal.
	m.Claim()
	m.Release()
	select {
	case ev := <-events:
		t.Errorf("unexpected %v after our own release", ev.Kind)
	case <-time.After(200 * time.Millisecond):
	}
	// Added by hand, for good: not ours (our own claims above, with a
	// lease, said nothing).
	h := p.Handle(p.A)
	l, _ := h.LinkByName(lab.Public)
	if err := h.AddrAdd(l, m.nlAddr(m.addrs[0], false)); err != nil {
		t.Fatal(err)
	}
	expect(t, events, Foreign)
}

// A release and a claim back to back (a node that stepped down taking the
// VIPs back) are not reported as a removal when the watch reads the
// release's notification after the claim (a busy agent's watch does): the
// VIP is there. A removal by hand is. The notification is handed to the
// watch's view directly, the order being the point.
func TestWatchDoesNotReportItsOwnReleaseReadAfterAClaim(t *testing.T) {
	p := labtest.NewPair(t, lab.Options{})
	m := manager(t, p.A, 0, lab.VIP)
	events := make(chan Event, 1)
	v := &view{m: m, ctx: context.Background(), out: events}
	if err := m.Claim(); err != nil {
		t.Fatal(err)
	}
	if err := m.Release(); err != nil {
		t.Fatal(err)
	}
	if err := m.Claim(); err != nil {
		t.Fatal(err)
	}
	v.removed(lab.VIP.Addr()) // the release's, read now
	select {
	case ev := <-events:
		t.Fatalf("reported %v of %v, which is there", ev.Kind, ev.Addr)
	default:
	}
	removeByHand(t, p, m)
	v.removed(lab.VIP.Addr())
	select {
	case ev := <-events:
		if ev.Kind != Removed || ev.Addr != m.addrs[0] {
			t.Fatalf("got %v of %v, want the removal by hand", ev.Kind, ev.Addr)
		}
	default:
		t.Fatal("the removal by hand was not reported")
	}
}

// A link without carrier when the watch starts is reported at once: it
// will send no notification until it changes.
func TestWatchSaysALinkIsDarkAtTheStart(t *testing.T) {
	p := labtest.NewPair(t, lab.Options{})
	if err := p.SetLink(p.Client, "pa", false); err != nil {
		t.Fatal(err)
	}
	m := manager(t, p.A, 0, lab.VIP)
	w, err := m.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	events := runWatch(t, w)
	expect(t, events, CarrierDown)
	if err := p.SetLink(p.Client, "pa", true); err != nil {
		t.Fatal(err)
	}
	expect(t, events, CarrierUp)
}

// runWatch runs w until the test ends, and returns its events.
func runWatch(t *testing.T, w *Watcher) <-chan Event {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	events := make(chan Event, 16)
	done := make(chan error)
	go func() { done <- w.Run(ctx, events) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return events
}

// removeByHand deletes m's first VIP from node A's interface, as an
// operator or another program would.
func removeByHand(t *testing.T, p *lab.Pair, m *Manager) {
	t.Helper()
	h := p.Handle(p.A)
	l, _ := h.LinkByName(lab.Public)
	if err := h.AddrDel(l, m.nlAddr(m.addrs[0], false)); err != nil {
		t.Fatal(err)
	}
}

func expect(t *testing.T, ch <-chan Event, kind EventKind) {
	t.Helper()
	select {
	case ev := <-ch:
		if ev.Kind != kind {
			t.Fatalf("got %v, want %v", ev.Kind, kind)
		}
	case <-time.After(2 * time.Second):
		t.Fatalf("no %v event", kind)
	}
}

// BenchmarkClaim claims n VIPs on one interface, as a takeover does: a
// load balancer's pair carries tens of them.
func BenchmarkClaim(b *testing.B) { benchmarkVIPs(b, true) }

// BenchmarkRelease times what a node that steps down (a failed critical
// process, a switchover) does before its peer may claim.
func BenchmarkRelease(b *testing.B) { benchmarkVIPs(b, false) }

// timedIf runs f with the benchmark's timer running only if timed.
func timedIf(b *testing.B, timed bool, f func() error) error {
	if !timed {
		b.StopTimer()
		defer b.StartTimer()
	}
	return f()
}

// benchmarkVIPs times a claim, or a release, of n VIPs on one interface.
func benchmarkVIPs(b *testing.B, claim bool) {
	for _, n := range []int{1, 8, 32, 128} {
		b.Run(fmt.Sprintf("vips=%d", n), func(b *testing.B) {
			p, err := lab.New(lab.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			var addrs []Addr
			for i := range n {
				a4 := lab.VIP.Addr().As4()
				a4[3] += byte(i) // .100 to .227
				addrs = append(addrs, Addr{Prefix: netip.PrefixFrom(netip.AddrFrom4(a4), 24), Interface: lab.Public})
			}
			m, err := New(addrs, Options{NetNS: p.A, Count: 1})
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			for b.Loop() {
				if err := timedIf(b, claim, m.Claim); err != nil {
					b.Fatal(err)
				}
				if err := timedIf(b, !claim, m.Release); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// Issue 14.7: a busy host can make the kernel drop netlink notifications
// (ENOBUFS), which ends a subscription. The watch opens it again and reads
// back what it missed, instead of failing (which would stop the daemon: a
// failover of its own).
func TestWatchSurvivesALostSubscription(t *testing.T) {
	p := labtest.NewPair(t, lab.Options{})
	m := manager(t, p.A, 0, lab.VIP)
	w, err := m.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Claim(); err != nil {
		t.Fatal(err)
	}
	removeByHand(t, p, m)
	// The notification of that removal is lost with the subscription.
	deadline := time.After(2 * time.Second)
	for lost := false; !lost; {
		select {
		case u := <-w.addrCh:
			lost = !u.NewAddr
		case <-deadline:
			t.Fatal("no notification of the removal")
		}
	}
	w.errCh <- unix.ENOBUFS

	events := runWatch(t, w)
	expect(t, events, Removed) // read back from the kernel
	if n := w.Resubscribed(); n != 1 {
		t.Errorf("resubscribed %d times", n)
	}
	// And the new subscription reports as the old one did.
	if err := p.SetLink(p.Client, "pa", false); err != nil {
		t.Fatal(err)
	}
	expect(t, events, CarrierDown)
}

// The public interface made anew (ifdown and ifup of a bond or a VLAN,
// netplan apply, a NIC unplugged and plugged again): a new index and a
// new MAC. The announcer kept the old interface's socket and MAC, so the
// VIP claimed on the new interface was never announced: the client (a
// router keeps its entries for hours) went on sending to the old MAC.
func TestAnnouncesOnAPublicInterfaceMadeAnew(t *testing.T) {
	for _, vip := range []netip.Prefix{lab.VIP, lab.VIP6} {
		t.Run(vip.Addr().String(), func(t *testing.T) {
			p := labtest.NewPair(t, lab.Options{})
			a := manager(t, p.A, 0, vip)
			if err := a.Claim(); err != nil {
				t.Fatal(err)
			}
			if err := lab.Reach(p.Client, vip.Addr(), 2*time.Second); err != nil {
				t.Fatal(err)
			}
			waitNeighbour(t, p, vip.Addr(), mac(t, p, p.A))
			old := mac(t, p, p.A)
			if err := p.RemakePublic("a"); err != nil {
				t.Fatal(err)
			}
			if now := mac(t, p, p.A); now.String() == old.String() {
				t.Fatalf("the interface made anew kept its MAC %v", now)
			}
			if err := a.Claim(); err != nil {
				t.Fatal(err)
			}
			// No traffic from the client: only the announcement can
			// have moved its entry.
			waitNeighbour(t, p, vip.Addr(), mac(t, p, p.A))
		})
	}
}

// The public interface's MAC changed while it runs: an active-backup bond
// with fail_over_mac=active takes its new active port's MAC, or an
// operator sets one. The announcer kept the MAC it read when it opened, so
// every announcement after (a refresh, the next claim) told the client the
// old one. The watcher sees the change and the next announcement is made
// with the MAC the interface has.
func TestAnnouncesTheMACTheInterfaceHasNow(t *testing.T) {
	p := labtest.NewPair(t, lab.Options{})
	m := manager(t, p.A, 0, lab.VIP)
	w, err := m.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	runWatch(t, w)
	if err := m.Claim(); err != nil {
		t.Fatal(err)
	}
	if err := lab.Reach(p.Client, lab.VIP.Addr(), 2*time.Second); err != nil {
		t.Fatal(err)
	}
	waitNeighbour(t, p, lab.VIP.Addr(), mac(t, p, p.A))
	h := p.Handle(p.A)
	l, err := h.LinkByName(lab.Public)
	if err != nil {
		t.Fatal(err)
	}
	next := net.HardwareAddr{0x02, 0x00, 0x5e, 0x00, 0x53, 0x42}
	if err := h.LinkSetHardwareAddr(l, next); err != nil {
		t.Fatal(err)
	}
	// The watcher reads the change from the kernel's notification; an
	// announcement then says the new MAC. One every 50 ms (a refresh, or
	// the next claim, in the daemon) until the client's entry says it.
	deadline := time.Now().Add(2 * time.Second)
	for neighbour(t, p, lab.VIP.Addr()).String() != next.String() {
		if time.Now().After(deadline) {
			t.Fatalf("the client's entry for the VIP is %v, want the interface's new MAC %v", neighbour(t, p, lab.VIP.Addr()), next)
		}
		m.Announce()
		time.Sleep(50 * time.Millisecond)
	}
}

// The announcer's sockets only send. Unfiltered and never read, the ARP
// socket kept every ARP frame of the segment and the NDP socket every
// ICMPv6 message to the node, each until its buffer was full: about 200 KB
// of kernel memory held for as long as the daemon ran, and a wake-up of
// the runtime's poller for each. Another host announces its own address,
// often, while a socket of the test's own sees the frames arrive; the
// announcer's sockets hold none of them.
func TestAnnouncerSocketsTakeNothingIn(t *testing.T) {
	for _, tc := range []struct {
		vip, other netip.Prefix
		table      string
	}{
		{lab.VIP, netip.MustParsePrefix("192.0.2.77/24"), "packet"},
		{lab.VIP6, netip.MustParsePrefix("2001:db8:1::77/64"), "raw6"},
	} {
		t.Run(tc.vip.Addr().String(), func(t *testing.T) {
			p := labtest.NewPair(t, lab.Options{})
			a := manager(t, p.A, 0, tc.vip)
			if err := a.Claim(); err != nil {
				t.Fatal(err)
			}
			if a.Stats().Announcements == 0 {
				t.Fatal("the claim announced nothing: no socket to look at")
			}
			// The announcer's sockets are among the test's open
			// sockets now; the one opened next to watch the segment
			// is not.
			announcers := socketInodes(t)
			var watch interface {
				SetReadDeadline(time.Time) error
				ReadFrom([]byte) (int, net.Addr, error)
				Close() error
			}
			err := a.inNS(func() (err error) {
				if tc.vip.Addr().Is4() {
					ifi, err := net.InterfaceByName(lab.Public)
					if err != nil {
						return err
					}
					watch, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_ARP, nil)
					return err
				}
				watch, err = icmp.ListenPacket("ip6:ipv6-icmp", "::")
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			defer watch.Close()
			b := manager(t, p.B, 0, tc.other)
			if err := b.Claim(); err != nil {
				t.Fatal(err)
			}
			seen, buf := 0, make([]byte, 1500)
			for deadline := time.Now().Add(5 * time.Second); seen < 50; {
				if time.Now().After(deadline) {
					t.Fatalf("the watching socket saw %d frames in 5 s of the other host's announcements; the test needs 50", seen)
				}
				if err := b.Announce(); err != nil {
					t.Fatal(err)
				}
				watch.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
				for {
					if _, _, err := watch.ReadFrom(buf); err != nil {
						break
					}
					seen++
				}
			}
			queued := map[uint64]uint64{}
			err = a.inNS(func() error {
				var err error
				queued, err = socketQueues("/proc/thread-self/net/"+tc.table, announcers)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(queued) == 0 {
				t.Fatalf("no socket of the announcer's in /proc/net/%s", tc.table)
			}
			for ino, n := range queued {
				if n != 0 {
					t.Errorf("the announcer's socket %d holds %d bytes of the segment's traffic (%d frames seen meanwhile); want none", ino, n, seen)
				}
			}
		})
	}
}

// socketInodes lists the inodes of the test process's open sockets.
func socketInodes(t *testing.T) map[uint64]bool {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint64]bool{}
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err != nil {
			continue // closed since the listing
		}
		var ino uint64
		if _, err := fmt.Sscanf(target, "socket:[%d]", &ino); err == nil {
			out[ino] = true
		}
	}
	return out
}

// socketQueues reads, from a /proc/net table of packet or raw6 sockets,
// the bytes queued to receive on each socket among inodes.
func socketQueues(table string, inodes map[uint64]bool) (map[uint64]uint64, error) {
	b, err := os.ReadFile(table)
	if err != nil {
		return nil, err
	}
	out := map[uint64]uint64{}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	for _, line := range lines[1:] {
		f := strings.Fields(line)
		var ino, queued uint64
		switch {
		case strings.HasSuffix(table, "packet") && len(f) >= 9:
			// sk RefCnt Type Proto Iface R Rmem User Inode
			ino, _ = strconv.ParseUint(f[8], 10, 64)
			queued, _ = strconv.ParseUint(f[6], 10, 64)
		case strings.HasSuffix(table, "raw6") && len(f) >= 10:
			// sl local remote st tx_queue:rx_queue tr:when retrnsmt uid timeout inode
			ino, _ = strconv.ParseUint(f[9], 10, 64)
			_, rx, _ := strings.Cut(f[4], ":")
			queued, _ = strconv.ParseUint(rx, 16, 64)
		default:
			return nil, fmt.Errorf("%s: a line not understood: %q", table, line)
		}
		if inodes[ino] {
			out[ino] = queued
		}
	}
	return out, nil
}
