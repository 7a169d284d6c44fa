package vip

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/hapair/hapair/lab"
	"github.com/hapair/hapair/lab/labtest"
	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"golang.org/x/net/bpf"
)

// arpFrame is an Ethernet frame carrying an ARP request from ip at mac.
func arpFrame(t *testing.T, mac net.HardwareAddr, ip netip.Addr) []byte {
	t.Helper()
	p, err := arp.NewPacket(arp.OperationRequest, mac, ip, net.HardwareAddr{0, 0, 0, 0, 0, 0}, netip.MustParseAddr("192.0.2.1"))
	if err != nil {
		t.Fatal(err)
	}
	pb, err := p.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	f := &ethernet.Frame{Destination: ethernet.Broadcast, Source: mac, EtherType: ethernet.EtherTypeARP, Payload: pb}
	b, err := f.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The ARP probe's socket filter passes what may be another host
// answering for a VIP, and nothing else, whichever of many VIPs it is.
func TestARPFilter(t *testing.T) {
	own := net.HardwareAddr{0x02, 0, 0, 0, 0xaa, 0x01}
	other := net.HardwareAddr{0x02, 0, 0, 0, 0xbb, 0x02}
	var addrs []Addr
	for i := 1; i <= 250; i++ {
		addrs = append(addrs, Addr{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), 24), Interface: "pub"})
	}
	first, last := addrs[0].Prefix.Addr(), addrs[len(addrs)-1].Prefix.Addr()
	for _, n := range []int{1, 2, 250} {
		prog, err := arpFilter(own, addrs[:n])
		if err != nil || prog == nil {
			t.Fatalf("%d VIPs: filter %v, %v", n, prog, err)
		}
		vm, err := bpf.NewVM(mustDisassemble(t, prog))
		if err != nil {
			t.Fatalf("%d VIPs: %v", n, err)
		}
		lastOfN := addrs[n-1].Prefix.Addr()
		ipv6ARP := arpFrame(t, other, first)
		ipv6ARP[14+2], ipv6ARP[14+3] = 0x86, 0xdd
		for _, c := range []struct {
			name  string
			frame []byte
			pass  bool
		}{
			{"the first VIP from another MAC", arpFrame(t, other, first), true},
			{"the last VIP from another MAC", arpFrame(t, other, lastOfN), true},
			{"a VIP from this interface's MAC", arpFrame(t, own, first), false},
			{"a VIP from a MAC that shares its first four bytes", arpFrame(t, net.HardwareAddr{0x02, 0, 0, 0, 0xaa, 0x02}, first), true},
			{"a VIP from a MAC that shares its last two bytes", arpFrame(t, net.HardwareAddr{0x02, 0, 0, 1, 0xaa, 0x01}, first), true},
			{"another host's own address", arpFrame(t, other, netip.MustParseAddr("198.51.100.251")), false},
			{"a probe (sender 0.0.0.0)", arpFrame(t, other, netip.IPv4Unspecified()), false},
			{"a VIP's bytes in a packet for another protocol", ipv6ARP, false},
			{"a frame cut short", arpFrame(t, other, first)[:14+16], false},
		} {
			got, err := vm.Run(c.frame)
			if err != nil {
				t.Fatalf("%d VIPs, %s: %v", n, c.name, err)
			}
			if (got > 0) != c.pass {
				t.Errorf("%d VIPs, %s: filter returned %d, want pass %v", n, c.name, got, c.pass)
			}
		}
		if n < 250 {
			if got, _ := vm.Run(arpFrame(t, other, last)); got != 0 {
				t.Errorf("%d VIPs: passed the 250th VIP, which is not one of them", n)
			}
		}
	}
	more := append(addrs, Addr{Prefix: netip.MustParsePrefix("198.51.100.251/24")})
	if prog, err := arpFilter(own, more); err != nil || prog != nil {
		t.Errorf("251 VIPs: %v, %v; want no filter (the socket takes every ARP packet)", prog, err)
	}
	if prog, err := arpFilter(net.HardwareAddr{1, 2, 3, 4, 5, 6, 7, 8}, addrs[:1]); err != nil || prog != nil {
		t.Errorf("an 8-byte hardware address: %v, %v; want no filter", prog, err)
	}
}

func mustDisassemble(t *testing.T, raw []bpf.RawInstruction) []bpf.Instruction {
	t.Helper()
	prog, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatalf("the filter does not disassemble: %v", prog)
	}
	return prog
}

// A probe reads only what answers for a VIP: another host's ARP traffic
// on the segment stays in the kernel, its socket's filter drops it.
func TestProbeReadsOnlyAnswersForTheVIPs(t *testing.T) {
	p := labtest.NewPair(t, lab.Options{})
	a := manager(t, p.A, 0, lab.VIP)
	if err := a.Claim(); err != nil {
		t.Fatal(err)
	}
	// Another host on the segment announces an address of its own all
	// through the probe: broadcasts every host's ARP socket would take.
	b := manager(t, p.B, 0, netip.MustParsePrefix("192.0.2.77/24"))
	if err := b.Claim(); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	announced := make(chan uint64)
	go func() {
		before := b.Stats().Announcements
		for ctx.Err() == nil {
			b.Announce()
			time.Sleep(5 * time.Millisecond)
		}
		announced <- b.Stats().Announcements - before
	}()
	got, err := a.Probe(context.Background(), 300*time.Millisecond)
	stop()
	sent := <-announced
	if err != nil || len(got) != 0 {
		t.Fatalf("the probe saw %v, %v; want nobody", got, err)
	}
	if sent < 10 {
		t.Fatalf("the other host announced %d times during the probe; the test needs more", sent)
	}
	if r := a.Stats().ProbeReads; r != 0 {
		t.Errorf("the probe read %d packets while the other host announced %d times and nobody answered for the VIP; want none", r, sent)
	}
	// What does answer for the VIP is read, and found.
	holder := manager(t, p.B, 0, lab.VIP)
	if err := holder.Claim(); err != nil {
		t.Fatal(err)
	}
	got, err = a.Probe(context.Background(), 300*time.Millisecond)
	if want := fmt.Sprintf("[%s at %s]", lab.VIP.Addr(), mac(t, p, p.B)); err != nil || fmt.Sprint(got) != want {
		t.Errorf("with the VIP held by the other host too, the probe saw %v, %v; want %s", got, err, want)
	}
	if a.Stats().ProbeReads == 0 {
		t.Error("the probe found the other holder but counted no packet read")
	}
}

// A probe finds a host that answers for a held VIP, and only such a host:
// not this one, whose own kernel answers its probes, and not its
// announcements.
func TestProbeFindsAnotherHostAnsweringForAVIP(t *testing.T) {
	p := labtest.NewPair(t, lab.Options{})
	a := manager(t, p.A, 0, lab.VIP, lab.VIP6)
	if err := a.Claim(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if got, err := a.Probe(ctx, 300*time.Millisecond); err != nil || len(got) != 0 {
		t.Fatalf("alone on the network, the probe saw %v, %v; want nobody", got, err)
	}
	// The other node holds both VIPs too (the peer active beside it, or
	// an address given twice). Its announcements end before the probe:
	// what the probe sees, it is answered.
	b := manager(t, p.B, 0, lab.VIP, lab.VIP6)
	if err := b.Claim(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for b.Stats().Announcements < 6 {
		if time.Now().After(deadline) {
			t.Fatalf("b's announcements: %+v", b.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	got, err := a.Probe(ctx, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{lab.VIP.Addr().String() + " at " + mac(t, p, p.B).String(), lab.VIP6.Addr().String() + " at " + mac(t, p, p.B).String()}
	var saw []string
	for _, s := range got {
		saw = append(saw, s.String())
	}
	if strings.Join(saw, ", ") != strings.Join(want, ", ") {
		t.Errorf("the probe saw %q, want %q", saw, want)
	}
	if err := b.Release(); err != nil {
		t.Fatal(err)
	}
	if got, err := a.Probe(ctx, 300*time.Millisecond); err != nil || len(got) != 0 {
		t.Errorf("after the other host let go, the probe saw %v, %v; want nobody", got, err)
	}
	// A daemon that stops does not wait out the listening.
	stopping, stop := context.WithCancel(ctx)
	time.AfterFunc(50*time.Millisecond, stop)
	start := time.Now()
	if _, err := a.Probe(stopping, time.Minute); err != nil {
		t.Error(err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("a probe cancelled after 50ms took %v", took)
	}
}

// BenchmarkProbe is what a probe costs besides its listening: the sockets
// opened and closed, a frame per VIP sent (one of each family here).
func BenchmarkProbe(b *testing.B) {
	p := labtest.NewPair(b, lab.Options{})
	m := manager(b, p.A, 0, lab.VIP, lab.VIP6)
	if err := m.Claim(); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := m.Probe(context.Background(), 0); err != nil {
			b.Fatal(err)
		}
	}
}
