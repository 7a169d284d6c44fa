package node

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The operators' guide quotes log lines and metric names: each must be one
// the code writes, so the guide cannot send an operator looking for a line
// that no longer exists.
func TestGuideQuotesWhatTheCodeSays(t *testing.T) {
	guide, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	var code strings.Builder
	filepath.WalkDir("..", func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".go") && !strings.HasSuffix(p, "_test.go") {
			b, _ := os.ReadFile(p)
			code.Write(b)
		}
		return nil
	})
	// First column of the troubleshooting table: `log line` (...).
	row := regexp.MustCompile("(?m)^\\| `([^`]+)`")
	metric := regexp.MustCompile("`hapair_([a-z_]+)")
	quoted := 0
	for _, m := range row.FindAllStringSubmatch(string(guide), -1) {
		quoted++
		// "..." stands for a part that varies.
		for _, part := range strings.Split(m[1], "...") {
			if part = strings.TrimSpace(part); part != "" && !strings.Contains(code.String(), part) {
				t.Errorf("the guide quotes %q; no code writes it", part)
			}
		}
	}
	for _, m := range metric.FindAllStringSubmatch(string(guide), -1) {
		quoted++
		name := strings.TrimSuffix(strings.TrimSuffix(m[1], "_total"), "_")
		if !strings.Contains(code.String(), `"`+name) {
			t.Errorf("the guide names the metric hapair_%s; no code exports it", m[1])
		}
	}
	if quoted < 10 {
		t.Errorf("found %d quotes in the guide: the patterns no longer match its tables", quoted)
	}
}

// The packaged unit grants the heartbeat core the real-time priority it
// asks for (LimitRTPRIO): a core that asks for more than the unit allows
// runs without real-time scheduling on every installed node, which status
// says but no lab test sees (the lab runs the daemon as root, and the
// booted container gives no real-time scheduling at any priority).
func TestUnitGrantsTheCoresPriority(t *testing.T) {
	unit, err := os.ReadFile("../systemd/hapaird.service")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^LimitRTPRIO=(\d+)$`).FindSubmatch(unit)
	if m == nil {
		t.Fatal("the unit sets no LimitRTPRIO")
	}
	if limit, _ := strconv.Atoi(string(m[1])); limit < RTPriority {
		t.Errorf("the unit allows SCHED_RR %d; the heartbeat core asks for %d", limit, RTPriority)
	}
	if !regexp.MustCompile(`(?m)^RestrictRealtime=no$`).Match(unit) {
		t.Error("the unit restricts real-time scheduling")
	}
}
