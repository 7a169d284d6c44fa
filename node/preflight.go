package node

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/hapair/hapair/config"
	"github.com/hapair/hapair/health"
	"github.com/hapair/hapair/statesync/repl"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Preflight finds what keeps a node from starting on this machine, though
// the file itself is valid: an interface that is not here, a port another
// program holds, TLS files that do not load, a hook or exec check whose
// program is not here or not executable. New refuses to start on any of
// them, and hapaird --check runs it too, so --check finds everything the
// daemon would fail on at start. Each problem names the file, line and
// key.
func Preflight(cfg *config.Config, self *config.Node) config.Errors {
	var errs config.Errors
	nodeKey := fmt.Sprintf("node[%d]", self.ID)
	seen := map[string]bool{}
	iface := func(key, name string) {
		if seen[name] {
			return
		}
		seen[name] = true
		if _, err := net.InterfaceByName(name); err != nil {
			errs = append(errs, cfg.Errorf(key, "interface %s is not on this machine", name))
		}
	}
	iface(nodeKey+".heartbeat_interface", self.HeartbeatInterface)
	iface(nodeKey+".public_interface", self.PublicInterface)
	for i, v := range cfg.VIPs {
		iface(fmt.Sprintf("vip[%d].interface", i+1), v.VIPInterface(self))
	}
	// What the daemon binds must be this machine's: a node started under
	// the other node's name (a cloned host whose hostname still names the
	// original, a copied --node) fails here, not at its first bind. The
	// replication address must be here whatever ip_nonlocal_bind says:
	// the UDP heartbeat path sends from it, which the kernel refuses for
	// an address that is not.
	if !local(self.ReplicationAddress) {
		errs = append(errs, cfg.Errorf(nodeKey+".replication_address", "%s is not an address of this machine (the replication listener and the UDP heartbeat path bind it); is this the other node?", self.ReplicationAddress))
	}
	if ap, err := netip.ParseAddrPort(cfg.MetricsListen); err == nil && !bindable(ap.Addr()) {
		errs = append(errs, cfg.Errorf("metrics.listen", "%s is not an address of this machine", ap.Addr()))
	}
	// A port another program holds stops the daemon at its first bind:
	// each is bound as the daemon binds it and let go at once. Not while
	// the node's own daemon runs (its lock is held): the ports are its.
	// Not either when that cannot be told: a false alarm on a live node
	// would teach operators to ignore --check.
	if running, err := DaemonRunning(cfg); !running && err == nil {
		tryBind := func(key, network string, at netip.AddrPort) {
			if !local(at.Addr()) {
				return // said above, or the kernel allows it (ip_nonlocal_bind)
			}
			var l io.Closer
			var err error
			if network == "udp" {
				l, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(at))
			} else {
				l, err = net.Listen("tcp", at.String())
			}
			switch {
			case err == nil:
				l.Close()
			case errors.Is(err, syscall.EADDRINUSE):
				errs = append(errs, cfg.Errorf(key, "%s/%s is in use by another program (`ss -lnp 'sport = :%d'` names it)", at, network, at.Port()))
			default:
				errs = append(errs, cfg.Errorf(key, "%s/%s: %v", at, network, err))
			}
		}
		tryBind("replication_port", "tcp", netip.AddrPortFrom(self.ReplicationAddress, uint16(cfg.ReplicationPort)))
		tryBind("heartbeat_port", "udp", netip.AddrPortFrom(self.ReplicationAddress, uint16(cfg.HeartbeatPort)))
		if ap, err := netip.ParseAddrPort(cfg.MetricsListen); err == nil {
			tryBind("metrics.listen", "tcp", ap)
		}
	}
	// What the daemon writes at start: its lock and sockets, and its
	// state. Under the packaged unit (ProtectSystem=strict) only its own
	// directories are writable, and --check, run as ExecStartPre, runs in
	// the same sandbox: a state_dir elsewhere is found here.
	writable("socket", filepath.Dir(cfg.Socket), cfg, &errs)
	writable("state_dir", cfg.StateDir, cfg, &errs)
	// A VIP in the host's own network configuration is there for good,
	// on the standby too, which then answers for it beside the active:
	// the classic mistake, and hapair could neither claim nor release it.
	if m, err := vipManager(cfg, self); err == nil {
		perm, _ := m.Permanent()
		m.Close()
		for _, a := range perm {
			for i, v := range cfg.VIPs {
				if v.Prefix == a.Prefix && v.VIPInterface(self) == a.Interface {
					errs = append(errs, cfg.Errorf(fmt.Sprintf("vip[%d].address", i+1), "%s is configured on %s for good (in the network configuration?): hapair adds and removes it itself, and a standby that keeps it answers for it beside the active; take it out of the network configuration and delete it (ip addr del %s dev %s)", a.Prefix, a.Interface, a.Prefix, a.Interface))
				}
			}
		}
	}
	if cfg.TLSCert != "" {
		if _, _, err := repl.TLSConfigs(config.ForNode(cfg.TLSCert, self), config.ForNode(cfg.TLSKey, self), cfg.TLSCA, cfg.Peer(self).Name, nil); err != nil {
			errs = append(errs, cfg.Errorf("tls.cert", "%v", err))
		}
	}
	for i, h := range cfg.Hooks {
		if msg := lookProgram(h.Command[0]); msg != "" {
			errs = append(errs, cfg.Errorf(fmt.Sprintf("hook[%d].command", i+1), "%s", msg))
		}
	}
	for i, c := range cfg.Checks {
		if c.Kind != health.Exec {
			continue
		}
		// An exec check is a shell command: only its first word can be
		// checked, and only when it is a program, not a shell builtin.
		words := strings.Fields(c.TargetFor(self))
		if len(words) == 0 || shellBuiltin[words[0]] || strings.ContainsAny(words[0], "=$`'\"(){};&|<>") {
			continue
		}
		if msg := lookProgram(words[0]); msg != "" {
			errs = append(errs, cfg.Errorf(fmt.Sprintf("check[%d].target", i+1), "%s", msg))
		}
	}
	sort.SliceStable(errs, func(i, j int) bool { return errs[i].Line < errs[j].Line })
	return errs
}

// writable says (in errs, under key) when dir cannot be made or written:
// the nearest part of it that exists must be a directory this process may
// write to. Nothing is made.
func writable(key, dir string, cfg *config.Config, errs *config.Errors) {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		switch {
		case errors.Is(err, fs.ErrNotExist) && d != filepath.Dir(d):
			continue
		case err != nil:
			*errs = append(*errs, cfg.Errorf(key, "%s: %v", dir, err))
		case !fi.IsDir():
			*errs = append(*errs, cfg.Errorf(key, "%s cannot be made: %s is not a directory", dir, d))
		default:
			if err := unix.Access(d, unix.W_OK|unix.X_OK); errors.Is(err, unix.EROFS) {
				*errs = append(*errs, cfg.Errorf(key, "%s cannot be written: %s is on a read-only file system (the packaged unit lets hapaird write only /run/hapair and /var/lib/hapair: add ReadWritePaths=%s in a drop-in)", dir, d, dir))
			} else if err != nil {
				*errs = append(*errs, cfg.Errorf(key, "%s cannot be written: %s: %v", dir, d, err))
			}
		}
		return
	}
}

// lookProgram says what is wrong with a program to run, or "".
func lookProgram(name string) string {
	_, err := exec.LookPath(name)
	var ee *exec.Error
	switch {
	case err == nil:
		return ""
	case errors.Is(err, exec.ErrNotFound) && !strings.Contains(name, "/"):
		return fmt.Sprintf("program %s is not in PATH", name)
	case errors.As(err, &ee):
		return fmt.Sprintf("program %s: %v", name, ee.Err)
	}
	return err.Error()
}

// bindable says whether a listener can bind a: a local one, or any at all
// where the kernel allows a non-local bind (net.ipv4.ip_nonlocal_bind,
// net.ipv6.ip_nonlocal_bind).
func bindable(a netip.Addr) bool {
	sysctl := "/proc/sys/net/ipv4/ip_nonlocal_bind"
	if a.Is6() && !a.Is4In6() {
		sysctl = "/proc/sys/net/ipv6/ip_nonlocal_bind"
	}
	if b, err := os.ReadFile(sysctl); err == nil && strings.TrimSpace(string(b)) == "1" {
		return true
	}
	return local(a)
}

// local says whether a is an address on one of this machine's interfaces,
// the unspecified or a loopback one.
func local(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	if !a.IsValid() || a.IsUnspecified() || a.IsLoopback() {
		return true
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return true // cannot tell: the daemon's own bind will say
	}
	for _, x := range addrs {
		if n, ok := x.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap() == a {
				return true
			}
		}
	}
	return false
}

// shellBuiltin are the POSIX shell's special and regular builtins that no
// PATH holds.
var shellBuiltin = map[string]bool{
	":": true, ".": true, "!": true, "break": true, "cd": true, "command": true, "continue": true, "eval": true,
	"exec": true, "exit": true, "export": true, "readonly": true, "return": true, "set": true, "shift": true,
	"times": true, "trap": true, "unset": true, "if": true, "for": true, "while": true, "until": true, "case": true,
}

// CarrierWarnings names the VIP interfaces on this machine that have no
// carrier now: a node that starts so is in FAULT until it comes (its VIP
// watch says so at once), and leaves the VIPs to its peer. Not an error:
// a cable may be plugged in after the start. hapaird --check prints them.
func CarrierWarnings(cfg *config.Config, self *config.Node) []string {
	var out []string
	seen := map[string]bool{}
	for _, v := range cfg.VIPs {
		name := v.VIPInterface(self)
		if seen[name] {
			continue
		}
		seen[name] = true
		if l, err := netlink.LinkByName(name); err == nil && l.Attrs().RawFlags&unix.IFF_LOWER_UP == 0 {
			out = append(out, fmt.Sprintf("%s has no carrier: this node would start in FAULT and leave the VIPs to its peer until it comes", name))
		}
	}
	return out
}

// PathWarnings names, for --check, a UDP heartbeat path that leaves by
// the heartbeat interface (or a VLAN or macvlan on the same device): the
// two paths then share one cable, one NIC and one switch port, and one
// fault silences both, so the standby takes over from a live active,
// while status shows two paths up. Not an error: a lab, or a pair with
// one link by choice, runs so.
func PathWarnings(cfg *config.Config, self *config.Node) []string {
	peer := cfg.Peer(self)
	routes, err := netlink.RouteGetWithOptions(peer.ReplicationAddress.AsSlice(), &netlink.RouteGetOptions{SrcAddr: self.ReplicationAddress.AsSlice()})
	if err != nil || len(routes) == 0 {
		return nil
	}
	out, err := netlink.LinkByIndex(routes[0].LinkIndex)
	if err != nil {
		return nil
	}
	hb, err := netlink.LinkByName(self.HeartbeatInterface)
	if err != nil {
		return nil // Preflight's error
	}
	if lower(out) != lower(hb) {
		return nil
	}
	return []string{fmt.Sprintf("the UDP heartbeat path to %s leaves by %s, on the same device as the heartbeat interface %s: one fault of that link silences both paths, and the standby takes over from a live active; route the replication addresses over another link", peer.ReplicationAddress, out.Attrs().Name, self.HeartbeatInterface)}
}

// lower is the index of the device link runs on: its parent's for a VLAN,
// a macvlan or an ipvlan, its own otherwise. (A veth's parent index names
// its peer, perhaps in another namespace: not followed.)
func lower(link netlink.Link) int {
	for range 8 { // a VLAN on a VLAN, at most a few deep
		switch link.(type) {
		case *netlink.Vlan, *netlink.Macvlan, *netlink.IPVlan:
			parent, err := netlink.LinkByIndex(link.Attrs().ParentIndex)
			if err != nil {
				return link.Attrs().Index
			}
			link = parent
		default:
			return link.Attrs().Index
		}
	}
	return link.Attrs().Index
}

// certDates reads the dates of the replication link's certificates: this
// node's and the CAs that signed it (none without TLS).
func certDates(cfg *config.Config, self *config.Node) ([]repl.CertDate, error) {
	if cfg.TLSCert == "" {
		return nil, nil
	}
	return repl.CertDates(config.ForNode(cfg.TLSCert, self), cfg.TLSCA)
}

// TLSWarnings names, for --check, the certificates whose dates fail the
// replication link at now, or will within repl.RenewWithin, and a
// tls.optional left on. Unreadable files are Preflight's errors; dates
// stop only the link, not the daemon.
func TLSWarnings(cfg *config.Config, self *config.Node, now time.Time) []string {
	var out []string
	if cfg.TLSOptional {
		// For the change that turns TLS on or off; left on, a peer
		// without a certificate still gets the sessions.
		out = append(out, "tls.optional is on: this node also replicates without TLS, with a peer that has none; take it out once both nodes run TLS")
	}
	certs, err := certDates(cfg, self)
	if err != nil {
		return out
	}
	failing, soon := repl.DateWarnings(certs, now)
	return append(append(out, failing...), soon...)
}
