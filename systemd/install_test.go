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
	"syscall"
	"testing"
	"time"

	"github.com/hapair/hapair/lab"
	"github.com/hapair/hapair/lab/labtest"
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

// kill ends the container at once: SIGKILL to its init ends every process
// in its PID namespace (killing systemd-nspawn alone would leave them).
func (c *container) kill() {
	if c.leader > 1 {
		syscall.Kill(c.leader, syscall.SIGKILL)
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

// world is what the container tests share: the package, the lab pair and
// its config.
type world struct {
	deb    []byte
	p      *lab.Pair
	config string // hapair.toml for the pair, key at /etc/hapair/hapair.key
	key    []byte
}

func newWorld(t *testing.T) *world {
	t.Helper()
	if testing.Short() {
		t.Skip("boots containers")
	}
	need(t, "systemd-nspawn", "debootstrap", "nsenter", "make")
	dist := filepath.Join(t.TempDir(), "dist")
	if out, err := exec.Command("make", "-C", "..", "package", "VERSION=1.0.0", "DIST="+dist, "ARCHES=amd64").CombinedOutput(); err != nil {
		t.Fatalf("make package: %v\n%s", err, tail(string(out)))
	}
	w := &world{p: labtest.NewPair(t, lab.Options{})}
	w.deb, _ = os.ReadFile(filepath.Join(dist, "hapair_1.0.0_amd64.deb"))
	cfgPath, err := w.p.WriteConfig(t.TempDir(), lab.ConfigOptions{Lease: "3s"})
	if err != nil {
		t.Fatal(err)
	}
	src, _ := os.ReadFile(cfgPath)
	w.config = regexp.MustCompile(`key_file = "(.*)"`).ReplaceAllString(string(src), `key_file = "/etc/hapair/hapair.key"`)
	w.key, _ = os.ReadFile(filepath.Join(filepath.Dir(cfgPath), "hapair.key"))
	// nspawn keeps state in /run/systemd/nspawn, which must be a tmpfs.
	os.MkdirAll("/run/systemd/nspawn", 0o755)
	if exec.Command("mountpoint", "-q", "/run/systemd/nspawn").Run() != nil {
		if out, err := exec.Command("mount", "-t", "tmpfs", "tmpfs", "/run/systemd/nspawn").CombinedOutput(); err != nil {
			t.Fatalf("mount tmpfs: %v %s", err, out)
		}
	}
	return w
}

// boot starts a copy of the cached Debian tree with systemd as init, in
// the lab namespace of node ("a" or "b"), and waits until it is up.
func (w *world) boot(t *testing.T, node string) *container {
	t.Helper()
	root := filepath.Join(t.TempDir(), "root-"+node)
	if out, err := exec.Command("cp", "-a", rootfs(t), root).CombinedOutput(); err != nil {
		t.Fatalf("copy rootfs: %v\n%s", err, out)
	}
	os.WriteFile(filepath.Join(root, "var/cache/hapair.deb"), w.deb, 0o644)
	// nspawn grants CAP_NET_ADMIN only with --private-network, which a
	// given namespace path does not imply here: grant it, as the host that
	// runs hapair has it.
	nspawn := exec.Command("systemd-nspawn", "--register=no", "--keep-unit", "--quiet", "-D", root, "-b", "--console=pipe",
		"--machine=hapair-"+node, "--network-namespace-path=/run/netns/"+w.p.Node(node), "--capability=CAP_NET_ADMIN")
	wait, err := w.p.Start(nspawn)
	if err != nil {
		t.Fatal(err)
	}
	c := &container{t: t, root: root}
	t.Cleanup(func() {
		nspawn.Process.Signal(os.Interrupt) // poweroff
		if exited, _ := wait(15 * time.Second); !exited {
			c.kill()
			nspawn.Process.Kill()
			wait(5 * time.Second)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c.leader, err = leaderOf(nspawn.Process.Pid); err == nil {
			if out, _ := c.exec("systemctl", "is-system-running"); strings.Contains(out, "running") || strings.Contains(out, "degraded") {
				return c
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s did not boot: %v", node, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestInstallUnderSystemd(t *testing.T) {
	w := newWorld(t)
	p := w.p
	c := w.boot(t, "a")
	root := c.root

	// Install with apt, offline: iproute2 is in the image.
	c.must("apt-get", "install", "-y", "/var/cache/hapair.deb")
	if out, _ := c.exec("systemctl", "is-active", "hapaird"); strings.TrimSpace(out) != "inactive" {
		t.Errorf("installing started the daemon: %q", out)
	}
	c.must("getent", "group", "hapair")

	// The service the pair protects runs under a user of its own, as
	// most do. Issue 15.8: hapaird's sandbox (root without
	// CAP_SYS_PTRACE or CAP_DAC_OVERRIDE) must still see it, by its pid
	// file and by its program.
	os.WriteFile(filepath.Join(root, "etc/systemd/system/media.service"), []byte(`[Service]
User=nobody
RuntimeDirectory=media
ExecStart=/bin/sh -c 'echo $$$$ > /run/media/media.pid; exec sleep infinity'
`), 0o644)
	c.must("systemctl", "daemon-reload")
	c.must("systemctl", "start", "media")
	checks := `
[[check]]
name = "media-pid"
kind = "process"
target = "/run/media/media.pid"

[[check]]
name = "media-exe"
kind = "process"
target = "/usr/bin/sleep"
`

	// The operator's steps: a key, then the config, then start.
	c.must("hapairctl", "keygen")
	os.WriteFile(filepath.Join(root, "etc/hapair/hapair.toml"), []byte(w.config+checks), 0o640)
	// At boot the network may not be configured yet when the unit starts
	// (a slow DHCP server, a bond waiting for LACP: network-online.target
	// does not wait for every interface everywhere). --check refuses the
	// missing address and systemd tries again, and must go on trying past
	// its default start limit (5 starts in 10 s), which left the node down
	// for good, until the address is there.
	repl := lab.ReplAddr["a"].String()
	if out, err := exec.Command("ip", "-n", p.Node("a"), "addr", "del", repl, "dev", lab.Repl).CombinedOutput(); err != nil {
		t.Fatalf("ip addr del: %v\n%s", err, out)
	}
	c.must("systemctl", "start", "--no-block", "hapaird")
	c.waitFor("more restarts than systemd's default start limit allows", 60*time.Second, func() bool {
		n, _ := strconv.Atoi(c.show("NRestarts")["NRestarts"])
		return n > 5
	})
	if out, err := exec.Command("ip", "-n", p.Node("a"), "addr", "add", repl, "dev", lab.Repl).CombinedOutput(); err != nil {
		t.Fatalf("ip addr add: %v\n%s", err, out)
	}
	c.waitFor("READY", 15*time.Second, func() bool {
		s := c.show("ActiveState,SubState,StatusText")
		return s["ActiveState"] == "active" && s["SubState"] == "running" && strings.HasPrefix(s["StatusText"], "role ")
	})
	// Alone, the preferred node becomes active after its start-up window.
	c.waitFor("the VIP on node a", 10*time.Second, func() bool { return p.Holds("a", lab.VIP.Addr()) })
	if out := c.must("hapairctl", "status"); !strings.Contains(out, "a: ACTIVE") {
		t.Errorf("hapairctl status in the container:\n%s", out)
	}
	var checked string
	defer func() {
		if t.Failed() {
			t.Logf("checks as hapairctl status said last:\n%s", checked)
		}
	}()
	c.waitFor("both checks of the service under its own user healthy", 10*time.Second, func() bool {
		checked, _ = c.exec("hapairctl", "status")
		return strings.Count(checked, "(process): ok") == 2
	})

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

	// Every process of the unit killed at once (systemctl kill, or the
	// OOM killer taking the cgroup): nothing of hapaird's is left to let
	// the VIP go or hand it over, and ExecStopPost's --cleanup removes it
	// before systemd starts the daemon again; left, it would stay until
	// its lease ran out, beside the standby's. The watchdog's kill above
	// proves nothing of this: the frozen agent's core had fenced the node,
	// and its VIP was gone before the kill.
	c.waitFor("the VIP back after the restart", 10*time.Second, func() bool { return p.Holds("a", lab.VIP.Addr()) })
	removed := func() int {
		out, _ := c.exec("journalctl", "-u", "hapaird", "--no-pager", "-o", "cat")
		return strings.Count(out, "removed "+lab.VIP.Addr().String())
	}
	before = c.show("MainPID,NRestarts")
	cleaned := removed()
	c.must("systemctl", "kill", "--signal=SIGKILL", "hapaird")
	c.waitFor("a restart after the kill", 20*time.Second, func() bool {
		s := c.show("MainPID,NRestarts,SubState")
		return s["NRestarts"] != before["NRestarts"] && s["MainPID"] != before["MainPID"] && s["SubState"] == "running"
	})
	c.waitFor("ExecStopPost's word that it removed the killed daemon's VIP", 5*time.Second, func() bool { return removed() > cleaned })

	// The same kill with a file that is not TOML at all (a merge
	// conflict pushed by configuration management while the daemon ran):
	// nothing in it says where the daemon recorded its VIPs, and
	// ExecStopPost's --cleanup finds the record in the unit's state
	// directory, which systemd names to it. The restarts fail on the file
	// until it is mended.
	c.waitFor("the VIP back after the restart", 10*time.Second, func() bool { return p.Holds("a", lab.VIP.Addr()) })
	conf := filepath.Join(root, "etc/hapair/hapair.toml")
	good, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	recorded := func() int {
		out, _ := c.exec("journalctl", "-u", "hapaird", "--no-pager", "-o", "cat")
		return strings.Count(out, "(recorded in /var/lib/hapair at the daemon's start)")
	}
	cleaned = recorded()
	if err := os.WriteFile(conf, []byte("<<<<<<< HEAD\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	before = c.show("MainPID")
	c.must("systemctl", "kill", "--signal=SIGKILL", "hapaird")
	c.waitFor("ExecStopPost's word that it removed the VIP recorded in the unit's state directory", 10*time.Second, func() bool { return recorded() > cleaned })
	if p.Holds("a", lab.VIP.Addr()) {
		t.Error("the killed daemon's VIP still on the node after ExecStopPost with a file that is not TOML")
	}
	if err := os.WriteFile(conf, good, 0o640); err != nil {
		t.Fatal(err)
	}
	c.waitFor("a restart with the file mended", 20*time.Second, func() bool {
		s := c.show("MainPID,SubState")
		return s["MainPID"] != before["MainPID"] && s["MainPID"] != "0" && s["SubState"] == "running"
	})

	// Stop: ExecStopPost's --cleanup leaves no VIP.
	c.waitFor("the VIP back after the restart", 10*time.Second, func() bool { return p.Holds("a", lab.VIP.Addr()) })
	c.must("systemctl", "stop", "hapaird")
	if p.Holds("a", lab.VIP.Addr()) {
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

// TestPairOfContainersFailsOver runs the pair the way operators do: two
// booted systems, each with the package installed and the unit enabled,
// the same config and key on both; the active is stopped with systemctl
// and hands over, starts again as the standby; then the active system is
// powered off hard and the other takes the VIP.
func TestPairOfContainersFailsOver(t *testing.T) {
	w := newWorld(t)
	nodes := map[string]*container{}
	for _, n := range []string{"a", "b"} {
		c := w.boot(t, n)
		c.must("apt-get", "install", "-y", "/var/cache/hapair.deb")
		os.WriteFile(filepath.Join(c.root, "etc/hapair/hapair.key"), w.key, 0o600)
		os.WriteFile(filepath.Join(c.root, "etc/hapair/hapair.toml"), []byte(w.config), 0o640)
		c.must("systemctl", "enable", "--now", "hapaird")
		nodes[n] = c
	}
	a := nodes["a"]
	a.waitFor("a active with the VIP", 15*time.Second, func() bool {
		out, _ := a.exec("hapairctl", "status")
		return strings.Contains(out, "a: ACTIVE") && strings.Contains(out, "peer b: STANDBY") && w.p.Holds("a", lab.VIP.Addr())
	})
	if err := lab.Reach(w.p.Client, lab.VIP.Addr(), 2*time.Second); err != nil {
		t.Fatal(err)
	}
	b := nodes["b"]
	upgradeOnAFileTheNewVersionRefuses(t, w, b)
	upgradeBothAtOnce(t, w, a, b)
	// systemctl stop signals every process of the unit (the heartbeat
	// core too): still a handover, not a loss that waits out the dead
	// interval; then a starts again as the standby.
	a.must("systemctl", "stop", "hapaird")
	b.waitFor("b active after a's systemctl stop", 5*time.Second, func() bool {
		out, _ := b.exec("hapairctl", "status")
		return strings.Contains(out, "b: ACTIVE") && w.p.Holds("b", lab.VIP.Addr())
	})
	if out := b.must("hapairctl", "status"); !strings.Contains(out, "-> ACTIVE at") || !strings.Contains(out, "peer leaving") {
		t.Errorf("b did not take over by a handover:\n%s", out)
	}
	if s := a.show("ActiveState,Result"); s["ActiveState"] != "inactive" || s["Result"] != "success" || w.p.Holds("a", lab.VIP.Addr()) {
		t.Errorf("a after systemctl stop: %v, holds the VIP: %v", s, w.p.Holds("a", lab.VIP.Addr()))
	}
	a.must("systemctl", "start", "hapaird")
	a.waitFor("a back as the standby", 15*time.Second, func() bool {
		out, _ := a.exec("hapairctl", "status")
		return strings.Contains(out, "a: STANDBY") && strings.Contains(out, "peer b: ACTIVE")
	})
	// Host loss: b's links cut and its whole system killed.
	if err := w.p.Isolate("b", false); err != nil {
		t.Fatal(err)
	}
	lost := time.Now()
	b.kill()
	a.waitFor("a to take the VIP", 5*time.Second, func() bool { return w.p.Holds("a", lab.VIP.Addr()) })
	t.Logf("VIP on a %v after b's host was lost", time.Since(lost))
	if err := lab.Reach(w.p.Client, lab.VIP.Addr(), 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if out := a.must("hapairctl", "status"); !strings.Contains(out, "a: ACTIVE") {
		t.Errorf("a's status:\n%s", out)
	}
}

// upgradeOnAFileTheNewVersionRefuses upgrades the standby b while its
// file holds a mistake its running daemon read before it was made (an
// edit not yet applied, or a rule the new version adds): restarted, the
// standby would not come back. The upgrade leaves it running and says why.
func upgradeOnAFileTheNewVersionRefuses(t *testing.T, w *world, b *container) {
	t.Helper()
	path := filepath.Join(b.root, "etc/hapair/hapair.toml")
	if err := os.WriteFile(path, []byte(w.config+"\nstray_key = true\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	before := b.show("MainPID")["MainPID"]
	out := b.must("dpkg", "-i", "/var/cache/hapair.deb")
	for _, want := range []string{"the new hapaird refuses /etc/hapair/hapair.toml", "stray_key", "(STANDBY) was not restarted"} {
		if !strings.Contains(out, want) {
			t.Errorf("the upgrade's output lacks %q:\n%s", want, out)
		}
	}
	if pid := b.show("MainPID")["MainPID"]; pid != before {
		t.Errorf("the upgrade restarted the standby on a file the new version refuses (pid %s, was %s)", pid, before)
	}
	if st := b.must("hapairctl", "status"); !strings.Contains(st, "b: STANDBY") {
		t.Errorf("b after the upgrade:\n%s", st)
	}
	if err := os.WriteFile(path, []byte(w.config), 0o640); err != nil {
		t.Fatal(err)
	}
}

// upgradeBothAtOnce installs the package again on both nodes at the same
// moment, as configuration management upgrades a fleet, with a active and
// b its standby. The standby's daemon is restarted on the new files and
// comes back as the standby; the active's is not (restarted while its
// standby restarts too, the pair would have no holder and lose every
// session), so the VIP never leaves a, and the upgrade's output says how
// to finish it.
func upgradeBothAtOnce(t *testing.T, w *world, a, b *container) {
	t.Helper()
	before := map[*container]string{a: a.show("MainPID")["MainPID"], b: b.show("MainPID")["MainPID"]}
	stop := make(chan struct{})
	left := make(chan time.Time, 1)
	go func() {
		defer close(left)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if !w.p.Holds("a", lab.VIP.Addr()) {
				left <- time.Now()
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	outs := make(chan string, 2)
	for _, c := range []*container{a, b} {
		go func() {
			out, err := c.exec("dpkg", "-i", "/var/cache/hapair.deb")
			if err != nil {
				out = fmt.Sprintf("dpkg -i: %v\n%s", err, out)
			}
			outs <- out
		}()
	}
	var out [2]string
	out[0], out[1] = <-outs, <-outs
	for _, o := range out {
		if strings.HasPrefix(o, "dpkg -i: ") {
			t.Fatal(o)
		}
	}
	b.waitFor("b's daemon restarted by the upgrade and back as the standby", 15*time.Second, func() bool {
		st, _ := b.exec("hapairctl", "status")
		return b.show("MainPID")["MainPID"] != before[b] && strings.Contains(st, "b: STANDBY") && strings.Contains(st, "peer a: ACTIVE")
	})
	close(stop)
	if at, ok := <-left; ok {
		t.Errorf("the VIP left the active a during the upgrade of both nodes (at %v)", at.Format(time.StampMicro))
	}
	if pid := a.show("MainPID")["MainPID"]; pid != before[a] {
		t.Errorf("the upgrade restarted the active's daemon (pid %s, was %s)", pid, before[a])
	}
	if !strings.Contains(out[0]+out[1], "hapairctl switchover && systemctl restart hapaird") {
		t.Errorf("the active's upgrade does not say how to finish it:\n%s\n%s", out[0], out[1])
	}
	if err := lab.Reach(w.p.Client, lab.VIP.Addr(), 2*time.Second); err != nil {
		t.Fatal(err)
	}
}
