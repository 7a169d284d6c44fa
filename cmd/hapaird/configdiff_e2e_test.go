package main

import (
	"bytes"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hapair/hapair/internal/control"
	"github.com/hapair/hapair/lab"
	"github.com/hapair/hapair/lab/labtest"
)

// An operator adds a VIP to one node's file and forgets the other's, the
// way keepalived users learn to dread: the first failover to the node
// without it loses the address. Both nodes must say so as soon as they
// replicate, in status, in the log and in the metrics, and stop saying
// so once the files agree. Nothing else changes: only the operator knows
// which file is right, and a change made as the guide says (the standby
// first, a switchover, then the other node) passes through the same
// state, so it must not hold that change up.
func TestADifferentFileOnOneNodeIsReported(t *testing.T) {
	c := cluster(t, lab.ConfigOptions{Extra: "\n[metrics]\nlisten = \"127.0.0.1:9405\"\n"})
	act := settle(t, c)
	sb := other(act)
	waitSynced(t, c, act)
	for _, n := range []string{act, sb} {
		if s, err := c.Status(n); err != nil || len(s.Peer.ConfigDiffers) > 0 {
			t.Fatalf("%s with the same file on both nodes: %+v %v", n, s, err)
		}
	}
	if body := scrape(t, c.Node(act), "127.0.0.1:9405"); !strings.Contains(body, "\nhapair_peer_config_differs 0\n") {
		t.Errorf("metrics with the same file on both nodes:\n%s", body)
	}

	src, err := os.ReadFile(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	edited := filepath.Join(c.Dir, "edited.toml")
	if err := os.WriteFile(edited, append(src, "\n[[vip]]\naddress = \"192.0.2.101/24\"\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.RestartOn(sb, edited); err != nil {
		t.Fatal(err)
	}
	want := []string{"[[vip]]"}
	for _, n := range []string{act, sb} {
		var last string
		ok := pollUntil(10*time.Second, func() bool {
			s, err := c.Status(n)
			if err != nil {
				last = err.Error()
				return false
			}
			last = s.Redundancy + " / " + strings.Join(s.Peer.ConfigDiffers, ",")
			// Redundancy stays available: the procedure for a change
			// waits for it between the standby's restart and the
			// switchover, with the files different (operations.md).
			return slices.Equal(s.Peer.ConfigDiffers, want) && s.Redundancy == "available" &&
				strings.Contains(s.Text(), "CONFIG DIFFERS: the peer's file differs from this node's in [[vip]]")
		})
		if !ok {
			t.Fatalf("%s with a VIP only in the standby's file: %s", n, last)
		}
		if l := loggedLines(c, n, "the peer's configuration differs from this node's", 1); len(l) != 1 || !strings.Contains(l[0], "differs=[[vip]]") {
			t.Errorf("%s's log says %q, want one line naming [[vip]]", n, l)
		}
	}
	if body := scrape(t, c.Node(act), "127.0.0.1:9405"); !strings.Contains(body, "\nhapair_peer_config_differs 1\n") {
		t.Errorf("metrics with a VIP only in the standby's file:\n%s", body)
	}
	if s, err := c.Status(act); err != nil || s.Role != "ACTIVE" {
		t.Errorf("the active after the report: %+v %v", s, err)
	}

	// The operator goes on as section 4 of operations.md says: the
	// switchover (redundancy is available), then the old active
	// restarted on the new file, after which the two agree.
	switchover(t, c, act)
	added := netip.MustParseAddr("192.0.2.101")
	if !pollUntil(5*time.Second, func() bool { return c.Holds(sb, added) && c.Holds(sb, lab.VIP.Addr()) }) {
		t.Errorf("%s, active on the new file, does not hold both VIPs", sb)
	}
	if err := c.RestartOn(act, edited); err != nil {
		t.Fatal(err)
	}
	if !pollUntil(10*time.Second, func() bool {
		s, err := c.Status(sb)
		return err == nil && len(s.Peer.ConfigDiffers) == 0 && !strings.Contains(s.Text(), "CONFIG DIFFERS")
	}) {
		s, err := c.Status(sb)
		t.Fatalf("%s once both run the new file: %+v %v", sb, s, err)
	}
	if l := loggedLines(c, sb, "the peer's configuration agrees with this node's again", 1); len(l) != 1 {
		t.Errorf("%s's log says %q, want one line", sb, l)
	}
}

// pollUntil is labtest.PollUntil, under the name the e2e tests use.
func pollUntil(within time.Duration, cond func() bool) bool { return labtest.PollUntil(within, cond) }

// logLines is every line of node's log that contains s.
func logLines(c *lab.Cluster, node, s string) []string {
	b, _ := os.ReadFile(c.LogPath(node))
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return out
}

// loggedLines is logLines once node's log holds at least n such lines, or
// after 3 s. The daemon writes its log off its loop (logq), so a line
// may follow by a moment the state that status already shows; a test
// that reads the log right after status must wait for it.
func loggedLines(c *lab.Cluster, node, s string, n int) []string {
	var out []string
	pollUntil(3*time.Second, func() bool { out = logLines(c, node, s); return len(out) >= n })
	return out
}

// A rolling upgrade as operations.md tells it: the standby restarted on
// the new hapaird, a switchover, then the other node. In between, each
// node says which version the other runs, as news (an upgrade half done
// is expected; one left half done is not), and nothing else changes.
func TestARollingUpgradeShowsThePeersVersion(t *testing.T) {
	c := cluster(t, lab.ConfigOptions{})
	const newer = "2.0.0-e2e"
	bin := filepath.Join(t.TempDir(), "hapaird")
	if out, err := exec.Command("go", "build", "-race", "-ldflags", "-X main.version="+newer, "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	act := settle(t, c)
	sb := other(act)
	waitSynced(t, c, act)
	s, err := c.Status(act)
	if err != nil {
		t.Fatal(err)
	}
	old := s.Version
	if s.Peer.Version != old || strings.Contains(s.Text(), "peer version") {
		t.Fatalf("one version on both nodes: the peer's reads %q (this node %q):\n%s", s.Peer.Version, old, s.Text())
	}

	c.Bin = bin
	if err := c.RestartOn(sb, c.Config); err != nil {
		t.Fatal(err)
	}
	for _, n := range []struct{ node, mine, peers string }{{act, old, newer}, {sb, newer, old}} {
		var last string
		if !pollUntil(10*time.Second, func() bool {
			s, err := c.Status(n.node)
			if err != nil {
				return false
			}
			last = s.Text()
			return s.Version == n.mine && s.Peer.Version == n.peers && s.Redundancy == "available" && len(s.Peer.ConfigDiffers) == 0 &&
				strings.Contains(last, "peer version: "+n.peers+", this node "+n.mine)
		}) {
			t.Fatalf("%s halfway through the upgrade:\n%s", n.node, last)
		}
		if l := loggedLines(c, n.node, "the peer runs another version of hapaird than this node", 1); len(l) != 1 || !strings.Contains(l[0], "peer_version="+n.peers) {
			t.Errorf("%s's log says %q, want one line naming %s", n.node, l, n.peers)
		}
	}

	switchover(t, c, act)
	if err := c.RestartOn(act, c.Config); err != nil {
		t.Fatal(err)
	}
	if !pollUntil(10*time.Second, func() bool {
		s, err := c.Status(sb)
		return err == nil && s.Peer.Version == newer && !strings.Contains(s.Text(), "peer version")
	}) {
		s, err := c.Status(sb)
		t.Fatalf("%s once both run %s: %+v %v", sb, newer, s, err)
	}
	if l := loggedLines(c, sb, "the peer runs this node's version of hapaird again", 1); len(l) != 1 {
		t.Errorf("%s's log says %q, want one line", sb, l)
	}
}

// The pair's cluster name changed one node at a time, as the procedure for
// a change says: the standby restarts on the new name first. Frames carry
// the name's hash, and a node drops those of another cluster unread (they
// are another pair's on a shared segment): the restarted standby heard no
// peer and took the VIPs beside the active.
func TestClusterRenamedOnOneNodeMakesNoSecondHolder(t *testing.T) {
	c := cluster(t, lab.ConfigOptions{})
	act := settle(t, c)
	sb := other(act)
	src, err := os.ReadFile(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	renamed := regexp.MustCompile(`(?m)^cluster = "(.*)"$`).ReplaceAll(src, []byte(`cluster = "${1}-renamed"`))
	if bytes.Equal(renamed, src) {
		t.Fatal("no cluster line in the lab's file")
	}
	edited := filepath.Join(c.Dir, "renamed.toml")
	if err := os.WriteFile(edited, renamed, 0o600); err != nil {
		t.Fatal(err)
	}
	holders := c.WatchHolders()
	defer holders.Stop()
	if err := c.RestartOn(sb, edited); err != nil {
		t.Fatal(err)
	}
	// The standby is past its start-up window (RestartOn waited for its
	// role); both say why they cannot use the other's heartbeats once
	// they have heard them for a dead interval.
	pollUntil(5*time.Second, func() bool {
		for _, n := range []string{act, sb} {
			if s, _ := c.Status(n); s == nil || !strings.Contains(s.Text(), "CLUSTER NAMES DIFFER") {
				return false
			}
		}
		return true
	})
	for n, role := range map[string]string{act: "ACTIVE", sb: "STANDBY"} {
		s, err := c.Status(n)
		if err != nil || s.Role != role {
			t.Errorf("%s: %+v %v, want %s", n, s, err, role)
			continue
		}
		if !strings.Contains(s.Text(), "CLUSTER NAMES DIFFER") || len(loggedLines(c, n, "the peer's heartbeats name another cluster", 1)) != 1 {
			t.Errorf("%s does not say the cluster names differ:\n%s", n, s.Text())
		}
	}
	if _, both := holders.Stop(); both > 0 {
		t.Errorf("two holders for %v", both)
	}
	// The rename finished on the active: it lets the VIPs go as it stops
	// (it has no standby to hand to) and takes them again as it comes
	// back, or its standby takes them if that takes longer. Then the two
	// are a pair again.
	if err := c.Signal(act, syscall.SIGTERM, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	c.SetConfig(act, edited)
	if err := c.Start(act); err != nil {
		t.Fatal(err)
	}
	var st *control.Status
	if !pollUntil(10*time.Second, func() bool {
		st, _ = c.Status(sb)
		return st != nil && st.Redundancy == "available" && (c.Holds("a", lab.VIP.Addr()) != c.Holds("b", lab.VIP.Addr()))
	}) {
		t.Fatalf("the pair after the rename on both nodes: %+v", st)
	}
	t.Logf("a pair again %v after the active stopped", time.Since(stopped))
}

// An operator (or configuration management) edits the file on both nodes
// and restarts neither: the new VIP is in no kernel, and the pair's
// files agree, so CONFIG DIFFERS says nothing; SIGHUP reloads nothing.
// Each node's status must name what differs from what it runs, and stop
// once the file says what it runs again; a comment changes nothing.
func TestAFileEditedAndNotAppliedIsReported(t *testing.T) {
	c := cluster(t, lab.ConfigOptions{})
	act := settle(t, c)
	src, err := os.ReadFile(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	differs := func(node string) ([]string, string) {
		t.Helper()
		s, err := c.Status(node)
		if err != nil {
			t.Fatal(err)
		}
		return s.ConfigFileDiffers, s.ConfigFileError
	}
	write := func(b []byte) {
		t.Helper()
		// Replaced as editors and configuration management do: a new
		// file renamed over the old one.
		tmp := c.Config + ".new"
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, c.Config); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"a", "b"} {
		if d, e := differs(n); d != nil || e != "" {
			t.Fatalf("%s before any edit: differs in %v (%s)", n, d, e)
		}
	}
	write(append([]byte("# reviewed 2026-12-06\n"), src...))
	if d, e := differs(act); d != nil || e != "" {
		t.Fatalf("a comment added: differs in %v (%s)", d, e)
	}
	write(append(slices.Clone(src), "\n[[vip]]\naddress = \"192.0.2.101/24\"\n"...))
	for _, n := range []string{"a", "b"} {
		if d, e := differs(n); !slices.Equal(d, []string{"vip"}) || e != "" {
			t.Fatalf("%s after a VIP was added to its file: differs in %v (%s), want [vip]", n, d, e)
		}
	}
	if out := hapairctl(t, c, act, "status"); !strings.Contains(out, "config file edited since the start: vip differ") {
		t.Errorf("hapairctl status does not say the file was edited:\n%s", out)
	}
	if c.Holds(act, netip.MustParsePrefix("192.0.2.101/24").Addr()) {
		t.Error("the edited file's VIP was taken without a restart")
	}
	os.Remove(c.Config)
	if _, e := differs(act); !strings.Contains(e, "no such file") {
		t.Errorf("the file removed: error %q", e)
	}
	write(src)
	for _, n := range []string{"a", "b"} {
		if d, e := differs(n); d != nil || e != "" {
			t.Fatalf("%s with its file as it was: differs in %v (%s)", n, d, e)
		}
	}
}
