package hooks

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestFireIsAsyncWithEnvAndTimeout(t *testing.T) {
	out := filepath.Join(t.TempDir(), "env")
	var logs syncBuf
	r := New([]Hook{
		{On: []string{"active"}, Command: []string{"sh", "-c", "env | grep ^HAPAIR_ | sort > " + out}, Timeout: 5 * time.Second},
		{On: []string{"active"}, Command: []string{"sleep", "60"}, Timeout: 200 * time.Millisecond},
		{On: []string{"standby"}, Command: []string{"sh", "-c", "echo should-not-run"}, Timeout: time.Second},
	}, slog.New(slog.NewTextHandler(&logs, nil)))
	start := time.Now()
	r.Fire(Env{Event: "active", Role: "ACTIVE", PreviousRole: "STANDBY", Reason: "peer lost", Node: "b", Peer: "a"})
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Errorf("Fire blocked for %v", d)
	}
	r.Close() // waits; the sleeping hook is killed at its timeout, not after 60s
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("hooks took %v", d)
	}
	b, _ := os.ReadFile(out)
	want := "HAPAIR_EVENT=active\nHAPAIR_NODE=b\nHAPAIR_PEER=a\nHAPAIR_PREVIOUS_ROLE=STANDBY\nHAPAIR_REASON=peer lost\nHAPAIR_ROLE=ACTIVE\n"
	if string(b) != want {
		t.Errorf("hook environment:\n%s\nwant\n%s", b, want)
	}
	if !strings.Contains(logs.String(), "timed out") || strings.Contains(logs.String(), "should-not-run") {
		t.Errorf("logs:\n%s", logs.String())
	}
}

// A hook's calls for successive transitions finish in the order they were
// fired, even when the first is the slow one.
func TestHooksRunInOrder(t *testing.T) {
	out := filepath.Join(t.TempDir(), "order")
	r := New([]Hook{
		{On: []string{"active", "standby"}, Command: []string{"sh", "-c", `[ "$HAPAIR_EVENT" = active ] && sleep 0.3; echo $HAPAIR_EVENT >> ` + out}, Timeout: 5 * time.Second},
	}, slog.New(slog.NewTextHandler(&syncBuf{}, nil)))
	r.Fire(Env{Event: "active"})
	r.Fire(Env{Event: "standby"})
	r.Fire(Env{Event: "active"})
	r.Close()
	b, _ := os.ReadFile(out)
	if want := "active\nstandby\nactive\n"; string(b) != want {
		t.Errorf("hooks finished as\n%swant\n%s", b, want)
	}
}
