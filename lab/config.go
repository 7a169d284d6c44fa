package lab

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
)

// ConfigOptions shape the hapair.toml WriteConfig makes for a pair.
type ConfigOptions struct {
	Profile  string // "default", "fast" or "turbo"; empty: default
	SyncMode string // empty: async
	Extra    string // appended verbatim: checks, hooks, more VIPs
	Lease    string // empty: "4s"
	// Interval and Dead, when set, replace the profile's timers;
	// HoldDown, when set, is hold_down.
	Interval, Dead, HoldDown string
	// Media adds a critical process check on a stand-in media server per
	// node (a sleep the Cluster starts), for process-death scenarios.
	Media bool
}

// WriteConfig writes a fresh key and a hapair.toml for this pair into dir
// and returns the config's path. Nodes are "a" and "b", a preferred.
func (p *Pair) WriteConfig(dir string, o ConfigOptions) (string, error) {
	key := make([]byte, 32)
	rand.Read(key)
	keyPath := filepath.Join(dir, "hapair.key")
	if err := os.WriteFile(keyPath, key, 0o600); err != nil {
		return "", err
	}
	if o.Profile == "" {
		o.Profile = "default"
	}
	if o.SyncMode == "" {
		o.SyncMode = "async"
	}
	if o.Lease == "" {
		o.Lease = "4s"
	}
	if o.Media {
		o.Extra += fmt.Sprintf(`
[[check]]
name = "media"
kind = "process"
target = %q
interval = "200ms"
timeout = "100ms"
rise = 2
fall = 1
`, filepath.Join(dir, "media-{node}.pid"))
	}
	timers := ""
	if o.Interval != "" {
		timers += fmt.Sprintf("interval = %q\n", o.Interval)
	}
	if o.Dead != "" {
		timers += fmt.Sprintf("dead_interval = %q\n", o.Dead)
	}
	if o.HoldDown != "" {
		timers += fmt.Sprintf("hold_down = %q\n", o.HoldDown)
	}
	src := fmt.Sprintf(`# hapair lab pair %[1]s
cluster = "lab-%[1]s"
key_file = %[2]q
primary = "a"
profile = %[3]q
sync_mode = %[4]q
lease = %[5]q
%[14]s
[[node]]
name = "a"
heartbeat_interface = %[6]q
public_interface = %[7]q
public_address = %[8]q
replication_address = %[9]q

[[node]]
name = "b"
heartbeat_interface = %[6]q
public_interface = %[7]q
public_address = %[10]q
replication_address = %[11]q

[[vip]]
address = %[12]q
%[13]s`, p.Tag, keyPath, o.Profile, o.SyncMode, o.Lease, Heartbeat, Public,
		PublicAddr["a"].String(), ReplAddr["a"].Addr().String(),
		PublicAddr["b"].String(), ReplAddr["b"].Addr().String(), VIP.String(), o.Extra, timers)
	path := filepath.Join(dir, "hapair.toml")
	return path, os.WriteFile(path, []byte(src), 0o644)
}
