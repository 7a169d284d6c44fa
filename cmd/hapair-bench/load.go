package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/hapair/hapair/internal/control"
	"github.com/hapair/hapair/lab"
	"github.com/hapair/hapair/node"
	"github.com/hapair/hapair/statesync/client"
	"github.com/hapair/hapair/statesync/store"
	"golang.org/x/sys/unix"
)

// The load campaign (issue 18): a pair that nothing fails on, under the
// load a busy media server or gateway carries, for several minutes; every
// VIP move is a false failover, and every moment with two holders a split
// brain. Every contender runs beside the same host load: two CPU hogs at
// normal priority in each node and a disk flood (dd with O_SYNC, over and
// over). hapair also carries its own work at the same time: a flat-out
// replication stream over 300,000 sessions, a standby restarted every
// restartEvery (it loads the 300,000-session snapshot), and the whole
// session table listed over and over (GET /v1/sessions).
type loadFigures struct {
	name     string
	moves    int           // VIP changes of hands: false failovers
	both     time.Duration // two holders, in all
	splits   int           // hapair: split brains the daemons saw
	writes   int           // hapair: writes acknowledged
	restarts int           // hapair: standby restarts, each a snapshot load
	// hapair: stalls, the times a node sent no frame for a whole dead
	// interval (the host kept its core off its CPU), and the longest
	// gap between two frames, over every run of both nodes.
	stalls     uint64
	longestGap float64 // ms
	// hapair: frames the heartbeat core's relief senders sent for a loop
	// held up on its CPU (turbo), each a stall that did not happen.
	relieved uint64
	lists    int // hapair: full session listings served
	err      error
}

const (
	loadSessions = 300_000
	restartEvery = 30 * time.Second
)

// hostLoad runs the CPU hogs and the disk flood until stop. They are this
// bench's processes, ended by PID.
func hostLoad(p *lab.Pair, dir string) (stop func(), err error) {
	var cmds []*exec.Cmd
	var waits []func(time.Duration) (bool, error)
	stop = func() {
		for i, c := range cmds {
			c.Process.Kill()
			waits[i](5 * time.Second)
		}
	}
	flood := fmt.Sprintf("while :; do dd if=/dev/zero of=%s bs=1M count=64 oflag=sync status=none; done", filepath.Join(dir, "flood"))
	for _, n := range []string{"a", "b"} {
		for _, script := range []string{"while :; do :; done", "while :; do :; done", flood} {
			cmd := lab.Command(p.Node(n), "sh", "-c", script)
			wait, err := p.Start(cmd)
			if err != nil {
				stop()
				return nil, err
			}
			cmds, waits = append(cmds, cmd), append(waits, wait)
		}
	}
	return stop, nil
}

// benchLoadHapair runs the campaign on a hapair pair at profile.
func benchLoadHapair(bin, profile string, d time.Duration) loadFigures {
	f := loadFigures{name: "hapair " + profile}
	c, act, done, err := startPair(bin, "load-"+profile, lab.ConfigOptions{Profile: profile})
	if err != nil {
		f.err = err
		return f
	}
	defer done()
	st, err := client.New(c.Socket(act)).Stream(context.Background())
	if err != nil {
		f.err = err
		return f
	}
	defer st.Close()
	if _, f.err = pipeline(st, loadSessions, func(i int) (store.OpKind, string) {
		return store.OpCreate, fmt.Sprintf("load-%07d", i)
	}); f.err != nil {
		return f
	}
	if f.err = c.WaitSynced(act, time.Minute); f.err != nil {
		return f
	}
	stop, err := hostLoad(c.Pair, c.Dir)
	if err != nil {
		f.err = err
		return f
	}
	defer stop()
	w := c.WatchHolders()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	writes := make(chan int, 1)
	go func() { writes <- streamFlatOut(ctx, st) }()
	lists := make(chan int, 1)
	go func() { lists <- listOver(ctx, client.New(c.Socket(act))) }()
	f.restarts, f.err = restartStandby(ctx, c, f.sendGaps)
	<-ctx.Done()
	f.writes, f.lists = <-writes, <-lists
	w.Stop()
	f.both, f.moves, _ = w.Summary()
	for _, n := range []string{"a", "b"} {
		// Each node logs every split brain it enters.
		b, _ := os.ReadFile(c.LogPath(n))
		f.splits += strings.Count(string(b), "split brain: the peer is active too")
		if s, err := c.Status(n); err == nil {
			f.sendGaps(s)
			fmt.Fprintf(os.Stderr, "   %s: heartbeat core pauses %d, stalls %d (longest send gap %.1f ms), frames relieved %d, paths due down with frames queued %d, frames not reported to a busy agent %d\n",
				n, s.Frames.CorePauses, s.Frames.CoreStalls, s.Frames.LongestSendGapMs, s.Frames.Relieved, s.Frames.QueuedAtExpiry, s.Frames.NotReported)
		}
		// What changed role, and why, for whoever reads the run.
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "op=transition") || strings.Contains(l, "op=split-brain") {
				fmt.Fprintf(os.Stderr, "   %s: %s\n", n, l)
			}
		}
	}
	return f
}

// streamFlatOut updates the sessions as fast as the active acknowledges,
// a window of writes in flight, until ctx ends; it returns how many were
// acknowledged.
func streamFlatOut(ctx context.Context, st *client.Stream) int {
	const window = 256
	acked, sent := 0, 0
	for ctx.Err() == nil {
		for ; sent-acked < window; sent++ {
			if err := st.Send(store.OpUpdate, fmt.Sprintf("load-%07d", sent%loadSessions), payload); err != nil {
				return acked
			}
		}
		if err := st.Flush(); err != nil {
			return acked
		}
		for ; acked < sent; acked++ {
			if r, err := st.Recv(); err != nil || r.Err != nil {
				return acked
			}
		}
	}
	return acked
}

// listOver lists every session, again and again, until ctx ends.
func listOver(ctx context.Context, cl *client.Client) int {
	n := 0
	for ctx.Err() == nil {
		if _, err := cl.List(ctx); err != nil {
			continue
		}
		n++
	}
	return n
}

// sendGaps adds a node's stalls, and its longest gap, to the figures.
func (f *loadFigures) sendGaps(s *control.Status) {
	f.stalls += s.Frames.CoreStalls
	f.longestGap = max(f.longestGap, s.Frames.LongestSendGapMs)
	f.relieved += s.Frames.Relieved
}

// restartStandby kills the standby and starts it again every restartEvery,
// each time waiting until it has loaded the snapshot, until ctx ends. The
// standby is whichever node says STANDBY then: after a false failover it
// is no longer the one that started as standby, and killing the active
// would be a failover of the bench's making. With no standby (a split
// brain being settled), that round is skipped.
func restartStandby(ctx context.Context, c *lab.Cluster, last func(*control.Status)) (int, error) {
	n := 0
	t := time.NewTicker(restartEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return n, nil
		case <-t.C:
		}
		sb := ""
		var st *control.Status
		for _, node := range []string{"a", "b"} {
			if s, err := c.Status(node); err == nil && s.Role == "STANDBY" {
				sb, st = node, s
			}
		}
		if sb == "" {
			continue
		}
		// A restart starts its counters again: what this run counted
		// is taken now.
		last(st)
		if err := c.Kill(sb); err != nil {
			return n, err
		}
		if err := c.Start(sb); err != nil {
			return n, err
		}
		n++
		// The snapshot load and its catching up are the load; the
		// restart counts once the standby says STANDBY again.
		if err := c.WaitRole(sb, "STANDBY", time.Minute); err != nil {
			return n, err
		}
	}
}

// benchLoadKeepalived runs the host load under a keepalived pair.
func benchLoadKeepalived(advert string, rt bool, d time.Duration) loadFigures {
	f := loadFigures{name: "keepalived advert " + advert + "s"}
	if rt {
		f.name += ", vrrp_rt_priority"
	}
	k, err := startKeepalived(advert, rt)
	if err != nil {
		f.err = err
		return f
	}
	defer k.close()
	stop, err := hostLoad(k.p, k.dir)
	if err != nil {
		f.err = err
		return f
	}
	defer stop()
	w := k.p.WatchHolders()
	time.Sleep(d) // the campaign's length
	w.Stop()
	f.both, f.moves, _ = w.Summary()
	return f
}

// rtLate are the lateness thresholds the probe counts: half the dead
// interval at turbo and at fast, past which a heartbeat core that woke
// that late re-arms its dead interval (and one that a peer waits on
// that long is taken for lost).
var rtLate = []time.Duration{2500 * time.Microsecond, 15 * time.Millisecond}

// probeFigures are how late a plain real-time thread woke beside the host
// load.
type probeFigures struct {
	wakes    int
	p50, p99 time.Duration
	max      time.Duration
	over     []int // wake-ups later than each of rtLate
	// silent are, for each CPU's thread (cpus names the CPUs) and then
	// for all of them together, the times no wake-up came for longer than
	// turbo's dead interval, and the longest such time.
	cpus    []int
	silent  []int
	longest []time.Duration
	err     error
}

// probeSilence is the gap between wake-ups that the probe counts: turbo's
// dead interval.
const probeSilence = 5 * time.Millisecond

// benchLoadProbe runs the host load with no HA agent at all, and beside it
// a thread on each CPU that asks what the heartbeat core asks (SCHED_RR
// node.RTPriority)
// and only sleeps 1 ms at a time: how late they wake is what this machine
// gives any real-time thread under this load, the floor under every
// contender. The threads together say whether a stall is one CPU's (a
// second sender on another CPU would cover it) or every CPU's at once.
func benchLoadProbe(d time.Duration) probeFigures {
	var f probeFigures
	p, err := lab.New(lab.Options{})
	if err != nil {
		f.err = err
		return f
	}
	defer p.Close()
	dir, _ := os.MkdirTemp("", "hapair-bench-probe-")
	defer os.RemoveAll(dir)
	stop, err := hostLoad(p, dir)
	if err != nil {
		f.err = err
		return f
	}
	defer stop()
	type woke struct {
		late, at []time.Duration // lateness, and time since start, of each wake-up
		err      error
	}
	// The CPUs this process may use, by number: not always 0 to n-1.
	var allowed unix.CPUSet
	if err := unix.SchedGetaffinity(0, &allowed); err != nil {
		f.err = err
		return f
	}
	var cpus []int
	for cpu := range len(allowed) * 64 {
		if allowed.IsSet(cpu) {
			cpus = append(cpus, cpu)
		}
	}
	f.cpus = cpus
	res := make(chan woke, len(cpus))
	start := time.Now()
	for _, cpu := range cpus {
		go func() {
			var w woke
			w.err = lab.OnCPU(cpu, unix.SchedAttr{Policy: unix.SCHED_RR, Priority: node.RTPriority}, func() {
				ts := unix.Timespec{Nsec: int64(time.Millisecond)}
				for end := start.Add(d); time.Now().Before(end); {
					t := time.Now()
					unix.Nanosleep(&ts, nil)
					now := time.Now()
					w.late = append(w.late, now.Sub(t)-time.Millisecond)
					w.at = append(w.at, now.Sub(start))
				}
			})
			res <- w
		}()
	}
	var late, all []time.Duration
	for range cpus {
		w := <-res
		if w.err != nil {
			f.err = w.err
		}
		late = append(late, w.late...)
		all = append(all, w.at...)
		n, longest := silences(w.at)
		f.silent, f.longest = append(f.silent, n), append(f.longest, longest)
	}
	if f.err != nil {
		return f
	}
	slices.Sort(all)
	n, longest := silences(all)
	f.silent, f.longest = append(f.silent, n), append(f.longest, longest)
	slices.Sort(late)
	f.wakes = len(late)
	if f.wakes == 0 {
		f.err = errors.New("the probe never woke")
		return f
	}
	f.p50, f.p99, f.max = late[len(late)/2], late[len(late)*99/100], late[len(late)-1]
	for _, t := range rtLate {
		i, _ := slices.BinarySearch(late, t+1)
		f.over = append(f.over, len(late)-i)
	}
	return f
}

// silences counts the gaps longer than probeSilence between the sorted
// wake-up times at, and finds the longest gap.
func silences(at []time.Duration) (n int, longest time.Duration) {
	for i := 1; i < len(at); i++ {
		g := at[i] - at[i-1]
		if g > probeSilence {
			n++
		}
		longest = max(longest, g)
	}
	return n, longest
}

// benchLoad runs the campaign on every contender (or those whose names
// contain one of the comma-separated words of only), d each.
func benchLoad(bin string, d time.Duration, only string) string {
	var figs []loadFigures
	want := func(name string) bool { return only == "" || containsAny(name, strings.Split(only, ",")) }
	for _, profile := range []string{"default", "fast", "turbo"} {
		if !want("hapair " + profile) {
			continue
		}
		fmt.Fprintf(os.Stderr, "== load: hapair %s, %v\n", profile, d)
		figs = append(figs, benchLoadHapair(bin, profile, d))
	}
	for _, rt := range []bool{false, true} {
		if !want("keepalived") {
			continue
		}
		fmt.Fprintf(os.Stderr, "== load: keepalived 0.01, rt %v, %v\n", rt, d)
		figs = append(figs, benchLoadKeepalived("0.01", rt, d))
	}
	var probe *probeFigures
	if want("probe") {
		fmt.Fprintf(os.Stderr, "== load: a real-time probe alone, %v\n", d)
		f := benchLoadProbe(d)
		probe = &f
	}
	return renderLoad(figs, probe, d)
}

func renderLoad(figs []loadFigures, probe *probeFigures, d time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n## Load campaign\n\nMeasured %s by `go run ./cmd/hapair-bench --only load` (%v per contender); %s.\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"), d, versions())
	fmt.Fprintf(&b, "Nothing fails: every VIP move is a false failover, every moment with two holders a split brain. Every contender beside the same host load: two CPU hogs at normal priority in each node (four on this machine's %d cores) and a disk flood in each (`dd oflag=sync` of 64 MiB, over and over). hapair also carries, at the same time: a replication stream flat out (256-byte updates over %d sessions, 256 in flight), the standby killed and restarted every %v (it loads the %d-session snapshot each time), and the whole session table listed over and over (GET /v1/sessions). keepalived has no sessions to carry.\n\n", runtime.NumCPU(), loadSessions, restartEvery, loadSessions)
	b.WriteString("| contender | false failovers (VIP moves) | two holders, in all | split brains seen | stalls (no frame sent for a dead interval), longest send gap | frames relieved | writes acknowledged | standby restarts | full listings |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, f := range figs {
		if f.err != nil {
			fmt.Fprintf(&b, "| %s | error: %v | | | | | | | |\n", f.name, strings.ReplaceAll(f.err.Error(), "\n", " "))
			continue
		}
		if strings.HasPrefix(f.name, "keepalived") {
			fmt.Fprintf(&b, "| %s | %d | %v | | | | | | |\n", f.name, f.moves, f.both.Round(time.Millisecond))
			continue
		}
		fmt.Fprintf(&b, "| %s | %d | %v | %d | %d, %.1f ms | %d | %d | %d | %d |\n", f.name, f.moves, f.both.Round(time.Millisecond), f.splits, f.stalls, f.longestGap, f.relieved, f.writes, f.restarts, f.lists)
	}
	if probe != nil {
		fmt.Fprintf(&b, "\nThe floor under all of them: the same host load with no HA agent, and on each of the %d CPUs a thread at the heartbeat core's scheduling (SCHED_RR %d, pinned to its CPU) that only sleeps 1 ms at a time. How late they wake is what this machine gives any real-time thread under this load; a core woken later than half its dead interval re-arms it, and a peer's frames held up that long are taken for silence.\n\n", len(probe.cpus), node.RTPriority)
		if probe.err != nil {
			fmt.Fprintf(&b, "The probe failed: %v\n", probe.err)
			return b.String()
		}
		b.WriteString("| wake-ups | late p50 | late p99 | late max |")
		for _, t := range rtLate {
			fmt.Fprintf(&b, " later than %v |", t)
		}
		b.WriteString("\n|---:|---:|---:|---:|" + strings.Repeat("---:|", len(rtLate)) + "\n")
		fmt.Fprintf(&b, "| %d | %v | %v | %v |", probe.wakes, probe.p50.Round(time.Microsecond), probe.p99.Round(time.Microsecond), probe.max.Round(time.Microsecond))
		for _, n := range probe.over {
			fmt.Fprintf(&b, " %d |", n)
		}
		fmt.Fprintf(&b, "\n\nTimes no probe thread woke for more than %v (turbo's dead interval), and the longest such time: a stall of one CPU that the others would cover shows as fewer times in the last column.\n\n|", probeSilence)
		for _, cpu := range probe.cpus {
			fmt.Fprintf(&b, " CPU %d's thread |", cpu)
		}
		b.WriteString(" any thread |\n|" + strings.Repeat("---:|", len(probe.silent)) + "\n|")
		for i, n := range probe.silent {
			fmt.Fprintf(&b, " %d, %v |", n, probe.longest[i].Round(time.Microsecond))
		}
		b.WriteString("\n")
	}
	return b.String()
}
