package vip

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
	"golang.org/x/net/bpf"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// Sighting is another host that answers for a VIP: an ARP packet or a
// neighbour advertisement that gives the VIP's address with a MAC this
// host's interface does not have.
type Sighting struct {
	Addr Addr
	MAC  net.HardwareAddr
}

func (s Sighting) String() string { return s.Addr.Prefix.Addr().String() + " at " + s.MAC.String() }

// Probe asks the network once whether any other host answers for the
// VIPs, and listens for wait: an ARP probe per IPv4 VIP, from the
// unspecified address as RFC 5227 has it, and a neighbour solicitation
// per IPv6 one, from this host's link-local address (a raw socket cannot
// send from ::, as duplicate address detection does); neither changes
// any host's entry for a VIP.
// A host that holds a VIP answers (a VIP left on an old keepalived master
// while the pair moves to hapair, an address given twice, the peer
// active too where the heartbeat links are cut but the public network is
// not), and anything a host says from a VIP's address meanwhile counts
// too.
// The caller probes only while it holds the VIPs and its peer says it
// holds none; the sockets are open only while Probe runs.
func (m *Manager) Probe(ctx context.Context, wait time.Duration) ([]Sighting, error) {
	byIf := map[string][]Addr{}
	var names []string
	for _, a := range m.addrs {
		if _, ok := byIf[a.Interface]; !ok {
			names = append(names, a.Interface)
		}
		byIf[a.Interface] = append(byIf[a.Interface], a)
	}
	deadline := time.Now().Add(wait)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	var (
		mu   sync.Mutex
		seen []Sighting
		errs []error
		wg   sync.WaitGroup
	)
	found := func(s []Sighting, err error) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, s...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	for _, name := range names {
		var ifi *net.Interface
		err := m.inNS(func() (err error) {
			ifi, err = net.InterfaceByName(name)
			return err
		})
		if err != nil {
			found(nil, fmt.Errorf("vip: probe on %s: %w", name, err))
			continue
		}
		var v4, v6 []Addr
		for _, a := range byIf[name] {
			if a.Prefix.Addr().Is4() {
				v4 = append(v4, a)
			} else {
				v6 = append(v6, a)
			}
		}
		for _, fam := range []struct {
			addrs []Addr
			probe func(context.Context, *net.Interface, []Addr, time.Time) ([]Sighting, error)
		}{{v4, m.probeARP}, {v6, m.probeNDP}} {
			if len(fam.addrs) == 0 {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				found(fam.probe(ctx, ifi, fam.addrs, deadline))
			}()
		}
	}
	wg.Wait()
	slices.SortFunc(seen, func(a, b Sighting) int {
		if c := a.Addr.Prefix.Addr().Compare(b.Addr.Prefix.Addr()); c != 0 {
			return c
		}
		return slices.Compare(a.MAC, b.MAC)
	})
	return slices.CompactFunc(seen, func(a, b Sighting) bool {
		return a.Addr == b.Addr && slices.Equal(a.MAC, b.MAC)
	}), errors.Join(errs...)
}

// probeARP sends one ARP probe for each of addrs on ifi and reads, until
// deadline, every ARP packet whose sender address is one of them and
// whose sender MAC is not ifi's.
func (m *Manager) probeARP(ctx context.Context, ifi *net.Interface, addrs []Addr, deadline time.Time) ([]Sighting, error) {
	filter, err := arpFilter(ifi.HardwareAddr, addrs)
	if err != nil {
		return nil, err
	}
	var c *arp.Client
	err = m.inNS(func() error {
		// The filter is in place before the socket is bound: no ARP of
		// the segment's is queued for it, whatever the window.
		pc, err := packet.Listen(ifi, packet.Raw, unix.ETH_P_ARP, &packet.Config{Filter: filter})
		if err != nil {
			return err
		}
		// New wants an IPv4 address on the interface; a held VIP is one.
		if c, err = arp.New(ifi, pc); err != nil {
			pc.Close()
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("vip: arp probe socket on %s: %w", ifi.Name, err)
	}
	defer c.Close()
	if err := c.SetReadDeadline(deadline); err != nil {
		return nil, err
	}
	// A daemon that stops does not wait out the listening.
	defer context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Now()) })()
	for _, a := range addrs {
		// RFC 5227's probe: sender address zero, target MAC zero.
		p, err := arp.NewPacket(arp.OperationRequest, ifi.HardwareAddr, netip.IPv4Unspecified(), net.HardwareAddr{0, 0, 0, 0, 0, 0}, a.Prefix.Addr())
		if err != nil {
			return nil, err
		}
		if err := c.WriteTo(p, ethernet.Broadcast); err != nil {
			return nil, fmt.Errorf("vip: arp probe for %s on %s: %w", a.Prefix.Addr(), ifi.Name, err)
		}
	}
	var seen []Sighting
	for {
		p, _, err := c.Read()
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return seen, nil
			}
			return seen, fmt.Errorf("vip: arp probe on %s: %w", ifi.Name, err)
		}
		m.countProbeRead()
		if s, ok := sighted(ifi, addrs, p.SenderIP, p.SenderHardwareAddr); ok {
			seen = append(seen, s)
		}
	}
}

func (m *Manager) countProbeRead() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stats.ProbeReads++
}

// arpFilter is the socket filter of an ARP probe on an interface with
// MAC own for addrs: it passes an ARP packet for IPv4 whose sender
// address is one of addrs and whose sender MAC is not own, and nothing
// else. Without it the probe's socket took every ARP packet on the
// segment while it listened (on a large one, every host's broadcasts),
// to drop all but these in user space.
//
// Where it cannot be that filter, it is none, and the socket takes every
// ARP packet as it did: past 250 VIPs on one interface, or on one whose
// address is not an Ethernet one.
func arpFilter(own net.HardwareAddr, addrs []Addr) ([]bpf.RawInstruction, error) {
	// A jump skips at most 255 instructions and a VIP takes one. No
	// interface carries so many, but a filter must not be wrong if one
	// does.
	if len(own) != 6 || len(addrs) > 250 {
		return nil, nil
	}
	// Offsets in the frame a raw packet socket reads: the Ethernet
	// header (14 bytes), then the ARP packet (RFC 826). A load past a
	// short frame's end ends the filter with 0, which drops it.
	const (
		protoType = 14 + 2
		senderMAC = 14 + 8
		senderIP  = 14 + 14
	)
	n := uint8(len(addrs))
	prog := []bpf.Instruction{
		bpf.LoadAbsolute{Off: protoType, Size: 2},
		// Not IPv4: past the VIPs' tests, to the first drop.
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.ETH_P_IP, SkipFalse: n + 1},
		bpf.LoadAbsolute{Off: senderIP, Size: 4},
	}
	for i, a := range addrs {
		ip := a.Prefix.Addr().As4()
		// Matched: past the remaining VIPs' tests and the drop, to the
		// MAC's test.
		prog = append(prog, bpf.JumpIf{Cond: bpf.JumpEqual, Val: binary.BigEndian.Uint32(ip[:]), SkipTrue: n - uint8(i)})
	}
	prog = append(prog,
		bpf.RetConstant{Val: 0},
		// The sender's MAC, its first four bytes and its last two: this
		// interface's own (its kernel's answers, its announcements) is
		// dropped.
		bpf.LoadAbsolute{Off: senderMAC, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: binary.BigEndian.Uint32(own[:4]), SkipFalse: 2},
		bpf.LoadAbsolute{Off: senderMAC + 4, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(binary.BigEndian.Uint16(own[4:])), SkipTrue: 1},
		bpf.RetConstant{Val: 0xffff},
		bpf.RetConstant{Val: 0},
	)
	return bpf.Assemble(prog)
}

// probeNDP sends one neighbour solicitation for each of addrs on ifi and reads, until deadline, the neighbour
// advertisements for them that name a MAC not ifi's.
func (m *Manager) probeNDP(ctx context.Context, ifi *net.Interface, addrs []Addr, deadline time.Time) ([]Sighting, error) {
	var c *ndp.Conn
	err := m.inNS(func() (err error) {
		c, _, err = ndp.Listen(ifi, ndp.LinkLocal)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("vip: ndp probe socket on %s: %w", ifi.Name, err)
	}
	defer c.Close()
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeNeighborAdvertisement)
	if err := c.SetICMPFilter(&f); err != nil {
		return nil, err
	}
	if err := c.SetReadDeadline(deadline); err != nil {
		return nil, err
	}
	defer context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Now()) })()
	for _, a := range addrs {
		group, err := ndp.SolicitedNodeMulticast(a.Prefix.Addr())
		if err != nil {
			return nil, err
		}
		// With this host's MAC for its link-local address: Linux
		// answers a multicast solicitation only for a sender whose MAC
		// the solicitation gives or its cache holds.
		ns := &ndp.NeighborSolicitation{
			TargetAddress: a.Prefix.Addr(),
			Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: ifi.HardwareAddr}},
		}
		if err := c.WriteTo(ns, nil, group); err != nil {
			return nil, fmt.Errorf("vip: ndp probe for %s on %s: %w", a.Prefix.Addr(), ifi.Name, err)
		}
	}
	var seen []Sighting
	buf := make([]byte, 1500)
	for {
		// ReadRaw, not ReadFrom: a holder answers from the VIP itself,
		// which ReadFrom drops as this host's own (it holds it too).
		n, _, _, err := c.ReadRaw(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return seen, nil
			}
			return seen, fmt.Errorf("vip: ndp probe on %s: %w", ifi.Name, err)
		}
		m.countProbeRead()
		msg, err := ndp.ParseMessage(buf[:n])
		na, ok := msg.(*ndp.NeighborAdvertisement)
		if err != nil || !ok {
			continue
		}
		for _, o := range na.Options {
			if l, ok := o.(*ndp.LinkLayerAddress); ok && l.Direction == ndp.Target {
				if s, ok := sighted(ifi, addrs, na.TargetAddress, l.Addr); ok {
					seen = append(seen, s)
				}
			}
		}
	}
}

// sighted says whether ip at mac is another host answering for one of
// addrs: the address is one of them, the MAC not ifi's own (the kernel
// answers its own probes, and the announcer's packets pass by too).
func sighted(ifi *net.Interface, addrs []Addr, ip netip.Addr, mac net.HardwareAddr) (Sighting, bool) {
	if slices.Equal(mac, ifi.HardwareAddr) {
		return Sighting{}, false
	}
	for _, a := range addrs {
		if a.Prefix.Addr() == ip.Unmap() {
			return Sighting{Addr: a, MAC: slices.Clone(mac)}, true
		}
	}
	return Sighting{}, false
}
