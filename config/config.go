package config

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Defaults an operator gets by leaving a key out.
const (
	DefaultStateDir        = "/var/lib/hapair"
	DefaultSocket          = "/run/hapair/hapair.sock"
	DefaultHeartbeatPort   = 7405
	DefaultReplicationPort = 7406
	// The kernel counts address lifetimes in whole seconds and expires
	// addresses from a periodic worker, so a lease shorter than 2 s would
	// risk the VIP vanishing between renewals on a busy host.
	DefaultLease       = 10 * time.Second
	DefaultHoldDown    = 2 * time.Second
	MinLease           = 2 * time.Second
	DefaultGARPCount   = 3
	DefaultGARPSpacing = 20 * time.Millisecond
	// DefaultVIPProbe: the active asks whether another host answers for
	// its VIPs this often (node/agent/guard.go says why).
	DefaultVIPProbe = 30 * time.Second
	MinVIPProbe     = 2 * time.Second
	// A sync write's round trip to the standby takes tens of
	// microseconds when the CPUs on the way stay awake; 200 µs also
	// covers most of an application's pause between two writes, which
	// the standby polls through (measured: docs/benchmarks.md).
	DefaultSyncPoll = 200 * time.Microsecond
)

// AdminSocket is where the daemon takes operator commands (switchover, lock,
// unlock): admin.sock beside the application socket, mode 0600, so that
// applications in group hapair keep the session API and status but cannot
// move the VIP or lock the node.
func AdminSocket(socket string) string { return filepath.Join(filepath.Dir(socket), "admin.sock") }

// DefaultMaxMemory is sessions.max_memory's default: 1 GiB.
const DefaultMaxMemory = 1 << 30

// Profiles name the two timer pairs operators pick from.
var Profiles = map[string]struct{ Interval, Dead time.Duration }{
	"default": {100 * time.Millisecond, 300 * time.Millisecond},
	// fast keeps three intervals to its dead interval, as the others do,
	// at 9ms, not VRRP's 10ms. A host loss is detected between one
	// interval short of the dead interval and the dead interval after
	// it, so the median is the dead interval less half an interval:
	// 10ms / 30ms put it at 25ms plus the claim, above the fast target
	// (p50 < 25ms) in most runs.
	"fast": {9 * time.Millisecond, 27 * time.Millisecond},
	// turbo is below what VRRP can say (VRRPv3's smallest advertisement
	// interval is 10ms). It needs the heartbeat core's real-time
	// scheduling: on a busy node without it, 5ms is one scheduler slice.
	"turbo": {time.Millisecond, 5 * time.Millisecond},
}

// Config is a validated configuration. Durations and addresses are typed;
// the key material is loaded.
type Config struct {
	File      string
	lines     keyLines // where each key is, for Errorf
	src       []byte   // the file as read, for FileKeys
	Cluster   string
	ClusterID uint32 // derived from Cluster, carried in every frame
	KeyFiles  []string
	Keys      [][]byte // Keys[0] signs; any of them verifies
	Primary   string

	Profile      string
	Interval     time.Duration
	DeadInterval time.Duration

	SyncMode        string // "async" or "sync"
	StateDir        string
	Socket          string
	HeartbeatPort   int
	ReplicationPort int
	MetricsListen   string

	// Optional TLS on the replication link: this node's certificate and
	// key ("{node}" is replaced by the node's name) and the pair's CA.
	TLSCert, TLSKey, TLSCA string
	// TLSOptional: replicate without TLS with a peer that has none, for
	// the rolling change that turns TLS on or off.
	TLSOptional bool

	// Sessions: limits of the session store, how long a sync-mode write
	// waits for the standby before degrading to async, and how long of
	// that it polls for the acknowledgement instead of sleeping.
	MaxSessions int
	MaxData     int
	// MaxMemory bounds the bytes all sessions hold (ids and data, plus a
	// fixed cost per session): max_sessions times max_data allows 64 GiB.
	MaxMemory   int64
	SyncTimeout time.Duration
	SyncPoll    time.Duration

	Lease time.Duration
	// HoldDown damps a flapping link: a standby whose peer comes back
	// from a loss and is lost again within it takes over only after
	// that long a silence (0: off).
	HoldDown    time.Duration
	GARPCount   int
	GARPSpacing time.Duration
	GARPRefresh time.Duration // 0: no periodic refresh
	// VIPProbe spaces the active's probes for other hosts that answer
	// for its VIPs (0: never).
	VIPProbe time.Duration

	Nodes  []Node
	VIPs   []VIP
	Checks []Check
	Hooks  []Hook
}

// Node is one member of the pair.
type Node struct {
	Name               string
	ID                 uint8 // 1 or 2: the position in the file
	HeartbeatInterface string
	HeartbeatMAC       net.HardwareAddr // optional: unicast from the first frame
	PublicInterface    string
	PublicAddress      netip.Prefix // optional: finds the node, bounds its VIPs
	ReplicationAddress netip.Addr
}

// VIP is a floating address and the interface it lives on.
type VIP struct {
	Prefix    netip.Prefix
	Interface string // empty: each node's public interface
}

// Check is a critical component check, run by the health package.
// "{node}" in Target is replaced by the node's name (TargetFor), so one
// file can name per-node paths such as "/run/media-{node}.pid".
type Check struct {
	Name     string
	Kind     string
	Target   string
	Interval time.Duration
	Timeout  time.Duration
	Rise     int
	Fall     int
	Critical bool
	// http only: accepted status codes and a required body substring.
	StatusMin, StatusMax int
	ExpectBody           string
}

// Hook is a command run on a transition.
type Hook struct {
	On      []string
	Command []string
	Timeout time.Duration
}

// ForNode replaces "{node}" in path with n's name: one file can name
// per-node paths.
func ForNode(path string, n *Node) string { return strings.ReplaceAll(path, "{node}", n.Name) }

// TargetFor is c's target on node n.
func (c Check) TargetFor(n *Node) string { return ForNode(c.Target, n) }

// StartupWindow is how long a starting node listens for its peer before the
// preferred node claims the VIPs.
func (c *Config) StartupWindow() time.Duration { return 3 * c.DeadInterval }

// Peer returns the node that is not self.
func (c *Config) Peer(self *Node) *Node {
	for i := range c.Nodes {
		if c.Nodes[i].Name != self.Name {
			return &c.Nodes[i]
		}
	}
	return nil
}

// Node returns the node named name, or nil.
func (c *Config) Node(name string) *Node {
	for i := range c.Nodes {
		if c.Nodes[i].Name == name {
			return &c.Nodes[i]
		}
	}
	return nil
}

// VIPInterface is the interface a VIP lives on at node n.
func (v VIP) VIPInterface(n *Node) string {
	if v.Interface != "" {
		return v.Interface
	}
	return n.PublicInterface
}

// Error is one problem in a file, positioned at a line and a key.
type Error struct {
	File string
	Line int
	Key  string
	Msg  string
}

func (e *Error) Error() string {
	if e.Key == "" {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s:%d: %s: %s", e.File, e.Line, e.Key, e.Msg)
}

// Errors is every problem found in one file, in line order.
type Errors []*Error

func (es Errors) Error() string {
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = e.Error()
	}
	return strings.Join(s, "\n")
}

// Load reads, decodes and validates the file at path.
// fileKeysFolded are the keys of file as TOML paths ("check.name"), by
// their lower case.
var fileKeysFolded = func() map[string]string {
	out := map[string]string{}
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for i := range t.NumField() {
			f := t.Field(i)
			p := prefix + f.Tag.Get("toml")
			out[strings.ToLower(p)] = p
			ft := f.Type
			if ft.Kind() == reflect.Slice {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				walk(ft, p+".")
			}
		}
	}
	walk(reflect.TypeFor[file](), "")
	return out
}()

// or1 is paths, or p alone when there are none.
func or1(paths []string, p string) []string {
	if len(paths) == 0 {
		return []string{p}
	}
	return paths
}

func Load(path string) (*Config, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, src)
}

// Parse decodes and validates src as if read from path. Relative key file
// paths are taken relative to path's directory.
func Parse(path string, src []byte) (*Config, error) {
	var f file
	md, err := toml.Decode(string(src), &f)
	if err != nil {
		return nil, Errors{decodeError(path, string(src), err)}
	}
	v := &validator{path: path, lines: scanLines(string(src))}
	for _, k := range md.Undecoded() {
		for _, p := range or1(v.lines.plain[k.String()], k.String()) {
			v.errf(p, "unknown key")
		}
	}
	// BurntSushi/toml matches keys to fields regardless of case: a
	// "Lease" would set lease, and "lease" beside "LEASE" would silently
	// pick one. Keys are what the documentation spells, exactly.
	for _, k := range md.Keys() {
		p := k.String()
		if right, ok := fileKeysFolded[strings.ToLower(p)]; ok && right != p {
			for _, path := range or1(v.lines.plain[p], p) {
				v.errf(path, "unknown key: keys are case-sensitive; did you mean %q?", right[strings.LastIndex(right, ".")+1:])
			}
		}
	}
	cfg := v.build(&f)
	if len(v.errs) > 0 {
		sort.SliceStable(v.errs, func(i, j int) bool { return v.errs[i].Line < v.errs[j].Line })
		return nil, v.errs
	}
	cfg.lines, cfg.src = v.lines, src
	return cfg, nil
}

// Paths reads only the socket and the state directory from the file at
// path, defaults applied: what hapairctl needs, without the key files an
// operator outside root may not read. An unreadable or malformed file is
// an error: falling back to the defaults would put a lock where the
// daemon never looks.
func Paths(path string) (socket, stateDir string, err error) {
	var f struct {
		Socket   string `toml:"socket"`
		StateDir string `toml:"state_dir"`
	}
	if _, err := toml.DecodeFile(path, &f); err != nil {
		return "", "", fmt.Errorf("config: %w", err)
	}
	return or(f.Socket, DefaultSocket), or(f.StateDir, DefaultStateDir), nil
}

// Errorf is a problem with key found after the file was loaded (on this
// machine, say), at the key's line like every other config error.
func (c *Config) Errorf(key, format string, args ...any) *Error {
	return &Error{File: c.File, Line: c.lines.line(key), Key: key, Msg: fmt.Sprintf(format, args...)}
}

// decodeError is a decoder error as an operator reads it: at the key, with
// its index in an array of tables, in TOML's words rather than Go's.
func decodeError(path, src string, err error) *Error {
	kl := scanLines(src)
	var pe toml.ParseError
	if errors.As(err, &pe) {
		// The library names the last key it finished, often the
		// table; the key written on the line is the one at fault.
		line := pe.Position.Line
		key := kl.at(line, pe.LastKey)
		msg := firstLine(pe.Message)
		lines := strings.Split(src, "\n")
		if line >= 1 && line <= len(lines) {
			if m := reKey.FindStringSubmatch(lines[line-1]); m != nil {
				msg = unquotedHint(strings.TrimSpace(lines[line-1][len(m[0]):]), msg)
			}
		}
		return &Error{File: path, Line: line, Key: key, Msg: msg}
	}
	// Type mismatches come as plain errors shaped
	// `toml: line N (last key "k"): message`.
	if m := reTypeErr.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{File: path, Line: line, Key: kl.at(line, m[2]), Msg: typeWords(m[3])}
	}
	return &Error{File: path, Line: 1, Msg: strings.TrimPrefix(err.Error(), "toml: ")}
}

var (
	reDuration = regexp.MustCompile(`^[0-9.]+\s*(ns|us|µs|ms|s|m|h)\b`)
	reBareWord = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.:/-]*\s*(#.*)?$`)
	reTypes    = regexp.MustCompile(`^incompatible types: TOML value has type (.+); destination has type (.+)$`)
)

// unquotedHint says what an unquoted value on a key's line should be.
func unquotedHint(value, msg string) string {
	switch {
	case reDuration.MatchString(value):
		return fmt.Sprintf("durations are strings: write it in quotes, like \"%s\"", strings.Fields(value)[0])
	case reBareWord.MatchString(value) && value != "true" && value != "false":
		return fmt.Sprintf("strings are written in quotes, like \"%s\"", strings.Fields(value)[0])
	}
	return msg
}

// typeWords turns the decoder's Go types into what the file holds and
// what the key wants.
func typeWords(msg string) string {
	m := reTypes.FindStringSubmatch(msg)
	if m == nil {
		return msg
	}
	words := func(t string) string {
		switch {
		case t == "string":
			return "a string"
		case t == "integer" || strings.HasPrefix(t, "int") || strings.HasPrefix(t, "uint"):
			return "a whole number"
		case t == "float" || strings.HasPrefix(t, "float"):
			return "a number with a fraction"
		case t == "boolean" || t == "bool":
			return "true or false"
		case strings.HasPrefix(t, "map["):
			return "a table"
		case t == "[]string":
			return "a list of strings"
		case strings.HasPrefix(t, "[]") || t == "slice" || t == "array":
			return "a list"
		case strings.Contains(t, "time") || strings.Contains(t, "date"):
			return "a date"
		}
		return t
	}
	return fmt.Sprintf("is %s; it must be %s", words(m[1]), words(m[2]))
}

var reTypeErr = regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]*)"\): (.*)$`)

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

type validator struct {
	path  string
	lines keyLines
	errs  Errors
}

func (v *validator) errf(key, format string, args ...any) {
	v.errs = append(v.errs, &Error{File: v.path, Line: v.lines.line(key), Key: key, Msg: fmt.Sprintf(format, args...)})
}

// ClusterID is the 32-bit id carried in frames: FNV-1a of the cluster name,
// so two pairs on one segment ignore each other without an extra setting.
func ClusterID(name string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(name))
	return h.Sum32()
}
