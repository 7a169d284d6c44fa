package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hapair/hapair/election"
	"github.com/hapair/hapair/health"
	"github.com/hapair/hapair/heartbeat"
	"github.com/hapair/hapair/internal/control"
	"github.com/hapair/hapair/internal/leaktest"
	"github.com/hapair/hapair/statesync"
	"github.com/hapair/hapair/statesync/repl"
	"github.com/hapair/hapair/statesync/store"
	"github.com/hapair/hapair/vip"
)

// The agent's edges are faked here (the real ones are exercised end to
// end in cmd/hapaird): these tests pin the loop's wiring.

type fakeHB struct {
	events chan heartbeat.Event
	// While hang is set, UpdateLocal (called by the loop every tick)
	// blocks until release is closed: a hung loop.
	hang    atomic.Bool
	hung    chan struct{} // the loop is stuck now
	release chan struct{}
	mu      sync.Mutex
	local   heartbeat.Local
	sets    int
	// onStats, if set, runs at each Stats request: the core answers
	// after every event it sent before, so what it puts in events is
	// what a starved agent had not read yet.
	onStats func()
	renews  atomic.Int32 // Renews calls
	unfence atomic.Int32 // Unfence calls
	updates atomic.Int32 // UpdateLocal calls: one a tick
	// sentAgo, if set, is how long ago the core last sent (SentAgo).
	sentAgo atomic.Pointer[time.Duration]
}

func (f *fakeHB) Run(ctx context.Context) error {
	f.events <- heartbeat.Event{Kind: heartbeat.Running, At: time.Now()}
	<-ctx.Done()
	return nil
}
func (f *fakeHB) Events() <-chan heartbeat.Event { return f.events }
func (f *fakeHB) Unfence()                       { f.unfence.Add(1) }
func (f *fakeHB) Renews()                        { f.renews.Add(1) }
func (f *fakeHB) Isolation() heartbeat.CoreHello { return heartbeat.CoreHello{} }
func (f *fakeHB) SentAgo() (time.Duration, bool) {
	if ago := f.sentAgo.Load(); ago != nil {
		return *ago, true
	}
	return 0, false
}
func (f *fakeHB) Stats() heartbeat.Stats {
	if f.onStats != nil {
		f.onStats()
	}
	return heartbeat.Stats{}
}
func (f *fakeHB) UpdateLocal(u func(*heartbeat.Local)) {
	if f.hang.Load() {
		select {
		case f.hung <- struct{}{}:
		default:
		}
		<-f.release
	}
	f.mu.Lock()
	u(&f.local)
	f.mu.Unlock()
	f.updates.Add(1)
}
func (f *fakeHB) SetLocal(l heartbeat.Local) {
	f.mu.Lock()
	f.local = l
	f.sets++
	f.mu.Unlock()
}
func (f *fakeHB) get() heartbeat.Local { f.mu.Lock(); defer f.mu.Unlock(); return f.local }

type fakeVIPs struct {
	mu               sync.Mutex
	claims, releases int
	held             bool
	claimedAt        time.Time
	renewed          []time.Time
	probes           chan chan []vip.Sighting
}

func (f *fakeVIPs) Claim() error {
	f.mu.Lock()
	f.claims++
	f.held, f.claimedAt, f.renewed = true, time.Now(), nil
	f.mu.Unlock()
	return nil
}

// claimed says how many claims were made.
func (f *fakeVIPs) claimed() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.claims
}

func (f *fakeVIPs) Release() error {
	f.mu.Lock()
	f.releases++
	f.held = false
	f.mu.Unlock()
	return nil
}
func (f *fakeVIPs) Renew() error {
	f.mu.Lock()
	f.renewed = append(f.renewed, time.Now())
	f.mu.Unlock()
	return nil
}
func (f *fakeVIPs) renewals() int { f.mu.Lock(); defer f.mu.Unlock(); return len(f.renewed) }
func (f *fakeVIPs) Announce() error {
	return nil
}

// Probe hands the test a channel for its answer on f.probes (none: it
// sees nobody).
func (f *fakeVIPs) Probe(ctx context.Context, _ time.Duration) ([]vip.Sighting, error) {
	if f.probes == nil {
		return nil, nil
	}
	answer := make(chan []vip.Sighting)
	select {
	case f.probes <- answer:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case s := <-answer:
		return s, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
func (f *fakeVIPs) Present() ([]vip.Addr, error) { return nil, nil }
func (f *fakeVIPs) Addrs() []vip.Addr {
	return []vip.Addr{{Prefix: netip.MustParsePrefix("192.0.2.100/24"), Interface: "pub0"}}
}
func (f *fakeVIPs) Stats() vip.Stats { return vip.Stats{} }
func (f *fakeVIPs) isHeld() bool     { f.mu.Lock(); defer f.mu.Unlock(); return f.held }

type fakeWatch struct{ events chan vip.Event }

func (w fakeWatch) Run(ctx context.Context, out chan<- vip.Event) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev := <-w.events:
			out <- ev
		}
	}
}

// logBuf is the agent's log, for tests that wait for what it says.
type logBuf struct {
	mu sync.Mutex
	b  []byte
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	return len(p), nil
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}

func (l *logBuf) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(string(l.b), s)
}

type rig struct {
	a      *Agent
	log    *logBuf
	hb     *fakeHB
	vips   *fakeVIPs
	watch  fakeWatch
	lock   string
	cancel context.CancelFunc
	done   chan error
}

func newRig(t *testing.T, preferred bool, mon Checks) *rig {
	return newRigDead(t, preferred, mon, 30*time.Millisecond)
}

func newRigDead(t *testing.T, preferred bool, mon Checks, dead time.Duration) *rig {
	t.Helper()
	st := store.New(store.Limits{})
	svc := statesync.NewService(st, repl.New(st, repl.Config{}), statesync.ServiceConfig{})
	r := &rig{log: &logBuf{}, hb: &fakeHB{events: make(chan heartbeat.Event, 16), hung: make(chan struct{}, 1), release: make(chan struct{})}, vips: &fakeVIPs{}, watch: fakeWatch{make(chan vip.Event, 4)}, lock: filepath.Join(t.TempDir(), "locked")}
	r.a = New(Options{
		Election:  election.Config{Node: 1, Preferred: preferred, Dead: dead},
		Heartbeat: r.hb, VIPs: r.vips, VIPWatch: r.watch, Health: mon, Sync: svc,
		Log:      slog.New(slog.NewTextHandler(r.log, nil)),
		Interval: dead / 3, Dead: dead, Lease: 2 * time.Second,
		LockFile: r.lock, Node: "a", Peer: "b",
	})
	return r
}

func (r *rig) run(t *testing.T) {
	leaktest.Check(t) // first, so that it looks once the agent has stopped
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan error, 1)
	go func() { r.done <- r.a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(5 * time.Second):
			t.Error("agent did not stop")
		}
	})
}

func (r *rig) waitRole(t *testing.T, role string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for r.a.Status().Role != role {
		if time.Now().After(deadline) {
			t.Fatalf("role %s, want %s", r.a.Status().Role, role)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitPeerRole waits until status shows the peer's frame that says role.
func (r *rig) waitPeerRole(t *testing.T, role string) {
	t.Helper()
	r.waitPeer(t, "says "+role, func(p control.PeerStatus) bool { return p.Role == role })
}

// waitPeer waits until status shows a peer frame for which ok holds
// (what names it).
func (r *rig) waitPeer(t *testing.T, what string, ok func(control.PeerStatus) bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for !ok(r.a.Status().Peer) {
		if time.Now().After(deadline) {
			t.Fatalf("the peer's frame that %s was not seen", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// hangLoop makes the loop stick at its next tick, until r.hb.release is
// closed, and waits until it has.
// waitUnfenced waits, bounded, until the agent has told its core the fence
// is handled.
func (r *rig) waitUnfenced(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); r.hb.unfence.Load() == 0; time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the fence was not handled")
		}
	}
}

// activeRig runs a preferred node's rig until it is active, beside a
// standby peer if withStandby.
func activeRig(t *testing.T, withStandby bool) *rig {
	t.Helper()
	r := newRig(t, true, nil)
	r.run(t)
	r.waitRole(t, "ACTIVE")
	if withStandby {
		r.hb.events <- frame(heartbeat.RoleStandby, 0)
		r.waitPeerRole(t, "STANDBY")
	}
	return r
}

func (r *rig) hangLoop(t *testing.T) {
	t.Helper()
	r.hb.hang.Store(true)
	select {
	case <-r.hb.hung:
	case <-time.After(2 * time.Second):
		t.Fatal("the loop never ticked")
	}
}

func frame(role heartbeat.Role, flags heartbeat.Flags) heartbeat.Event {
	return heartbeat.Event{Kind: heartbeat.PeerFrame, Path: "raw", At: time.Now(), Frame: heartbeat.Frame{Node: 2, Role: role, Flags: flags, ActiveFor: -1, LastNewSession: -1}}
}

func TestAloneTakesVIPAfterStartupWindow(t *testing.T) {
	r := newRig(t, true, nil)
	r.run(t)
	r.waitRole(t, "ACTIVE")
	if !r.vips.isHeld() || r.hb.get().Role != heartbeat.RoleActive || r.hb.get().ActiveSince.IsZero() {
		t.Fatalf("active without VIPs or advert: held %v, local %+v", r.vips.isHeld(), r.hb.get())
	}
}

// A starting agent that ran late still hears, before its start-up window
// ends on its own clock, the active peer's frames the heartbeat core
// received in time: here they reach the agent only once it asks the core
// (as from a socket its starved reader had not yet read).
func TestLateAgentHearsQueuedFramesBeforeTakingOver(t *testing.T) {
	r := newRig(t, false, nil)
	var once sync.Once
	r.hb.onStats = func() {
		once.Do(func() { r.hb.events <- frame(heartbeat.RoleActive, heartbeat.FlagHolding) })
	}
	r.run(t)
	// Watched by the log, not status: a status request asks the core
	// for its counters too.
	for deadline := time.Now().Add(2 * time.Second); r.log.count("op=transition") == 0; time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no transition from INIT")
		}
	}
	claims := r.vips.claimed()
	if n := r.log.count("to=ACTIVE"); claims != 0 || n != 0 {
		t.Fatalf("became active %d times (%d claims) while the peer's frames said it was", n, claims)
	}
}

func TestStandbyTakesOverOnPeerLost(t *testing.T) {
	r := newRig(t, false, nil)
	r.run(t)
	r.hb.events <- frame(heartbeat.RoleActive, 0)
	r.waitRole(t, "STANDBY")
	r.hb.events <- heartbeat.Event{Kind: heartbeat.PeerLost, At: time.Now()}
	r.waitRole(t, "ACTIVE")
	if !r.vips.isHeld() {
		t.Fatal("no claim")
	}
	// Someone deletes the VIP: claimed again.
	r.watch.events <- vip.Event{Kind: vip.Removed}
	deadline := time.Now().Add(time.Second)
	for {
		n := r.vips.claimed()
		if n >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("VIP removed from outside was not claimed again")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestLockedStandbyReportsAndStays(t *testing.T) {
	r := newRig(t, false, nil)
	os.WriteFile(r.lock, []byte("locked by test\n"), 0o644)
	r.run(t)
	r.hb.events <- frame(heartbeat.RoleActive, 0)
	r.waitRole(t, "STANDBY")
	for i := 0; i < 3; i++ { // repeated reports must not crash or flood
		r.hb.events <- heartbeat.Event{Kind: heartbeat.PeerLost, At: time.Now()}
		r.hb.events <- frame(heartbeat.RoleActive, heartbeat.FlagLeaving)
	}
	// The loop has handled the first loss once it has said so; the
	// same report within a few seconds is said once.
	const report = "not taking over, this node is locked"
	for deadline := time.Now().Add(2 * time.Second); r.log.count(report) == 0; time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the locked standby never reported the lost peer")
		}
	}
	for deadline := time.Now().Add(2 * time.Second); len(r.hb.events) > 0; time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the loop does not take its events")
		}
	}
	if n := r.log.count(report); n > 2 {
		t.Errorf("reported %d times: the log is flooded", n)
	}
	s := r.a.Status()
	if s.Role != "STANDBY" || !s.Locked || r.vips.isHeld() || s.Redundancy == "available" {
		t.Fatalf("locked standby: %+v held %v", s, r.vips.isHeld())
	}
	if r.hb.get().Flags&heartbeat.FlagLocked == 0 {
		t.Error("frames do not say locked")
	}
}

func TestGracefulStopWaitsForPeer(t *testing.T) {
	// A handoff bound (two dead intervals) long against the test's steps,
	// so only the peer's frames can end the handoff.
	r := newRigDead(t, true, nil, 300*time.Millisecond)
	r.run(t)
	r.hb.events <- frame(heartbeat.RoleStandby, 0)
	r.waitRole(t, "ACTIVE")
	r.cancel()
	deadline := time.Now().Add(time.Second)
	for r.hb.get().Flags&heartbeat.FlagLeaving == 0 {
		if time.Now().After(deadline) {
			t.Fatal("never said leaving")
		}
		time.Sleep(time.Millisecond)
	}
	if !r.vips.isHeld() {
		t.Fatal("released before the peer took over")
	}
	// The peer says ACTIVE before it claims: keep the VIPs until it says
	// it holds them. Once the loop has taken the frame, a status round
	// trip (built by the loop) ends only after it has handled it.
	r.hb.events <- frame(heartbeat.RoleActive, 0)
	for deadline := time.Now().Add(2 * time.Second); len(r.hb.events) > 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the loop does not take its events")
		}
	}
	r.a.Status()
	select {
	case <-r.done:
		t.Fatal("exited on an ACTIVE frame that did not say Holding")
	default:
	}
	if !r.vips.isHeld() {
		t.Fatal("released on an ACTIVE frame that did not say Holding")
	}
	r.hb.events <- frame(heartbeat.RoleActive, heartbeat.FlagHolding)
	select {
	case <-r.done:
	case <-time.After(time.Second):
		t.Fatal("did not exit after the handoff")
	}
	r.done <- nil // for the cleanup
	if r.vips.isHeld() {
		t.Error("exited holding the VIPs")
	}
	if tr := r.a.Status().LastTransition; tr == nil || tr.Reason != "handoff: peer is active" {
		t.Errorf("the handoff did not end on the peer's frames: %+v", tr)
	}
}

func TestCriticalCheckFaults(t *testing.T) {
	flag := filepath.Join(t.TempDir(), "ok")
	os.WriteFile(flag, nil, 0o644)
	mon, err := health.New([]health.Config{{Name: "media", Kind: "exec", Target: "test -e " + flag, Interval: 10 * time.Millisecond, Timeout: 5 * time.Second, Rise: 1, Fall: 1, Critical: true}})
	if err != nil {
		t.Fatal(err)
	}
	r := newRig(t, true, mon)
	r.run(t)
	r.hb.events <- frame(heartbeat.RoleStandby, 0)
	r.waitRole(t, "ACTIVE")
	os.Remove(flag)
	r.waitRole(t, "FAULT")
	if r.vips.isHeld() || r.hb.get().Flags&heartbeat.FlagFault == 0 {
		t.Fatalf("fault: held %v, flags %v", r.vips.isHeld(), r.hb.get().Flags)
	}
	os.WriteFile(flag, nil, 0o644)
	r.waitRole(t, "STANDBY")
}

// Issue 15.7: status as JSON has one shape: lists are [] when empty (never
// null), durations are numbers of milliseconds under keys ending in _ms.
func TestStatusJSONShape(t *testing.T) {
	r := newRig(t, true, nil)
	r.run(t)
	r.waitRole(t, "ACTIVE")
	b, err := json.Marshal(r.a.Status())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "null") {
		t.Errorf("null in status: %s", b)
	}
	var m map[string]any
	json.Unmarshal(b, &m)
	if m["interval_ms"] != 10.0 || m["dead_interval_ms"] != 30.0 {
		t.Errorf("interval_ms %v, dead_interval_ms %v: want 10 and 30", m["interval_ms"], m["dead_interval_ms"])
	}
	for _, list := range []string{"faults", "checks", "paths", "vips", "holding"} {
		if _, ok := m[list].([]any); !ok {
			t.Errorf("%s is %T, want a list", list, m[list])
		}
	}
}

// Status is built by the loop when asked (issue 16.2), not after every
// step; a loop that does not answer still gets an answer, the last
// snapshot, saying so.
func TestStatusOfAHungLoop(t *testing.T) {
	r := newRig(t, true, nil)
	r.run(t)
	r.waitRole(t, "ACTIVE")
	r.hb.hang.Store(true)
	defer func() {
		r.hb.hang.Store(false)
		close(r.hb.release)
	}()
	select {
	case <-r.hb.hung:
	case <-time.After(2 * time.Second):
		t.Fatal("the loop never ticked")
	}
	start := time.Now()
	s := r.a.Status()
	if s.Role != "ACTIVE" || s.Redundancy != "unavailable: the agent's loop does not answer" {
		t.Errorf("hung loop: role %s, redundancy %q", s.Role, s.Redundancy)
	}
	if d := time.Since(start); d > 3*statusWait {
		t.Errorf("status took %v with the loop hung", d)
	}
}

// The switchover is coordinated in the loop (issue 16.2): a node that is
// not active answers at once, from the machine's role; an active one with
// no eligible standby refuses, and its writes are not left paused.
func TestSwitchoverInTheLoop(t *testing.T) {
	r := newRig(t, false, nil)
	r.run(t)
	r.hb.events <- frame(heartbeat.RoleActive, 0)
	r.waitRole(t, "STANDBY")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.a.Switchover(ctx, false); err == nil || !strings.Contains(err.Error(), "this node is STANDBY, not active") {
		t.Errorf("switchover on a standby: %v", err)
	}
	r.hb.events <- heartbeat.Event{Kind: heartbeat.PeerLost, At: time.Now()}
	r.waitRole(t, "ACTIVE")
	if err := r.a.Switchover(ctx, false); err == nil || !strings.Contains(err.Error(), "no eligible standby") {
		t.Errorf("switchover without a standby: %v", err)
	}
	// A write goes through: the refused switchover left nothing paused.
	// The service learns of the promotion off the loop, after the
	// machine's status says ACTIVE (applications learn of it from the
	// role event, which follows): until then a write is refused, not
	// held.
	wrote := make(chan error, 1)
	go func() {
		for deadline := time.Now().Add(time.Second); ; time.Sleep(time.Millisecond) {
			_, err := r.a.opt.Sync.(*statesync.Service).Write(store.OpCreate, "after-refusal", []byte("x"))
			if !errors.Is(err, statesync.ErrNotActive) || time.Now().After(deadline) {
				wrote <- err
				return
			}
		}
	}()
	select {
	case err := <-wrote:
		if err != nil {
			t.Errorf("write after the refused switchover: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Error("writes still paused after the refused switchover")
	}
}

// An active agent restarts its VIPs' kernel lease on its ticks, never so
// late that the kernel would drop them: with a lease of 2 s, no lease runs
// for more than a third of it (plus a generous bound for a late tick), and
// none is restarted on every tick.
func TestHeldVIPsAreRenewedOnTicks(t *testing.T) {
	r := newRig(t, true, nil)
	r.run(t)
	r.waitRole(t, "ACTIVE")
	deadline := time.Now().Add(10 * time.Second)
	for r.vips.renewals() < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("%d renewals in 10 s with a 2 s lease", r.vips.renewals())
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.vips.mu.Lock()
	starts := append([]time.Time{r.vips.claimedAt}, r.vips.renewed...)
	r.vips.mu.Unlock()
	for i := 1; i < len(starts); i++ {
		gap := starts[i].Sub(starts[i-1])
		if gap > time.Second {
			t.Errorf("lease %d ran %v of 2 s before it was restarted", i, gap)
		}
		if gap < 300*time.Millisecond {
			t.Errorf("lease %d restarted after %v: on every tick, not every third of the lease", i, gap)
		}
	}
}

// An agent whose loop stalls past the VIPs' kernel lease (a frozen virtual
// machine: the kernel took the VIPs) comes back as a fault, at once over,
// and puts the VIPs back only if nobody can take them: with a standby
// peer it comes back a standby without claiming; alone it stays active
// and claims them again. Its first tick after the stall, which renewed
// the VIPs, used to put them back beside the peer that had taken over.
// The heartbeat core fenced the node in the same stall: one stall, one
// fault (its hooks fired once), where the fence used to make a second.
func TestStallPastTheVIPLeaseIsAFault(t *testing.T) {
	for _, withPeer := range []bool{true, false} {
		t.Run(fmt.Sprintf("standby-peer-%v", withPeer), func(t *testing.T) {
			r := activeRig(t, withPeer)
			r.hangLoop(t)
			// The stall itself: longer than the rig's 2 s lease. The
			// core's shorter lease ran out in it too.
			time.Sleep(r.a.opt.Lease / 2)
			r.hb.events <- heartbeat.Event{Kind: heartbeat.Fenced, At: time.Now()}
			time.Sleep(r.a.opt.Lease/2 + 100*time.Millisecond)
			r.vips.Release() // what the kernel did meanwhile
			r.hb.hang.Store(false)
			close(r.hb.release)
			for deadline := time.Now().Add(2 * time.Second); r.log.count("kernel lease ran out") == 0; time.Sleep(2 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the lapsed lease was not seen")
				}
			}
			want := "STANDBY"
			if !withPeer {
				want = "ACTIVE"
			}
			r.waitRole(t, want)
			if r.vips.isHeld() != !withPeer {
				t.Errorf("VIPs held %v after the stall, peer standby %v", r.vips.isHeld(), withPeer)
			}
			r.waitUnfenced(t)
			claims := r.vips.claimed()
			// One fault: with a standby, the node goes through FAULT;
			// alone, it keeps the VIPs in it and says so.
			what := map[bool]string{true: "to=FAULT", false: "no eligible standby: keeping the VIPs"}[withPeer]
			if n := r.log.count(what); n != 1 {
				t.Errorf("%d lines with %q, want 1:\n%s", n, what, r.log.String())
			}
			if want := map[bool]int{true: 1, false: 2}[withPeer]; claims != want {
				t.Errorf("%d claims, want %d (the first, and again only with nobody to hand to)", claims, want)
			}
		})
	}
}

// A node that stalls past its lease while its last word of the peer says
// the peer cannot take over (in fault) keeps the VIPs in the stall's
// fault, as a node with nobody to hand to does. But the peer may have
// recovered and taken over at the fence meanwhile, its frames queued
// behind the fence: they are read before the fault ends, and the node
// steps down to the peer. Read after, they made a split brain, which this
// node, active longest, won: it took the VIPs back from the node that had
// served while it hung. Whether the fence or the VIPs' lapsed kernel lease
// is what the loop finds first.
func TestStalledNodeHearsThePeerTookOverBeforeKeepingTheVIPs(t *testing.T) {
	for _, lapsed := range []bool{false, true} {
		t.Run(fmt.Sprintf("lapsed-%v", lapsed), func(t *testing.T) {
			r := newRig(t, true, nil)
			r.run(t)
			r.waitRole(t, "ACTIVE")
			r.hb.events <- frame(heartbeat.RoleStandby, heartbeat.FlagFault)
			r.waitPeerRole(t, "STANDBY")
			r.hangLoop(t)
			fencedAt := time.Now()
			r.hb.events <- heartbeat.Event{Kind: heartbeat.Fenced, At: fencedAt}
			took := frame(heartbeat.RoleActive, heartbeat.FlagHolding)
			took.At = fencedAt.Add(3 * time.Millisecond)
			r.hb.events <- took
			if lapsed {
				// Past the rig's 2 s lease: the kernel took the VIPs.
				time.Sleep(r.a.opt.Lease + 100*time.Millisecond)
				r.vips.Release()
			}
			claims := r.vips.claimed()
			r.hb.hang.Store(false)
			close(r.hb.release)
			r.waitRole(t, "STANDBY")
			r.waitUnfenced(t)
			after := r.vips.claimed()
			if n := r.log.count("split brain"); n != 0 || after != claims || r.vips.isHeld() {
				t.Errorf("%d split-brain lines, %d claims after the stall, VIPs held %v:\n%s", n, after-claims, r.vips.isHeld(), r.log.String())
			}
			if lapsed && r.log.count("kernel lease ran out") != 1 {
				t.Errorf("the lapse was not what the loop found first:\n%s", r.log.String())
			}
		})
	}
}

// A fenced node's core lets the VIPs go once the peer holds them, while
// the agent is still stopped. Resumed, the agent may find the watch's
// report of the VIPs gone before the core's fence: taken as a VIP removed
// from outside, they went back beside the peer's until the fence was read
// (3 ms of two holders). The core's queue is read first now. Here the
// fence and the peer's frames reach the agent only once it asks the core
// (Stats), as from a socket it has not read yet, so the report is what
// the loop takes first.
func TestFencedNodeDoesNotPutBackWhatItsCoreLetGo(t *testing.T) {
	r := activeRig(t, true)
	r.hangLoop(t)
	fencedAt := time.Now()
	var once sync.Once
	var asked atomic.Bool
	r.hb.onStats = func() {
		once.Do(func() {
			asked.Store(true)
			r.hb.events <- heartbeat.Event{Kind: heartbeat.Fenced, At: fencedAt}
			took := frame(heartbeat.RoleActive, heartbeat.FlagHolding)
			took.At = fencedAt.Add(3 * time.Millisecond)
			r.hb.events <- took
		})
	}
	r.vips.Release() // the core's, at the peer's holding frame
	claims := r.vips.claimed()
	r.watch.events <- vip.Event{Kind: vip.Removed, Addr: r.a.opt.VIPs.Addrs()[0]}
	r.hb.hang.Store(false)
	close(r.hb.release)
	// Status is asked of the loop only once it has handled the report
	// (its status asks the core too): as a VIP removed from outside, or
	// by reading the core's queue first.
	for deadline := time.Now().Add(2 * time.Second); !asked.Load() && r.log.count("removed from outside") == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the report of the VIPs gone was not handled")
		}
	}
	r.waitRole(t, "STANDBY")
	after := r.vips.claimed()
	if after != claims || r.vips.isHeld() {
		t.Fatalf("%d claims after the resume, VIPs held %v:\n%s", after-claims, r.vips.isHeld(), r.log.String())
	}
}

// A heartbeat core that sends nothing for two dead intervals (stopped alone:
// SIGSTOP, a debugger) leaves its node silent to the peer, which takes
// over; its agent, alive, renewed the VIPs beside it for as long as the
// core stayed stopped. It is a fault now, at the next tick: with a
// standby, the node lets the VIPs go; alone, it keeps them. Over once the
// core sends again.
func TestSilentCoreIsAFault(t *testing.T) {
	for _, withPeer := range []bool{true, false} {
		t.Run(fmt.Sprintf("standby-peer-%v", withPeer), func(t *testing.T) {
			r := activeRig(t, withPeer)
			sent := func(ago time.Duration) { r.hb.sentAgo.Store(&ago) }
			// Late by less than two dead intervals: a stall the peer
			// may have survived.
			sent(r.a.opt.Dead * 3 / 2)
			for n, deadline := r.hb.updates.Load(), time.Now().Add(2*time.Second); r.hb.updates.Load() < n+3; time.Sleep(time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the loop stopped ticking")
				}
			}
			if r.log.count("the heartbeat core has sent no frame") != 0 {
				t.Fatalf("a core that sent 1.5 dead intervals ago was taken for silent:\n%s", r.log.String())
			}
			sent(3 * r.a.opt.Dead)
			if !waitLog(r, "the heartbeat core has sent no frame", 1) {
				t.Fatalf("a core silent for three dead intervals was not seen:\n%s", r.log.String())
			}
			want := map[bool]string{true: "FAULT", false: "ACTIVE"}[withPeer]
			r.waitRole(t, want)
			if r.vips.isHeld() == withPeer {
				t.Errorf("VIPs held %v with a silent core, peer standby %v", r.vips.isHeld(), withPeer)
			}
			sent(0)
			if !waitLog(r, "the heartbeat core sends again", 1) {
				t.Fatalf("the core's frames were not seen again:\n%s", r.log.String())
			}
			r.waitRole(t, map[bool]string{true: "STANDBY", false: "ACTIVE"}[withPeer])
		})
	}
}

// A first look at a silent core is no fault: at the first tick after a
// stop of the whole daemon, the core woken with the loop may not have
// sent yet (a CI run: a 1 s freeze taken for a silent core). Silence
// counts across two ticks with nothing sent between, and a late tick, the
// stop itself, starts the look anew. The loop is not run: its ticks are
// the test's calls.
func TestCoreSilenceCountsAcrossTwoTicks(t *testing.T) {
	r := newRig(t, true, nil)
	dead := r.a.opt.Dead
	sent := func(ago time.Duration) { r.hb.sentAgo.Store(&ago) }
	t0 := time.Now()
	for _, step := range []struct {
		at     time.Duration // the tick, after t0
		ago    time.Duration // the core's last send, before it
		late   bool
		silent bool
	}{
		{0, 3 * dead, false, false},                                         // first look
		{5 * time.Millisecond, 0, false, false},                             // it sent meanwhile: the whole daemon had stopped
		{10 * time.Millisecond, 3 * dead, false, false},                     // first look again
		{15 * time.Millisecond, 3*dead + 5*time.Millisecond, true, false},   // a late tick starts anew
		{20 * time.Millisecond, 3*dead + 10*time.Millisecond, false, false}, // first look after it
		{25 * time.Millisecond, 3*dead + 15*time.Millisecond, false, true},  // nothing sent across two ticks
		{30 * time.Millisecond, 0, false, false},                            // it sends again
	} {
		sent(step.ago)
		r.a.watchCore(t0.Add(step.at), step.late)
		if r.a.coreSilent != step.silent {
			t.Fatalf("at %v (last send %v before, late %v): silent %v, want %v", step.at, step.ago, step.late, r.a.coreSilent, step.silent)
		}
	}
}

// waitLog waits, bounded, until r's log has n lines that say what, and
// says whether it did.
func waitLog(r *rig, what string, n int) bool {
	for deadline := time.Now().Add(2 * time.Second); r.log.count(what) < n; time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return r.log.count(what) == n
}

// A node that took a new session just before it saw the split counts it,
// whichever of the two its loop's select would pick first: the session is
// its newest fact in the frozen snapshot, and it stays active against a
// peer whose last new session is older. Both reach a held-up loop at once,
// twenty times over; with the loop's choice left to chance, about half the
// runs yielded.
func TestNewSessionJustBeforeASplitCounts(t *testing.T) {
	split := frame(heartbeat.RoleActive, heartbeat.FlagSplitBrain)
	split.Frame.ActiveFor, split.Frame.LastNewSession = 500*time.Millisecond, time.Millisecond
	for i := range 20 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			r := newRig(t, true, nil)
			r.run(t)
			r.waitRole(t, "ACTIVE")
			r.hb.hang.Store(true)
			select {
			case <-r.hb.hung:
			case <-time.After(2 * time.Second):
				t.Fatal("the loop never ticked")
			}
			r.a.NewSession(time.Now())
			split.At = time.Now()
			r.hb.events <- split
			r.hb.hang.Store(false)
			close(r.hb.release)
			for deadline := time.Now().Add(2 * time.Second); r.log.count("arbitrating") == 0; time.Sleep(2 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("no split brain seen")
				}
			}
			// Status is answered once the loop has done the step that
			// froze and arbitrated. (This fake peer never hears the
			// node, so a dead interval later it yields to the one-way
			// rule: that is not the arbitration.)
			r.a.Status()
			if r.log.count("split brain: peer stays active") != 0 {
				t.Fatal("the node with the newest session yielded in the arbitration")
			}
		})
	}
}

// A session counts from when the store took it, not from when a held-up
// loop got to it: a node whose session is older than its peer's yields,
// however late its loop heard of the session. (Stamped by the loop, the
// session looked newest, and the node with the older one stayed.)
func TestLateLoopStampsASessionWhenTheStoreTookIt(t *testing.T) {
	r := newRig(t, true, nil)
	r.run(t)
	r.waitRole(t, "ACTIVE")
	// Active for longer than both sessions are old, so both count.
	time.Sleep(100 * time.Millisecond)
	r.hb.hang.Store(true)
	select {
	case <-r.hb.hung:
	case <-time.After(2 * time.Second):
		t.Fatal("the loop never ticked")
	}
	r.a.NewSession(time.Now().Add(-50 * time.Millisecond))
	split := frame(heartbeat.RoleActive, heartbeat.FlagSplitBrain)
	split.Frame.ActiveFor, split.Frame.LastNewSession = 500*time.Millisecond, 20*time.Millisecond
	r.hb.events <- split
	r.hb.hang.Store(false)
	close(r.hb.release)
	r.waitRole(t, "STANDBY")
	if r.log.count("processed a new session most recently") == 0 {
		t.Error("yielded, but not to the newer session")
		r.log.mu.Lock()
		t.Log(string(r.log.b))
		r.log.mu.Unlock()
	}
}

// Another hapaird sends in this node's name (two hosts run as node a):
// this node refuses to be active, unless it is active and the twin is not,
// or both are and this one's generation is the lower. Exactly one of two
// active twins stays, whichever of them decides.
func TestTwinRefusesToBeActive(t *testing.T) {
	const mine = 5 << 32
	for _, c := range []struct {
		name      string
		active    bool // this node is active when the twin is reported
		twin      heartbeat.Role
		twinGen   uint64
		wantFault bool
	}{
		{"standby", false, heartbeat.RoleInit, mine + 1, true},
		{"active, twin not", true, heartbeat.RoleInit, mine + 1, false},
		{"both active, this one lower", true, heartbeat.RoleActive, mine + 1, false},
		{"both active, this one higher", true, heartbeat.RoleActive, mine - 1, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t, c.active, nil)
			r.a.opt.Election.Generation = mine
			r.a.m = election.New(r.a.opt.Election)
			r.run(t)
			if c.active {
				r.waitRole(t, "ACTIVE")
			} else {
				r.hb.events <- frame(heartbeat.RoleActive, heartbeat.FlagHolding)
				r.waitRole(t, "STANDBY")
			}
			r.hb.events <- heartbeat.Event{Kind: heartbeat.Twin, Path: "raw", At: time.Now(), Frame: heartbeat.Frame{Node: 1, Role: c.twin, Generation: c.twinGen}}
			for deadline := time.Now().Add(2 * time.Second); r.log.count("op=twin") == 0; time.Sleep(2 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the twin was not logged")
				}
			}
			if !c.wantFault {
				if st := r.a.Status(); st.Role != "ACTIVE" || !r.vips.isHeld() {
					t.Errorf("role %s, VIP held %v: want it to stay active", st.Role, r.vips.isHeld())
				}
				return
			}
			r.waitRole(t, "FAULT")
			if r.vips.isHeld() {
				t.Error("VIP still held by a node that refuses to be active")
			}
			// A peer that leaves does not make it take over.
			r.hb.events <- heartbeat.Event{Kind: heartbeat.PeerLost, At: time.Now()}
			r.hb.events <- frame(heartbeat.RoleInit, 0)
			if st := r.a.Status(); st.Role != "FAULT" || r.vips.isHeld() {
				t.Errorf("role %s, VIP held %v after the peer left", st.Role, r.vips.isHeld())
			}
		})
	}
}

// The machine freezes a split's facts at election.FactsUnit, the unit in
// which frames carry ages, so that what one node arbitrates on is what the
// other hears (election's TestSplitArbitratesOnWhatTheWireCarries). A frame
// that carried ages in another unit would break that.
func TestFrozenFactsCrossTheWireUnchanged(t *testing.T) {
	s, err := heartbeat.NewSigner([][]byte{make([]byte, 32)})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []time.Duration{0, 1400 * time.Microsecond, 37*time.Second + 999*time.Microsecond} {
		f := heartbeat.Frame{Cluster: 1, Node: 1, Role: heartbeat.RoleActive, Flags: heartbeat.FlagSplitBrain, ActiveFor: d, LastNewSession: d}
		var g heartbeat.Frame
		if err := g.UnmarshalBinary(s.AppendFrame(nil, &f, 0)); err != nil {
			t.Fatal(err)
		}
		if want := d.Truncate(election.FactsUnit); g.ActiveFor != want || g.LastNewSession != want {
			t.Errorf("ages of %v crossed the wire as %v and %v, want %v", d, g.ActiveFor, g.LastNewSession, want)
		}
	}
}

// A frame that waited in the queue longer than half the handover bound
// (the loop did not run) is set aside and the peer's next asked for: the
// leaving active it tells of may have stayed active since (a switchover
// this node was too stopped to take up). Read fresh, the same frame is
// taken up at once.
func TestPeerFrameReadLateIsSetAside(t *testing.T) {
	r := newRig(t, false, nil)
	r.run(t)
	r.hb.events <- frame(heartbeat.RoleActive, heartbeat.FlagHolding)
	r.waitRole(t, "STANDBY")
	bound := election.DefaultHandoffBound(30 * time.Millisecond)
	late := frame(heartbeat.RoleActive, heartbeat.FlagHolding|heartbeat.FlagLeaving)
	late.Sent = heartbeat.Mono() - int64(bound) // sent a bound ago, unread since
	r.hb.events <- late
	// The core sends the next frame once asked (the frame set aside is
	// the newest queued: one behind it would supersede it).
	for deadline := time.Now().Add(2 * time.Second); r.hb.renews.Load() == 0; time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the frame read late was not set aside: the peer's next was not asked for")
		}
	}
	// The peer's next frame, sent after the stall: it stayed active (and
	// was locked meanwhile, which status shows once it is handled).
	stayed := frame(heartbeat.RoleActive, heartbeat.FlagHolding|heartbeat.FlagLocked)
	stayed.Sent = heartbeat.Mono()
	r.hb.events <- stayed
	r.waitPeer(t, "says it is locked (sent after the stall)", func(p control.PeerStatus) bool { return p.Locked })
	if role := r.a.Status().Role; role != "STANDBY" || r.vips.isHeld() || r.log.count("peer leaving") != 0 {
		t.Fatalf("took over on a leaving frame read %v late: role %s, VIPs held %v", bound, role, r.vips.isHeld())
	}
	fresh := frame(heartbeat.RoleActive, heartbeat.FlagHolding|heartbeat.FlagLeaving)
	fresh.Sent = heartbeat.Mono() - int64(bound/4)
	r.hb.events <- fresh
	r.waitRole(t, "ACTIVE")
}

// hungStandby is a standby of an active of boot 1, its loop stuck (hangLoop)
// until resume.
func hungStandby(t *testing.T) *rig {
	t.Helper()
	r := newRig(t, false, nil)
	r.run(t)
	old := frame(heartbeat.RoleActive, heartbeat.FlagHolding)
	old.Frame.Generation = 1 << 32
	r.hb.events <- old
	r.waitRole(t, "STANDBY")
	r.hangLoop(t)
	return r
}

// restartQueued queues, for a loop stuck by hungStandby, the new boot's
// first frame (restarted, boot 2), then between, then the frame that says
// the new boot took over; resumes the loop and waits until it has handled
// that last frame.
func (r *rig) restartQueued(t *testing.T, restarted heartbeat.Event, between ...heartbeat.Event) {
	t.Helper()
	restarted.Frame.Generation = 2 << 32
	r.hb.events <- restarted
	for _, e := range between {
		r.hb.events <- e
	}
	took := frame(heartbeat.RoleActive, heartbeat.FlagHolding|heartbeat.FlagPreferred)
	took.Frame.Generation = 2 << 32
	took.Frame.SyncWritten = 7 // the old boot's said 0: seen once it is handled
	r.hb.events <- took
	r.resume()
	r.waitPeer(t, "says the restarted peer is active", func(p control.PeerStatus) bool { return p.Role == "ACTIVE" && p.Written == 7 })
}

// resume lets a loop stuck by hangLoop go on.
func (r *rig) resume() {
	r.hb.hang.Store(false)
	close(r.hb.release)
}

// A standby whose loop did not run while the active restarted finds the
// new boot's frames queued: its INIT, milliseconds old, then its ACTIVE
// (it took over meanwhile). Acting on the INIT, the standby took over
// from a node that was active already; only the newest frame is the
// peer's word.
func TestQueuedPeerFramesAreReadNewestFirst(t *testing.T) {
	r := hungStandby(t)
	restarted := frame(heartbeat.RoleInit, heartbeat.FlagPreferred)
	restarted.Sent = heartbeat.Mono() - int64(30*time.Millisecond)
	r.restartQueued(t, restarted)
	if n := r.log.count("old active is gone"); n != 0 || r.vips.isHeld() || r.a.Status().Role != "STANDBY" {
		t.Fatalf("took over %d times on the restarted peer's first frame; VIPs held %v, role %s", n, r.vips.isHeld(), r.a.Status().Role)
	}
}

// What a late loop replays of the core's queue (netEffect).
func TestNetEffectOfQueuedEvents(t *testing.T) {
	now := heartbeat.Mono()
	ev := func(k heartbeat.EventKind, path string, waited time.Duration) heartbeat.Event {
		return heartbeat.Event{Kind: k, Path: path, Sent: now - int64(waited)}
	}
	long, short := 2*time.Second, 20*time.Millisecond
	down, up := ev(heartbeat.PathDown, "raw", long), ev(heartbeat.PathUp, "raw", short)
	lost, alive := ev(heartbeat.PeerLost, "", long), ev(heartbeat.PeerAlive, "raw", short)
	f1, f2 := ev(heartbeat.PeerFrame, "raw", long), ev(heartbeat.PeerFrame, "udp", short)
	fenced := ev(heartbeat.Fenced, "", short)
	for _, c := range []struct {
		name    string
		in, out []heartbeat.Event
	}{
		{"the newest frame only", []heartbeat.Event{f1, fenced, f2}, []heartbeat.Event{fenced, f2}},
		{"a stale loss and its return go", []heartbeat.Event{f1, down, lost, up, alive, f2, fenced}, []heartbeat.Event{f2, fenced}},
		{"a loss with no return stays", []heartbeat.Event{f1, down, lost}, []heartbeat.Event{f1, down, lost}},
		{"a return on another path is no return", []heartbeat.Event{down, ev(heartbeat.PathUp, "udp", short)}, []heartbeat.Event{down, ev(heartbeat.PathUp, "udp", short)}},
		{"a recent loss stays, with its return", []heartbeat.Event{ev(heartbeat.PeerLost, "", short), alive, f2}, []heartbeat.Event{ev(heartbeat.PeerLost, "", short), alive, f2}},
		{"one return per loss", []heartbeat.Event{down, up, down, up}, nil},
	} {
		got := netEffect(slices.Clone(c.in), time.Second)
		if !slices.Equal(got, c.out) {
			t.Errorf("%s: got %v, want %v", c.name, kindsOf(got), kindsOf(c.out))
		}
	}
}

func kindsOf(q []heartbeat.Event) []string {
	var k []string
	for _, e := range q {
		k = append(k, e.Kind.String()+"/"+e.Path)
	}
	return k
}

// The standby's hapaird stops past its lease; the active crashes and is
// started again meanwhile, and takes over once the stopped standby's core
// fences it. Running again, the standby finds queued the active's loss,
// its return, the new boot's frames and its own fence: it must not take
// over on a loss that is history (a split brain it lost, at fast).
func TestALateLoopDoesNotActOnALossThatEnded(t *testing.T) {
	r := hungStandby(t)
	at := func(e heartbeat.Event, ago time.Duration) heartbeat.Event {
		e.Sent = heartbeat.Mono() - int64(ago)
		e.At = time.Now().Add(-ago)
		return e
	}
	for _, e := range []heartbeat.Event{
		at(heartbeat.Event{Kind: heartbeat.PathDown, Path: "raw"}, 1800*time.Millisecond),
		at(heartbeat.Event{Kind: heartbeat.PathDown, Path: "udp"}, 1800*time.Millisecond),
		at(heartbeat.Event{Kind: heartbeat.PeerLost}, 1800*time.Millisecond),
		at(heartbeat.Event{Kind: heartbeat.PathUp, Path: "raw"}, 1700*time.Millisecond),
		at(heartbeat.Event{Kind: heartbeat.PeerAlive, Path: "raw"}, 1700*time.Millisecond),
		at(heartbeat.Event{Kind: heartbeat.PathUp, Path: "udp"}, 1700*time.Millisecond),
	} {
		r.hb.events <- e
	}
	r.restartQueued(t, at(frame(heartbeat.RoleInit, heartbeat.FlagPreferred), 1700*time.Millisecond),
		at(heartbeat.Event{Kind: heartbeat.Fenced}, 20*time.Millisecond))
	r.waitRole(t, "STANDBY")
	if n := r.log.count("to=ACTIVE"); n != 0 || r.vips.isHeld() {
		t.Fatalf("took over %d times on a loss that had ended; VIPs held %v", n, r.vips.isHeld())
	}
	if n := r.log.count("this loop ran late"); n != 1 {
		t.Errorf("the late loop said %d times that it replayed the core's queue, not once:\n%s", n, r.log.String())
	}
}

// A loop that stalls past the heartbeat core's lease is fenced: the core
// says FAULT, and the standby takes over. The frames the peer sent in
// between, still a standby's (its agent had not acted yet), wait unread
// with the peer's frame that says it took over. Handled after the fence,
// the first of them found two standbys and no active node, and the node
// took the VIPs again beside the peer (a soak at turbo: two holders for
// 17-27 ms, and a split brain to arbitrate).
func TestFencedLoopDoesNotTakeOverOnFramesQueuedInTheStall(t *testing.T) {
	r := activeRig(t, true)
	r.hangLoop(t)
	// What the core queued while the loop was stuck: its fence, the
	// peer's frames before it took over, then the one that says it did.
	fencedAt := time.Now()
	r.hb.events <- heartbeat.Event{Kind: heartbeat.Fenced, At: fencedAt}
	still := frame(heartbeat.RoleStandby, 0)
	still.At = fencedAt.Add(time.Millisecond)
	r.hb.events <- still
	took := frame(heartbeat.RoleActive, heartbeat.FlagHolding)
	took.At = fencedAt.Add(3 * time.Millisecond)
	r.hb.events <- took
	time.Sleep(10 * time.Millisecond) // the stall goes on after them
	claims := r.vips.claimed()
	r.hb.hang.Store(false)
	close(r.hb.release)
	r.waitPeerRole(t, "ACTIVE")
	r.waitRole(t, "STANDBY")
	after := r.vips.claimed()
	if n := r.log.count("no active node"); n != 0 || after != claims || r.vips.isHeld() {
		t.Fatalf("took over %d times on frames queued in the stall (%d claims after the fence); VIPs held %v", n, after-claims, r.vips.isHeld())
	}
}
