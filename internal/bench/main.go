// Command bench measures hapair's failovers side by side with keepalived,
// in one run, on this machine, in network namespaces it builds, and prints
// a table (also written to docs/benchmarks.md with --write). As root:
//
//	go run ./internal/bench            # 20 runs per cell
//	go run ./internal/bench --quick    # 5 runs per cell
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

	"github.com/hapair/hapair/internal/labnet"
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
	run(scenario string) (labnet.Result, error)
	idle() (rssKB int, cpuPct float64, err error)
	close()
}

func main() {
	runs := flag.Int("runs", 20, "runs per cell")
	quick := flag.Bool("quick", false, "5 runs per cell")
	write := flag.String("write", "", "also write the report to this markdown file")
	only := flag.String("only", "", "comma-separated contenders to run (default all)")
	flag.Parse()
	if *quick {
		*runs = 5
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench: needs root (network namespaces)")
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "hapair-bench-")
	if err != nil {
		fatal(err)
	}
	defer os.RemoveAll(dir)
	bin, err := labnet.BuildDaemon(dir, false)
	if err != nil {
		fatal(err)
	}
	makers := []struct {
		name string
		make func() (contender, error)
	}{
		{"hapair default (100ms/300ms)", func() (contender, error) { return newHapair(bin, "default") }},
		{"hapair fast (10ms/30ms)", func() (contender, error) { return newHapair(bin, "fast") }},
		{"keepalived advert 1s", func() (contender, error) { return newKeepalived("1") }},
		{"keepalived advert 0.1s", func() (contender, error) { return newKeepalived("0.1") }},
		{"keepalived advert 0.01s", func() (contender, error) { return newKeepalived("0.01") }},
	}
	var cells []*cell
	var idle []string
	for _, mk := range makers {
		if *only != "" && !containsAny(mk.name, strings.Split(*only, ",")) {
			continue
		}
		fmt.Fprintf(os.Stderr, "== %s\n", mk.name)
		c, err := mk.make()
		if err != nil {
			cells = append(cells, &cell{contender: mk.name, scenario: "-", err: err})
			fmt.Fprintln(os.Stderr, "  ", err)
			continue
		}
		if rss, cpu, err := c.idle(); err == nil {
			idle = append(idle, fmt.Sprintf("| %s | %d KiB | %.2f%% |", mk.name, rss, cpu))
		}
		for _, sc := range c.scenarios() {
			ce := &cell{contender: mk.name, scenario: sc}
			cells = append(cells, ce)
			for i := 0; i < *runs; i++ {
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
	report := render(cells, idle, *runs)
	if *only == "" || containsAny("sessions", strings.Split(*only, ",")) {
		writes, sessions := 1_000_000, 100_000
		if *quick {
			writes = 200_000
		}
		var figs []syncFigures
		fmt.Fprintln(os.Stderr, "== session replication: hapair")
		if f, err := benchHapairSync(bin, writes, sessions); err != nil {
			fmt.Fprintln(os.Stderr, "  ", err)
			f.note = "failed: " + err.Error()
			figs = append(figs, f)
		} else {
			figs = append(figs, f)
		}
		fmt.Fprintln(os.Stderr, "== session replication: Redis")
		if f, err := benchRedis(writes, sessions); err != nil {
			fmt.Fprintln(os.Stderr, "  ", err)
			f.note = "failed: " + err.Error()
			figs = append(figs, f)
		} else {
			figs = append(figs, f)
		}
		report += renderSync(figs)
	}
	fmt.Print(report)
	if *write != "" {
		if err := os.WriteFile(*write, []byte(report), 0o644); err != nil {
			fatal(err)
		}
	}
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

func render(cells []*cell, idle []string, runs int) string {
	var b strings.Builder
	host, _ := os.Hostname()
	kernel, _ := exec.Command("uname", "-r").Output()
	fmt.Fprintf(&b, "# hapair benchmarks\n\nMeasured %s on %s (%d cores, kernel %s, %s), %d runs per cell, by `go run ./internal/bench`.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), host, runtime.NumCPU(), strings.TrimSpace(string(kernel)), runtime.Version(), runs)
	fmt.Fprintf(&b, "Procedure: namespaces client, a and b on a bridge (veth), a dedicated heartbeat veth and a replication veth between a and b. The client pings the VIP every 1 ms. *VIP* is the time from the fault to the VIP being configured on the other node (polled via netlink every 100 µs); *outage* is the longest gap between two replies the client received. host-loss = the holder's links cut, then its agent killed -9; graceful-stop = SIGTERM to the holder's agent; switchover = `hapairctl switchover`; process-death = the holder's critical process (a stand-in media server) killed: hapair watches it with a pidfd; keepalived with a `vrrp_script` polled every second (its `track_process` needs the kernel's process connector, which exists only in the initial network namespace, so it cannot run in the lab). For process-death the service is already down at the fault, so the *VIP* column is the user's outage; the ping outage only shows the handover itself.\n\n")
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
	if len(idle) > 0 {
		fmt.Fprintln(&b, "\nIdle cost of the agent on the active node (RSS; CPU averaged over 5 s):")
		fmt.Fprintln(&b, "\n| contender | RSS | CPU |\n|---|---:|---:|")
		for _, l := range idle {
			fmt.Fprintln(&b, l)
		}
	}
	return b.String()
}
