package vip

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

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
	// resubscribed counts subscriptions lost (ENOBUFS on a busy host: the
	// kernel dropped notifications) and opened again.
	resubscribed atomic.Uint64
}

// Subscribe opens the subscriptions now, so nothing that happens after it
// returns is missed; Run then reports.
func (m *Manager) Subscribe() (*Watcher, error) {
	w := &Watcher{m: m}
	if err := w.open(); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *Watcher) open() error {
	w.done = make(chan struct{})
	w.addrCh, w.linkCh, w.errCh = make(chan netlink.AddrUpdate, 64), make(chan netlink.LinkUpdate, 16), make(chan error, 2)
	errCh := w.errCh
	cb := func(err error) {
		select {
		case errCh <- err:
		default:
		}
	}
	ns := w.m.ns
	if err := netlink.AddrSubscribeWithOptions(w.addrCh, w.done, netlink.AddrSubscribeOptions{Namespace: &ns, ErrorCallback: cb}); err != nil {
		close(w.done)
		return fmt.Errorf("vip: watch addresses: %w", err)
	}
	if err := netlink.LinkSubscribeWithOptions(w.linkCh, w.done, netlink.LinkSubscribeOptions{Namespace: &ns, ErrorCallback: cb}); err != nil {
		close(w.done)
		return fmt.Errorf("vip: watch links: %w", err)
	}
	return nil
}

// Resubscribed counts the subscriptions lost and opened again.
func (w *Watcher) Resubscribed() uint64 { return w.resubscribed.Load() }

// Close ends the subscriptions of a watcher that will not Run.
func (w *Watcher) Close() error {
	close(w.done)
	return nil
}

// Run reports, until ctx ends, held VIPs removed by anyone but the manager
// and carrier changes on the VIPs' interfaces; then it closes the
// subscriptions. A subscription that fails (the kernel drops notifications
// with ENOBUFS when a busy host outruns the reader) is opened again, and
// what may have been missed meanwhile is read back from the kernel and
// reported: losing the watch must not stop the daemon, which would be a
// failover of its own.
func (w *Watcher) Run(ctx context.Context, out chan<- Event) error {
	defer func() { close(w.done) }()
	m := w.m
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
	setCarrier := func(name string, up bool) bool {
		if up == carrier[name] {
			return true
		}
		carrier[name] = up
		kind := CarrierDown
		if up {
			kind = CarrierUp
		}
		return emit(Event{Kind: kind, Interface: name})
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.errCh:
			if !w.reopen(ctx) {
				return nil
			}
			// Read back what the lost notifications would have said.
			for name := range ifaces {
				if l, err := m.nl.LinkByName(name); err == nil && !setCarrier(name, l.Attrs().RawFlags&unix.IFF_LOWER_UP != 0) {
					return nil
				}
			}
			m.mu.Lock()
			held := m.held
			m.mu.Unlock()
			if present, err := m.Present(); held && err == nil {
				for _, a := range m.addrs {
					if !slices.Contains(present, a) && !emit(Event{Kind: Removed, Addr: a, Interface: a.Interface}) {
						return nil
					}
				}
			}
		case u, ok := <-w.addrCh:
			if !ok {
				w.lost()
				continue
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
		case u, ok := <-w.linkCh:
			if !ok {
				w.lost()
				continue
			}
			name := u.Attrs().Name
			if !ifaces[name] {
				continue
			}
			if !setCarrier(name, u.IfInfomsg.Flags&unix.IFF_LOWER_UP != 0) {
				return nil
			}
		}
	}
}

// lost turns a closed subscription channel into a resubscription: the
// channels are not read again until it happens.
func (w *Watcher) lost() {
	w.addrCh, w.linkCh = nil, nil
	select {
	case w.errCh <- fmt.Errorf("vip: subscription closed"):
	default:
	}
}

// reopen closes the subscriptions and opens them again, retrying until it
// works or ctx ends.
func (w *Watcher) reopen(ctx context.Context) bool {
	w.resubscribed.Add(1)
	close(w.done)
	for {
		if err := w.open(); err == nil {
			return true
		}
		select {
		case <-ctx.Done():
			w.done = make(chan struct{}) // for Run's deferred close
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
}
