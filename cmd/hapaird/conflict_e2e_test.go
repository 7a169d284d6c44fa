package main

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hapair/hapair/internal/control"
	"github.com/hapair/hapair/lab"
)

// probeOften makes the active probe every 2 s, so a test sees a change
// within seconds (the default is 30 s).
const probeOften = `
[announce]
probe = "2s"
`

const conflictLine = "another host answers for a VIP this node holds"

// conflicts is what node's status says answers for its VIPs besides it.
func conflicts(c *lab.Cluster, node string) []control.VIPConflict {
	s, err := c.Status(node)
	if err != nil {
		return nil
	}
	return s.VIPConflicts
}

func bridgeMAC(t *testing.T, c *lab.Cluster) string {
	t.Helper()
	l, err := c.Handle(c.Client).LinkByName(lab.Bridge)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().HardwareAddr.String()
}

func clientHoldsTheVIP(t *testing.T, c *lab.Cluster, add bool) {
	t.Helper()
	verb := map[bool]string{true: "add", false: "del"}[add]
	if out, err := lab.Command(c.Client, "ip", "addr", verb, lab.VIP.String(), "dev", lab.Bridge).CombinedOutput(); err != nil {
		t.Fatalf("ip addr %s: %v %s", verb, err, out)
	}
}

// A pair moved from keepalived while the old master still holds the VIP
// (or a VIP given out twice): another host on the public network answers
// for it. The active says so in its log, status and metrics, and says
// when it no longer does; a handover is no such host, and neither is the
// standby, which holds nothing.
func TestAVIPAnsweredByAnotherHostIsReported(t *testing.T) {
	const metricsAddr = "127.0.0.1:9405"
	c := cluster(t, lab.ConfigOptions{Extra: probeOften + "\n[metrics]\nlisten = \"" + metricsAddr + "\"\n"})
	gauge := func(node string) string {
		t.Helper()
		for _, l := range strings.Split(scrape(t, c.Node(node), metricsAddr), "\n") {
			if strings.HasPrefix(l, `hapair_vip_conflicts{vip="`+lab.VIP.Addr().String()+`"} `) {
				return l
			}
		}
		return ""
	}
	// The "old master" is the client's namespace, on the same segment.
	clientHoldsTheVIP(t, c, true)
	act := settle(t, c)
	intruder := bridgeMAC(t, c)
	var got []control.VIPConflict
	if !pollUntil(10*time.Second, func() bool { got = conflicts(c, act); return len(got) == 1 }) {
		t.Fatalf("%s's status names no other host for the VIP: %+v", act, got)
	}
	if got[0].VIP != lab.VIP.Addr().String() || got[0].MAC != intruder || got[0].Interface != lab.Public {
		t.Errorf("%s's status says %+v, want %s on %s at %s", act, got[0], lab.VIP.Addr(), lab.Public, intruder)
	}
	if lines := loggedLines(c, act, conflictLine, 1); len(lines) != 1 || !strings.Contains(lines[0], intruder) {
		t.Errorf("%s's log: %q", act, lines)
	}
	s, _ := c.Status(act)
	if text := s.Text(); !strings.Contains(text, "VIP ALSO ANSWERED BY ANOTHER HOST: "+lab.VIP.Addr().String()) {
		t.Errorf("hapairctl status does not say so:\n%s", text)
	}
	if l := gauge(act); !strings.HasSuffix(l, "} 1") {
		t.Errorf("%s's metrics: %q, want the VIP's conflict gauge at 1", act, l)
	}
	if n := len(conflicts(c, other(act))); n != 0 {
		t.Errorf("the standby names %d hosts", n)
	}
	// The operator removes it there: the active says so, once.
	clientHoldsTheVIP(t, c, false)
	if !pollUntil(10*time.Second, func() bool { return len(conflicts(c, act)) == 0 }) {
		t.Fatalf("%s still names %+v", act, conflicts(c, act))
	}
	if l := gauge(act); !strings.HasSuffix(l, "} 0") {
		t.Errorf("%s's metrics: %q, want the VIP's conflict gauge at 0", act, l)
	}
	if lines := loggedLines(c, act, "no other host answers for the VIP any more", 1); len(lines) != 1 {
		t.Errorf("%s's log: %q", act, lines)
	}
	// A switchover: the new active probes once the old one let go, and
	// finds nobody until the other host takes the VIP again.
	switchover(t, c, act)
	act = other(act)
	clientHoldsTheVIP(t, c, true)
	if !pollUntil(10*time.Second, func() bool { return len(conflicts(c, act)) == 1 }) {
		t.Fatalf("%s's status names no other host for the VIP after the switchover", act)
	}
	for _, n := range []string{"a", "b"} {
		for _, l := range logLines(c, n, conflictLine) {
			if !strings.Contains(l, intruder) {
				t.Errorf("%s named a host that is not the other one (%s): %s", n, intruder, l)
			}
		}
	}
	if lines := logLines(c, act, conflictLine); len(lines) != 1 {
		t.Errorf("%s's log names another host %d times: %q", act, len(lines), lines)
	}
	if n := len(conflicts(c, other(act))); n != 0 {
		t.Errorf("the old active, now standby, still names %d hosts", n)
	}
}

// The heartbeat links cut and the public network whole: both nodes go
// active, and no heartbeat can tell them. Each hears the other answer for
// the VIP once the other's lease would have ended had it not been active,
// and says so; after the heal the one left active finds nobody.
func TestBothActiveAcrossCutHeartbeatLinksIsSeenOnThePublicNetwork(t *testing.T) {
	c := cluster(t, lab.ConfigOptions{Extra: probeOften})
	if act := settle(t, c); act != "a" {
		t.Fatalf("setup: %s active", act)
	}
	isolateUntilBothActive(t, c)
	macs := map[string]string{"a": c.MAC("a").String(), "b": c.MAC("b").String()}
	for _, n := range []string{"a", "b"} {
		var got []control.VIPConflict
		// The lab's lease is 4 s; the probe comes after it and a settle.
		if !pollUntil(15*time.Second, func() bool { got = conflicts(c, n); return len(got) == 1 }) {
			t.Fatalf("%s does not name the other node: %+v", n, got)
		}
		if got[0].MAC != macs[other(n)] {
			t.Errorf("%s names %s, want %s's %s", n, got[0].MAC, other(n), macs[other(n)])
		}
		if lines := logLines(c, n, conflictLine); len(lines) != 1 || !strings.Contains(lines[0], "the peer is not heard") {
			t.Errorf("%s's log: %q", n, lines)
		}
	}
	heal(t, c, "a")
	if !pollUntil(10*time.Second, func() bool { return len(conflicts(c, "a")) == 0 && len(conflicts(c, "b")) == 0 }) {
		t.Errorf("after the heal: a names %+v, b %+v", conflicts(c, "a"), conflicts(c, "b"))
	}
	if lines := logLines(c, "a", conflictLine); !slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, macs["b"]) }) {
		t.Errorf("a's log: %q", lines)
	}
}
