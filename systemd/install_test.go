// Package systemd holds hapair's unit and sysusers files. This test proves
// them under a real systemd: a Debian system booted with systemd-nspawn
// inside a lab namespace installs the .deb, runs hapaird as a service, and
// checks readiness, the watchdog, stop with --cleanup, and purge.
package systemd

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hapair/hapair/internal/labnet"
)

const rootfsCache = "/var/cache/hapair-test/rootfs-bookworm"

func need(t *testing.T, cmds ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("booting a container needs root")
	}
	for _, c := range cmds {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("%s is not installed (.ci/run installs it)", c)
		}
	}
}

// mirror is the Debian mirror this machine's apt uses.
func mirror() string {
	for _, f := range append([]string{"/etc/apt/sources.list"}, glob("/etc/apt/sources.list.d/*")...) {
		b, _ := os.ReadFile(f)
		if m := regexp.MustCompile(`(?m)^(?:URIs:\s*|deb\s+(?:\[[^\]]*\]\s+)?)(https?://\S+)`).FindStringSubmatch(string(b)); m != nil {
			return m[1]
		}
	}
	return "http://deb.debian.org/debian"
}

func glob(p string) []string { m, _ := filepath.Glob(p); return m }

// rootfs returns the cached minimal Debian tree, building it once.
func rootfs(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(filepath.Join(rootfsCache, "usr/lib/systemd/systemd")); err == nil {
		return rootfsCache
	}
	tmp := rootfsCache + ".tmp"
	os.RemoveAll(tmp)
	os.MkdirAll(filepath.Dir(rootfsCache), 0o755)
	out, err := exec.Command("debootstrap", "--variant=minbase", "--include=systemd,systemd-sysv,dbus,iproute2", "bookworm", tmp, mirror()).CombinedOutput()
	if err != nil {
		os.RemoveAll(tmp)
		t.Fatalf("debootstrap: %v\n%s", err, tail(string(out)))
	}
	if err := os.Rename(tmp, rootfsCache); err != nil {
		t.Fatal(err)
	}
	return rootfsCache
}

func tail(s string) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(l[max(len(l)-20, 0):], "\n")
}

type container struct {
	t      *testing.T
	root   string
	leader int
}

// exec runs a command inside the booted container.
func (c *container) exec(args ...string) (string, error) {
	cmd := exec.Command("nsenter", append([]string{"-t", strconv.Itoa(c.leader), "-a", "--"}, args...)...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND=noninteractive", "LANG=C"}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (c *container) must(args ...string) string {
	c.t.Helper()
	out, err := c.exec(args...)
	if err != nil {
		c.t.Fatalf("in the container: %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (c *container) show(props string) map[string]string {
	out, _ := c.exec("systemctl", "show", "-p", props, "hapaird.service")
	m := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			m[k] = v
		}
	}
	return m
}

func (c *container) waitFor(what string, within time.Duration, ok func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			out, _ := c.exec("journalctl", "-u", "hapaird", "--no-pager", "-n", "40")
			c.t.Fatalf("timed out waiting for %s; journal:\n%s", what, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// leaderOf finds the container's init: the child of systemd-nspawn.
func leaderOf(nspawn int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", nspawn, nspawn))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, errors.New("no child yet")
	}
	return strconv.Atoi(f[0])
}

func TestInstallUnderSystemd(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a container")
	}
	need(t, "systemd-nspawn", "debootstrap", "nsenter", "make")
	base := rootfs(t)

	work := t.TempDir()
	dist := filepath.Join(work, "dist")
	if out, err := exec.Command("make", "-C", "..", "package", "VERSION=1.0.0", "DIST="+dist, "ARCHES=amd64").CombinedOutput(); err != nil {
		t.Fatalf("make package: %v\n%s", err, tail(string(out)))
	}
	root := filepath.Join(work, "root")
	if out, err := exec.Command("cp", "-a", base, root).CombinedOutput(); err != nil {
		t.Fatalf("copy rootfs: %v\n%s", err, out)
	}
	deb, _ := os.ReadFile(filepath.Join(dist, "hapair_1.0.0_amd64.deb"))
	os.WriteFile(filepath.Join(root, "var/cache/hapair.deb"), deb, 0o644)

	// nspawn keeps state in /run/systemd/nspawn, which must be a tmpfs.
	os.MkdirAll("/run/systemd/nspawn", 0o755)
	if exec.Command("mountpoint", "-q", "/run/systemd/nspawn").Run() != nil {
		if out, err := exec.Command("mount", "-t", "tmpfs", "tmpfs", "/run/systemd/nspawn").CombinedOutput(); err != nil {
			t.Fatalf("mount tmpfs: %v %s", err, out)
		}
	}

	p := labnet.NewT(t, labnet.Options{})
	cfgDir := t.TempDir()
	cfgPath, err := p.WriteConfig(cfgDir, labnet.ConfigOptions{Lease: "3s"})
	if err != nil {
		t.Fatal(err)
	}
	// nspawn grants CAP_NET_ADMIN only with --private-network, which a
	// given namespace path does not imply here: grant it, as the host that
	// runs hapair has it.
	nspawn := exec.Command("systemd-nspawn", "--register=no", "--keep-unit", "--quiet", "-D", root, "-b", "--console=pipe",
		"--network-namespace-path=/run/netns/"+p.A, "--capability=CAP_NET_ADMIN")
	nspawn.Stdout, nspawn.Stderr = nil, nil
	wait, err := p.Start(nspawn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		nspawn.Process.Signal(os.Interrupt) // poweroff
		if exited, _ := wait(15 * time.Second); !exited {
			nspawn.Process.Kill()
			wait(5 * time.Second)
		}
	})
	c := &container{t: t, root: root}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c.leader, err = leaderOf(nspawn.Process.Pid); err == nil {
			if out, _ := c.exec("systemctl", "is-system-running"); strings.Contains(out, "running") || strings.Contains(out, "degraded") {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("container did not boot: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Install with apt, offline: iproute2 is in the image.
	c.must("apt-get", "install", "-y", "/var/cache/hapair.deb")
	if out, _ := c.exec("systemctl", "is-active", "hapaird"); strings.TrimSpace(out) != "inactive" {
		t.Errorf("installing started the daemon: %q", out)
	}
	c.must("getent", "group", "hapair")

	// The operator's steps: a key, then the config, then start.
	c.must("hapairctl", "keygen")
	src, _ := os.ReadFile(cfgPath)
	cfg := regexp.MustCompile(`key_file = ".*"`).ReplaceAllString(string(src), `key_file = "/etc/hapair/hapair.key"`)
	os.WriteFile(filepath.Join(root, "etc/hapair/hapair.toml"), []byte(cfg), 0o640)
	c.must("systemctl", "start", "hapaird")
	c.waitFor("READY", 15*time.Second, func() bool {
		s := c.show("ActiveState,SubState,StatusText")
		return s["ActiveState"] == "active" && s["SubState"] == "running" && strings.HasPrefix(s["StatusText"], "role ")
	})
	// Alone, the preferred node becomes active after its start-up window.
	c.waitFor("the VIP on node a", 10*time.Second, func() bool { return p.Holds("a", labnet.VIP.Addr()) })
	if out := c.must("hapairctl", "status"); !strings.Contains(out, "a: ACTIVE") {
		t.Errorf("hapairctl status in the container:\n%s", out)
	}

	// A frozen daemon is killed and restarted by the watchdog.
	before := c.show("MainPID,NRestarts")
	c.must("systemctl", "kill", "--signal=SIGSTOP", "--kill-whom=main", "hapaird")
	c.waitFor("a watchdog restart", 20*time.Second, func() bool {
		s := c.show("MainPID,NRestarts,ActiveState,SubState")
		return s["NRestarts"] != before["NRestarts"] && s["MainPID"] != before["MainPID"] && s["SubState"] == "running"
	})
	if out, _ := c.exec("journalctl", "-u", "hapaird", "--no-pager"); !strings.Contains(out, "Watchdog timeout") {
		t.Errorf("journal does not show the watchdog:\n%s", tail(out))
	}

	// Stop: ExecStopPost's --cleanup leaves no VIP.
	c.waitFor("the VIP back after the restart", 10*time.Second, func() bool { return p.Holds("a", labnet.VIP.Addr()) })
	c.must("systemctl", "stop", "hapaird")
	if p.Holds("a", labnet.VIP.Addr()) {
		t.Error("VIP still on the node after systemctl stop")
	}

	// Purge removes everything the package and the daemon made.
	c.must("apt-get", "purge", "-y", "hapair")
	for _, path := range []string{"etc/hapair", "var/lib/hapair", "usr/sbin/hapaird", "usr/bin/hapairctl", "lib/systemd/system/hapaird.service"} {
		if _, err := os.Stat(filepath.Join(root, path)); err == nil {
			t.Errorf("/%s left after purge", path)
		}
	}
}
