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

// Watcher holds the netlink subscriptions of a Manager.
type Watcher struct {
	m      *Manager
	done   chan struct{}
	addrCh chan netlink.AddrUpdate
	linkCh chan netlink.LinkUpdate
	errCh  chan error
}

// Subscribe opens the subscriptions now, so nothing that happens after it
// returns is missed; Run then reports.
func (m *Manager) Subscribe() (*Watcher, error) {
	w := &Watcher{m: m, done: make(chan struct{}), addrCh: make(chan netlink.AddrUpdate, 64), linkCh: make(chan netlink.LinkUpdate, 16), errCh: make(chan error, 2)}
	cb := func(err error) {
		select {
		case w.errCh <- err:
		default:
		}
	}
	ns := m.ns
	if err := netlink.AddrSubscribeWithOptions(w.addrCh, w.done, netlink.AddrSubscribeOptions{Namespace: &ns, ErrorCallback: cb}); err != nil {
		close(w.done)
		return nil, fmt.Errorf("vip: watch addresses: %w", err)
	}
	if err := netlink.LinkSubscribeWithOptions(w.linkCh, w.done, netlink.LinkSubscribeOptions{Namespace: &ns, ErrorCallback: cb}); err != nil {
		close(w.done)
		return nil, fmt.Errorf("vip: watch links: %w", err)
	}
	return w, nil
}

// Close ends the subscriptions of a watcher that will not Run.
func (w *Watcher) Close() error {
	close(w.done)
	return nil
}

// Run reports, until ctx ends, held VIPs removed by anyone but the manager
// and carrier changes on the VIPs' interfaces; then it closes the
// subscriptions.
func (w *Watcher) Run(ctx context.Context, out chan<- Event) error {
	defer close(w.done)
	m, addrCh, linkCh, errCh := w.m, w.addrCh, w.linkCh, w.errCh
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
