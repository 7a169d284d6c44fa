package vip

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
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

var allNodes = netip.MustParseAddr("ff02::1")

// takeNothing is a socket filter that drops every frame: set before the
// socket is bound, so none is queued.
var takeNothing = func() []bpf.RawInstruction {
	raw, err := bpf.Assemble([]bpf.Instruction{bpf.RetConstant{Val: 0}})
	if err != nil {
		panic(err) // a constant program
	}
	return raw
}()

// announcer sends the announcements for one interface. Its sockets are
// opened on first use and kept while the manager lives: opening a packet
// socket costs more than sending a frame. They only send, and take
// nothing in (takeNothing, an ICMPv6 filter that blocks every type):
// unfiltered and never read, each kept every ARP frame or ICMPv6 message
// of the segment until its buffer was full, about 200 KB of the kernel's
// memory for as long as the daemon ran, and each of those woke the Go
// runtime's poller.
type announcer struct {
	mu  sync.Mutex // the burst and a refresh may send at once
	ifi *net.Interface
	arp *arp.Client
	ndp *ndp.Conn
}

func (a *announcer) close() {
	if a.arp != nil {
		a.arp.Close()
	}
	if a.ndp != nil {
		a.ndp.Close()
	}
}

func (m *Manager) announcerFor(ifname string) (*announcer, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if a, ok := m.ann[ifname]; ok {
		return a, nil
	}
	a := &announcer{}
	err := m.inNS(func() (err error) {
		a.ifi, err = net.InterfaceByName(ifname)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("vip: interface %s: %w", ifname, err)
	}
	m.ann[ifname] = a
	return a, nil
}

// linkChanged drops ifname's announcer when the interface it was opened on
// is not the one there now: another index (made anew) or another MAC (an
// active-backup bond that follows its active port's, an operator's
// change). Announcements with the old MAC would tell the client to send
// where nothing answers, on every refresh.
func (m *Manager) linkChanged(ifname string, index int, mac net.HardwareAddr) {
	m.mu.Lock()
	an := m.ann[ifname]
	m.mu.Unlock()
	if an != nil && (an.ifi.Index != index || !bytes.Equal(an.ifi.HardwareAddr, mac)) {
		m.forget(ifname, an)
	}
}

// forget closes an, ifname's announcer, and drops it, unless another
// announcement has replaced it already.
func (m *Manager) forget(ifname string, an *announcer) {
	m.mu.Lock()
	if m.ann[ifname] == an {
		delete(m.ann, ifname)
	}
	m.mu.Unlock()
	an.mu.Lock() // not while a burst sends on it
	an.close()
	an.arp, an.ndp = nil, nil
	an.mu.Unlock()
}

// send announces addr once.
func (m *Manager) send(a *announcer, addr netip.Addr) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if addr.Is4() {
		if a.arp == nil {
			// arp.New wants an IPv4 address on the interface: the VIP
			// itself, just added, will do.
			err := m.inNS(func() error {
				p, err := packet.Listen(a.ifi, packet.Raw, unix.ETH_P_ARP, &packet.Config{Filter: takeNothing})
				if err != nil {
					return err
				}
				if a.arp, err = arp.New(a.ifi, p); err != nil {
					p.Close()
				}
				return err
			})
			if err != nil {
				return fmt.Errorf("vip: arp socket on %s: %w", a.ifi.Name, err)
			}
		}
		for _, op := range []arp.Operation{arp.OperationRequest, arp.OperationReply} {
			target := ethernet.Broadcast
			if op == arp.OperationRequest {
				// RFC 5227: the target hardware address of an
				// announcement is ignored and should be zero.
				target = net.HardwareAddr{0, 0, 0, 0, 0, 0}
			}
			p, err := arp.NewPacket(op, a.ifi.HardwareAddr, addr, target, addr)
			if err != nil {
				return err
			}
			if err := a.arp.WriteTo(p, ethernet.Broadcast); err != nil {
				return fmt.Errorf("vip: gratuitous ARP for %s on %s: %w", addr, a.ifi.Name, err)
			}
		}
		return nil
	}
	if a.ndp == nil {
		err := m.inNS(func() error {
			c, _, err := ndp.Listen(a.ifi, ndp.LinkLocal)
			if err != nil {
				// No link-local address yet (DAD still running): the
				// VIP itself is a valid source for an advertisement.
				c, _, err = ndp.Listen(a.ifi, ndp.Addr(addr.String()))
			}
			if err != nil {
				return err
			}
			// Only sends: it takes no ICMPv6 (what came in the
			// moment before this is held, not grown).
			var f ipv6.ICMPFilter
			f.SetAll(true)
			if err := c.SetICMPFilter(&f); err != nil {
				c.Close()
				return err
			}
			a.ndp = c
			return nil
		})
		if err != nil {
			return fmt.Errorf("vip: ndp socket on %s: %w", a.ifi.Name, err)
		}
	}
	na := &ndp.NeighborAdvertisement{
		Override:      true,
		TargetAddress: addr,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: a.ifi.HardwareAddr}},
	}
	if err := a.ndp.WriteTo(na, nil, allNodes); err != nil {
		return fmt.Errorf("vip: unsolicited NA for %s on %s: %w", addr, a.ifi.Name, err)
	}
	return nil
}

// Announce sends one announcement for every held VIP: for a periodic
// refresh, or after the carrier comes back.
func (m *Manager) Announce() error {
	var errs []error
	for _, a := range m.addrs {
		errs = append(errs, m.announce(a))
	}
	return errors.Join(errs...)
}

func (m *Manager) announce(a Addr) error {
	an, err := m.announcerFor(a.Interface)
	if err == nil {
		err = m.send(an, a.Prefix.Addr())
	}
	if err != nil && an != nil {
		// The interface may have been made anew (ifdown and ifup of a
		// bond or a VLAN, a NIC plugged again): the sockets are bound to
		// the old one's index and the frames carry its MAC. Once more,
		// on the interface as it is now.
		m.forget(a.Interface, an)
		if an, err = m.announcerFor(a.Interface); err == nil {
			err = m.send(an, a.Prefix.Addr())
		}
	}
	m.mu.Lock()
	if err != nil {
		m.stats.AnnounceErrors++
	} else {
		m.stats.Announcements++
	}
	m.mu.Unlock()
	return err
}

// announceRest sends the rest of the burst after the first announcement
// (Claim's), from a goroutine that Release and Close stop.
func (m *Manager) announceRest(addrs []Addr) {
	if m.opt.Count <= 1 || len(addrs) == 0 {
		return
	}
	m.stopBurst()
	ctx, cancel := context.WithCancel(context.Background())
	m.mu.Lock()
	m.burst = cancel
	m.mu.Unlock()
	m.burstWG.Add(1)
	go func() {
		defer m.burstWG.Done()
		t := time.NewTicker(m.opt.Spacing)
		defer t.Stop()
		for i := 1; i < m.opt.Count; i++ {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			for _, a := range addrs {
				m.announce(a)
			}
		}
	}()
}

func (m *Manager) stopBurst() {
	m.mu.Lock()
	cancel := m.burst
	m.burst = nil
	m.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	m.burstWG.Wait()
}
