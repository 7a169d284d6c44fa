// Package lab builds the network-namespace worlds that hapair's tests,
// benchmarks and `hapairctl lab` run in (design.md section 9).
//
// The standard pair:
//
//	          client (ns) 192.0.2.10/24, 2001:db8:1::10/64 on br0
//	             br0 ── pa ─┐                 ┌─ pb ── br0
//	                         │                 │
//	node a (ns)  pub0 192.0.2.11        node b  pub0 192.0.2.12
//	             hb0  ─────────── heartbeat veth ─────────── hb0
//	             rep0 198.51.100.1 ── replication ── rep0 198.51.100.2
//
// Namespace names carry a random tag so tests may run in parallel; every
// link lives inside a namespace the pair made, so deleting the namespaces
// removes everything. The package is for tests and the lab, never for the
// daemon.
package lab

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hapair/hapair/internal/netnsrun"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Prefix starts every namespace name package lab makes, so leftovers are easy to
// find (CI fails when any remain).
const Prefix = "hplab-"

// Interface names inside the namespaces.
const (
	Bridge    = "br0"
	Public    = "pub0"
	Heartbeat = "hb0"
	Repl      = "rep0"
)

// Addresses of the standard pair (documentation ranges only).
var (
	ClientAddr  = netip.MustParsePrefix("192.0.2.10/24")
	ClientAddr6 = netip.MustParsePrefix("2001:db8:1::10/64")
	PublicAddr  = map[string]netip.Prefix{"a": netip.MustParsePrefix("192.0.2.11/24"), "b": netip.MustParsePrefix("192.0.2.12/24")}
	PublicAddr6 = map[string]netip.Prefix{"a": netip.MustParsePrefix("2001:db8:1::11/64"), "b": netip.MustParsePrefix("2001:db8:1::12/64")}
	ReplAddr    = map[string]netip.Prefix{"a": netip.MustParsePrefix("198.51.100.1/24"), "b": netip.MustParsePrefix("198.51.100.2/24")}
	// VIP and VIP6 are the floating addresses tests and the lab use.
	VIP  = netip.MustParsePrefix("192.0.2.100/24")
	VIP6 = netip.MustParsePrefix("2001:db8:1::100/64")
	// SpareAddr is for a third party on the heartbeat switch.
	SpareAddr = netip.MustParsePrefix("203.0.113.9/24")
)

// Options change the standard pair.
type Options struct {
	// HeartbeatSwitch puts the heartbeat link on a bridge in a fourth
	// namespace, Tap, whose own port lets a test inject frames as a third
	// host on that segment would.
	HeartbeatSwitch bool
}

// Pair is a built topology. Its fields name the namespaces.
type Pair struct {
	Tag    string
	Client string
	A, B   string
	Tap    string // only with Options.HeartbeatSwitch

	mu      sync.Mutex
	handles map[string]*netlink.Handle
	procs   []*proc
	made    []string
	// watchers are the holder watchers started on the pair (WatchHolders),
	// stopped by Close before the handles they read go.
	watchers []*Holders
	// Probe is the address Measure probes and watches; zero: VIP. A
	// pair that floats many VIPs sets the one it times (the bench: the
	// one its holder adds last, or first).
	Probe netip.Addr
}

// probed is the address Measure probes and watches.
func (p *Pair) probed() netip.Addr {
	if p.Probe.IsValid() {
		return p.Probe
	}
	return VIP.Addr()
}

// proc is a process the pair started; exited closes when Wait returned.
type proc struct {
	cmd    *exec.Cmd
	exited chan struct{}
	err    error
}

// Node names the namespace of node "a" or "b".
func (p *Pair) Node(name string) string {
	if name == "b" {
		return p.B
	}
	return p.A
}

// New builds the standard pair. The caller must Close it, also on failure;
// NewT does that for tests.
func New(opt Options) (p *Pair, err error) {
	var tag [3]byte
	if _, err := rand.Read(tag[:]); err != nil {
		return nil, err
	}
	t := hex.EncodeToString(tag[:])
	p = &Pair{Tag: t, Client: Prefix + t + "-c", A: Prefix + t + "-a", B: Prefix + t + "-b", handles: map[string]*netlink.Handle{}}
	defer func() {
		if err != nil {
			p.Close()
			p = nil
		}
	}()
	spaces := []string{p.Client, p.A, p.B}
	if opt.HeartbeatSwitch {
		p.Tap = Prefix + t + "-x"
		spaces = append(spaces, p.Tap)
	}
	for _, ns := range spaces {
		if err := p.addNS(ns); err != nil {
			return p, err
		}
	}
	if err := p.build(opt); err != nil {
		return p, fmt.Errorf("lab: %w", err)
	}
	return p, nil
}

func (p *Pair) addNS(name string) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	ns, err := netns.NewNamed(name)
	// NewNamed leaves this thread inside the new namespace.
	if serr := netns.Set(orig); serr != nil {
		// A thread stuck in a lab namespace must not go back to the
		// pool; keep it locked so the runtime ends it.
		runtime.LockOSThread()
		return fmt.Errorf("lab: restore namespace: %w", serr)
	}
	if err != nil {
		return fmt.Errorf("lab: add namespace %s: %w", name, err)
	}
	p.made = append(p.made, name)
	h, err := netlink.NewHandleAt(ns)
	ns.Close()
	if err != nil {
		return fmt.Errorf("lab: netlink in %s: %w", name, err)
	}
	p.handles[name] = h
	// Duplicate address detection would hold IPv6 addresses tentative for
	// a second; the lab's addresses are unique by construction.
	for _, k := range []string{"net/ipv6/conf/all/accept_dad", "net/ipv6/conf/default/accept_dad"} {
		if err := Sysctl(name, k, "0"); err != nil {
			return err
		}
	}
	lo, err := h.LinkByName("lo")
	if err != nil {
		return err
	}
	return h.LinkSetUp(lo)
}

func (p *Pair) build(opt Options) error {
	c := p.handles[p.Client]
	no := false
	// A MAC of its own, as a router's interface has (RFC 7042's
	// documentation block): a bridge that took its ports' lowest MAC
	// changed it when a port was made anew, and the kernel then flushed
	// the client's neighbour entries, which a real router keeps.
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: Bridge, HardwareAddr: net.HardwareAddr{0x00, 0x00, 0x5e, 0x00, 0x53, 0x01}}, MulticastSnooping: &no}
	if err := c.LinkAdd(br); err != nil {
		return fmt.Errorf("add %s: %w", Bridge, err)
	}
	for _, n := range []struct{ ns, port string }{{p.A, "pa"}, {p.B, "pb"}} {
		if err := p.veth(p.Client, n.port, n.ns, Public); err != nil {
			return err
		}
		if err := p.master(p.Client, n.port, Bridge); err != nil {
			return err
		}
	}
	if opt.HeartbeatSwitch {
		x := p.handles[p.Tap]
		if err := x.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: Heartbeat}, MulticastSnooping: &no}); err != nil {
			return fmt.Errorf("add heartbeat switch: %w", err)
		}
		for _, n := range []struct{ ns, port string }{{p.A, "ha"}, {p.B, "hb"}} {
			if err := p.veth(p.Tap, n.port, n.ns, Heartbeat); err != nil {
				return err
			}
			if err := p.master(p.Tap, n.port, Heartbeat); err != nil {
				return err
			}
		}
		if err := p.addr(p.Tap, Heartbeat, SpareAddr); err != nil {
			return err
		}
	} else if err := p.veth(p.A, Heartbeat, p.B, Heartbeat); err != nil {
		return err
	}
	if err := p.veth(p.A, Repl, p.B, Repl); err != nil {
		return err
	}
	for _, a := range []struct {
		ns, link string
		addr     netip.Prefix
	}{
		{p.Client, Bridge, ClientAddr}, {p.Client, Bridge, ClientAddr6},
		{p.A, Public, PublicAddr["a"]}, {p.A, Public, PublicAddr6["a"]}, {p.A, Repl, ReplAddr["a"]},
		{p.B, Public, PublicAddr["b"]}, {p.B, Public, PublicAddr6["b"]}, {p.B, Repl, ReplAddr["b"]},
	} {
		if err := p.addr(a.ns, a.link, a.addr); err != nil {
			return err
		}
	}
	for ns, links := range map[string][]string{
		p.Client: {Bridge, "pa", "pb"},
		p.A:      {Public, Heartbeat, Repl},
		p.B:      {Public, Heartbeat, Repl},
	} {
		for _, l := range links {
			if err := p.SetLink(ns, l, true); err != nil {
				return err
			}
		}
	}
	if opt.HeartbeatSwitch {
		for _, l := range []string{Heartbeat, "ha", "hb"} {
			if err := p.SetLink(p.Tap, l, true); err != nil {
				return err
			}
		}
	}
	return p.waitOperUp(3 * time.Second)
}

// waitOperUp waits until every link of the pair is operationally up: the
// kernel activates a new link's queue from its link-watch work, up to a
// second after "ip link set up", and drops what is sent before.
func (p *Pair) waitOperUp(within time.Duration) error {
	deadline := time.Now().Add(within)
	for ns, h := range p.handles {
		for {
			links, err := h.LinkList()
			if err != nil {
				return err
			}
			var down []string
			for _, l := range links {
				a := l.Attrs()
				if a.Name != "lo" && a.OperState != netlink.OperUp {
					down = append(down, a.Name)
				}
			}
			if len(down) == 0 {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("links %v in %s not up after %v", down, ns, within)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return nil
}

// veth joins ns1/name1 and ns2/name2. The pair is made inside ns1 with its
// peer created straight into ns2, so nothing ever appears in the host's
// namespace.
func (p *Pair) veth(ns1, name1, ns2, name2 string) error {
	peer, err := netns.GetFromName(ns2)
	if err != nil {
		return err
	}
	defer peer.Close()
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name1}, PeerName: name2, PeerNamespace: netlink.NsFd(int(peer))}
	if err := p.handles[ns1].LinkAdd(v); err != nil {
		return fmt.Errorf("add veth %s/%s-%s/%s: %w", ns1, name1, ns2, name2, err)
	}
	return nil
}

func (p *Pair) master(ns, port, bridge string) error {
	h := p.handles[ns]
	l, err := h.LinkByName(port)
	if err != nil {
		return err
	}
	b, err := h.LinkByName(bridge)
	if err != nil {
		return err
	}
	return h.LinkSetMaster(l, b)
}

func (p *Pair) addr(ns, link string, a netip.Prefix) error {
	h := p.handles[ns]
	l, err := h.LinkByName(link)
	if err != nil {
		return err
	}
	ipn := &net.IPNet{IP: a.Addr().AsSlice(), Mask: net.CIDRMask(a.Bits(), a.Addr().BitLen())}
	if err := h.AddrAdd(l, &netlink.Addr{IPNet: ipn}); err != nil {
		return fmt.Errorf("add %s to %s/%s: %w", a, ns, link, err)
	}
	return nil
}

// Handle is a netlink handle inside namespace ns, owned by the pair.
func (p *Pair) Handle(ns string) *netlink.Handle { return p.handles[ns] }

// SetLink sets ns/link up or down. Down on one end of a veth takes the
// carrier off the other end too, as pulling a cable would.
func (p *Pair) SetLink(ns, link string, up bool) error {
	h := p.handles[ns]
	l, err := h.LinkByName(link)
	if err != nil {
		return fmt.Errorf("lab: %s/%s: %w", ns, link, err)
	}
	if up {
		err = h.LinkSetUp(l)
	} else {
		err = h.LinkSetDown(l)
	}
	if err != nil {
		return fmt.Errorf("lab: set %s/%s up=%v: %w", ns, link, up, err)
	}
	return nil
}

// CutHeartbeat takes the dedicated heartbeat link down (up restores it).
func (p *Pair) CutHeartbeat(up bool) error { return p.SetLink(p.A, Heartbeat, up) }

// RemakeHeartbeat deletes the dedicated heartbeat link and makes it again
// under the same names, as NetworkManager does to a VLAN or a bond on
// "nmcli con down" and "up": new interfaces, new indexes. The new ends have
// no IPv6, so that every packet they count is a heartbeat. Not with
// Options.HeartbeatSwitch.
func (p *Pair) RemakeHeartbeat() error {
	h := p.handles[p.A]
	l, err := h.LinkByName(Heartbeat)
	if err != nil {
		return fmt.Errorf("lab: %s/%s: %w", p.A, Heartbeat, err)
	}
	if err := h.LinkDel(l); err != nil { // a veth: both ends go
		return fmt.Errorf("lab: delete %s/%s: %w", p.A, Heartbeat, err)
	}
	if err := p.veth(p.A, Heartbeat, p.B, Heartbeat); err != nil {
		return err
	}
	for _, ns := range []string{p.A, p.B} {
		err := Do(ns, func() error {
			return os.WriteFile("/proc/sys/net/ipv6/conf/"+Heartbeat+"/disable_ipv6", []byte("1"), 0)
		})
		if err != nil {
			return fmt.Errorf("lab: no IPv6 on %s/%s: %w", ns, Heartbeat, err)
		}
		if err := p.SetLink(ns, Heartbeat, true); err != nil {
			return err
		}
	}
	return p.waitOperUp(3 * time.Second)
}

// RemakePublic deletes node's public interface and makes it again under
// the same name, with its addresses, as ifdown and ifup do to a bond or a
// VLAN, or a hypervisor to a NIC unplugged and plugged again: a new
// interface, a new index, a new MAC.
func (p *Pair) RemakePublic(node string) error {
	ns, port := p.Node(node), map[string]string{"a": "pa", "b": "pb"}[node]
	h := p.handles[ns]
	l, err := h.LinkByName(Public)
	if err != nil {
		return fmt.Errorf("lab: %s/%s: %w", ns, Public, err)
	}
	if err := h.LinkDel(l); err != nil { // a veth: the bridge's end goes too
		return fmt.Errorf("lab: delete %s/%s: %w", ns, Public, err)
	}
	if err := p.veth(p.Client, port, ns, Public); err != nil {
		return err
	}
	if err := p.master(p.Client, port, Bridge); err != nil {
		return err
	}
	for _, a := range []netip.Prefix{PublicAddr[node], PublicAddr6[node]} {
		if err := p.addr(ns, Public, a); err != nil {
			return err
		}
	}
	for _, l := range []struct{ ns, link string }{{p.Client, port}, {ns, Public}} {
		if err := p.SetLink(l.ns, l.link, true); err != nil {
			return err
		}
	}
	return p.waitOperUp(3 * time.Second)
}

// CutReplication takes the replication link down (up restores it).
func (p *Pair) CutReplication(up bool) error { return p.SetLink(p.A, Repl, up) }

// Isolate cuts every link of node ("a" or "b"): public, heartbeat and
// replication. up restores them. The public link goes first, so a client
// stops reaching a frozen node (whose kernel still answers) as early as
// the host loss it stands for.
func (p *Pair) Isolate(node string, up bool) error {
	ns := p.Node(node)
	for _, l := range []string{Public, Heartbeat, Repl} {
		if err := p.SetLink(ns, l, up); err != nil {
			return err
		}
	}
	return nil
}

// SeparatePair cuts the heartbeat and replication links between a and b but
// leaves both on the public segment: the isolation that causes split brain.
func (p *Pair) SeparatePair(up bool) error {
	if err := p.CutHeartbeat(up); err != nil {
		return err
	}
	return p.CutReplication(up)
}

// Do runs f on a thread inside namespace ns. Sockets f opens stay in ns.
func Do(ns string, f func() error) error {
	target, err := netns.GetFromName(ns)
	if err != nil {
		return fmt.Errorf("lab: namespace %s: %w", ns, err)
	}
	defer target.Close()
	if err := netnsrun.In(target, f); err != nil {
		return fmt.Errorf("lab: in %s: %w", ns, err)
	}
	return nil
}

// Sysctl writes a net sysctl inside ns; key is a /proc/sys path such as
// "net/ipv4/ip_forward".
func Sysctl(ns, key, value string) error {
	return Do(ns, func() error {
		return os.WriteFile(filepath.Join("/proc/sys", key), []byte(value), 0o644)
	})
}

// Command prepares name args... to run inside ns.
func Command(ns, name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// Start starts cmd (from Command) and ties it to the pair: Close kills it
// by PID if it is still running. The returned function waits for the
// process to exit (at most within) and returns Wait's error; the pair owns
// the one call to cmd.Wait.
func (p *Pair) Start(cmd *exec.Cmd) (wait func(within time.Duration) (exited bool, err error), err error) {
	// The kernel sends the parent-death signal when the thread that
	// started the child ends, not the process: code in a process that
	// runs a lab must not end a thread (a goroutine that exits locked to
	// it), which may be the one that started a daemon.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	pr := &proc{cmd: cmd, exited: make(chan struct{})}
	go func() {
		pr.err = cmd.Wait()
		close(pr.exited)
	}()
	p.mu.Lock()
	p.procs = append(p.procs, pr)
	p.mu.Unlock()
	return func(within time.Duration) (bool, error) {
		select {
		case <-pr.exited:
			return true, pr.err
		case <-time.After(within):
			return false, nil
		}
	}, nil
}

// Close kills the processes the pair started, then removes its namespaces
// and with them every link and address in them. It may be called twice.
func (p *Pair) Close() error {
	p.mu.Lock()
	procs, watchers := p.procs, p.watchers
	p.procs, p.watchers = nil, nil
	p.mu.Unlock()
	// A test that failed before it stopped its watcher: the watcher
	// reads the handles closed below, and a panic there would end the
	// test binary before its namespaces are deleted.
	for _, w := range watchers {
		w.Stop()
	}
	for _, pr := range procs {
		select {
		case <-pr.exited:
		default:
			pr.cmd.Process.Kill()
			select {
			case <-pr.exited:
			case <-time.After(5 * time.Second):
			}
		}
	}
	for _, h := range p.handles {
		h.Close()
	}
	p.handles = map[string]*netlink.Handle{}
	var errs []error
	for _, ns := range p.made {
		if err := netns.DeleteNamed(ns); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("lab: delete %s: %w", ns, err))
		}
	}
	p.made = nil
	return errors.Join(errs...)
}

// Leftovers lists namespaces with the lab's prefix that still exist.
func Leftovers() []string {
	ents, _ := os.ReadDir("/var/run/netns")
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), Prefix) {
			out = append(out, e.Name())
		}
	}
	return out
}
