// Command bench measures hapair's failovers side by side with keepalived,
// in one run, on this machine, in network namespaces it builds, and prints
// a table (also written to docs/benchmarks.md with --write). As root:
//
//	go run ./cmd/hapair-bench            # 20 runs per cell
//	go run ./cmd/hapair-bench --quick    # 5 runs per cell
//
// Each cell: a client in its own namespace pings the VIP every millisecond;
// a fault is injected on the node holding the VIP; we record the time
// until the VIP is configured on the other node, and the longest gap
// between the client's replies (the outage a user sees).
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/hapair/hapair/lab"
)

type cell struct {
	contender, scenario string
	vip, outage         []time.Duration
	err                 error
	note                string
}

// contender runs one HA agent on a pair and injects faults.
type contender interface {
	name() string
	scenarios() []string
	run(scenario string) (lab.Result, error)
	idle() (idleCost, error)
	close()
}

func main() {
	runs := flag.Int("runs", 20, "runs per cell")
	quick := flag.Bool("quick", false, "5 runs per cell")
	write := flag.String("write", "", "also write the report to this markdown file")
	only := flag.String("only", "", "comma-separated contenders to run (default all); \"sessions\": session replication only; \"sync-latency\": only the sync write latency against Redis; \"faults\": only the fault table; \"links\": only one-way, flapping and lossy heartbeats; \"load\": only the load campaign (\"load:turbo,keepalived,probe\": only those of it; \"probe\" is a real-time thread alone beside the same load)")
	nwrites := flag.Int("writes", 1_000_000, "session writes per throughput run (200,000 with --quick)")
	loadFor := flag.Duration("load-for", 3*time.Minute, "how long each contender runs under the load campaign (30s with --quick)")
	flag.IntVar(&vipCount, "vips", 1, "VIPs each contender floats on the public interface in the failover table (at most 128); the client probes the last")
	flag.BoolVar(&probeFirst, "probe-first", false, "with --vips, the client probes the VIP each contender adds first, not the last")
	flag.Parse()
	if vipCount < 1 || vipCount > 128 {
		fatal(fmt.Errorf("--vips %d: 1 to 128", vipCount))
	}
	// Which tables run, by --only.
	loadOnly, loadAsked := strings.CutPrefix(*only, "load")
	runFailovers := *only != "faults" && *only != "links" && !loadAsked
	runLoad := *only == "" || loadAsked
	runLinks := *only == "" || *only == "links"
	runFaults := *only == "" || *only == "faults"
	syncLatency := *only == "sync-latency"
	runSessions := *only == "" || containsAny("sessions", strings.Split(*only, ","))
	// The other tables build pairs of their own with one VIP, and the load
	// campaign's keepalived would float N beside them.
	if vipCount > 1 && (runLoad || runLinks || runFaults || syncLatency || runSessions) {
		fatal(fmt.Errorf("--vips is for the failover table alone: name its contenders with --only (\"hapair fast,advert 0.01s\")"))
	}
	if *quick {
		*runs = 5
		*loadFor = 30 * time.Second
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench: needs root (network namespaces)")
		os.Exit(1)
	}
	if pkgs := lab.MissingPackages(); len(pkgs) > 0 {
		if err := aptInstall(pkgs...); err != nil {
			fatal(err)
		}
	}
	dir, err := os.MkdirTemp("", "hapair-bench-")
	if err != nil {
		fatal(err)
	}
	defer os.RemoveAll(dir)
	bin, err := lab.BuildShipped(dir)
	if err != nil {
		fatal(err)
	}
	report := ""
	if runFailovers {
		cells, idle := benchFailovers(bin, *only, *runs)
		report = render(cells, idle, *runs)
		if vipCount > 1 {
			which := "last"
			if probeFirst {
				which = "first"
			}
			// Under the title, which render writes first.
			report = strings.Replace(report, "\n\n", fmt.Sprintf("\n\nEach contender floats %d VIPs on one interface; the client probes, and the VIP column times, %s, which each adds %s.\n\n", vipCount, probedVIP(), which), 1)
		}
	}
	if runLoad {
		report += benchLoad(bin, *loadFor, strings.TrimPrefix(loadOnly, ":"))
	}
	if runLinks {
		report += benchLinksAll(bin, *quick)
	}
	if runFaults {
		crash, rotations, locks := 100, 20, 20
		if *quick {
			crash, rotations, locks = 20, 5, 5
		}
		fmt.Fprintln(os.Stderr, "== faults")
		report += renderFaults(benchFaults(bin, crash, rotations, locks))
	}
	if syncLatency {
		// Only the alternating sync-write latency, for comparing settings.
		for _, own := range []bool{false, true} {
			h, r, err := benchSyncLatency(bin, *nwrites/20, own)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			cpus := "shared CPUs:"
			if own {
				cpus = "own CPUs:   "
			}
			fmt.Printf("%s sync write p50/p99: hapair %.1f/%.1f µs, Redis SET+WAIT 1 %.1f/%.1f µs, ratio %.2f/%.2f\n", cpus,
				us(h[0]), us(h[1]), us(r[0]), us(r[1]), float64(h[0])/float64(r[0]), float64(h[1])/float64(r[1]))
		}
		return
	}
	if runSessions {
		report += benchSessions(bin, *nwrites, *quick)
	}
	fmt.Print(report)
	if *write != "" {
		if err := os.WriteFile(*write, []byte(report), 0o644); err != nil {
			fatal(err)
		}
	}
}

// maker starts one contender on a fresh pair.
type maker struct {
	name string
	make func() (contender, error)
}

// makers are the contenders, hapair at each profile and keepalived at
// three advert intervals.
func makers(bin string) []maker {
	return []maker{
		{profileLabel("default"), func() (contender, error) { return newHapair(bin, "default") }},
		{profileLabel("fast"), func() (contender, error) { return newHapair(bin, "fast") }},
		{profileLabel("turbo"), func() (contender, error) { return newHapair(bin, "turbo") }},
		{"keepalived advert 1s", func() (contender, error) { return newKeepalived("1") }},
		{"keepalived advert 0.1s", func() (contender, error) { return newKeepalived("0.1") }},
		{"keepalived advert 0.01s", func() (contender, error) { return newKeepalived("0.01") }},
	}
}

// benchFailovers runs every contender's failover scenarios runs times, and
// measures each one idle.
func benchFailovers(bin, only string, runs int) (cells []*cell, idle []string) {
	for _, mk := range makers(bin) {
		if only != "" && !containsAny(mk.name, strings.Split(only, ",")) {
			continue
		}
		fmt.Fprintf(os.Stderr, "== %s\n", mk.name)
		c, err := mk.make()
		if err != nil {
			cells = append(cells, &cell{contender: mk.name, scenario: "-", err: err})
			fmt.Fprintln(os.Stderr, "  ", err)
			continue
		}
		if ic, err := c.idle(); err == nil {
			idle = append(idle, fmt.Sprintf("| %s | %.1f MiB | %.1f MiB | %.1f MiB | %.2f%% | %.0f |", mk.name, mib(ic.memKB), mib(ic.anonKB), mib(ic.rssKB), ic.cpu, ic.wakes))
		}
		for _, sc := range c.scenarios() {
			ce := &cell{contender: mk.name, scenario: sc}
			cells = append(cells, ce)
			for i := 0; i < runs; i++ {
				r, err := c.run(sc)
				if err != nil {
					ce.err = err
					fmt.Fprintf(os.Stderr, "   %s run %d: %v\n", sc, i+1, err)
					break
				}
				fmt.Fprintf(os.Stderr, "   %s\n", r)
				ce.vip = append(ce.vip, r.VIPAfter)
				ce.outage = append(ce.outage, r.Outage)
			}
		}
		c.close()
	}
	return cells, idle
}

// benchSessions measures session replication against Redis: throughput,
// sync write latency, and writes lost over kill -9 failovers in sync mode.
func benchSessions(bin string, nwrites int, quick bool) string {
	writes, sessions := nwrites, 200_000
	if quick && nwrites == 1_000_000 {
		writes = 200_000
	}
	var figs []syncFigures
	for _, b := range []struct {
		name string
		run  func(bin string, writes, sessions int) (syncFigures, error)
	}{
		{"hapair", benchHapairSync},
		{"Redis", func(_ string, w, s int) (syncFigures, error) { return benchRedis(w, s) }},
	} {
		fmt.Fprintln(os.Stderr, "== session replication:", b.name)
		f, err := b.run(bin, writes, sessions)
		if err != nil {
			fmt.Fprintln(os.Stderr, "  ", err)
			f.note = "failed: " + err.Error()
		}
		figs = append(figs, f)
	}
	for _, own := range []bool{false, true} {
		fmt.Fprintln(os.Stderr, "== sync write latency: hapair and Redis, alternating; each node on CPUs of its own:", own)
		h, r, err := benchSyncLatency(bin, writes/20, own)
		switch {
		case err != nil:
			fmt.Fprintln(os.Stderr, "  ", err)
		case own:
			figs[0].ownP50, figs[0].ownP99 = h[0], h[1]
			figs[1].ownP50, figs[1].ownP99 = r[0], r[1]
		default:
			figs[0].syncP50, figs[0].syncP99 = h[0], h[1]
			figs[1].syncP50, figs[1].syncP99 = r[0], r[1]
		}
	}
	rounds := 100
	if quick {
		rounds = 20
	}
	fmt.Fprintf(os.Stderr, "== sync mode: %d kill -9 failovers under writes\n", rounds)
	z, err := benchZeroLoss(bin, rounds)
	if err != nil {
		fmt.Fprintln(os.Stderr, "  ", err)
	}
	return renderSync(figs) + renderZeroLoss(z, rounds, err)
}

func containsAny(s string, subs []string) bool {
	for _, x := range subs {
		if x != "" && strings.Contains(s, x) {
			return true
		}
	}
	return false
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(min(i, len(s))-1, 0)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d.Microseconds())/1000) }

// versions names what was measured.
func versions() string {
	first := func(name string, args ...string) string {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			return name + " (not installed)"
		}
		l, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		return l
	}
	rev, _ := exec.Command("git", "describe", "--always", "--dirty").Output()
	return fmt.Sprintf("hapair %s; %s; %s", strings.TrimSpace(string(rev)), first("keepalived", "--version"), first("redis-server", "--version"))
}

// targets checks the figures the issues ask for, as measured in this run.
func targets(cells []*cell) string {
	get := func(contender, scenario string) *cell {
		for _, c := range cells {
			if strings.Contains(c.contender, contender) && c.scenario == scenario && len(c.vip) > 0 {
				return c
			}
		}
		return nil
	}
	var rows []string
	row := func(what string, ok bool, figs string) {
		v := "met"
		if !ok {
			v = "MISSED"
		}
		rows = append(rows, fmt.Sprintf("| %s | %s | %s |", what, figs, v))
	}
	hd, hf := get("hapair default", "host-loss"), get("hapair fast", "host-loss")
	k1, k01, k001 := get("keepalived advert 1s", "host-loss"), get("keepalived advert 0.1s", "host-loss"), get("keepalived advert 0.01s", "host-loss")
	if hd != nil {
		row("hapair default host loss: VIP p50 < 330 ms", pct(hd.vip, 50) < 330*time.Millisecond, ms(pct(hd.vip, 50))+" ms")
	}
	if hd != nil && k01 != nil {
		row("hapair default beats keepalived 0.1 s advert (VIP p50)", pct(hd.vip, 50) < pct(k01.vip, 50), ms(pct(hd.vip, 50))+" vs "+ms(pct(k01.vip, 50))+" ms")
	}
	if hd != nil && k1 != nil {
		r := float64(pct(k1.vip, 50)) / float64(pct(hd.vip, 50))
		row("hapair default ~10x faster than keepalived's default", r >= 9, fmt.Sprintf("%.1fx", r))
	}
	if hf != nil {
		row("hapair fast host loss: VIP p50 < 35 ms, p99 < 45 ms", pct(hf.vip, 50) < 35*time.Millisecond && pct(hf.vip, 99) < 45*time.Millisecond, ms(pct(hf.vip, 50))+" / "+ms(pct(hf.vip, 99))+" ms")
	}
	if hf != nil && k001 != nil {
		row("hapair fast beats keepalived 0.01 s on VIP p50", pct(hf.vip, 50) < pct(k001.vip, 50), ms(pct(hf.vip, 50))+" vs "+ms(pct(k001.vip, 50))+" ms")
		row("hapair fast beats keepalived 0.01 s on client outage p50", pct(hf.outage, 50) < pct(k001.outage, 50), ms(pct(hf.outage, 50))+" vs "+ms(pct(k001.outage, 50))+" ms")
	}
	if ht := get("hapair turbo", "host-loss"); ht != nil {
		row("hapair turbo host loss: VIP p50 < 8 ms, p99 < 12 ms", pct(ht.vip, 50) < 8*time.Millisecond && pct(ht.vip, 99) < 12*time.Millisecond, ms(pct(ht.vip, 50))+" / "+ms(pct(ht.vip, 99))+" ms")
		row("hapair turbo host loss: client outage p50 < 10 ms", pct(ht.outage, 50) < 10*time.Millisecond, ms(pct(ht.outage, 50))+" ms")
	}
	if hf != nil {
		row("hapair fast host loss: VIP p50 < 25 ms", pct(hf.vip, 50) < 25*time.Millisecond, ms(pct(hf.vip, 50))+" ms")
	}
	for _, prof := range []string{"hapair default", "hapair fast", "hapair turbo"} {
		if g := get(prof, "graceful-stop"); g != nil {
			row(prof+" graceful stop: VIP p50 < 5 ms, client gap p50 < 2 ms", pct(g.vip, 50) < 5*time.Millisecond && pct(g.outage, 50) < 2*time.Millisecond, ms(pct(g.vip, 50))+" / "+ms(pct(g.outage, 50))+" ms")
		}
		if p := get(prof, "process-death"); p != nil {
			row(prof+" critical process death: VIP p50 < 10 ms", pct(p.vip, 50) < 10*time.Millisecond, ms(pct(p.vip, 50))+" ms")
		}
	}
	if len(rows) == 0 {
		return ""
	}
	return "\nTargets, from the figures above:\n\n| target | measured | |\n|---|---|---|\n" + strings.Join(rows, "\n") + "\n"
}

func render(cells []*cell, idle []string, runs int) string {
	var b strings.Builder
	host, _ := os.Hostname()
	kernel, _ := exec.Command("uname", "-r").Output()
	fmt.Fprintf(&b, "# hapair benchmarks\n\nMeasured %s on %s (%d cores, kernel %s, %s), %d runs per cell, by `go run ./cmd/hapair-bench`.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), host, runtime.NumCPU(), strings.TrimSpace(string(kernel)), runtime.Version(), runs)
	fmt.Fprintf(&b, "Versions: %s.\n\n", versions())
	fmt.Fprintf(&b, "Procedure: namespaces client, a and b on a bridge (veth), a dedicated heartbeat veth and a replication veth between a and b. The client pings the VIP every 1 ms. *VIP* is the time from the fault to the VIP being configured on the other node (timed when the kernel's address notification is read; a 100 µs netlink poll read up to 1 ms late on a busy CPU); *outage* is the longest gap between two replies the client received with a probe between them unanswered, else the longest round trip of a probe (replies timed by the kernel; a gap that is only this prober sending late is not counted). host-loss = the holder's agent frozen (SIGSTOP, its children first: hapaird's heartbeat core, keepalived's VRRP process), the client cut off from it just before by a filter at its public ingress (the outage counts from one probe before the freeze), its links cut once the VIP moved, then its agent killed -9 (cutting links first held the shared kernel's rtnl lock for 10-30 ms, which the survivor's address claim waited for); graceful-stop = SIGTERM to the holder's agent; switchover = `hapairctl switchover`; process-death = the holder's critical process (a stand-in media server) killed: hapair watches it with a pidfd; keepalived with a `vrrp_script` polled every second (its `track_process` needs the kernel's process connector, which exists only in the initial network namespace, so it cannot run in the lab). For process-death the service is already down at the fault, so the *VIP* column is the user's outage; the ping outage only shows the handover itself. daemon-crash = the holder's hapaird alone killed -9 (what the OOM killer or a panic does), its heartbeat core left to hand over (hapair only: keepalived's parent respawns a killed VRRP process, which is another case).\n\n")
	fmt.Fprintln(&b, "| contender | scenario | VIP p50 | VIP p99 | VIP max | outage p50 | outage p99 | outage max | runs |")
	fmt.Fprintln(&b, "|---|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, c := range cells {
		if c.err != nil && len(c.vip) == 0 {
			fmt.Fprintf(&b, "| %s | %s | failed: %v |||||||\n", c.contender, c.scenario, strings.ReplaceAll(c.err.Error(), "\n", " "))
			continue
		}
		fmt.Fprintf(&b, "| %s | %s | %s ms | %s ms | %s ms | %s ms | %s ms | %s ms | %d |\n", c.contender, c.scenario,
			ms(pct(c.vip, 50)), ms(pct(c.vip, 99)), ms(pct(c.vip, 100)), ms(pct(c.outage, 50)), ms(pct(c.outage, 99)), ms(pct(c.outage, 100)), len(c.vip))
	}
	b.WriteString(targets(cells))
	if len(idle) > 0 {
		fmt.Fprintf(&b, "\nIdle cost of the agent on the active node, all its processes (hapaird, built as the packages ship it, and its heartbeat core; keepalived's parent and VRRP child; CPU and context switches of keepalived's VRRP child only). *Memory*: the pages resident in any of them, each counted once (read from their page tables); *own*: of those, the anonymous ones (heap, stacks), which no other process shares; *RSS summed*: their RSS added up, which counts a page twice when two of them map it (hapaird's core and agent are one executable). CPU is the time their threads ran by the scheduler's own account (schedstat, in ns, where /proc's clock ticks read in steps of 0.1 %% of a CPU), averaged over %v; context switches a second are of all their threads (each a thread put to sleep or taken off a CPU; unlike the CPU share, they do not change with how busy the machine is):\n", idleWindow)
		fmt.Fprintln(&b, "\n| contender | memory | own | RSS summed | CPU | context switches/s |\n|---|---:|---:|---:|---:|---:|")
		for _, l := range idle {
			fmt.Fprintln(&b, l)
		}
	}
	return b.String()
}

func mib(kb int) float64 { return float64(kb) / 1024 }

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 }
