package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hapair/hapair/internal/labnet"
)

// Issue 14.1: the rolling key rotation the documentation gives, done one
// node at a time with both running: [old] -> [new, old] on each node ->
// [new] on each node. Heartbeats and replication never stop: the VIP has
// one holder throughout (make-before-break handoffs aside), nobody loses
// its peer, and every session written along the way reaches the standby.
func TestRollingKeyRotation(t *testing.T) {
	c := cluster(t, labnet.ConfigOptions{})
	base, err := os.ReadFile(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(c.Config)
	key := make([]byte, 32)
	rand.Read(key)
	if err := os.WriteFile(filepath.Join(dir, "new.key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	oldLine := ""
	for _, l := range strings.Split(string(base), "\n") {
		if strings.HasPrefix(l, "key_file = ") {
			oldLine = l
		}
	}
	oldPath := strings.Trim(strings.TrimPrefix(oldLine, "key_file = "), `"`)
	config := func(name, keys string) string {
		p := filepath.Join(dir, name+".toml")
		if err := os.WriteFile(p, []byte(strings.Replace(string(base), oldLine, "key_files = "+keys, 1)), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	both := config("both", fmt.Sprintf("[%q, %q]", filepath.Join(dir, "new.key"), oldPath))
	fresh := config("new", fmt.Sprintf("[%q]", filepath.Join(dir, "new.key")))

	act := settle(t, c)
	if err := c.WaitSynced(act, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	holders := watchHolders(t, c)
	written := 0
	write := func(node string) {
		t.Helper()
		written++
		if _, err := api(c, node).Create(context.Background(), fmt.Sprintf("call-%d", written), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	// restart stops the standby gracefully and starts it on cfg, then
	// waits until the pair is whole again: the restarted node standby and
	// in sync.
	restart := func(node, cfg string) {
		t.Helper()
		if err := c.Signal(node, syscall.SIGTERM, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := c.Start(node, "-c", cfg); err != nil {
			t.Fatal(err)
		}
		if err := c.WaitRole(node, "STANDBY", 10*time.Second); err != nil {
			t.Fatal(err)
		}
		active := other(node)
		write(active)
		if err := c.WaitSynced(active, 10*time.Second); err != nil {
			t.Fatalf("replication after restarting %s on %s: %v", node, filepath.Base(cfg), err)
		}
		if s, err := c.Status(active); err != nil || !s.Peer.Seen || s.Peer.Role != "STANDBY" {
			t.Fatalf("%s does not hear %s restarted on %s: %+v %v", active, node, filepath.Base(cfg), s, err)
		}
	}
	switchover := func(from string) {
		t.Helper()
		hapairctl(t, c, from, "switchover")
	}
	sb := other(act)
	restart(sb, both)
	switchover(act)
	restart(act, both)
	restart(act, fresh)
	switchover(sb)
	restart(sb, fresh)
	holders.check(t)

	for _, n := range []string{"a", "b"} {
		b, _ := os.ReadFile(c.LogPath(n))
		for _, bad := range []string{"peer lost", "split brain", "replication error"} {
			if strings.Contains(string(b), bad) && !(bad == "replication error" && onlyAtStopOrStart(string(b))) {
				t.Errorf("%s's log says %q during the rotation", n, bad)
			}
		}
	}
}

// onlyAtStopOrStart says whether the replication errors in a log are the
// ones a graceful restart of the other node causes (its connection ending),
// not authentication failures.
func onlyAtStopOrStart(log string) bool {
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "replication error") && strings.Contains(l, "authentication") {
			return false
		}
	}
	return true
}

// holderWatch samples which nodes hold the VIP every millisecond.
type holderWatch struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	// none is the longest time with no holder; both the longest with two.
	none, both time.Duration
}

func watchHolders(t *testing.T, c *labnet.Cluster) *holderWatch {
	w := &holderWatch{stop: make(chan struct{}), done: make(chan struct{})}
	vip := labnet.VIP.Addr()
	go func() {
		defer close(w.done)
		var since time.Time
		last := 1
		for {
			select {
			case <-w.stop:
				return
			default:
			}
			n := 0
			for _, node := range []string{"a", "b"} {
				if c.Holds(node, vip) {
					n++
				}
			}
			now := time.Now()
			if n != last {
				since, last = now, n
			}
			w.mu.Lock()
			switch n {
			case 0:
				w.none = max(w.none, now.Sub(since))
			case 2:
				w.both = max(w.both, now.Sub(since))
			}
			w.mu.Unlock()
			time.Sleep(time.Millisecond)
		}
	}()
	t.Cleanup(func() {
		select {
		case <-w.stop:
		default:
			close(w.stop)
		}
		<-w.done
	})
	return w
}

// check ends the watch: never a moment without a holder, and two only for
// the instant of a make-before-break handoff.
func (w *holderWatch) check(t *testing.T) {
	t.Helper()
	close(w.stop)
	<-w.done
	if w.none > 0 {
		t.Errorf("no node held the VIP for %v", w.none)
	}
	if w.both > 200*time.Millisecond {
		t.Errorf("both nodes held the VIP for %v", w.both)
	}
}
