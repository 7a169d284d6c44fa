package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hapair/hapair/config"
	"github.com/hapair/hapair/lab"
)

// Issue 15.1's promise, for ports: --check finds a port another program
// holds, which the daemon would fail on at its first bind, and names the
// key that sets it. It binds each as the daemon does and lets it go at
// once; while the node's own daemon runs, its ports are not another
// program's, and --check says it did not try them.
func TestCheckFindsAPortInUse(t *testing.T) {
	const metrics = "127.0.0.1:9405"
	c := cluster(t, lab.ConfigOptions{Extra: "\n[metrics]\nlisten = \"" + metrics + "\"\n"})
	cfg, err := config.Load(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	ns, repl := c.Node("a"), lab.ReplAddr["a"].Addr()
	check := func() (string, int) {
		t.Helper()
		out, err := lab.Command(ns, daemonBin, "--check", "-c", c.Config, "--node", "a",
			"--state-dir", c.StateDir("a"), "--socket", c.Socket("a")).CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	if out, rc := check(); rc != 0 {
		t.Fatalf("--check with every port free: exit %d\n%s", rc, out)
	}
	for _, held := range []struct {
		network, key string
		at           netip.AddrPort
	}{
		{"tcp", "replication_port", netip.AddrPortFrom(repl, uint16(cfg.ReplicationPort))},
		{"udp", "heartbeat_port", netip.AddrPortFrom(repl, uint16(cfg.HeartbeatPort))},
		{"tcp", "metrics.listen", netip.MustParseAddrPort(metrics)},
	} {
		var l io.Closer
		if err := lab.Do(ns, func() (err error) {
			if held.network == "udp" {
				l, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(held.at))
			} else {
				l, err = net.Listen("tcp", held.at.String())
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		out, rc := check()
		want := fmt.Sprintf("%s: %s/%s is in use", held.key, held.at, held.network)
		if rc != 1 || !strings.Contains(out, want) {
			t.Errorf("--check with %s/%s held by another program: exit %d, want 1 and %q:\n%s", held.at, held.network, rc, want, out)
		}
		if held.key == "replication_port" {
			// What --check stands for: the daemon fails on it.
			if err := c.Start("a"); err != nil {
				t.Fatal(err)
			}
			var ee *exec.ExitError
			if err := c.WaitExit("a", 10*time.Second); !errors.As(err, &ee) {
				t.Errorf("hapaird with %s held: %v, want it to fail at its start", held.at, err)
			}
		}
		l.Close()
	}
	if err := c.Start("a"); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitRole("a", "ACTIVE", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	out, rc := check()
	if rc != 0 || !strings.Contains(out, "hapaird runs for this node") {
		t.Errorf("--check beside the node's own daemon: exit %d, want 0 and a word that its ports were not tried:\n%s", rc, out)
	}
}

// A state directory the daemon may not write, as a state_dir outside the
// packaged unit's own directories is under its ProtectSystem=strict (where
// --check runs as ExecStartPre, in the same sandbox), or one whose path
// goes through a file: --check finds it, as the daemon would fail on it.
// The read-only file system is a bind mount in a mount namespace of the
// check's own.
func TestCheckFindsAStateDirItCannotWrite(t *testing.T) {
	c := cluster(t, lab.ConfigOptions{})
	ro := t.TempDir()
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ state, want string }{
		{filepath.Join(ro, "state"), fmt.Sprintf("state_dir: %s/state cannot be written: %s is on a read-only file system", ro, ro)},
		{filepath.Join(file, "state"), fmt.Sprintf("state_dir: %s/state: stat %s/state: not a directory", file, file)},
	} {
		script := `mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"`
		out, err := lab.Command(c.Node("a"), "unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", ro,
			daemonBin, "--check", "-c", c.Config, "--node", "a", "--state-dir", tc.state, "--socket", c.Socket("a")).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), tc.want) {
			t.Errorf("--check with state_dir %s: %v, want exit 1 and %q:\n%s", tc.state, err, tc.want, out)
		}
	}
}
