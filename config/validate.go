package config

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hapair/hapair/health"
	"github.com/hapair/hapair/internal/hooks"
)

// file is the TOML as written. Durations and addresses stay strings here so
// that a bad one is reported with its key and line by the validator, not as
// a decoder error without context.
type file struct {
	Cluster         string   `toml:"cluster"`
	KeyFile         string   `toml:"key_file"`
	KeyFiles        []string `toml:"key_files"`
	Primary         string   `toml:"primary"`
	Profile         string   `toml:"profile"`
	Interval        string   `toml:"interval"`
	DeadInterval    string   `toml:"dead_interval"`
	SyncMode        string   `toml:"sync_mode"`
	StateDir        string   `toml:"state_dir"`
	Socket          string   `toml:"socket"`
	HeartbeatPort   *int     `toml:"heartbeat_port"`
	ReplicationPort *int     `toml:"replication_port"`
	Lease           string   `toml:"lease"`
	HoldDown        *string  `toml:"hold_down"`
	Announce        struct {
		Count   *int   `toml:"count"`
		Spacing string `toml:"spacing"`
		Refresh string `toml:"refresh"`
		Probe   string `toml:"probe"`
	} `toml:"announce"`
	Metrics struct {
		Listen string `toml:"listen"`
	} `toml:"metrics"`
	TLS struct {
		Cert     string `toml:"cert"`
		Key      string `toml:"key"`
		CA       string `toml:"ca"`
		Optional bool   `toml:"optional"`
	} `toml:"tls"`
	Sessions struct {
		MaxSessions *int   `toml:"max_sessions"`
		MaxData     *int   `toml:"max_data"`
		MaxMemory   *int64 `toml:"max_memory"`
		SyncTimeout string `toml:"sync_timeout"`
		SyncPoll    string `toml:"sync_poll"`
	} `toml:"sessions"`
	Node []struct {
		Name               string `toml:"name"`
		HeartbeatInterface string `toml:"heartbeat_interface"`
		HeartbeatMAC       string `toml:"heartbeat_mac"`
		PublicInterface    string `toml:"public_interface"`
		PublicAddress      string `toml:"public_address"`
		ReplicationAddress string `toml:"replication_address"`
	} `toml:"node"`
	VIP []struct {
		Address   string `toml:"address"`
		Interface string `toml:"interface"`
	} `toml:"vip"`
	Check []struct {
		Name         string `toml:"name"`
		Kind         string `toml:"kind"`
		Target       string `toml:"target"`
		Interval     string `toml:"interval"`
		Timeout      string `toml:"timeout"`
		Rise         *int   `toml:"rise"`
		Fall         *int   `toml:"fall"`
		Critical     *bool  `toml:"critical"`
		ExpectStatus string `toml:"expect_status"`
		ExpectBody   string `toml:"expect_body"`
	} `toml:"check"`
	Hook []struct {
		On      []string `toml:"on"`
		Command []string `toml:"command"`
		Timeout string   `toml:"timeout"`
	} `toml:"hook"`
}

var (
	reName   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)
	reIfname = regexp.MustCompile(`^[^\s/:]{1,15}$`)
)

func (v *validator) build(f *file) *Config {
	c := &Config{
		File:            v.path,
		Cluster:         f.Cluster,
		Primary:         f.Primary,
		SyncMode:        or(f.SyncMode, "async"),
		StateDir:        or(f.StateDir, DefaultStateDir),
		Socket:          or(f.Socket, DefaultSocket),
		HeartbeatPort:   DefaultHeartbeatPort,
		ReplicationPort: DefaultReplicationPort,
		MetricsListen:   f.Metrics.Listen,
		Lease:           DefaultLease,
		GARPCount:       DefaultGARPCount,
		GARPSpacing:     DefaultGARPSpacing,
		VIPProbe:        DefaultVIPProbe,
	}
	switch {
	case f.Cluster == "":
		v.errf("cluster", "missing: name the pair (any string, the same on both nodes)")
	case !reName.MatchString(f.Cluster):
		v.errf("cluster", "%q is not a name (letters, digits, . _ -, at most 63)", f.Cluster)
	}
	c.ClusterID = ClusterID(f.Cluster)

	v.nodes(f, c)
	v.keys(f, c)
	v.timers(f, c)

	v.ports(f, c)
	v.paths(c)
	v.sessions(f, c)
	c.TLSCert, c.TLSKey, c.TLSCA = f.TLS.Cert, f.TLS.Key, f.TLS.CA
	if set := (c.TLSCert != "") || (c.TLSKey != "") || (c.TLSCA != ""); set {
		for _, k := range []struct{ key, val string }{{"tls.cert", c.TLSCert}, {"tls.key", c.TLSKey}, {"tls.ca", c.TLSCA}} {
			if k.val == "" {
				v.errf(k.key, "missing: cert, key and ca go together")
			}
		}
	} else if f.TLS.Optional {
		v.errf("tls.optional", "needs cert, key and ca: it lets a node with TLS replicate with a peer without it")
	}
	c.TLSOptional = f.TLS.Optional
	v.vips(f, c)
	v.checks(f, c)
	v.hooks(f, c)
	return c
}

// ports checks the ports and the metrics listener, which must not share
// the pair's own ports.
func (v *validator) ports(f *file, c *Config) {
	if f.HeartbeatPort != nil {
		c.HeartbeatPort = v.port("heartbeat_port", *f.HeartbeatPort)
	}
	if f.ReplicationPort != nil {
		c.ReplicationPort = v.port("replication_port", *f.ReplicationPort)
	}
	if c.HeartbeatPort == c.ReplicationPort && c.HeartbeatPort != 0 {
		// At the key the file sets: the other may be a default.
		if f.ReplicationPort == nil {
			v.errf("heartbeat_port", "%d is also the replication_port (default %d)", c.HeartbeatPort, c.ReplicationPort)
		} else {
			v.errf("replication_port", "%d is also the heartbeat_port", c.ReplicationPort)
		}
	}
	if f.Metrics.Listen != "" {
		if _, port, err := net.SplitHostPort(f.Metrics.Listen); err != nil {
			v.errf("metrics.listen", "%q is not host:port", f.Metrics.Listen)
		} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			v.errf("metrics.listen", "%q: port %s is not 1..65535", f.Metrics.Listen, port)
		} else if n == c.ReplicationPort || n == c.HeartbeatPort {
			v.errf("metrics.listen", "%q: port %d is the pair's own (replication_port %d, heartbeat_port %d)", f.Metrics.Listen, n, c.ReplicationPort, c.HeartbeatPort)
		}
	}
}

// maxSocketPath is the longest path a unix socket's address holds: sun_path
// is 108 bytes, the last a NUL.
const maxSocketPath = 107

// paths checks the daemon's own files: absolute, since the daemon must not
// depend on the directory it was started in, and the socket's path, and
// the operators' socket's beside it, short enough for a unix socket's
// address, which the bind would otherwise refuse at start.
func (v *validator) paths(c *Config) {
	if !filepath.IsAbs(c.StateDir) {
		v.errf("state_dir", "%q is not an absolute path", c.StateDir)
	}
	switch admin := AdminSocket(c.Socket); {
	case !filepath.IsAbs(c.Socket):
		v.errf("socket", "%q is not an absolute path", c.Socket)
	case len(admin) > maxSocketPath || len(c.Socket) > maxSocketPath:
		v.errf("socket", "%q is %d bytes and the operators' socket beside it, %s, %d: a unix socket's path is at most %d", c.Socket, len(c.Socket), admin, len(admin), maxSocketPath)
	}
}

// sessions checks the session store's limits and sync mode's settings.
func (v *validator) sessions(f *file, c *Config) {
	switch c.SyncMode {
	case "async", "sync":
	default:
		v.errf("sync_mode", "%q is neither \"async\" nor \"sync\"", f.SyncMode)
	}
	c.MaxSessions, c.MaxData, c.SyncTimeout = 1_000_000, 64<<10, time.Second
	if f.Sessions.MaxSessions != nil {
		c.MaxSessions = *f.Sessions.MaxSessions
		if c.MaxSessions < 1 {
			v.errf("sessions.max_sessions", "%d is not a positive number", c.MaxSessions)
		}
	}
	if f.Sessions.MaxData != nil {
		c.MaxData = *f.Sessions.MaxData
		if c.MaxData < 1 || c.MaxData > 8<<20 {
			v.errf("sessions.max_data", "%d is outside 1..%d bytes", c.MaxData, 8<<20)
		}
	}
	c.MaxMemory = DefaultMaxMemory
	if f.Sessions.MaxMemory != nil {
		c.MaxMemory = *f.Sessions.MaxMemory
		if c.MaxMemory < int64(c.MaxData) {
			v.errf("sessions.max_memory", "%d bytes is less than one session of max_data (%d)", c.MaxMemory, c.MaxData)
		}
	}
	if f.Sessions.SyncTimeout != "" {
		c.SyncTimeout = v.duration("sessions.sync_timeout", f.Sessions.SyncTimeout, time.Millisecond)
	}
	c.SyncPoll = DefaultSyncPoll
	if f.Sessions.SyncPoll != "" {
		if c.SyncPoll = v.duration("sessions.sync_poll", f.Sessions.SyncPoll, 0); c.SyncPoll > 10*time.Millisecond {
			v.errf("sessions.sync_poll", "%v is too long (at most 10ms: past the round trip to the standby polling only burns CPU)", c.SyncPoll)
		}
	}
}

func (v *validator) nodes(f *file, c *Config) {
	if len(f.Node) != 2 {
		v.errf("node", "a pair needs exactly 2 [[node]] tables, found %d", len(f.Node))
	}
	seen := map[string]string{}
	for i, n := range f.Node {
		k := fmt.Sprintf("node[%d]", i+1)
		node := Node{Name: n.Name, ID: uint8(i + 1), HeartbeatInterface: n.HeartbeatInterface, PublicInterface: n.PublicInterface}
		switch {
		case n.Name == "":
			v.errf(k+".name", "missing")
		case !reName.MatchString(n.Name):
			v.errf(k+".name", "%q is not a name (letters, digits, . _ -, at most 63)", n.Name)
		case seen[n.Name] != "":
			v.errf(k+".name", "%q is already the name of %s", n.Name, seen[n.Name])
		default:
			seen[n.Name] = k
		}
		v.ifname(k+".heartbeat_interface", n.HeartbeatInterface, true)
		v.ifname(k+".public_interface", n.PublicInterface, true)
		if n.HeartbeatMAC != "" {
			mac, err := net.ParseMAC(n.HeartbeatMAC)
			if err != nil || len(mac) != 6 {
				v.errf(k+".heartbeat_mac", "%q is not an Ethernet address", n.HeartbeatMAC)
			}
			node.HeartbeatMAC = mac
		}
		if n.PublicAddress != "" {
			p, err := netip.ParsePrefix(n.PublicAddress)
			if err != nil {
				v.errf(k+".public_address", "%s is not an IP prefix (address/length)", n.PublicAddress)
			}
			node.PublicAddress = p
		}
		if n.ReplicationAddress == "" {
			v.errf(k+".replication_address", "missing: the address of this node on the replication link")
		} else if a, err := netip.ParseAddr(n.ReplicationAddress); err != nil {
			v.errf(k+".replication_address", "%s is not an IP address", n.ReplicationAddress)
		} else if why := replicationAddressFault(a); why != "" {
			v.errf(k+".replication_address", "%s %s", n.ReplicationAddress, why)
		} else {
			node.ReplicationAddress = a
		}
		c.Nodes = append(c.Nodes, node)
	}
	if len(c.Nodes) == 2 && c.Nodes[0].ReplicationAddress.IsValid() && c.Nodes[0].ReplicationAddress == c.Nodes[1].ReplicationAddress {
		v.errf("node[2].replication_address", "%s is also node[1]'s", c.Nodes[1].ReplicationAddress)
	}
	if len(c.Nodes) == 2 && c.Nodes[0].ReplicationAddress.IsValid() && c.Nodes[1].ReplicationAddress.IsValid() &&
		c.Nodes[0].ReplicationAddress.Is4() != c.Nodes[1].ReplicationAddress.Is4() {
		// One socket's address family serves both ends: the UDP path is
		// connected to the peer, and the peer dials the listener.
		v.errf("node[2].replication_address", "%s and node[1]'s %s are of different families: give both ends of the replication link IPv4 addresses, or both IPv6",
			c.Nodes[1].ReplicationAddress, c.Nodes[0].ReplicationAddress)
	}
	if len(c.Nodes) == 2 && c.Nodes[0].PublicAddress.IsValid() && c.Nodes[0].PublicAddress.Addr() == c.Nodes[1].PublicAddress.Addr() {
		v.errf("node[2].public_address", "%s is also node[1]'s", c.Nodes[1].PublicAddress.Addr())
	}
	if f.Primary == "" {
		if len(c.Nodes) > 0 {
			c.Primary = c.Nodes[0].Name
		}
	} else if seen[f.Primary] == "" {
		v.errf("primary", "%q is not the name of a [[node]]", f.Primary)
	}
}

func (v *validator) ifname(key, name string, required bool) {
	switch {
	case name == "" && required:
		v.errf(key, "missing")
	case name != "" && !reIfname.MatchString(name):
		v.errf(key, "%q is not an interface name (1 to 15 characters, no blanks, / or :)", name)
	}
}

func (v *validator) keys(f *file, c *Config) {
	switch {
	case f.KeyFile != "" && len(f.KeyFiles) > 0:
		v.errf("key_files", "set either key_file or key_files, not both")
		return
	case f.KeyFile != "":
		c.KeyFiles = []string{f.KeyFile}
	case len(f.KeyFiles) > 0:
		c.KeyFiles = f.KeyFiles
	case f.KeyFiles != nil:
		v.errf("key_files", "empty: list at least one key file, the newest first")
		return
	default:
		v.errf("key_file", "missing: the shared secret that authenticates the pair (hapairctl keygen writes one)")
		return
	}
	key := "key_file"
	if f.KeyFile == "" {
		key = "key_files"
	}
	var from []string // the file each of c.Keys came from
	for _, p := range c.KeyFiles {
		if !filepath.IsAbs(p) {
			p = filepath.Join(filepath.Dir(v.path), p)
		}
		k, err := ReadKey(p)
		if err != nil {
			v.errf(key, "%v", err)
			continue
		}
		for i, o := range c.Keys {
			if string(o) == string(k) {
				v.errf(key, "%s holds the same key as %s", p, from[i])
			}
		}
		c.Keys = append(c.Keys, k)
		from = append(from, p)
	}
}

// MinKeyLen is the shortest shared key accepted: HMAC-SHA-256 gains nothing
// from a longer one and a shorter one weakens it.
const MinKeyLen = 32

// ReadKey reads a key file, refusing one that is short or that the group or
// others may read.
func ReadKey(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, errUnwrapPath(err))
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("key file %s has mode %04o: it must not be readable by group or others (chmod 600)", path, st.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, errUnwrapPath(err))
	}
	if len(b) < MinKeyLen {
		return nil, fmt.Errorf("key file %s holds %d bytes; at least %d random bytes are needed", path, len(b), MinKeyLen)
	}
	return b, nil
}

func errUnwrapPath(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

func (v *validator) timers(f *file, c *Config) {
	c.Profile = or(f.Profile, "default")
	profile := c.Profile
	p, ok := Profiles[c.Profile]
	if !ok {
		v.errf("profile", "%q is none of \"default\", \"fast\" and \"turbo\"", f.Profile)
		p = Profiles["default"]
	}
	c.Interval, c.DeadInterval = p.Interval, p.Dead
	if f.Interval != "" {
		c.Interval = v.duration("interval", f.Interval, time.Millisecond)
		c.Profile = "custom"
	}
	if f.DeadInterval != "" {
		c.DeadInterval = v.duration("dead_interval", f.DeadInterval, time.Millisecond)
		c.Profile = "custom"
	}
	// Reported at the key the file sets: a dead interval taken from the
	// profile is not on any line.
	deadKey, dead, from := "dead_interval", "", ""
	if f.DeadInterval == "" {
		deadKey, dead, from = "interval", "the dead interval ", fmt.Sprintf(" (profile %s's; set dead_interval too)", profile)
	}
	if c.Interval > 0 && c.DeadInterval > 0 && c.DeadInterval <= c.Interval {
		v.errf(deadKey, "%s%v must be above interval (%v): use at least 3 intervals%s", dead, c.DeadInterval, c.Interval, from)
	} else if c.Interval > 0 && c.DeadInterval > 0 && c.DeadInterval < 3*c.Interval {
		v.errf(deadKey, "%s%v is less than 3 intervals (%v): one or two frames lost would be a failover%s", dead, c.DeadInterval, 3*c.Interval, from)
	}
	// Five dead intervals, at least DefaultHoldDown: far enough above
	// the dead interval to tell a flapping link from a failure.
	c.HoldDown = max(DefaultHoldDown, 5*c.DeadInterval)
	if f.HoldDown != nil {
		c.HoldDown = v.duration("hold_down", *f.HoldDown, 0)
		if c.HoldDown > 0 && c.DeadInterval > 0 && c.HoldDown <= c.DeadInterval {
			v.errf("hold_down", "%v is not above the dead interval (%v): it would damp nothing; \"0s\" turns the hold-down off", c.HoldDown, c.DeadInterval)
		}
	}
	if f.Lease != "" {
		c.Lease = v.duration("lease", f.Lease, time.Second)
		if c.Lease > 0 && c.Lease < MinLease {
			v.errf("lease", "%v is below %v: the kernel counts address lifetimes in seconds", c.Lease, MinLease)
		}
		if c.Lease%time.Second != 0 {
			v.errf("lease", "%v is not a whole number of seconds (the kernel's unit)", c.Lease)
		}
	}
	if f.Announce.Count != nil {
		c.GARPCount = *f.Announce.Count
		if c.GARPCount < 1 || c.GARPCount > 100 {
			v.errf("announce.count", "%d is outside 1..100", c.GARPCount)
		}
	}
	if f.Announce.Spacing != "" {
		c.GARPSpacing = v.duration("announce.spacing", f.Announce.Spacing, 0)
	}
	if f.Announce.Refresh != "" {
		c.GARPRefresh = v.duration("announce.refresh", f.Announce.Refresh, 0)
		if c.GARPRefresh > 0 && c.GARPRefresh < time.Second {
			v.errf("announce.refresh", "%v is too short: refresh at most once a second, or \"0s\" for never", c.GARPRefresh)
		}
	}
	if f.Announce.Probe != "" {
		c.VIPProbe = v.duration("announce.probe", f.Announce.Probe, 0)
		if c.VIPProbe > 0 && c.VIPProbe < MinVIPProbe {
			v.errf("announce.probe", "%v is too short: probe at most every %v, or \"0s\" for never", c.VIPProbe, MinVIPProbe)
		}
	}
}

// duration parses s; min (when not 0) is the smallest value that makes sense.
func (v *validator) duration(key, s string, min time.Duration) time.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		v.errf(key, "%q is not a duration (write it like \"100ms\" or \"2s\")", s)
		return 0
	}
	if d < 0 || d < min {
		v.errf(key, "%v is too short (at least %v)", d, min)
		return 0
	}
	return d
}

func (v *validator) port(key string, p int) int {
	if p < 1 || p > 65535 {
		v.errf(key, "%d is not a port number (1..65535)", p)
		return 0
	}
	return p
}

// replicationAddressFault says why a cannot be a node's replication
// address, which the node binds and its peer reaches (both the replication
// listener and the UDP heartbeat path), or "".
func replicationAddressFault(a netip.Addr) string {
	switch {
	case a.IsUnspecified(), a.IsMulticast():
		return "is not one host's address: give this node's own unicast address on the replication link"
	case a.IsLoopback():
		return "is a loopback address, which the peer cannot reach"
	case a.Is4In6():
		return "is an IPv4-mapped IPv6 address: write " + a.Unmap().String()
	case a.IsLinkLocalUnicast():
		// A link-local address means something only with an interface
		// (a zone), and the zone would be one host's interface name in a
		// file both nodes share.
		return "is link-local: give the replication link a global or unique-local (fd00::/8) address"
	}
	return ""
}

func (v *validator) vips(f *file, c *Config) {
	if len(f.VIP) == 0 {
		v.errf("vip", "no [[vip]]: the pair has no floating address to move")
	}
	seen := map[netip.Addr]string{}
	for i, fv := range f.VIP {
		k := fmt.Sprintf("vip[%d]", i+1)
		v.ifname(k+".interface", fv.Interface, false)
		if fv.Address == "" {
			v.errf(k+".address", "missing")
			continue
		}
		p, err := netip.ParsePrefix(fv.Address)
		if err != nil {
			v.errf(k+".address", "%s is not an IP prefix (address/length)", fv.Address)
			continue
		}
		if p.Addr().IsUnspecified() || p.Addr().IsMulticast() || p.Addr().IsLoopback() || p.Addr().IsLinkLocalUnicast() {
			v.errf(k+".address", "%s cannot float: it is not a unicast, non-link-local address", fv.Address)
			continue
		}
		if p.Addr().Is4In6() {
			v.errf(k+".address", "%s is an IPv4-mapped IPv6 address: write %s/%d", fv.Address, p.Addr().Unmap(), max(p.Bits()-96, 0))
			continue
		}
		if p.Addr().Is4() && p.Bits() < 31 {
			switch p.Addr() {
			case p.Masked().Addr():
				v.errf(k+".address", "%s is the network address of %s", p.Addr(), p.Masked())
				continue
			case lastAddr(p):
				v.errf(k+".address", "%s is the broadcast address of %s", p.Addr(), p.Masked())
				continue
			}
		}
		if prev := seen[p.Addr()]; prev != "" {
			v.errf(k+".address", "%s is already %s", p.Addr(), prev)
		}
		seen[p.Addr()] = k
		vip := VIP{Prefix: p, Interface: fv.Interface}
		for ni := range c.Nodes {
			n := &c.Nodes[ni]
			if n.PublicAddress.IsValid() && vip.VIPInterface(n) == n.PublicInterface &&
				n.PublicAddress.Addr().Is4() == p.Addr().Is4() && !n.PublicAddress.Masked().Contains(p.Addr()) {
				v.errf(k+".address", "%s is outside %s's public subnet %s", p.Addr(), n.Name, n.PublicAddress.Masked())
			}
			if n.PublicAddress.IsValid() && n.PublicAddress.Addr() == p.Addr() {
				v.errf(k+".address", "%s is %s's own public address", p.Addr(), n.Name)
			}
		}
		c.VIPs = append(c.VIPs, vip)
	}
}

// lastAddr is the highest address of an IPv4 prefix: its broadcast.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func (v *validator) checks(f *file, c *Config) {
	names := map[string]bool{}
	for i, fc := range f.Check {
		k := fmt.Sprintf("check[%d]", i+1)
		ch := Check{Name: fc.Name, Kind: fc.Kind, Target: fc.Target, Interval: time.Second, Timeout: time.Second, Rise: 2, Fall: 1, Critical: true}
		switch {
		case fc.Name == "":
			v.errf(k+".name", "missing")
		case names[fc.Name]:
			v.errf(k+".name", "%q is already the name of a check", fc.Name)
		}
		names[fc.Name] = true
		if !slices.Contains(health.Kinds, fc.Kind) {
			v.errf(k+".kind", "%q is not a check kind (%s)", fc.Kind, strings.Join(health.Kinds, ", "))
		}
		if fc.Target == "" {
			v.errf(k+".target", "missing: what the check watches")
		}
		if fc.Interval != "" {
			ch.Interval = v.duration(k+".interval", fc.Interval, time.Millisecond)
		}
		if fc.Timeout != "" {
			ch.Timeout = v.duration(k+".timeout", fc.Timeout, time.Millisecond)
		}
		if ch.Timeout > ch.Interval && ch.Interval > 0 {
			v.errf(k+".timeout", "%v is above the check's interval (%v)", ch.Timeout, ch.Interval)
		}
		if fc.Rise != nil {
			ch.Rise = v.count(k+".rise", *fc.Rise)
		}
		if fc.Fall != nil {
			ch.Fall = v.count(k+".fall", *fc.Fall)
		}
		if fc.Critical != nil {
			ch.Critical = *fc.Critical
		}
		if fc.ExpectStatus != "" || fc.ExpectBody != "" {
			if fc.Kind != health.HTTP {
				v.errf(k+".expect_status", "only http checks have expect_status and expect_body")
			}
			ch.ExpectBody = fc.ExpectBody
		}
		ch.StatusMin, ch.StatusMax = 200, 399
		if fc.ExpectStatus != "" {
			lo, hi, ok := parseRange(fc.ExpectStatus)
			if !ok {
				v.errf(k+".expect_status", "%q is not a status code or range like \"200-299\"", fc.ExpectStatus)
			}
			ch.StatusMin, ch.StatusMax = lo, hi
		}
		if fc.Kind == health.TCP && fc.Target != "" {
			if _, port, err := net.SplitHostPort(fc.Target); err != nil {
				v.errf(k+".target", "%q is not host:port", fc.Target)
			} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
				v.errf(k+".target", "%q: port %s is not 1..65535", fc.Target, port)
			}
		}
		if fc.Kind == health.Process && fc.Target != "" && !filepath.IsAbs(strings.ReplaceAll(fc.Target, "{node}", "x")) {
			v.errf(k+".target", "%q is not an absolute path: the daemon's working directory is /", fc.Target)
		}
		if fc.Kind == health.HTTP && fc.Target != "" {
			if u, err := url.Parse(strings.ReplaceAll(fc.Target, "{node}", "x")); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				v.errf(k+".target", "%q is not an http:// or https:// URL with a host", fc.Target)
			}
		}
		if fc.Kind == health.Link && fc.Target != "" {
			v.ifname(k+".target", fc.Target, true)
		}
		c.Checks = append(c.Checks, ch)
	}
}

func parseRange(s string) (int, int, bool) {
	a, b, found := strings.Cut(s, "-")
	lo, err1 := strconv.Atoi(strings.TrimSpace(a))
	hi := lo
	var err2 error
	if found {
		hi, err2 = strconv.Atoi(strings.TrimSpace(b))
	}
	return lo, hi, err1 == nil && err2 == nil && lo >= 100 && hi <= 599 && lo <= hi
}

func (v *validator) count(key string, n int) int {
	if n < 1 || n > 100 {
		v.errf(key, "%d is outside 1..100", n)
	}
	return n
}

func (v *validator) hooks(f *file, c *Config) {
	for i, fh := range f.Hook {
		k := fmt.Sprintf("hook[%d]", i+1)
		h := Hook{On: fh.On, Command: fh.Command, Timeout: 30 * time.Second}
		if len(fh.On) == 0 {
			v.errf(k+".on", "missing: the transitions that run it")
		}
		for _, on := range fh.On {
			if !slices.Contains(hooks.Events, on) {
				v.errf(k+".on", "%q is not a transition (%s)", on, strings.Join(hooks.Events, ", "))
			}
		}
		if len(fh.Command) == 0 || fh.Command[0] == "" {
			v.errf(k+".command", "missing: the program and its arguments, as a list")
		}
		if fh.Timeout != "" {
			h.Timeout = v.duration(k+".timeout", fh.Timeout, time.Millisecond)
		}
		c.Hooks = append(c.Hooks, h)
	}
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
