package vip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/hapair/hapair/internal/netnsrun"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Addr is one floating address and the interface it lives on.
type Addr struct {
	Prefix    netip.Prefix
	Interface string
}

func (a Addr) String() string { return a.Prefix.String() + " on " + a.Interface }

// Options configure a Manager. The zero value means the defaults.
type Options struct {
	// NetNS names the network namespace to work in; empty means the
	// caller's. Tests and the lab use it; the daemon leaves it empty.
	NetNS string
	// Lease is the kernel lifetime of a claimed address, in whole seconds
	// (default 10s). Renew well before it runs out.
	Lease time.Duration
	// Count announcements are sent per claim (default 3), Spacing apart
	// (default 20ms): some switches drop the first frame after a link or
	// MAC change.
	Count   int
	Spacing time.Duration
}

// ErrForeign means an address is configured on this host without a
// lifetime, by someone other than hapair: it is not ours to take or remove.
var ErrForeign = errors.New("vip: address is configured permanently by someone else")

// Manager holds a set of VIPs on this host.
type Manager struct {
	addrs []Addr
	opt   Options
	nl    *netlink.Handle
	ns    netns.NsHandle

	mu   sync.Mutex
	held bool
	// links are the interfaces a claim last found, by name: looking one
	// up by name costs 0.3-1 ms, a fifth of a turbo failover.
	links   map[string]netlink.Link
	ann     map[string]*announcer // by interface
	burst   context.CancelFunc
	burstWG sync.WaitGroup
	stats   Stats
}

// Stats counts what the manager did.
type Stats struct {
	Claims, Renewals, Releases, Announcements, AnnounceErrors uint64
	// ProbeReads are the packets the probes read: their sockets' filters
	// pass only what may be another host answering for a VIP.
	ProbeReads uint64
}

// New prepares a manager for addrs; it changes nothing on the host.
func New(addrs []Addr, opt Options) (*Manager, error) {
	if opt.Lease == 0 {
		opt.Lease = 10 * time.Second
	}
	if opt.Lease < 2*time.Second || opt.Lease%time.Second != 0 {
		return nil, fmt.Errorf("vip: lease %v: whole seconds, at least 2s", opt.Lease)
	}
	if opt.Count == 0 {
		opt.Count = 3
	}
	if opt.Spacing == 0 {
		opt.Spacing = 20 * time.Millisecond
	}
	m := &Manager{addrs: addrs, opt: opt, ns: netns.None(), ann: map[string]*announcer{}}
	var err error
	if opt.NetNS != "" {
		m.ns, err = netns.GetFromName(opt.NetNS)
		if err != nil {
			return nil, fmt.Errorf("vip: namespace %s: %w", opt.NetNS, err)
		}
		m.nl, err = netlink.NewHandleAt(m.ns)
	} else {
		m.nl, err = netlink.NewHandle()
	}
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("vip: netlink: %w", err)
	}
	return m, nil
}

// Addrs is the configured set.
func (m *Manager) Addrs() []Addr { return m.addrs }

// Stats reads the counters.
func (m *Manager) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stats
}

// Close stops announcing and frees the manager's sockets. It leaves the
// addresses as they are: releasing is a decision, not a side effect.
func (m *Manager) Close() error {
	m.stopBurst()
	m.mu.Lock()
	for k, a := range m.ann {
		a.close()
		delete(m.ann, k)
	}
	m.mu.Unlock()
	if m.nl != nil {
		m.nl.Close()
	}
	if m.ns.IsOpen() {
		m.ns.Close()
	}
	return nil
}

func (m *Manager) link(name string) (netlink.Link, error) {
	l, err := m.nl.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("vip: interface %s: %w", name, err)
	}
	return l, nil
}

// linkOnce is link, asked once per interface of a cleanup or a listing:
// asking for each VIP was more than half of what releasing many VIPs on
// one interface cost (BenchmarkRelease, 128 VIPs: 4.3-4.5 ms, 2.1-2.3
// without), and a release is what a node whose critical process failed
// does before its peer may take over.
func (m *Manager) linkOnce(seen map[string]netlink.Link, name string) (netlink.Link, error) {
	if l, ok := seen[name]; ok {
		return l, nil
	}
	l, err := m.link(name)
	if err == nil {
		seen[name] = l
	}
	return l, err
}

func (m *Manager) nlAddr(a Addr, lease bool) *netlink.Addr {
	p := a.Prefix
	na := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
	if lease {
		secs := int(m.opt.Lease / time.Second)
		na.ValidLft, na.PreferedLft = secs, secs
	}
	if p.Addr().Is6() {
		// Usable at once: duplicate address detection would hold the VIP
		// tentative for a second, and the peer has just let it go.
		na.Flags = unix.IFA_F_NODAD
	}
	return na
}

// forever is how the kernel reports an address without a lifetime.
const forever = 0xFFFFFFFF

// find reports whether a is on its interface and whether it is permanent.
func (m *Manager) find(ls listing, l netlink.Link, a Addr) (present, permanent bool, err error) {
	x, err := m.lookup(ls, l, a)
	if err != nil || x == nil {
		return false, false, err
	}
	return true, uint32(x.ValidLft) == forever, nil
}

// listing holds, for one claim, renewal or cleanup, what one dump of
// each interface's addresses of a family read: a dump per VIP made a
// claim of n VIPs cost n dumps of n addresses each, 11.6-14.1 ms for 128
// VIPs where the additions alone take a third of it. nil dumps at each
// lookup.
type listing map[listed][]netlink.Addr

type listed struct{ index, family int }

// lookup is a's address on l as the kernel lists it (its own prefix
// length, which a removal must name), or nil.
func (m *Manager) lookup(ls listing, l netlink.Link, a Addr) (*netlink.Addr, error) {
	key := listed{l.Attrs().Index, netlink.FAMILY_V4}
	if a.Prefix.Addr().Is6() {
		key.family = netlink.FAMILY_V6
	}
	list, ok := ls[key]
	if !ok {
		var err error
		if list, err = m.nl.AddrList(l, key.family); err != nil {
			return nil, fmt.Errorf("vip: list addresses on %s: %w", a.Interface, err)
		}
		if ls != nil {
			ls[key] = list
		}
	}
	for i, x := range list {
		if ip, ok := netip.AddrFromSlice(x.IP); ok && ip.Unmap() == a.Prefix.Addr() {
			return &list[i], nil
		}
	}
	return nil, nil
}

// isPresent says whether a is on its interface now; when that cannot be
// read, it says no: a removal is then reported rather than missed.
func (m *Manager) isPresent(a Addr) bool {
	l, err := m.link(a.Interface)
	if err != nil {
		return false
	}
	present, _, err := m.find(nil, l, a)
	return err == nil && present
}

// Claim adds every VIP with a fresh lease and announces it: the first
// announcement goes out before Claim returns, the rest of the burst follows
// in the background. Claiming what is held already only renews it.
//
// Each VIP is announced as soon as it is added: announced after all were
// added, the first VIP's clients waited for every other addition too (64
// of them, 2-4 ms in a failover).
func (m *Manager) Claim() error {
	var errs []error
	var claimed []Addr
	ls := listing{}
	for _, a := range m.addrs {
		if err := m.add(ls, a, true); err != nil {
			errs = append(errs, err)
			continue
		}
		m.announce(a)
		claimed = append(claimed, a)
	}
	m.mu.Lock()
	m.held = true
	m.stats.Claims++
	m.mu.Unlock()
	m.announceRest(claimed)
	return errors.Join(errs...)
}

// add claims a, or with create false only renews it if present.
func (m *Manager) add(ls listing, a Addr, create bool) error {
	m.mu.Lock()
	l := m.links[a.Interface]
	m.mu.Unlock()
	if l != nil {
		if err := m.addOn(ls, l, a, create); err == nil || errors.Is(err, ErrForeign) {
			return err
		}
		// The interface may have been replaced since: look again.
	}
	l, err := m.link(a.Interface)
	if err != nil {
		return err
	}
	m.mu.Lock()
	if m.links == nil {
		m.links = map[string]netlink.Link{}
	}
	m.links[a.Interface] = l
	m.mu.Unlock()
	return m.addOn(ls, l, a, create)
}

// addOn claims a on l, unless it is the operator's (permanent); with
// create false, only if a is there.
func (m *Manager) addOn(ls listing, l netlink.Link, a Addr, create bool) error {
	present, permanent, err := m.find(ls, l, a)
	if err != nil {
		return err
	}
	if !present && !create {
		return nil
	}
	if permanent {
		return fmt.Errorf("vip: claim %s: %w", a, ErrForeign)
	}
	// Replace, not add: idempotent, and it renews a lease in place.
	if err := m.nl.AddrReplace(l, m.nlAddr(a, true)); err != nil {
		return fmt.Errorf("vip: claim %s: %w", a, err)
	}
	return nil
}

// Renew restarts the lease of every held VIP that is there. One that is
// not is not put back: the watch reports it gone (Removed), and claiming
// it again is the agent's decision. A renewal is the agent's clock, not
// its judgement: after the agent stalled past the lease (a frozen virtual
// machine, a stopped process), its first tick put the expired VIPs back,
// silently, on a node whose peer had taken over and whose heartbeat core
// was fencing it.
func (m *Manager) Renew() error {
	m.mu.Lock()
	held := m.held
	m.stats.Renewals++
	m.mu.Unlock()
	if !held {
		return nil
	}
	var errs []error
	ls := listing{}
	for _, a := range m.addrs {
		errs = append(errs, m.add(ls, a, false))
	}
	return errors.Join(errs...)
}

// Release removes every VIP. An address already gone counts as released.
func (m *Manager) Release() error {
	m.stopBurst()
	m.mu.Lock()
	m.held = false
	m.stats.Releases++
	m.mu.Unlock()
	_, err := m.Cleanup()
	return err
}

// Cleanup removes what this host holds with a lifetime (hapair's; never
// an operator's permanent address) of the configured VIPs and of also:
// VIPs a previous run may have held that the configuration no longer
// names. For a daemon that starts after a crash, and for ExecStopPost.
// It returns what it removed.
func (m *Manager) Cleanup(also ...Addr) ([]Addr, error) {
	var removed []Addr
	var errs []error
	seen := map[Addr]bool{}
	ls := listing{}
	links := map[string]netlink.Link{}
	for _, a := range append(slices.Clip(m.addrs), also...) {
		// By address and interface: a prefix edited in the config
		// names the same address, which goes once, as listed.
		key := Addr{Prefix: netip.PrefixFrom(a.Prefix.Addr(), 0), Interface: a.Interface}
		if seen[key] {
			continue
		}
		seen[key] = true
		l, err := m.linkOnce(links, a.Interface)
		if err != nil {
			var nf netlink.LinkNotFoundError
			if errors.As(err, &nf) {
				continue // no interface, no address
			}
			errs = append(errs, err)
			continue
		}
		x, err := m.lookup(ls, l, a)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if x == nil || uint32(x.ValidLft) == forever {
			continue
		}
		if err := m.nl.AddrDel(l, &netlink.Addr{IPNet: x.IPNet}); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			errs = append(errs, fmt.Errorf("vip: release %s: %w", a, err))
			continue
		}
		bits, _ := x.Mask.Size()
		removed = append(removed, Addr{Prefix: netip.PrefixFrom(a.Prefix.Addr(), bits), Interface: a.Interface})
	}
	return removed, errors.Join(errs...)
}

// Permanent lists the configured VIPs that are on this host without a
// lifetime: never hapair's, which adds every VIP with a lease, but the
// operator's or the network configuration's.
func (m *Manager) Permanent() ([]Addr, error) {
	return m.which(func(_, permanent bool) bool { return permanent })
}

// Present lists the configured VIPs that are on this host now.
func (m *Manager) Present() ([]Addr, error) {
	return m.which(func(present, _ bool) bool { return present })
}

// which lists the configured VIPs whose state on this host keep accepts;
// one whose interface is not here is not listed.
func (m *Manager) which(keep func(present, permanent bool) bool) ([]Addr, error) {
	var out []Addr
	ls := listing{}
	links := map[string]netlink.Link{}
	for _, a := range m.addrs {
		l, err := m.linkOnce(links, a.Interface)
		if err != nil {
			continue
		}
		present, permanent, err := m.find(ls, l, a)
		if err != nil {
			return nil, err
		}
		if keep(present, permanent) {
			out = append(out, a)
		}
	}
	return out, nil
}

// inNS runs f inside the manager's namespace, for sockets that must be
// opened there.
func (m *Manager) inNS(f func() error) error {
	if !m.ns.IsOpen() {
		return f()
	}
	return netnsrun.In(m.ns, f)
}
