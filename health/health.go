package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hapair/hapair/internal/command"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Config is one check.
type Config struct {
	Name     string
	Kind     string // process, exec, http, tcp, link
	Target   string // pidfile or executable; command; URL; host:port; interface
	Interval time.Duration
	Timeout  time.Duration
	Rise     int // consecutive good samples to become healthy
	Fall     int // consecutive bad samples to become unhealthy
	Critical bool
	// HTTP only: accepted status codes, and a substring the body must hold.
	StatusMin, StatusMax int
	Body                 string
}

// Event is a check changing state.
type Event struct {
	Name     string
	Healthy  bool
	Critical bool
	Detail   string
	At       time.Time
}

// State is a check's current state, for status and metrics.
type State struct {
	Name     string    `json:"name"`
	Kind     string    `json:"kind"`
	Critical bool      `json:"critical"`
	Healthy  bool      `json:"healthy"`
	Detail   string    `json:"detail"`
	Since    time.Time `json:"since"`
}

// Monitor runs checks. Create with New, then Run.
type Monitor struct {
	checks []*check
	events chan Event
}

type check struct {
	cfg Config

	mu      sync.Mutex
	healthy bool
	good    int
	bad     int
	detail  string
	since   time.Time
}

// Kinds of check, the names config and status use.
const (
	Process = "process" // a pid file's process, watched by pidfd
	Exec    = "exec"    // a shell command's exit status
	HTTP    = "http"    // a URL's status and body
	TCP     = "tcp"     // a connection to host:port
	Link    = "link"    // an interface's carrier
)

// Kinds lists every kind, in the order messages give them.
var Kinds = []string{Process, Exec, HTTP, TCP, Link}

// New validates cfgs; it starts nothing.
func New(cfgs []Config) (*Monitor, error) {
	m := &Monitor{events: make(chan Event, 64)}
	for _, c := range cfgs {
		if !slices.Contains(Kinds, c.Kind) {
			return nil, fmt.Errorf("health: check %s: unknown kind %q", c.Name, c.Kind)
		}
		if c.Interval <= 0 {
			c.Interval = time.Second
		}
		if c.Timeout <= 0 {
			c.Timeout = c.Interval
		}
		c.Rise, c.Fall = max(c.Rise, 1), max(c.Fall, 1)
		if c.StatusMax == 0 {
			c.StatusMin, c.StatusMax = 200, 399
		}
		m.checks = append(m.checks, &check{cfg: c, healthy: true, detail: "not run yet", since: time.Now()})
	}
	return m, nil
}

// Events delivers state changes; keep reading it while Run runs.
func (m *Monitor) Events() <-chan Event { return m.events }

// States reads every check's state.
func (m *Monitor) States() []State {
	out := make([]State, 0, len(m.checks))
	for _, c := range m.checks {
		c.mu.Lock()
		out = append(out, State{Name: c.cfg.Name, Kind: c.cfg.Kind, Critical: c.cfg.Critical, Healthy: c.healthy, Detail: c.detail, Since: c.since})
		c.mu.Unlock()
	}
	return out
}

// Run runs every check until ctx ends and returns when all have stopped.
func (m *Monitor) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, c := range m.checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.run(ctx, c)
		}()
	}
	wg.Wait()
	return nil
}

// sample records one result and emits an event when the debounced state
// flips.
func (m *Monitor) sample(ctx context.Context, c *check, err error) {
	c.mu.Lock()
	now := time.Now()
	if err == nil {
		c.good, c.bad = c.good+1, 0
		c.detail = "ok"
	} else {
		c.good, c.bad = 0, c.bad+1
		c.detail = err.Error()
	}
	flip := (c.healthy && c.bad >= c.cfg.Fall) || (!c.healthy && c.good >= c.cfg.Rise)
	if flip {
		c.healthy = !c.healthy
		c.since = now
	}
	ev := Event{Name: c.cfg.Name, Healthy: c.healthy, Critical: c.cfg.Critical, Detail: c.detail, At: now}
	c.mu.Unlock()
	if flip {
		select {
		case m.events <- ev:
		case <-ctx.Done():
		}
	}
}

func (m *Monitor) run(ctx context.Context, c *check) {
	switch c.cfg.Kind {
	case Process:
		m.runProcess(ctx, c)
	case Link:
		m.runLink(ctx, c)
	default:
		t := time.NewTicker(c.cfg.Interval)
		defer t.Stop()
		for {
			m.sample(ctx, c, probe(ctx, c.cfg))
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}
}

func probe(ctx context.Context, cfg Config) error {
	switch cfg.Kind {
	case Exec:
		out, err := command.Run(ctx, []string{"/bin/sh", "-c", cfg.Target}, nil, cfg.Timeout)
		if err != nil {
			if out = strings.TrimSpace(out); out != "" {
				return fmt.Errorf("%w: %s", err, firstLine(out))
			}
			return err
		}
		return nil
	case TCP:
		d := net.Dialer{Timeout: cfg.Timeout}
		c, err := d.DialContext(ctx, "tcp", cfg.Target)
		if err != nil {
			return err
		}
		return c.Close()
	case HTTP:
		ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.Target, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if resp.StatusCode < cfg.StatusMin || resp.StatusCode > cfg.StatusMax {
			return fmt.Errorf("HTTP %d, want %d-%d", resp.StatusCode, cfg.StatusMin, cfg.StatusMax)
		}
		if cfg.Body != "" && !strings.Contains(string(body), cfg.Body) {
			return fmt.Errorf("body lacks %q", cfg.Body)
		}
		return nil
	}
	return fmt.Errorf("health: kind %s is not sampled", cfg.Kind)
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// findProcess resolves a process check's target: a pidfile, or the path of
// an executable (the first process running it).
func findProcess(target string) (int, error) {
	st, err := os.Stat(target)
	if err != nil {
		return 0, err
	}
	if st.Mode()&0o111 == 0 || strings.HasSuffix(target, ".pid") {
		b, err := os.ReadFile(target)
		if err != nil {
			return 0, err
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 {
			return 0, fmt.Errorf("pidfile %s holds %q", target, strings.TrimSpace(string(b)))
		}
		if unix.Kill(pid, 0) == unix.ESRCH {
			return 0, fmt.Errorf("process %d from %s is not running", pid, target)
		}
		return pid, nil
	}
	want, _ := filepath.EvalSymlinks(target)
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink("/proc/" + e.Name() + "/exe")
		switch {
		case err == nil && (exe == target || exe == want):
			return pid, nil
		case errors.Is(err, os.ErrPermission) && runs(e.Name(), target, want):
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no process runs %s", target)
}

// runs says whether process pid was started as program target (or want,
// target with its links resolved), from its command line. It serves where
// /proc/PID/exe is not ours to read: a service under a user of its own,
// seen from hapaird's unit, which runs as root without CAP_SYS_PTRACE.
// The command line is readable by all; its first word is the program as
// it was started, a path or, through PATH, a bare name.
func runs(pid, target, want string) bool {
	b, err := os.ReadFile("/proc/" + pid + "/cmdline")
	if err != nil || len(b) == 0 {
		return false
	}
	argv0, _, _ := strings.Cut(string(b), "\x00")
	if filepath.IsAbs(argv0) {
		real, _ := filepath.EvalSymlinks(argv0)
		return argv0 == target || argv0 == want || (real != "" && real == want)
	}
	return !strings.Contains(argv0, "/") && (argv0 == filepath.Base(target) || argv0 == filepath.Base(want))
}

// runProcess holds a pidfd on the process and polls it: the fd becomes
// readable the instant the process exits. Between lives (not found) it
// resolves the target again every interval.
func (m *Monitor) runProcess(ctx context.Context, c *check) {
	for ctx.Err() == nil {
		pid, err := findProcess(c.cfg.Target)
		if err != nil {
			m.sample(ctx, c, err)
			sleep(ctx, c.cfg.Interval)
			continue
		}
		fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
		if err != nil {
			m.sample(ctx, c, fmt.Errorf("pidfd_open %d: %w", pid, err))
			sleep(ctx, c.cfg.Interval)
			continue
		}
		m.sample(ctx, c, nil)
		if waitExit(ctx, os.NewFile(uintptr(fd), "pidfd"), c, m) {
			m.sample(ctx, c, fmt.Errorf("process %d (%s) exited", pid, c.cfg.Target))
		}
		// After an exit, or a pidfd the poller could not wait on: look
		// again an interval later, not at once.
		sleep(ctx, c.cfg.Interval)
	}
}

// waitExit waits on the pidfd f, through the runtime's poller, until the
// process exits (true) or ctx ends (false), and closes f. Until the check
// has risen it counts a good sample every interval, so rise counts
// progress after a restart; once healthy it only waits, so a watched
// process costs no wake-up while it lives (it polled every 100 ms, each
// poll a blocking system call that woke the runtime's monitor thread).
func waitExit(ctx context.Context, f *os.File, c *check, m *Monitor) bool {
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	stop := context.AfterFunc(ctx, func() { f.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	exited := false
	gone := func(fd uintptr) bool {
		n, _ := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 0)
		exited = n > 0
		return exited
	}
	for ctx.Err() == nil {
		c.mu.Lock()
		rising := !c.healthy
		c.mu.Unlock()
		deadline := time.Time{}
		if rising {
			deadline = time.Now().Add(c.cfg.Interval)
		}
		// Set, then look at ctx again: a cancellation between the two
		// set its own deadline first, which this one would undo.
		if err := f.SetReadDeadline(deadline); err != nil || ctx.Err() != nil {
			return false
		}
		err := rc.Read(gone)
		switch {
		case exited:
			return true
		case errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() == nil:
			m.sample(ctx, c, nil)
		case err != nil:
			return false
		}
	}
	return false
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// runLink follows the carrier of an interface through netlink.
func (m *Monitor) runLink(ctx context.Context, c *check) {
	done := make(chan struct{})
	defer close(done)
	ch := make(chan netlink.LinkUpdate, 16)
	if err := netlink.LinkSubscribe(ch, done); err != nil {
		m.sample(ctx, c, fmt.Errorf("netlink: %w", err))
		return
	}
	carrier := func(flags uint32) error {
		if flags&unix.IFF_LOWER_UP == 0 {
			return fmt.Errorf("%s has no carrier", c.cfg.Target)
		}
		return nil
	}
	if l, err := netlink.LinkByName(c.cfg.Target); err != nil {
		m.sample(ctx, c, err)
	} else {
		m.sample(ctx, c, carrier(l.Attrs().RawFlags))
	}
	t := time.NewTicker(c.cfg.Interval) // samples count for rise/fall
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case u := <-ch:
			if u.Attrs().Name == c.cfg.Target {
				m.sample(ctx, c, carrier(u.IfInfomsg.Flags))
			}
		case <-t.C:
			if l, err := netlink.LinkByName(c.cfg.Target); err != nil {
				m.sample(ctx, c, err)
			} else {
				m.sample(ctx, c, carrier(l.Attrs().RawFlags))
			}
		}
	}
}
