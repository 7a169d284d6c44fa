// Command hapaird is the hapair failover daemon: one runs on each node of a
// 1+1 pair (design.md section 1). It holds no logic of its own: it reads
// the config and its flags, has package node build and run the node, and
// handles what belongs to a process: signals, systemd's notifications,
// and the heartbeat core's child process.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/hapair/hapair/config"
	"github.com/hapair/hapair/heartbeat"
	"github.com/hapair/hapair/node"
)

// version is stamped by the build (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	if os.Getenv(coreEnv) == "1" {
		os.Exit(runCore())
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type options struct {
	config   string
	node     string
	stateDir string
	socket   string
	check    bool
	fileOnly bool
	cleanup  bool
	version  bool
}

func run(args []string, stdout, stderr io.Writer) int {
	var o options
	fs := flags(&o, stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	// "hapaird version" or "hapaird help" must not start a daemon.
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "hapaird: unexpected argument %q: hapaird takes flags only (hapaird --help)\n", fs.Arg(0))
		return 2
	}
	if o.fileOnly && !o.check {
		fmt.Fprintln(stderr, "hapaird: --file-only goes with --check")
		return 2
	}
	if o.version {
		fmt.Fprintln(stdout, "hapaird", version)
		return 0
	}
	cfg, err := config.Load(o.config)
	if err != nil {
		fmt.Fprintln(stderr, err)
		if o.cleanup {
			cleanupRecorded(&o, stdout, stderr)
		}
		return 1
	}
	if o.stateDir != "" {
		cfg.StateDir = o.stateDir
	}
	if o.socket != "" {
		cfg.Socket = o.socket
	}
	self, rule, err := findSelf(cfg, o.node)
	if err != nil {
		fmt.Fprintln(stderr, err)
		if o.cleanup {
			cleanupRecorded(&o, stdout, stderr)
		}
		return 1
	}
	switch {
	case o.check:
		// The file is valid; what this machine lacks would stop the
		// daemon all the same.
		var errs config.Errors
		if !o.fileOnly {
			errs = node.Preflight(cfg, self)
		}
		summary(stdout, stderr, cfg, self, rule, len(errs) == 0, !o.fileOnly)
		if len(errs) > 0 {
			fmt.Fprintln(stderr, errs)
			fmt.Fprintf(stderr, "hapaird would not start on this machine as %s\n", self.Name)
			return 1
		}
		return 0
	case o.cleanup:
		return cleanup(cfg, self, stdout, stderr)
	}
	return daemon(cfg, self, rule, stderr)
}

// flags are hapaird's flags, bound to o; the man page's test reads them
// too.
func flags(o *options, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("hapaird", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.config, "c", "/etc/hapair/hapair.toml", "configuration `file`")
	fs.StringVar(&o.config, "config", "/etc/hapair/hapair.toml", "configuration `file` (as -c)")
	fs.StringVar(&o.node, "node", "", "this node's `name` (default: by hostname, then by local addresses)")
	fs.BoolVar(&o.check, "check", false, "validate the configuration and what this machine has for it (interfaces, ports, TLS files, programs), print what would run, and exit")
	fs.BoolVar(&o.fileOnly, "file-only", false, "with --check: validate the file alone, as on a machine other than the node")
	fs.BoolVar(&o.cleanup, "cleanup", false, "release every VIP this node holds and exit (for ExecStopPost)")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	fs.StringVar(&o.stateDir, "state-dir", "", "override the config's state_dir (lock file, boot generation)")
	fs.StringVar(&o.socket, "socket", "", "override the config's socket")
	return fs
}

func findSelf(cfg *config.Config, flagNode string) (*config.Node, string, error) {
	host, _ := os.Hostname()
	return cfg.FindSelf(flagNode, host, localAddrs())
}

func localAddrs() []netip.Addr {
	addrs, _ := net.InterfaceAddrs()
	var out []netip.Addr
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(ipn.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out
}

// summary is --check's one screen: what this node would do. With
// onNode false (--file-only) it says nothing of this machine: its kernel,
// links, routes and daemon are not the node's, and a warning drawn from
// them would mislead the operator checking a file on a workstation.
func summary(w, warn io.Writer, cfg *config.Config, self *config.Node, rule string, machineOK, onNode bool) {
	peer := cfg.Peer(self)
	if machineOK {
		fmt.Fprintf(w, "%s: ok\n", cfg.File)
	} else {
		fmt.Fprintf(w, "%s: valid, but this machine lacks what it names (below)\n", cfg.File)
	}
	fmt.Fprintf(w, "this node:   %s (found by %s), peer %s; preferred active: %s\n", self.Name, rule, peer.Name, cfg.Primary)
	// AddrPort brackets an IPv6 address, which "%s:%d" would run into
	// its port.
	port := func(a netip.Addr, p int) netip.AddrPort { return netip.AddrPortFrom(a, uint16(p)) }
	fmt.Fprintf(w, "heartbeat:   raw Ethernet on %s and UDP %s -> %s, every %v, peer lost after %v (profile %s)\n",
		self.HeartbeatInterface, port(self.ReplicationAddress, cfg.HeartbeatPort), port(peer.ReplicationAddress, cfg.HeartbeatPort), cfg.Interval, cfg.DeadInterval, cfg.Profile)
	tlsNote := "authenticated with the shared key"
	if cfg.TLSCert != "" {
		tlsNote += ", inside TLS (" + config.ForNode(cfg.TLSCert, self) + ")"
	}
	fmt.Fprintf(w, "replication: TCP %s, mode %s, %s\n", port(self.ReplicationAddress, cfg.ReplicationPort), cfg.SyncMode, tlsNote)
	var vips []string
	for _, v := range cfg.VIPs {
		vips = append(vips, v.Prefix.String()+" on "+v.VIPInterface(self))
	}
	fmt.Fprintf(w, "VIPs:        %s (lease %v, %d announcements %v apart)\n", strings.Join(vips, ", "), cfg.Lease, cfg.GARPCount, cfg.GARPSpacing)
	fmt.Fprintf(w, "keys:        %d, newest first, fingerprints %s\n", len(cfg.Keys), heartbeat.FormatFingerprints(heartbeat.Fingerprints(cfg.Keys)))
	fmt.Fprintf(w, "operators:   %s (root only)\n", config.AdminSocket(cfg.Socket))
	var warnings []string
	if onNode {
		if err := node.CanRealTime(); err != nil && cfg.DeadInterval < config.Profiles["default"].Dead {
			warnings = append(warnings, fmt.Sprintf("profile %s (dead interval %v) without real-time scheduling for the heartbeat core (%v): a loaded node may take its own stall for the peer's silence", cfg.Profile, cfg.DeadInterval, err))
		}
		if msg := node.PreemptionWarning(cfg); msg != "" {
			warnings = append(warnings, msg)
		}
		warnings = append(warnings, node.CarrierWarnings(cfg, self)...)
		warnings = append(warnings, node.PathWarnings(cfg, self)...)
	}
	// The certificates' dates come from files the configuration names:
	// where they are at hand, they are the node's.
	warnings = append(warnings, node.TLSWarnings(cfg, self, time.Now())...)
	for _, msg := range warnings {
		fmt.Fprintf(warn, "warning: %s\n", msg)
	}
	fmt.Fprintf(w, "state:       %s, socket %s\n", cfg.StateDir, cfg.Socket)
	if onNode {
		switch running, err := node.DaemonRunning(cfg); {
		case err != nil:
			fmt.Fprintf(w, "ports:       not tried: cannot tell whether hapaird runs for this node (%v)\n", err)
		case running:
			fmt.Fprintf(w, "ports:       not tried: hapaird runs for this node, and they are its own\n")
		}
	}
	if len(cfg.Checks) > 0 {
		fmt.Fprintf(w, "checks:      %d\n", len(cfg.Checks))
	}
}
