package lab

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hapair/hapair/statesync/client"
	"github.com/hapair/hapair/statesync/store"
)

// Ordinary operations that must keep an HA agent's first promise (one
// active, no acknowledged session lost), as rounds that the end-to-end
// tests and the bench's fault table both run.

func other(n string) string {
	if n == "a" {
		return "b"
	}
	return "a"
}

// CrashRestart kills -9 the active's hapaird under a sync-mode write load
// and starts it again at once. acked gathers every acknowledged write
// (the highest value per session) across rounds; missing counts those the
// standby lacks afterwards. err says the pair did not end with one holder,
// the standby, within bound, and the restarted node standby by way of
// INIT only.
func (c *Cluster) CrashRestart(round int, acked map[string]int, bound time.Duration) (missing int, err error) {
	act, err := c.Settle(10 * time.Second)
	if err != nil {
		return 0, err
	}
	if err := c.WaitSynced(act, 10*time.Second); err != nil {
		return 0, err
	}
	sb := other(act)
	st, err := client.New(c.Socket(act)).Stream(context.Background())
	if err != nil {
		return 0, err
	}
	w := StartWrites(st, round, 16)
	// Under load: at least 50 acknowledged writes before the crash.
	if err := w.WaitCount(50, 10*time.Second); err != nil {
		st.Close()
		w.Wait()
		return 0, err
	}
	if err := c.Kill(act); err != nil {
		return 0, err
	}
	if err := c.Start(act); err != nil {
		return 0, err
	}
	st.Close()
	for id, v := range w.Wait() {
		acked[id] = v
	}
	// Until the restarted daemon has removed it, the killed one's VIP is
	// still on its interface, as after any crash.
	for deadline := time.Now().Add(bound); !c.Holds(sb, VIP.Addr()) || c.Holds(act, VIP.Addr()); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%v after %s restarted: %s holds the VIP %v, %s %v", bound, act, sb, c.Holds(sb, VIP.Addr()), act, c.Holds(act, VIP.Addr()))
		}
	}
	if err := c.WaitRole(act, "STANDBY", 10*time.Second); err != nil {
		return 0, err
	}
	if s, err := c.Status(act); err != nil || s.LastTransition == nil || s.LastTransition.From != "INIT" {
		return 0, fmt.Errorf("the restarted %s: %+v %v", act, s, err)
	}
	if c.Holds(act, VIP.Addr()) {
		return 0, fmt.Errorf("both nodes hold the VIP")
	}
	return c.Missing(sb, acked), nil
}

// Missing counts the writes in acked that node lacks (or holds older).
func (c *Cluster) Missing(node string, acked map[string]int) (missing int) {
	cl := client.New(c.Socket(node))
	defer cl.Close()
	for id, want := range acked {
		got, err := cl.Get(context.Background(), id)
		if err != nil || got.Data == nil {
			missing++
			continue
		}
		if v, _ := strconv.Atoi(*got.Data); v < want {
			missing++
		}
	}
	return missing
}

// Writes is a write load on a stream: sessions r<round>-s<0..n-1> are
// written the numbers 0, 1, 2... in turn, and the highest acknowledged per
// session is kept (values only grow, so a later write whose answer a dying
// node never sent may be found too).
type Writes struct {
	mu      sync.Mutex
	acked   map[string]int
	n       int
	longest time.Duration // the longest wait for an acknowledgement
	done    chan struct{}
}

// StartWrites writes to sessions sessions on st until a write fails (the
// node died, or st was closed).
func StartWrites(st *client.Stream, round, sessions int) *Writes {
	w := &Writes{acked: map[string]int{}, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for i := 0; ; i++ {
			id, kind := fmt.Sprintf("r%d-s%d", round, i%sessions), store.OpUpdate
			if i < sessions {
				kind = store.OpCreate
			}
			start := time.Now()
			if _, err := st.Do(kind, id, []byte(strconv.Itoa(i))); err != nil {
				return // the node died: this write was never acknowledged
			}
			took := time.Since(start)
			w.mu.Lock()
			w.acked[id] = i
			w.n++
			w.longest = max(w.longest, took)
			w.mu.Unlock()
		}
	}()
	return w
}

// Count is how many writes were acknowledged so far.
func (w *Writes) Count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

// Longest is the longest any acknowledged write waited so far.
func (w *Writes) Longest() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.longest
}

// WaitCount waits until n writes were acknowledged, at most within.
func (w *Writes) WaitCount(n int, within time.Duration) error {
	for deadline := time.Now().Add(within); w.Count() < n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("fewer than %d writes acknowledged in %v", n, within)
		}
	}
	return nil
}

// Wait waits for the writer to end and returns the highest value
// acknowledged per session.
func (w *Writes) Wait() map[string]int {
	<-w.done
	return w.acked
}

// LockThenKill locks the standby (lock runs the operator's lock command)
// and kills -9 the active at once, then watches the standby for watch: it
// must stay standby without the VIP. Then the killed node comes back and
// becomes active, and unlock runs, so the next round goes the other way.
// For a pair that holds no session: beside a locked standby that holds
// newer ones, a restarted node stays standby. tookOver says the locked
// standby changed role or took the VIP.
func (c *Cluster) LockThenKill(watch time.Duration, lock func(node string, on bool) error) (tookOver bool, err error) {
	act, err := c.Settle(10 * time.Second)
	if err != nil {
		return false, err
	}
	sb := other(act)
	if err := lock(sb, true); err != nil {
		return false, err
	}
	if err := c.Kill(act); err != nil {
		return false, err
	}
	for deadline := time.Now().Add(watch); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		s, err := c.Status(sb)
		if err != nil {
			return false, err
		}
		if s.Role != "STANDBY" || c.Holds(sb, VIP.Addr()) {
			tookOver = true
			break
		}
	}
	if err := c.Start(act); err != nil {
		return tookOver, err
	}
	if err := c.WaitRole(act, "ACTIVE", 10*time.Second); err != nil && !tookOver {
		return tookOver, err
	}
	return tookOver, lock(sb, false)
}

// Holders samples which nodes hold the VIP, about every millisecond, until
// Stop: the longest stretches with no holder and with two, and (Summary)
// the time with two in all, how often either node's holding changed, and
// the holders at the last sample.
type Holders struct {
	stop, done chan struct{}
	mu         sync.Mutex
	none, both time.Duration
	bothTotal  time.Duration
	moves      int
	last       int
}

// WatchHolders starts sampling.
func (p *Pair) WatchHolders() *Holders {
	h := &Holders{stop: make(chan struct{}), done: make(chan struct{})}
	p.mu.Lock()
	p.watchers = append(p.watchers, h)
	p.mu.Unlock()
	go func() {
		defer close(h.done)
		var since time.Time
		prev := [2]bool{p.Holds("a", VIP.Addr()), p.Holds("b", VIP.Addr())}
		last, at := 1, time.Now()
		for {
			select {
			case <-h.stop:
				return
			default:
			}
			cur := [2]bool{p.Holds("a", VIP.Addr()), p.Holds("b", VIP.Addr())}
			n := b2i(cur[0]) + b2i(cur[1])
			// A stretch counts from its first sample to its last, so
			// a single sample (the instant between checking one node
			// and the other) is none.
			now := time.Now()
			if n != last {
				since, last = now, n
			}
			h.mu.Lock()
			switch n {
			case 0:
				h.none = max(h.none, now.Sub(since))
			case 2:
				h.both = max(h.both, now.Sub(since))
			}
			if prev[0] && prev[1] {
				h.bothTotal += now.Sub(at)
			}
			h.moves += b2i(cur[0] != prev[0]) + b2i(cur[1] != prev[1])
			h.last = n
			h.mu.Unlock()
			prev, at = cur, now
			time.Sleep(time.Millisecond)
		}
	}()
	return h
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Stop ends the sampling and returns the longest stretches.
func (h *Holders) Stop() (none, both time.Duration) {
	select {
	case <-h.stop:
	default:
		close(h.stop)
	}
	<-h.done
	return h.none, h.both
}

// Summary, after Stop, is the time two nodes held the VIP in all, how
// often either node claimed or released it, and the holders at the end.
func (h *Holders) Summary() (both time.Duration, moves, holders int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.bothTotal, h.moves, h.last
}

// keyLine is the line of the cluster's config that names its key file,
// and the config it is in.
func (c *Cluster) keyLine() (line string, base []byte, err error) {
	if base, err = os.ReadFile(c.Config); err != nil {
		return "", nil, err
	}
	for _, l := range strings.Split(string(base), "\n") {
		if strings.HasPrefix(l, "key_file = ") {
			return l, base, nil
		}
	}
	return "", nil, fmt.Errorf("lab: %s names no key_file", c.Config)
}

// KeyFile is the key file the cluster's config names.
func (c *Cluster) KeyFile() (string, error) {
	l, _, err := c.keyLine()
	return strings.Trim(strings.TrimPrefix(l, "key_file = "), `"`), err
}

// WriteConfigWithKeys writes to path the cluster's config with keys, newest
// first, in place of its key file: a node's own config in the middle of a
// key change, or after a wrong one.
func (c *Cluster) WriteConfigWithKeys(path string, keys ...string) error {
	l, base, err := c.keyLine()
	if err != nil {
		return err
	}
	quoted := make([]string, len(keys))
	for i, k := range keys {
		quoted[i] = fmt.Sprintf("%q", k)
	}
	return os.WriteFile(path, []byte(strings.Replace(string(base), l, "key_files = ["+strings.Join(quoted, ", ")+"]", 1)), 0o644)
}

// RotateKeys runs the documented rolling key rotation with both nodes
// serving: a new key beside the old on one node after the other, then the
// new key alone, each node restarted (gracefully) while standby, with
// switchover making the active the standby. Every step must end in sync
// with the peer heard. It leaves the pair on the new key; the next
// rotation starts from there.
func (c *Cluster) RotateKeys(switchover func(active string) error) error {
	dir := filepath.Dir(c.Config)
	// The key in use: the base config's, or the last rotation's.
	oldPath, err := c.KeyFile()
	if err != nil {
		return err
	}
	if c.rotations > 0 {
		oldPath = filepath.Join(dir, fmt.Sprintf("key-%d", c.rotations))
	}
	c.rotations++
	newPath := filepath.Join(dir, fmt.Sprintf("key-%d", c.rotations))
	key := make([]byte, 32)
	rand.Read(key)
	if err := os.WriteFile(newPath, key, 0o600); err != nil {
		return err
	}
	config := func(name string, keys ...string) (string, error) {
		p := filepath.Join(dir, fmt.Sprintf("%s-%d.toml", name, c.rotations))
		return p, c.WriteConfigWithKeys(p, keys...)
	}
	both, err := config("both", newPath, oldPath)
	if err != nil {
		return err
	}
	fresh, err := config("new", newPath)
	if err != nil {
		return err
	}
	act, err := c.Settle(10 * time.Second)
	if err != nil {
		return err
	}
	restart := func(node, cfg string) error {
		if err := c.RestartOn(node, cfg); err != nil {
			return err
		}
		active := other(node)
		cl := client.New(c.Socket(active))
		_, err := cl.Create(context.Background(), fmt.Sprintf("rotation-%d-%s-%s", c.rotations, node, filepath.Base(cfg)), []byte("x"))
		cl.Close()
		if err != nil {
			return err
		}
		if err := c.WaitSynced(active, 10*time.Second); err != nil {
			return fmt.Errorf("after restarting %s on %s: %w", node, filepath.Base(cfg), err)
		}
		if s, err := c.Status(active); err != nil || !s.Peer.Seen || s.Peer.Role != "STANDBY" {
			return fmt.Errorf("%s does not hear %s restarted on %s: %+v %v", active, node, filepath.Base(cfg), s, err)
		}
		return nil
	}
	sb := other(act)
	for _, step := range []func() error{
		func() error { return restart(sb, both) },
		func() error { return switchover(act) },
		func() error { return restart(act, both) },
		func() error { return restart(act, fresh) },
		func() error { return switchover(sb) },
		func() error { return restart(sb, fresh) },
	} {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}
