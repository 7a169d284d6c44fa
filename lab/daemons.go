package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hapair/hapair/config"
	"github.com/hapair/hapair/internal/control"
)

// FindDaemon returns a hapaird to run: one beside the running executable,
// else one on PATH, else one built from this source tree into dir.
func FindDaemon(dir string) (string, error) {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "hapaird")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	if p, err := exec.LookPath("hapaird"); err == nil {
		return p, nil
	}
	return BuildDaemon(dir, false)
}

// BuildDaemon builds hapaird from the module this code belongs to; tests
// build it with the race detector.
func BuildDaemon(dir string, race bool) (string, error) {
	args := []string{}
	if race {
		args = append(args, "-race")
	}
	return buildDaemon(dir, nil, args)
}

// BuildShipped builds hapaird as the deb and rpm packages ship it (the
// Makefile's package target): static, without cgo, stripped. What the
// bench measures, memory above all, is then what an operator runs: a cgo
// build maps the C library and its name-service modules too.
func BuildShipped(dir string) (string, error) {
	return buildDaemon(dir, []string{"CGO_ENABLED=0"}, []string{"-trimpath", "-ldflags", "-s -w"})
}

func buildDaemon(dir string, env, flags []string) (string, error) {
	out := filepath.Join(dir, "hapaird")
	args := append([]string{"build", "-o", out}, flags...)
	cmd := exec.Command("go", append(args, "github.com/hapair/hapair/cmd/hapaird")...)
	cmd.Env = append(os.Environ(), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("lab: go build hapaird: %v\n%s", err, b)
	}
	return out, nil
}

// Cluster runs real hapaird processes on a pair: node "a" in Pair.A and
// node "b" in Pair.B, each with its own state directory and socket under
// Dir.
type Cluster struct {
	*Pair
	Bin    string
	Dir    string
	Config string

	Media bool // each node runs a stand-in media server (ConfigOptions.Media)

	mu    sync.Mutex
	procs map[string]*daemonProc
	media map[string]*daemonProc
	// configOf is a node's own config where it differs from Config (in
	// the middle of a key rotation); rotations counts RotateKeys.
	configOf  map[string]string
	rotations int
}

type daemonProc struct {
	cmd  *exec.Cmd
	wait func(time.Duration) (bool, error)
}

// NewCluster writes a config for the pair into dir.
func (p *Pair) NewCluster(bin, dir string, o ConfigOptions) (*Cluster, error) {
	cfg, err := p.WriteConfig(dir, o)
	if err != nil {
		return nil, err
	}
	for _, n := range []string{"a", "b"} {
		if err := os.MkdirAll(filepath.Join(dir, n), 0o750); err != nil {
			return nil, err
		}
	}
	return &Cluster{Pair: p, Bin: bin, Dir: dir, Config: cfg, procs: map[string]*daemonProc{}, media: map[string]*daemonProc{}, configOf: map[string]string{}, Media: o.Media}, nil
}

// RestartOn stops node's daemon (SIGTERM), starts it again on the config
// at path (from then on its own: the two nodes in the middle of a change
// made one at a time) and waits until it is the standby.
func (c *Cluster) RestartOn(node, path string) error {
	if err := c.Signal(node, syscall.SIGTERM, 10*time.Second); err != nil {
		return err
	}
	c.SetConfig(node, path)
	if err := c.Start(node); err != nil {
		return err
	}
	return c.WaitRole(node, "STANDBY", 10*time.Second)
}

// SetConfig makes node's next starts use the config at path.
func (c *Cluster) SetConfig(node, path string) {
	c.mu.Lock()
	c.configOf[node] = path
	c.mu.Unlock()
}

// Socket is node's control socket.
func (c *Cluster) Socket(node string) string { return filepath.Join(c.Dir, node, "hapair.sock") }

// StateDir is node's state directory (its lock file lives there).
func (c *Cluster) StateDir(node string) string { return filepath.Join(c.Dir, node) }

// LogPath is where node's daemon writes its log.
func (c *Cluster) LogPath(node string) string { return filepath.Join(c.Dir, node+".log") }

// Start runs hapaird for node ("a" or "b") in its namespace.
func (c *Cluster) Start(node string, extra ...string) error {
	return c.StartWith(node, StartOptions{}, extra...)
}

// StartOptions change what a daemon started by StartWith is given.
type StartOptions struct {
	// Log is its stdout and stderr (a pipe, where the daemon's journal
	// would be); nil: LogPath.
	Log *os.File
	// Env is added to its environment (systemd's NOTIFY_SOCKET, say).
	Env []string
}

// StartWith runs hapaird for node as Start does, with o.
func (c *Cluster) StartWith(node string, o StartOptions, extra ...string) error {
	log := o.Log
	if log == nil {
		f, err := os.OpenFile(c.LogPath(node), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		log = f
	}
	cfg := c.Config
	if own := c.configOf[node]; own != "" {
		cfg = own
	}
	args := append([]string{"-c", cfg, "--node", node, "--state-dir", c.StateDir(node), "--socket", c.Socket(node)}, extra...)
	cmd := Command(c.Node(node), c.Bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	if o.Env != nil {
		cmd.Env = append(cmd.Environ(), o.Env...)
	}
	wait, err := c.Pair.Start(cmd)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.procs[node] = &daemonProc{cmd: cmd, wait: wait}
	c.mu.Unlock()
	return nil
}

// StartMedia runs node's stand-in media server and writes its pidfile.
func (c *Cluster) StartMedia(node string) error {
	cmd := Command(c.Node(node), "sleep", "3600")
	wait, err := c.Pair.Start(cmd)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.media[node] = &daemonProc{cmd: cmd, wait: wait}
	c.mu.Unlock()
	pidfile := filepath.Join(c.Dir, "media-"+node+".pid")
	tmp := pidfile + ".tmp"
	if err := os.WriteFile(tmp, []byte(fmt.Sprintf("%d\n", cmd.Process.Pid)), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, pidfile)
}

// KillMedia kills node's media server, as a crash would.
func (c *Cluster) KillMedia(node string) error {
	c.mu.Lock()
	m := c.media[node]
	delete(c.media, node)
	c.mu.Unlock()
	if m == nil {
		return fmt.Errorf("lab: no media server on %s", node)
	}
	m.cmd.Process.Kill()
	m.wait(5 * time.Second)
	return nil
}

func (c *Cluster) mediaRunning(node string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.media[node] != nil
}

// Running says whether node's daemon is running.
func (c *Cluster) Running(node string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.procs[node] != nil
}

// Signal sends sig to node's daemon, by PID, and waits up to wait for it
// to exit (0: do not wait).
func (c *Cluster) Signal(node string, sig syscall.Signal, wait time.Duration) error {
	c.mu.Lock()
	d := c.procs[node]
	c.mu.Unlock()
	if d == nil {
		return fmt.Errorf("lab: %s is not running", node)
	}
	if err := d.cmd.Process.Signal(sig); err != nil {
		return err
	}
	if wait == 0 {
		return nil
	}
	return c.reap(node, wait, sig == syscall.SIGKILL)
}

// Pause stops node's hapaird (SIGSTOP, by PID; its heartbeat core, a child
// process, runs on), as a debugger or a starved host would, and returns
// once every thread of it has stopped: a signal takes effect when each
// thread next enters the kernel, and on a loaded machine a daemon sent
// SIGSTOP still handled a frame that came after the kill returned.
func (c *Cluster) Pause(node string) error {
	pid := c.Pid(node)
	if pid == 0 {
		return fmt.Errorf("lab: %s is not running", node)
	}
	return Freeze([]int{pid})
}

// WaitExit waits for node's daemon to exit by itself (a signal sent
// another way than Signal) and forgets it; an exit that is not clean is
// an error.
func (c *Cluster) WaitExit(node string, within time.Duration) error {
	return c.reap(node, within, false)
}

// reap waits for node's daemon to exit and forgets it.
func (c *Cluster) reap(node string, within time.Duration, killed bool) error {
	c.mu.Lock()
	d := c.procs[node]
	c.mu.Unlock()
	if d == nil {
		return nil
	}
	exited, err := d.wait(within)
	if !exited {
		return fmt.Errorf("lab: %s did not exit within %v", node, within)
	}
	c.mu.Lock()
	delete(c.procs, node)
	c.mu.Unlock()
	var ee *exec.ExitError
	if killed && errors.As(err, &ee) {
		return nil
	}
	return err
}

// Kill is kill -9.
func (c *Cluster) Kill(node string) error { return c.Signal(node, syscall.SIGKILL, 5*time.Second) }

// Pid is node's daemon's process id, or 0.
func (c *Cluster) Pid(node string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d := c.procs[node]; d != nil {
		return d.cmd.Process.Pid
	}
	return 0
}

// Ctl talks to node's daemon.
func (c *Cluster) Ctl(node string) *control.Client { return control.NewClient(c.Socket(node)) }

// Admin talks to node's daemon on its operator socket (switchover, lock).
func (c *Cluster) Admin(node string) *control.Client {
	return control.NewClient(config.AdminSocket(c.Socket(node)))
}

// Status fetches node's status.
func (c *Cluster) Status(node string) (*control.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return c.Ctl(node).Status(ctx)
}

// WaitRole polls node's status until its role is role.
func (c *Cluster) WaitRole(node, role string, within time.Duration) error {
	deadline := time.Now().Add(within)
	var last string
	for time.Now().Before(deadline) {
		if s, err := c.Status(node); err == nil {
			if s.Role == role {
				return nil
			}
			last = s.Role
		} else {
			last = err.Error()
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("lab: %s is %s, not %s, after %v", node, last, role, within)
}

// Holds says whether node's ("a" or "b") public interface has addr.
func (p *Pair) Holds(node string, addr netip.Addr) bool {
	l, err := p.Handle(p.Node(node)).LinkByName(Public)
	if err != nil {
		return false
	}
	list, err := p.Handle(p.Node(node)).AddrList(l, 0)
	if err != nil {
		return false
	}
	for _, a := range list {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == addr {
			return true
		}
	}
	return false
}

// MAC is the hardware address of node's public interface.
func (c *Cluster) MAC(node string) net.HardwareAddr {
	l, err := c.Handle(c.Node(node)).LinkByName(Public)
	if err != nil {
		return nil
	}
	return l.Attrs().HardwareAddr
}

// ClientNeighbour is the client's neighbour entry for ip, or nil.
func (c *Cluster) ClientNeighbour(ip netip.Addr) net.HardwareAddr {
	h := c.Handle(c.Client)
	br, err := h.LinkByName(Bridge)
	if err != nil {
		return nil
	}
	list, err := h.NeighList(br.Attrs().Index, 0)
	if err != nil {
		return nil
	}
	for _, n := range list {
		if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap() == ip {
			return n.HardwareAddr
		}
	}
	return nil
}

// Freeze stops pids with SIGSTOP: a host lost at once, as far as its
// frames go. The caller lists them beforehand (Children reads /proc, which
// takes long enough for a child to send several turbo frames), so one may
// have ended since (a hook that ran and exited): it needs no stopping.
//
// It returns once every thread of each has stopped. The signal only
// starts a group stop, which a process's threads join as each next runs,
// and a thread woken meanwhile acts first: a daemon whose heartbeat core
// was killed right after its freeze saw the core end and released its
// VIPs before it stopped (CI, TestCleanupRemovesStaleVIP).
func Freeze(pids []int) error {
	for _, p := range pids {
		if err := syscall.Kill(p, syscall.SIGSTOP); err != nil && err != syscall.ESRCH {
			return fmt.Errorf("lab: freeze %d: %w", p, err)
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for _, p := range pids {
		for !stopped(p) {
			if time.Now().After(deadline) {
				return fmt.Errorf("lab: freeze %d: not stopped within 2 s", p)
			}
			time.Sleep(200 * time.Microsecond)
		}
	}
	return nil
}

// stopped says whether every thread of pid is stopped (or gone), by the
// state in /proc/PID/task/TID/stat: the field after the command's closing
// parenthesis (a command may hold spaces and parentheses of its own).
func stopped(pid int) bool {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return true // the process is gone
	}
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, t.Name()))
		i := strings.LastIndexByte(string(b), ')')
		if err != nil || i < 0 || i+2 >= len(b) {
			continue // the thread ended
		}
		if state := b[i+2]; state != 'T' && state != 't' && state != 'Z' && state != 'X' {
			return false
		}
	}
	return true
}

// Children lists pid's child processes, from every thread: a Go program
// forks from whichever thread runs.
func Children(pid int) []int {
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	var out []int
	for _, t := range tasks {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, t.Name()))
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}
