package main

import (
	"bufio"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hapair/hapair/lab"
)

// docBlock returns the first fenced block after the line of path that
// contains after.
func docBlock(t *testing.T, path, after string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b strings.Builder
	found, in := false, false
	for sc := bufio.NewScanner(f); sc.Scan(); {
		line := sc.Text()
		switch {
		case !found:
			found = strings.Contains(line, after)
		case strings.HasPrefix(line, "```") && in:
			return b.String()
		case strings.HasPrefix(line, "```"):
			in = true
		case in:
			b.WriteString(line + "\n")
		}
	}
	t.Fatalf("%s has no block after %q", path, after)
	return ""
}

// Section 2 of operations.md followed literally: its nftables table loaded
// as it is on both servers (an operator's configuration management copies
// one file to both, as it does hapair.toml; the lab's replication
// addresses are the document's). The pair must hear each other on both
// paths and replicate whichever node is active. The table named the
// peer's address alone: copied to the other node it dropped that node's
// peer's UDP heartbeats (a path down for good), and, once that node was
// the active, its standby's replication (no session on the standby).
func TestTheDocumentedFirewallKeepsThePairWhole(t *testing.T) {
	t.Parallel()
	table := docBlock(t, "../../docs/operations.md", "With nftables")
	c := cluster(t, lab.ConfigOptions{})
	for _, n := range []string{"a", "b"} {
		cmd := lab.Command(c.Node(n), "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(table)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("nft on %s: %v\n%s\n%s", n, err, out, table)
		}
	}
	act := settle(t, c)
	sb := other(act)
	whole := func(when string) {
		t.Helper()
		for _, n := range []string{act, sb} {
			if !pollUntil(5*time.Second, func() bool {
				s, err := c.Status(n)
				return err == nil && !s.Degraded && s.Redundancy == "available"
			}) {
				s, _ := c.Status(n)
				t.Fatalf("%s, %s:\n%s", n, when, s.Text())
			}
		}
	}
	if _, err := api(t, c, act).Create(t.Context(), "before", []byte("v")); err != nil {
		t.Fatal(err)
	}
	waitSynced(t, c, act)
	whole("behind the documented firewall")
	switchover(t, c, act)
	if _, err := api(t, c, sb).Create(t.Context(), "after", []byte("v")); err != nil {
		t.Fatal(err)
	}
	waitSynced(t, c, sb)
	whole("the other node active")
	if _, err := api(t, c, act).Get(t.Context(), "after"); err != nil {
		t.Errorf("%s, the standby, lacks the session made on %s: %v", act, sb, err)
	}
}
