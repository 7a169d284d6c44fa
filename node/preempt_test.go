package node

import "testing"

func TestPreemptionModel(t *testing.T) {
	for _, c := range []struct {
		name, debugfs, cmdline, version, config string
		want, source                            string
	}{
		{"debugfs names the model in force", "none voluntary (full) lazy", "preempt=none", "#1 SMP PREEMPT_DYNAMIC", "CONFIG_PREEMPT_NONE=y",
			"full", "/sys/kernel/debug/sched/preempt"},
		{"the lab's VM: dynamic, no preempt=, built for none", "", "console=ttyS0 quiet", "#1 SMP PREEMPT_DYNAMIC @0", "# CONFIG_PREEMPT is not set\nCONFIG_PREEMPT_NONE=y\nCONFIG_PREEMPT_DYNAMIC=y",
			"none", "the kernel's config"},
		{"dynamic, booted preempt=full", "", "ro quiet preempt=full", "#1 SMP PREEMPT_DYNAMIC Debian 6.12.1-1", "CONFIG_PREEMPT_VOLUNTARY=y",
			"full", "/proc/cmdline"},
		{"Debian's default: dynamic, voluntary", "", "ro quiet", "#1 SMP PREEMPT_DYNAMIC Debian 6.12.1-1", "CONFIG_PREEMPT_VOLUNTARY=y\nCONFIG_PREEMPT_DYNAMIC=y",
			"voluntary", "the kernel's config"},
		{"dynamic, no config to read", "", "ro", "#1 SMP PREEMPT_DYNAMIC", "", "", ""},
		{"a real-time kernel", "", "", "#1 SMP PREEMPT_RT Debian 6.12.1-1", "", "rt", "uname -v"},
		{"built for full preemption", "", "", "#1 SMP PREEMPT Tue Jan 2", "", "full", "uname -v"},
		{"built for none or voluntary, no config", "", "", "#1 SMP Tue Jan 2", "", "none or voluntary", "uname -v"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, s := preemptionModel(c.debugfs, c.cmdline, c.version, c.config)
			if m != c.want || s != c.source {
				t.Errorf("got %q from %q, want %q from %q", m, s, c.want, c.source)
			}
		})
	}
}
