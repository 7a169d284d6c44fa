package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/hapair/hapair/lab"
)

const labHelp = `keys (then Enter):
  k  host loss: cut the active's links and kill -9 its daemon
  t  graceful stop of the active (SIGTERM)
  c  daemon crash: kill -9 the active's hapaird alone (its heartbeat core hands over)
  p  critical process death: kill the active's stand-in media server
  s  switchover
  h  cut / restore the heartbeat link alone (degraded, no failover)
  r  restore: links up, restart stopped daemons
  q  quit (removes everything)
`

func runLab(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("hapairctl lab", flag.ContinueOnError)
	fs.SetOutput(stderr)
	profile := fs.String("profile", "default", "heartbeat profile: default, fast or turbo")
	scenario := fs.String("scenario", "", "run one case and exit: "+strings.Join(lab.Scenarios, ", "))
	runs := fs.Int("runs", 1, "with --scenario: how many times")
	keep := fs.Bool("keep-logs", false, "keep the daemons' logs and config after the lab ends")
	if err := fs.Parse(args); err != nil {
		return parseRC(err)
	}
	if *scenario != "" && !slices.Contains(lab.Scenarios, *scenario) {
		fmt.Fprintf(stderr, "hapairctl lab: unknown scenario %q (have %s)\n", *scenario, strings.Join(lab.Scenarios, ", "))
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(stderr, "hapairctl lab: needs root (it builds network namespaces)")
		return 1
	}
	if err := lab.CheckTools(); err != nil {
		fmt.Fprintln(stderr, "hapairctl", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "hapair-lab-")
	if err != nil {
		fmt.Fprintln(stderr, "hapairctl lab:", err)
		return 1
	}
	if *keep {
		defer fmt.Fprintln(stdout, "logs and config kept in", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	fmt.Fprintln(stdout, "finding or building hapaird ...")
	bin, err := lab.FindDaemon(dir)
	if err != nil {
		fmt.Fprintln(stderr, "hapairctl lab:", err)
		return 1
	}
	p, err := lab.New(lab.Options{})
	if err != nil {
		fmt.Fprintln(stderr, "hapairctl lab:", err)
		return 1
	}
	defer p.Close()
	c, err := p.NewCluster(bin, dir, lab.ConfigOptions{Profile: *profile, Media: true})
	if err != nil {
		fmt.Fprintln(stderr, "hapairctl lab:", err)
		return 1
	}
	fmt.Fprintf(stdout, "pair %s: client %s, node a %s, node b %s; VIP %s; profile %s\n", p.Tag, p.Client, p.A, p.B, lab.VIP, *profile)
	active, err := c.Settle(10 * time.Second)
	if err != nil {
		fmt.Fprintln(stderr, "hapairctl lab:", err)
		dumpLogs(c, stderr)
		return 1
	}
	fmt.Fprintf(stdout, "settled: %s is ACTIVE and holds the VIP\n", active)

	if *scenario != "" {
		for i := 0; i < *runs; i++ {
			res, err := c.Run(*scenario, time.Millisecond)
			if err != nil {
				fmt.Fprintln(stderr, "hapairctl lab:", err)
				dumpLogs(c, stderr)
				return 1
			}
			fmt.Fprintln(stdout, res)
		}
		return 0
	}
	return interactive(c, stdout, stderr)
}

func dumpLogs(c *lab.Cluster, w io.Writer) {
	for _, n := range []string{"a", "b"} {
		b, _ := os.ReadFile(c.LogPath(n))
		fmt.Fprintf(w, "--- log of %s\n%s", n, b)
	}
}

// labInput is what the lab reads its keys from; a test gives its own.
var labInput io.Reader = os.Stdin

func interactive(c *lab.Cluster, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Fprint(stdout, labHelp)
	// The client pings the VIP all along; the view reports what it sees.
	probe, err := lab.NewProber(c.Client, lab.VIP.Addr())
	if err != nil {
		fmt.Fprintln(stderr, "hapairctl lab:", err)
		return 1
	}
	defer probe.Close()
	probeCtx, stopProbe := context.WithCancel(ctx)
	probeDone := make(chan struct{})
	go func() {
		defer close(probeDone)
		probe.Run(probeCtx, 5*time.Millisecond)
	}()
	defer func() {
		stopProbe()
		<-probeDone
	}()
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(labInput)
		for sc.Scan() {
			lines <- strings.TrimSpace(sc.Text())
		}
		close(lines)
	}()
	view := time.NewTicker(100 * time.Millisecond)
	defer view.Stop()
	hbCut := false
	last := ""
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(stdout, "\nremoving the lab ...")
			return 0
		case <-view.C:
			if v := liveView(c, probe); v != last {
				fmt.Fprintf(stdout, "[%s] %s\n", time.Now().Format("15:04:05.000"), v)
				last = v
			}
		case l, ok := <-lines:
			if !ok {
				// The end of a script piped in (printf 's\n' | hapairctl
				// lab), or of a terminal (Ctrl-D): like a shell, done. Left
				// running, a lab whose input has ended is a pair of daemons
				// and three namespaces that nobody can stop but by a signal.
				fmt.Fprintln(stdout, "end of input: removing the lab ...")
				return 0
			}
			if quit := command(c, l, &hbCut, stdout, stderr); quit {
				return 0
			}
		}
	}
}

// command carries out one line the operator typed in the lab; true means
// quit. hbCut is whether the heartbeat link is cut.
func command(c *lab.Cluster, l string, hbCut *bool, stdout, stderr io.Writer) (quit bool) {
	switch l {
	case "q":
		fmt.Fprintln(stdout, "removing the lab ...")
		return true
	case "k", "t", "s", "p", "c":
		name := map[string]string{"k": "host-loss", "t": "graceful-stop", "s": "switchover", "p": "process-death", "c": "daemon-crash"}[l]
		fmt.Fprintf(stdout, "running %s ...\n", name)
		res, err := c.Run(name, time.Millisecond)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return false
		}
		fmt.Fprintln(stdout, res)
		if name == "host-loss" || name == "graceful-stop" {
			fmt.Fprintf(stdout, "(press r to bring %s back: it returns as STANDBY)\n", res.From)
		}
	case "h":
		*hbCut = !*hbCut
		if err := c.CutHeartbeat(!*hbCut); err != nil {
			fmt.Fprintln(stderr, err)
		}
		fmt.Fprintf(stdout, "heartbeat link cut: %v\n", *hbCut)
	case "r":
		*hbCut = false
		if _, err := c.Settle(10 * time.Second); err != nil {
			fmt.Fprintln(stderr, err)
		}
	case "":
	default:
		fmt.Fprint(stdout, labHelp)
	}
	return false
}

// liveView is one line: both roles, who holds the VIP, and what the
// client sees. It changes only when the state does, so it prints only then.
func liveView(c *lab.Cluster, probe *lab.Prober) string {
	var parts []string
	for _, n := range []string{"a", "b"} {
		s, err := c.Status(n)
		if err != nil {
			parts = append(parts, n+": down")
			continue
		}
		st := fmt.Sprintf("%s: %s", n, s.Role)
		if s.Locked {
			st += " (locked)"
		}
		if s.Degraded {
			st += " (degraded)"
		}
		parts = append(parts, st)
	}
	holder := "nobody"
	for _, n := range []string{"a", "b"} {
		if c.Holds(n, lab.VIP.Addr()) {
			holder = n
		}
	}
	mac := c.ClientNeighbour(lab.VIP.Addr()).String()
	via := "?"
	for _, n := range []string{"a", "b"} {
		if m := c.MAC(n); m != nil && m.String() == mac {
			via = n
		}
	}
	client := "reaches the VIP"
	if since := time.Since(probe.LastReply()); since > 50*time.Millisecond {
		client = "NO REPLY from the VIP"
	}
	return fmt.Sprintf("%s | VIP on %s | client %s (its ARP entry points at %s)", strings.Join(parts, "  "), holder, client, via)
}
