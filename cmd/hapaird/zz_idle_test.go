package main

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hapair/hapair/lab"
	"github.com/hapair/hapair/lab/labtest"
)

func cpuTicks(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	u, _ := strconv.ParseFloat(f[11], 64)
	s, _ := strconv.ParseFloat(f[12], 64)
	return u + s
}

func children(pid int) []int {
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	var out []int
	for _, tk := range tasks {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, tk.Name()))
		for _, f := range strings.Fields(string(b)) {
			n, _ := strconv.Atoi(f)
			out = append(out, n)
		}
	}
	return out
}

func TestZZIdle(t *testing.T) {
	if os.Getenv("HAPAIR_IDLE") == "" {
		t.Skip()
	}
	bin, err := lab.BuildDaemon(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	for _, profile := range strings.Fields(os.Getenv("HAPAIR_PROFILES")) {
		p := labtest.NewPair(t, lab.Options{})
		c, err := p.NewCluster(bin, t.TempDir(), lab.ConfigOptions{Profile: profile})
		if err != nil {
			t.Fatal(err)
		}
		act := settle(t, c)
		waitSynced(t, c, act)
		time.Sleep(2 * time.Second)
		if os.Getenv("HAPAIR_PERF") != "" {
			pid := c.Pid(act)
			for _, p := range append([]int{pid}, children(pid)...) {
				out, _ := exec.Command("perf", "record", "-g", "-o", fmt.Sprintf("/tmp/perf-%s-%d.data", profile, p), "-p", strconv.Itoa(p), "--", "sleep", "5").CombinedOutput()
				t.Logf("perf %d: %s", p, out)
			}
			continue
		}
		if os.Getenv("HAPAIR_STRACE") != "" {
			pid := c.Pid(act)
			for _, p := range append([]int{pid}, children(pid)...) {
				out, _ := exec.Command("timeout", "-s", "INT", "5", "strace", "-c", "-f", "-p", strconv.Itoa(p)).CombinedOutput()
				t.Logf("strace %d:\n%s", p, out)
			}
			continue
		}
		for run := 0; run < 3; run++ {
			pid := c.Pid(act)
			pids := append([]int{pid}, children(pid)...)
			var t0 []float64
			for _, p := range pids {
				t0 = append(t0, cpuTicks(p))
			}
			time.Sleep(10 * time.Second)
			var parts []string
			total := 0.0
			for i, p := range pids {
				d := (cpuTicks(p) - t0[i]) / 100 / 10 * 100
				total += d
				parts = append(parts, fmt.Sprintf("pid%d %.2f%%", i, d))
			}
			t.Logf("%s run %d: total %.2f%% (%s)", profile, run, total, strings.Join(parts, ", "))
			for _, p := range pids {
				tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", p))
				var cs []string
				for _, tk := range tasks {
					b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", p, tk.Name()))
					for _, l := range strings.Split(string(b), "\n") {
						if strings.HasPrefix(l, "voluntary_ctxt_switches") || strings.HasPrefix(l, "nonvoluntary_ctxt_switches") {
							cs = append(cs, strings.Fields(l)[1])
						}
					}
				}
				t.Logf("  pid %d tasks %d ctxsw %v", p, len(tasks), cs)
			}
		}
	}
}
