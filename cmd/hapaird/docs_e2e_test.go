package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
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

// The application API's examples (docs/api.md, its first shell block) run
// as they stand, with curl, against an active node: each answers what the
// guide says it does, and the created session is then on the standby.
func TestTheAPIGuidesExamplesWork(t *testing.T) {
	t.Parallel()
	block := docBlock(t, "../../docs/api.md", "## Sessions")
	c := cluster(t, lab.ConfigOptions{})
	act := settle(t, c)
	var cmds []string
	for _, l := range strings.Split(strings.ReplaceAll(block, "\\\n", " "), "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "curl ") {
			cmds = append(cmds, l)
		}
	}
	// create, update, read one, list all, delete.
	if len(cmds) != 5 {
		t.Fatalf("the guide's block has %d curl commands, want 5:\n%s", len(cmds), block)
	}
	run := func(cmd string) map[string]any {
		t.Helper()
		sh := exec.Command("sh", "-c", cmd)
		sh.Env = append(os.Environ(), "S="+c.Socket(act))
		out, err := sh.Output()
		if err != nil {
			t.Fatalf("%s: %v\n%s", cmd, err, out)
		}
		var v map[string]any
		if len(bytes.TrimSpace(out)) > 0 {
			if err := json.Unmarshal(out, &v); err != nil {
				// A list is an array, or an object holding one.
				var list []any
				if json.Unmarshal(out, &list) != nil {
					t.Fatalf("%s answered %q, not JSON", cmd, out)
				}
				v = map[string]any{"list": list}
			}
		}
		if e, ok := v["error"]; ok {
			t.Fatalf("%s answered an error: %v", cmd, e)
		}
		return v
	}
	if v := run(cmds[0]); v["id"] != "call-4711" || v["data"] != "state=ivr;digits=" || v["version"] != 1.0 {
		t.Errorf("create answered %v", v)
	}
	waitSynced(t, c, act)
	if s, err := api(t, c, other(act)).Get(t.Context(), "call-4711"); err != nil || s.Data == nil || *s.Data != "state=ivr;digits=" {
		t.Errorf("the created session on the standby: %+v %v", s, err)
	}
	if v := run(cmds[1]); v["data"] != "state=ivr;digits=42" || v["version"] != 2.0 {
		t.Errorf("update answered %v", v)
	}
	if v := run(cmds[2]); v["data"] != "state=ivr;digits=42" {
		t.Errorf("read answered %v", v)
	}
	if v := run(cmds[3]); !strings.Contains(fmt.Sprint(v), "call-4711") {
		t.Errorf("list answered %v", v)
	}
	run(cmds[4])
	if _, err := api(t, c, act).Get(t.Context(), "call-4711"); err == nil {
		t.Error("the session is still there after the guide's delete")
	}
}
