package main

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hapair/hapair/config"
	"github.com/hapair/hapair/lab"
	hanode "github.com/hapair/hapair/node" // node names a pair's node here
)

// hapair runs two real hapaird on a fresh pair.
type hapair struct {
	p   *lab.Pair
	c   *lab.Cluster
	dir string
}

// profileLabel names hapair at a profile with its timers, as the tables
// print it: "hapair fast (9ms/27ms)".
func profileLabel(profile string) string {
	t := config.Profiles[profile]
	return fmt.Sprintf("hapair %s (%v/%v)", profile, t.Interval, t.Dead)
}

// vipCount is how many VIPs each contender floats in the failover table
// (--vips): a load balancer's pair carries tens of them.
var vipCount = 1

// probeFirst makes the client probe the VIP each contender adds first
// (--probe-first), not the one it adds last.
var probeFirst bool

// probedVIP is the VIP the client probes and the VIP column times.
func probedVIP() netip.Prefix {
	if probeFirst {
		return benchVIPs()[0]
	}
	return benchVIPs()[vipCount-1]
}

// benchVIPs are the VIPs the contenders float: lab.VIP and the addresses
// after it.
func benchVIPs() []netip.Prefix {
	vips := []netip.Prefix{lab.VIP}
	for i := 1; i < vipCount; i++ {
		a4 := lab.VIP.Addr().As4()
		a4[3] += byte(i) // at most .227
		vips = append(vips, netip.PrefixFrom(netip.AddrFrom4(a4), lab.VIP.Bits()))
	}
	return vips
}

func newHapair(bin, profile string) (contender, error) {
	p, err := lab.New(lab.Options{})
	if err != nil {
		return nil, err
	}
	dir, _ := os.MkdirTemp("", "hapair-bench-pair-")
	var extra strings.Builder
	for _, v := range benchVIPs()[1:] {
		fmt.Fprintf(&extra, "\n[[vip]]\naddress = %q\n", v)
	}
	p.Probe = probedVIP().Addr()
	// The shipped VIP lease, not the lab's shorter one (tests wait out
	// leases): the lease sets how often an idle active renews its VIPs.
	c, err := p.NewCluster(bin, dir, lab.ConfigOptions{Profile: profile, Media: true, Lease: config.DefaultLease.String(), Extra: extra.String()})
	if err != nil {
		p.Close()
		return nil, err
	}
	h := &hapair{p: p, c: c, dir: dir}
	if _, err := c.Settle(10 * time.Second); err != nil {
		h.close()
		return nil, err
	}
	return h, nil
}

func (h *hapair) name() string        { return "hapair" }
func (h *hapair) scenarios() []string { return lab.Scenarios }
func (h *hapair) run(sc string) (lab.Result, error) {
	return h.c.Run(sc, time.Millisecond)
}

func (h *hapair) idle() (idleCost, error) {
	act, err := h.c.Settle(10 * time.Second)
	if err != nil {
		return idleCost{}, err
	}
	return procCost(h.c.Pid(act))
}

func (h *hapair) close() {
	h.p.Close()
	os.RemoveAll(h.dir)
}

// idleCost is what a contender costs its host at idle.
type idleCost struct {
	// rssKB adds up its processes' RSS, counting a page that two of them
	// map (hapaird's core and agent are one executable) once for each.
	rssKB int
	// memKB counts every page resident in any of its processes once: what
	// the daemon holds in memory. anonKB is the part that is its own
	// (heap, stacks, written data); the rest is file pages (its
	// executable, libraries) that the page cache keeps for any process.
	memKB, anonKB int
	cpu           float64 // per cent of a CPU
	// wakes are context switches a second, every thread counted: each is
	// the kernel putting a thread to sleep or taking it off a CPU, and
	// unlike the CPU share they do not depend on how busy the machine
	// (or the host under this VM) is.
	wakes float64
}

// idleWindow is how long the idle cost is averaged over.
const idleWindow = 10 * time.Second

// procCost reads the memory, and the CPU use and context switches over
// idleWindow, of a process and its children (hapaird's heartbeat core is
// one): the daemon's whole cost. Its memory counts the processes in also
// (keepalived's parent, which does nothing at idle).
func procCost(pid int, also ...int) (idleCost, error) {
	if pid == 0 {
		return idleCost{}, fmt.Errorf("no process")
	}
	pids := append([]int{pid}, lab.Children(pid)...)
	sample := func() (ran time.Duration, switches int, err error) {
		for _, p := range pids {
			r, n, err := threadCost(p)
			if err != nil {
				return 0, 0, err
			}
			ran += r
			switches += n
		}
		return ran, switches, nil
	}
	t0, w0, err := sample()
	if err != nil {
		return idleCost{}, err
	}
	time.Sleep(idleWindow)
	t1, w1, err := sample()
	if err != nil {
		return idleCost{}, err
	}
	c := idleCost{wakes: float64(w1-w0) / idleWindow.Seconds()}
	if c.rssKB, c.memKB, c.anonKB, err = memory(append(also, pids...)); err != nil {
		return idleCost{}, err
	}
	c.cpu = (t1 - t0).Seconds() / idleWindow.Seconds() * 100
	return c, nil
}

// threadCost is the time every thread of pid has run so far, and every
// context switch of theirs. The time is the scheduler's own account
// (schedstat, in ns), not /proc/pid/stat's clock ticks: a process that
// runs a few hundred microseconds at a time is charged a whole 10 ms tick
// or nothing by where the tick falls, so over 10 s the ticks read in steps
// of 0.1 % of a CPU, right only on average (in one run side by side they
// agreed with schedstat within 0.1 point), where the targets are 0.1 %.
func threadCost(pid int) (ran time.Duration, switches int, err error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, t := range tasks {
		dir := fmt.Sprintf("/proc/%d/task/%s/", pid, t.Name())
		// A thread that ended since the listing is not counted.
		if b, err := os.ReadFile(dir + "schedstat"); err == nil {
			if f := strings.Fields(string(b)); len(f) > 0 {
				ns, _ := strconv.ParseInt(f[0], 10, 64)
				ran += time.Duration(ns)
			}
		}
		b, _ := os.ReadFile(dir + "status")
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "voluntary_ctxt_switches:"); ok {
				k, _ := strconv.Atoi(strings.TrimSpace(v))
				switches += k
			} else if v, ok := strings.CutPrefix(l, "nonvoluntary_ctxt_switches:"); ok {
				k, _ := strconv.Atoi(strings.TrimSpace(v))
				switches += k
			}
		}
	}
	return ran, switches, nil
}

// keepalived runs Debian's keepalived with one VRRP instance per node.
type keepalived struct {
	p      *lab.Pair
	dir    string
	advert string
	// rt runs VRRP at real-time priority with its memory locked
	// (vrrp_rt_priority, vrrp_no_swap).
	rt    bool
	wait  map[string]func(time.Duration) (bool, error)
	cmds  map[string]*exec.Cmd
	media map[string]*exec.Cmd
	mwait map[string]func(time.Duration) (bool, error)
}

func ensureKeepalived() error {
	if _, err := exec.LookPath("keepalived"); err == nil {
		return nil
	}
	// The package starts a service where systemd runs; not here, and
	// not wanted: the bench runs its own instances.
	return aptInstall("keepalived")
}

// aptInstall installs Debian packages: the bench installs what it
// compares with and what the lab needs, as .ci/run does for the suite.
func aptInstall(pkgs ...string) error {
	fmt.Fprintf(os.Stderr, "   installing %s (Debian packages) ...\n", strings.Join(pkgs, ", "))
	for _, args := range [][]string{{"update", "-qq"}, append([]string{"install", "-y", "-qq"}, pkgs...)} {
		cmd := exec.Command("apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("apt-get %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

func newKeepalived(advert string) (contender, error) { return startKeepalived(advert, false) }

func startKeepalived(advert string, rt bool) (*keepalived, error) {
	if err := ensureKeepalived(); err != nil {
		return nil, err
	}
	p, err := lab.New(lab.Options{})
	if err != nil {
		return nil, err
	}
	p.Probe = probedVIP().Addr()
	dir, _ := os.MkdirTemp("", "hapair-bench-keepalived-")
	k := &keepalived{p: p, dir: dir, advert: advert, rt: rt, wait: map[string]func(time.Duration) (bool, error){}, cmds: map[string]*exec.Cmd{},
		media: map[string]*exec.Cmd{}, mwait: map[string]func(time.Duration) (bool, error){}}
	if err := k.settle(); err != nil {
		k.close()
		return nil, err
	}
	return k, nil
}

func (k *keepalived) name() string { return "keepalived" }
func (k *keepalived) scenarios() []string {
	return []string{"host-loss", "graceful-stop", "process-death"}
}

// startMedia runs the node's stand-in media server and writes its pidfile.
func (k *keepalived) startMedia(node string) error {
	cmd := lab.Command(k.p.Node(node), "sleep", "3600")
	wait, err := k.p.Start(cmd)
	if err != nil {
		return err
	}
	k.media[node], k.mwait[node] = cmd, wait
	return os.WriteFile(filepath.Join(k.dir, "media-"+node+".pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644)
}

func (k *keepalived) start(node string) error {
	prio := map[string]int{"a": 150, "b": 100}[node]
	rt := ""
	if k.rt {
		// What hapair's heartbeat core asks for, side by side.
		rt = fmt.Sprintf("\n  vrrp_rt_priority %d\n  vrrp_no_swap", hanode.RTPriority)
	}
	conf := fmt.Sprintf(`global_defs {
  router_id bench-%[1]s%[7]s
  vrrp_version 3
  vrrp_garp_master_delay 0
  vrrp_garp_master_repeat 3
  enable_script_security
  script_user root
}
# track_process needs the kernel's process connector, which only the
# initial network namespace has; a polled script works anywhere.
vrrp_script media {
  script "/bin/sh -c 'kill -0 $(cat %[6]s)'"
  interval 1
  fall 1
  rise 1
}
vrrp_instance VI {
  state BACKUP
  nopreempt
  interface %[2]s
  virtual_router_id 51
  priority %[3]d
  advert_int %[4]s
  virtual_ipaddress {
%[5]s  }
  virtual_ipaddress_excluded {
%[8]s  }
  track_script {
    media
  }
}
`, node, lab.Public, prio, k.advert, vipLines(benchVIPs()[:min(vipCount, 20)]), filepath.Join(k.dir, "media-"+node+".pid"), rt, vipLines(benchVIPs()[min(vipCount, 20):]))
	path := filepath.Join(k.dir, node+".conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return err
	}
	log, err := os.OpenFile(filepath.Join(k.dir, node+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := lab.Command(k.p.Node(node), "keepalived", "--dont-fork", "--log-console", "--vrrp",
		"-f", path, "-p", filepath.Join(k.dir, node+".pid"), "-r", filepath.Join(k.dir, node+".vrrp.pid"))
	cmd.Stdout, cmd.Stderr = log, log
	wait, err := k.p.Start(cmd)
	if err != nil {
		return err
	}
	k.wait[node], k.cmds[node] = wait, cmd
	return nil
}

// vipLines lists vips for a keepalived virtual_ipaddress block. Its
// adverts carry 20 at most; the rest go in virtual_ipaddress_excluded,
// which it adds and removes with the others.
func vipLines(vips []netip.Prefix) string {
	var b strings.Builder
	for _, v := range vips {
		fmt.Fprintf(&b, "    %s dev %s\n", v, lab.Public)
	}
	return b.String()
}

func (k *keepalived) holder() string {
	a, b := k.p.Holds("a", lab.VIP.Addr()), k.p.Holds("b", lab.VIP.Addr())
	switch {
	case a && !b:
		return "a"
	case b && !a:
		return "b"
	}
	return ""
}

func (k *keepalived) settle() error {
	for _, n := range []string{"a", "b"} {
		if err := k.p.Isolate(n, true); err != nil {
			return err
		}
		if k.media[n] == nil {
			if err := k.startMedia(n); err != nil {
				return err
			}
		}
		if k.cmds[n] == nil {
			if err := k.start(n); err != nil {
				return err
			}
		}
	}
	// Both up, one holder, and the backup has heard some adverts.
	deadline := time.Now().Add(30 * time.Second)
	for k.holder() == "" {
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(k.dir, "a.log"))
			return fmt.Errorf("keepalived pair did not settle\n%s", b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(time.Second)
	return nil
}

func (k *keepalived) stop(node string, sig syscall.Signal) error {
	cmd := k.cmds[node]
	if cmd == nil {
		return nil
	}
	if sig == syscall.SIGKILL {
		// keepalived's VRRP work runs in a child that outlives a killed
		// parent; a lost host loses both. Its pid is in the file we told
		// keepalived to write, and it is a process this bench started.
		if b, err := os.ReadFile(filepath.Join(k.dir, node+".vrrp.pid")); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	cmd.Process.Signal(sig)
	exited, _ := k.wait[node](5 * time.Second)
	if !exited {
		return fmt.Errorf("keepalived on %s did not exit", node)
	}
	delete(k.cmds, node)
	if sig == syscall.SIGKILL {
		// A rebooted host starts with an empty /run; here the killed
		// child may linger as a zombie that keepalived would take for a
		// running daemon.
		os.Remove(filepath.Join(k.dir, node+".pid"))
		os.Remove(filepath.Join(k.dir, node+".vrrp.pid"))
	}
	return nil
}

func (k *keepalived) run(sc string) (lab.Result, error) {
	if err := k.settle(); err != nil {
		return lab.Result{}, err
	}
	from := k.holder()
	to := map[string]string{"a": "b", "b": "a"}[from]
	var res lab.Result
	var err error
	switch sc {
	case "host-loss":
		res, err = k.p.MeasureHostLoss(from, to, time.Millisecond, k.cmds[from].Process.Pid, func() error { return k.stop(from, syscall.SIGKILL) })
	case "graceful-stop":
		// The stop runs beside the measurement; it alone then removes the
		// node's command (k.cmds), once keepalived has exited, and is
		// waited for before anything else touches it.
		var stopped chan error
		res, err = k.p.Measure(sc, from, to, time.Millisecond, func() error {
			stopped = make(chan error, 1)
			go func() { stopped <- k.stop(from, syscall.SIGTERM) }()
			return nil
		})
		if stopped != nil {
			if serr := <-stopped; err == nil {
				err = serr
			}
		}
	case "process-death":
		res, err = k.p.Measure(sc, from, to, time.Millisecond, func() error {
			k.media[from].Process.Kill()
			k.mwait[from](5 * time.Second)
			delete(k.media, from)
			return nil
		})
	}
	if err != nil {
		b, _ := os.ReadFile(filepath.Join(k.dir, to+".log"))
		err = fmt.Errorf("%w\nlog of keepalived on %s:\n%s", err, to, lastLines(string(b), 15))
	}
	if sc == "host-loss" {
		// A killed keepalived leaves its VIP behind (no lease): remove
		// it as an operator would before the node rejoins.
		for _, v := range benchVIPs() {
			exec.Command("ip", "netns", "exec", k.p.Node(from), "ip", "addr", "del", v.String(), "dev", lab.Public).Run()
		}
	}
	return res, err
}

func (k *keepalived) idle() (idleCost, error) {
	h := k.holder()
	if h == "" || k.cmds[h] == nil {
		return idleCost{}, fmt.Errorf("no holder")
	}
	// The VRRP child does the work; its pid is in the vrrp pid file.
	b, err := os.ReadFile(filepath.Join(k.dir, h+".vrrp.pid"))
	if err != nil {
		return idleCost{}, err
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return procCost(pid, k.cmds[h].Process.Pid)
}

// memory measures pids' memory in KiB: the sum of their RSS, and, read
// from their page tables (/proc/PID/pagemap, whose frame numbers only
// root sees), the pages resident in any of them, each counted once, and
// of those the anonymous ones.
func memory(pids []int) (rssKB, memKB, anonKB int, err error) {
	const (
		present  = 1 << 63
		filePage = 1 << 61 // or shared anonymous
		pfnMask  = 1<<55 - 1
	)
	page := os.Getpagesize()
	frames := map[uint64]bool{} // frame -> anonymous
	// Memory read before it was ever written maps the kernel's zero page,
	// one frame for every such page of every process, which the kernel
	// does not count in RSS either; kpageflags tells it.
	kflags, err := os.Open("/proc/kpageflags")
	if err != nil {
		return 0, 0, 0, err
	}
	defer kflags.Close()
	zero := func(pfn uint64) bool {
		const kpfZeroPage = 1 << 24
		var b [8]byte
		_, err := kflags.ReadAt(b[:], int64(pfn)*8)
		return err == nil && binary.LittleEndian.Uint64(b[:])&kpfZeroPage != 0
	}
	for _, pid := range pids {
		maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
		if err != nil {
			return 0, 0, 0, err
		}
		pm, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
		if err != nil {
			return 0, 0, 0, err
		}
		var buf []byte
		for _, l := range strings.Split(strings.TrimSpace(string(maps)), "\n") {
			f := strings.Fields(l)
			var lo, hi uint64
			if _, err := fmt.Sscanf(f[0], "%x-%x", &lo, &hi); err != nil || f[1] == "---p" || strings.HasSuffix(l, "[vsyscall]") {
				continue // unreadable, or reserved and never resident
			}
			n := int(hi-lo) / page * 8
			if cap(buf) < n {
				buf = make([]byte, n)
			}
			if _, err := pm.ReadAt(buf[:n], int64(lo)/int64(page)*8); err != nil {
				pm.Close()
				return 0, 0, 0, err
			}
			for i := 0; i < n; i += 8 {
				e := binary.LittleEndian.Uint64(buf[i:])
				if e&present == 0 {
					continue
				}
				if e&pfnMask == 0 {
					pm.Close()
					return 0, 0, 0, fmt.Errorf("pagemap of %d gives no frame numbers (not root?)", pid)
				}
				if zero(e & pfnMask) {
					continue
				}
				rssKB += page / 1024
				frames[e&pfnMask] = e&filePage == 0
			}
		}
		pm.Close()
	}
	for _, anon := range frames {
		memKB += page / 1024
		if anon {
			anonKB += page / 1024
		}
	}
	return rssKB, memKB, anonKB, nil
}

func (k *keepalived) close() {
	for n := range k.cmds {
		k.stop(n, syscall.SIGTERM)
	}
	k.p.Close()
	os.RemoveAll(k.dir)
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(l[max(len(l)-n, 0):], "\n")
}
