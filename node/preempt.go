package node

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/hapair/hapair/config"
)

// PreemptionWarning says what a dead interval shorter than the fast
// profile's risks on this kernel, when it does not preempt; "" otherwise
// (or when it cannot tell). hapaird --check prints it, and the daemon logs
// it at start.
func PreemptionWarning(cfg *config.Config) string {
	if cfg.DeadInterval >= config.Profiles["fast"].Dead {
		return ""
	}
	model, source := KernelPreemption()
	switch model {
	case "none", "voluntary", "none or voluntary":
	default:
		return ""
	}
	return fmt.Sprintf("profile %s (dead interval %v) on a kernel that does not preempt (%s, from %s): kernel work can hold the real-time heartbeat core past half its dead interval, and a busy node then fails over falsely; boot with preempt=full, or measure a real-time thread's lateness under load (cyclictest) first",
		cfg.Profile, cfg.DeadInterval, model, source)
}

// KernelPreemption says how this kernel preempts a task running in the
// kernel ("none", "voluntary", "full", "lazy", "rt", or "none or
// voluntary") and where it read that; "" when it cannot tell. Turbo's
// real-time heartbeat core needs a kernel that preempts: on one that does
// not, the lab's VM (CONFIG_PREEMPT_NONE) woke a real-time thread up to
// 17 ms late beside CPU hogs and a disk flood.
func KernelPreemption() (model, source string) {
	var uts unix.Utsname
	unix.Uname(&uts)
	release := unix.ByteSliceToString(uts.Release[:])
	return preemptionModel(readSmall("/sys/kernel/debug/sched/preempt"), readSmall("/proc/cmdline"),
		unix.ByteSliceToString(uts.Version[:]), kernelConfig(release))
}

// preemptionModel decides from what the kernel says, the most direct
// first: debugfs names the model in force in parentheses ("none
// voluntary (full) lazy"); a PREEMPT_RT kernel says so in its version; a
// PREEMPT_DYNAMIC one runs what preempt= on its command line asks, else
// its config's default; a kernel built for one model says PREEMPT in its
// version when it is full, nothing when it is none or voluntary.
func preemptionModel(debugfs, cmdline, version, config string) (model, source string) {
	for _, w := range strings.Fields(debugfs) {
		if strings.HasPrefix(w, "(") && strings.HasSuffix(w, ")") {
			return strings.Trim(w, "()"), "/sys/kernel/debug/sched/preempt"
		}
	}
	words := strings.Fields(version)
	has := func(w string) bool {
		for _, x := range words {
			if x == w {
				return true
			}
		}
		return false
	}
	switch {
	case has("PREEMPT_RT"):
		return "rt", "uname -v"
	case has("PREEMPT_DYNAMIC"):
		for _, f := range strings.Fields(cmdline) {
			if v, ok := strings.CutPrefix(f, "preempt="); ok {
				return v, "/proc/cmdline"
			}
		}
		if m := configModel(config); m != "" {
			return m, "the kernel's config"
		}
		return "", ""
	case has("PREEMPT"):
		return "full", "uname -v"
	}
	if m := configModel(config); m != "" {
		return m, "the kernel's config"
	}
	return "none or voluntary", "uname -v"
}

// configModel is the preemption model a kernel config builds (for a
// PREEMPT_DYNAMIC kernel, its default); "" if the config does not say.
func configModel(config string) string {
	for _, l := range strings.Split(config, "\n") {
		switch strings.TrimSpace(l) {
		case "CONFIG_PREEMPT_RT=y":
			return "rt"
		case "CONFIG_PREEMPT_NONE=y":
			return "none"
		case "CONFIG_PREEMPT_VOLUNTARY=y":
			return "voluntary"
		case "CONFIG_PREEMPT_LAZY=y":
			return "lazy"
		case "CONFIG_PREEMPT=y":
			return "full"
		}
	}
	return ""
}

// kernelConfig is the running kernel's build config, from /boot or
// /proc/config.gz; "" if neither is there.
func kernelConfig(release string) string {
	if b := readSmall("/boot/config-" + release); b != "" {
		return b
	}
	f, err := os.Open("/proc/config.gz")
	if err != nil {
		return ""
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		return ""
	}
	b, _ := io.ReadAll(io.LimitReader(z, 4<<20))
	return string(b)
}

// readSmall reads a small file, "" if it cannot.
func readSmall(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return string(bytes.TrimSpace(b))
}
