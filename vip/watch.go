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
	// Foreign: a VIP was added on this host without a lifetime, so by
	// someone else (hapair adds every VIP with a lease): by hand, or by
	// the network configuration. Not hapair's to remove.
	Foreign
)

func (k EventKind) String() string {
	return [...]string{"vip-removed", "carrier-down", "carrier-up", "vip-foreign"}[k]
}

// Event is one observation from Watch.
type Event struct {
	Kind      EventKind
	Addr      Addr // Removed and Foreign only
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
	v := &view{m: w.m, ctx: ctx, out: out, ifaces: map[string]bool{}, carrier: map[string]bool{}}
	for _, a := range w.m.addrs {
		v.ifaces[a.Interface] = true
	}
	for name := range v.ifaces {
		if l, err := w.m.nl.LinkByName(name); err == nil {
			v.carrier[name] = l.Attrs().RawFlags&unix.IFF_LOWER_UP != 0
			// A link without carrier now sends no notification until
			// it changes: said now, or a node booted with its cable
			// out would take the VIPs onto a link no client reaches.
			if !v.carrier[name] && !v.emit(Event{Kind: CarrierDown, Interface: name}) {
				return nil
			}
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.errCh:
			if !w.reopen(ctx) || !v.readBack() {
				return nil
			}
		case u, ok := <-w.addrCh:
			if !ok {
				w.lost()
				continue
			}
			ip, _ := netip.AddrFromSlice(u.LinkAddress.IP)
			if u.NewAddr && uint32(u.ValidLft) == forever && !v.foreign(ip.Unmap()) {
				return nil
			}
			if !u.NewAddr && !v.removed(ip.Unmap()) {
				return nil
			}
		case u, ok := <-w.linkCh:
			if !ok {
				w.lost()
				continue
			}
			name := u.Attrs().Name
			if !v.ifaces[name] {
				continue
			}
			v.m.linkChanged(name, u.Attrs().Index, u.Attrs().HardwareAddr)
			if !v.setCarrier(name, u.IfInfomsg.Flags&unix.IFF_LOWER_UP != 0) {
				return nil
			}
		}
	}
}

// view is what a Watcher knows of the kernel: the VIPs' interfaces and
// their carrier. Its methods return false once ctx ended.
type view struct {
	m       *Manager
	ctx     context.Context
	out     chan<- Event
	ifaces  map[string]bool
	carrier map[string]bool
}

func (v *view) emit(ev Event) bool {
	select {
	case v.out <- ev:
		return true
	case <-v.ctx.Done():
		return false
	}
}

// setCarrier records an interface's carrier and reports a change.
func (v *view) setCarrier(name string, up bool) bool {
	if up == v.carrier[name] {
		return true
	}
	v.carrier[name] = up
	kind := CarrierDown
	if up {
		kind = CarrierUp
	}
	return v.emit(Event{Kind: kind, Interface: name})
}

func (v *view) held() bool {
	v.m.mu.Lock()
	defer v.m.mu.Unlock()
	return v.m.held
}

// removed reports the held VIPs at ip as removed, unless they are there
// again: a release and a claim milliseconds apart (a node that stepped
// down taking the VIPs back) have the release's notification read after
// the claim, and reporting it had the agent warn of a removal from
// outside that was its own, and claim once more.
func (v *view) removed(ip netip.Addr) bool {
	if !v.held() {
		return true
	}
	for _, a := range v.m.addrs {
		if a.Prefix.Addr() == ip && !v.m.isPresent(a) && !v.emit(Event{Kind: Removed, Addr: a, Interface: a.Interface}) {
			return false
		}
	}
	return true
}

// foreign reports the VIPs at ip, added for good by someone else.
func (v *view) foreign(ip netip.Addr) bool {
	for _, a := range v.m.addrs {
		if a.Prefix.Addr() == ip && !v.emit(Event{Kind: Foreign, Addr: a, Interface: a.Interface}) {
			return false
		}
	}
	return true
}

// readBack reads from the kernel what notifications lost on a resubscribe
// would have said: carriers, and held VIPs no longer present.
func (v *view) readBack() bool {
	for name := range v.ifaces {
		if l, err := v.m.nl.LinkByName(name); err == nil && !v.setCarrier(name, l.Attrs().RawFlags&unix.IFF_LOWER_UP != 0) {
			return false
		}
	}
	present, err := v.m.Present()
	if !v.held() || err != nil {
		return true
	}
	for _, a := range v.m.addrs {
		if !slices.Contains(present, a) && !v.emit(Event{Kind: Removed, Addr: a, Interface: a.Interface}) {
			return false
		}
	}
	return true
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
