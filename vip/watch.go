package vip

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// EventKind is what Watch saw.
type EventKind int

// Watch events.
const (
	// Removed: a held VIP disappeared (someone deleted it, or its lease
	// ran out). The agent decides whether to claim again.
	Removed EventKind = iota
	CarrierDown
	CarrierUp
)

func (k EventKind) String() string {
	return [...]string{"vip-removed", "carrier-down", "carrier-up"}[k]
}

// Event is one observation from Watch.
type Event struct {
	Kind      EventKind
	Addr      Addr // Removed only
	Interface string
}

// Watch reports, until ctx ends, held VIPs removed by anyone but this
// manager and carrier changes on the VIPs' interfaces. It returns once its
// subscriptions are closed.
func (m *Manager) Watch(ctx context.Context, out chan<- Event) error {
	done := make(chan struct{})
	defer close(done)
	addrCh := make(chan netlink.AddrUpdate, 64)
	linkCh := make(chan netlink.LinkUpdate, 16)
	var errCh = make(chan error, 2)
	cb := func(err error) {
		select {
		case errCh <- err:
		default:
		}
	}
	ns := m.ns
	if err := netlink.AddrSubscribeWithOptions(addrCh, done, netlink.AddrSubscribeOptions{Namespace: &ns, ErrorCallback: cb}); err != nil {
		return fmt.Errorf("vip: watch addresses: %w", err)
	}
	if err := netlink.LinkSubscribeWithOptions(linkCh, done, netlink.LinkSubscribeOptions{Namespace: &ns, ErrorCallback: cb}); err != nil {
		return fmt.Errorf("vip: watch links: %w", err)
	}
	ifaces := map[string]bool{}
	for _, a := range m.addrs {
		ifaces[a.Interface] = true
	}
	carrier := map[string]bool{}
	for name := range ifaces {
		if l, err := m.nl.LinkByName(name); err == nil {
			carrier[name] = l.Attrs().RawFlags&unix.IFF_LOWER_UP != 0
		}
	}
	emit := func(ev Event) bool {
		select {
		case out <- ev:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errCh:
			return fmt.Errorf("vip: watch: %w", err)
		case u, ok := <-addrCh:
			if !ok {
				return fmt.Errorf("vip: address subscription closed")
			}
			if u.NewAddr {
				continue
			}
			ip, _ := netip.AddrFromSlice(u.LinkAddress.IP)
			m.mu.Lock()
			held := m.held
			m.mu.Unlock()
			if !held {
				continue
			}
			for _, a := range m.addrs {
				if a.Prefix.Addr() == ip.Unmap() {
					if !emit(Event{Kind: Removed, Addr: a, Interface: a.Interface}) {
						return nil
					}
				}
			}
		case u, ok := <-linkCh:
			if !ok {
				return fmt.Errorf("vip: link subscription closed")
			}
			name := u.Attrs().Name
			if !ifaces[name] {
				continue
			}
			up := u.IfInfomsg.Flags&unix.IFF_LOWER_UP != 0
			if up == carrier[name] {
				continue
			}
			carrier[name] = up
			kind := CarrierDown
			if up {
				kind = CarrierUp
			}
			if !emit(Event{Kind: kind, Interface: name}) {
				return nil
			}
		}
	}
}
