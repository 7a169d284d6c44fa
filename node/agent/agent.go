// Package agent is the glue of hapaird (design.md section 1): one goroutine
// owns the election machine; events from the edges (heartbeat, VIP watch,
// lock file, timers, operator commands) come in, the machine's actions go
// out to the edges. Nothing else touches the machine, so it needs no lock.
package agent

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hapair/hapair/election"
	"github.com/hapair/hapair/health"
	"github.com/hapair/hapair/heartbeat"
	"github.com/hapair/hapair/internal/control"
	"github.com/hapair/hapair/internal/hooks"
	"github.com/hapair/hapair/internal/lockfile"
	"github.com/hapair/hapair/statesync"
	"github.com/hapair/hapair/vip"
)

// Heartbeat is what the agent needs of the heartbeat endpoint.
type Heartbeat interface {
	Run(ctx context.Context) error
	Events() <-chan heartbeat.Event
	SetLocal(heartbeat.Local)
	UpdateLocal(func(*heartbeat.Local))
	Stats() heartbeat.Stats
	// Unfence says a Fenced event has been handled.
	Unfence()
	// Renews asks for the peer's next frame even if it says nothing new.
	Renews()
	// Isolation says whether liveness runs with real-time scheduling and
	// locked memory.
	Isolation() heartbeat.CoreHello
	// SentAgo says how long ago the frames were last sent, false when
	// that is not known.
	SentAgo() (time.Duration, bool)
}

// VIPs is what the agent needs of the VIP manager.
type VIPs interface {
	Claim() error
	Renew() error
	Release() error
	Announce() error
	// Probe asks the network whether another host answers for the
	// VIPs, listening for wait (vipGuard says when).
	Probe(ctx context.Context, wait time.Duration) ([]vip.Sighting, error)
	Present() ([]vip.Addr, error)
	Addrs() []vip.Addr
	Stats() vip.Stats
}

// Checks is what the agent needs of the critical component checks
// (health.Monitor).
type Checks interface {
	Run(ctx context.Context) error
	Events() <-chan health.Event
	States() []health.State
}

// Hooks is what the agent needs of the operator's transition hooks
// (hooks.Runner).
type Hooks interface {
	Fire(hooks.Env)
}

// Sessions is what the agent needs of the session service
// (statesync.Service).
type Sessions interface {
	// Position is the store's written and acknowledged positions; it
	// must not wait for the store.
	Position() (written, acked uint64)
	Publish(statesync.Event)
	SetRole(gen uint64, role string, active bool, activeNode string, epoch uint64)
	Failover(reason, previousActive string, mine, peerWritten uint64, now time.Time) statesync.Event
	// PeerActive says whether the peer is active, as its heartbeats say:
	// a standby's replication dials only then. It must not block.
	PeerActive(bool)
	// Pause, Resume and WaitSynced make a switchover lose nothing.
	Pause()
	Resume()
	WaitSynced(timeout time.Duration) bool
	// StandbyStopped: the standby said it stops (planned), or its core
	// that its daemon died; sync writes need not wait for it. It must
	// not block.
	StandbyStopped(planned bool)
	// StandbyLoading: the attached standby is still loading its
	// snapshot. It must not block.
	StandbyLoading() bool
	Stats() statesync.Stats
}

// Watcher is what the agent needs of a VIP watch (vip.Manager.Subscribe,
// opened before Run so nothing is missed).
type Watcher interface {
	Run(ctx context.Context, out chan<- vip.Event) error
}

const (
	reportEvery   = 5 * time.Second
	redundancyNag = 30 * time.Second
	// Dropped frames are counted always and logged at most this often,
	// never per frame: a flood of forged frames must not flood the log.
	dropLogEvery = 10 * time.Second
)

// Options wire an agent. Every field is required unless marked.
type Options struct {
	Election  election.Config
	Heartbeat Heartbeat
	VIPs      VIPs
	VIPWatch  Watcher
	Log       *slog.Logger
	// Interval is the heartbeat interval; the agent ticks the machine at
	// half of it.
	Interval time.Duration
	// IdleTick is how often the loop ticks while quiet (default 250ms):
	// each tick renews the heartbeat core's lease and pings the watchdog,
	// so it must be well inside both; beyond that, every idle tick is a
	// wake-up for nothing.
	IdleTick time.Duration
	// Lease is the VIP lease; held VIPs are renewed every third of it,
	// on the loop's ticks.
	Lease time.Duration
	// Refresh re-announces held VIPs this often (optional).
	Refresh time.Duration
	// Probe asks the network this often, while this node holds the
	// VIPs, whether another host answers for them (0: never).
	Probe time.Duration
	// LockFile is this node's lock file; its existence means locked.
	LockFile string
	// Identity for status.
	Cluster, Node, Peer, Profile, Version string
	// ClusterID is the cluster name's id, which frames carry.
	ClusterID uint32
	Dead      time.Duration
	// Keys are the fingerprints of this node's keys, newest first, as
	// hapaird --check prints them: named when the peer signs with a key
	// that is not among them.
	Keys []uint32
	// TLS gives the replication link's certificates' dates, for status
	// (nil: no TLS). It must not wait on a disk.
	TLS func() []control.Cert
	// ConfigFile says which top-level keys of the configuration file
	// differ from what the daemon read at its start, or why it cannot
	// tell (nil: not asked). Status calls it in its caller's goroutine,
	// never in the loop: it may read the disk.
	ConfigFile func() (differ []string, err string)
	// Watchdog, if set, is called from the loop every tick, so a hung loop
	// (not only a dead process) stops the pings (optional).
	Watchdog func()
	// Ready, if set, is called once the initial role is decided
	// (optional).
	Ready func(role string)
	// Notify, if set, is called on every transition (for sd_notify's
	// STATUS=).
	Notify func(role, reason string)
	// Health runs the critical component checks (optional).
	Health Checks
	// Hooks runs the operator's commands on transitions (optional).
	Hooks Hooks
	// LogDropped counts the log lines the daemon dropped because its
	// stderr did not take them (optional; status and metrics).
	LogDropped func() uint64
	// API reads the application socket's connections (optional; status
	// and metrics).
	API func() control.Conns
	// Sync is the node's session service, replicated in SyncMode.
	Sync     Sessions
	SyncMode statesync.Mode
}

// Agent runs one node. Create with New, then Run.
type Agent struct {
	opt Options
	m   *election.Machine
	log *slog.Logger

	cmds       chan command
	newSession chan struct{}
	wrote      chan struct{} // writes were applied (Wrote)
	// statusReq asks the loop to build the status snapshot: built on
	// demand, not after every step, so an idle node spends nothing on it.
	statusReq chan chan struct{}
	// locks carries lock states to the loop; lockMu orders them: a lock
	// command's write and apply, and the watcher's read and apply, never
	// interleave, so a stale read cannot undo a lock just set.
	locks    chan lockChange
	lockMu   sync.Mutex
	loopDone chan struct{}
	lockErr  string // the last unreadable-lock error logged

	// Kept by the loop, read by Status.
	mu        sync.Mutex
	status    control.Status
	paths     map[string]bool
	heardBack map[string]bool // the peer hears us, per path
	// noise decides which path changes are logged, per path; wentDown
	// counts a path's losses (not its peer's stops).
	noise    map[string]*pathNoise
	wentDown map[string]uint64
	faults   map[string]string
	peerAt   time.Time
	// wroteAt is when writes last came (Wrote, NewSession), pushedAt
	// when the position last went to the frames.
	wroteAt, pushedAt time.Time
	// peerDead is the dead interval the peer's frames last said (the
	// loop's; logged when it changes).
	peerDead time.Duration
	// peerBoot is the peer's boot generation in its last frame (the
	// loop's; a new one is logged as the peer's restart).
	peerBoot  uint64
	lockInfo  string
	lastTrans *control.Transition
	// unverified says, for status, that the peer's node sends frames no
	// key of ours verifies, and what it signs with (empty: it does not),
	// or frames of another cluster name; unverifiedCause says which
	// ("keys", "cluster").
	unverified, unverifiedCause string
	// unanswered says, for status, that the peer is active in authentic
	// frames that echo an earlier boot of this node's, and nothing of
	// the peer's was usable this boot (empty: not so).
	unanswered string
	// unansweredGen is the peer's boot whose frames the last Unanswered
	// report was of, and unansweredResumed says the current report's
	// continue it (the endpoint reports only frames numbered past those
	// it saw): the peer is an active that does not hear this node, and
	// its frames only stopped for a while (election.Event.Resumed).
	// Loop-owned.
	unansweredGen     uint64
	unansweredResumed bool
	// configDiffers names the pair sections of the peer's file that
	// differ from this node's, and peerRelease is the peer's hapaird
	// version, as the peer's replication last said.
	configDiffers []string
	peerRelease   string

	// sessAt is when the store took the newest session (NewSession).
	sessMu sync.Mutex
	sessAt time.Time

	holding     bool
	renewedAt   time.Time // when the held VIPs' lease last started
	peerActive  bool      // what Sync.PeerActive was last told
	ready       bool
	failovers   map[string]uint64
	dropsLogged map[string]uint64
	// framesLogged are each path's frame counts when last logged.
	framesLogged map[string]heartbeat.PathFrames
	reported     map[string]time.Time // last time each report was logged
	// app tells the session service and the applications, in order and
	// off the loop.
	app     *queue
	roleGen uint64       // numbers the role changes for the session service
	waiters []chan error // switchovers waiting for the peer to take over
	// readying is a switchover whose writes are paused while the standby
	// applies every one of them (off the loop; the result comes on
	// synced); paused says writes are held until the switchover is
	// answered.
	readying *command
	synced   chan bool
	paused   bool
	// stallHandled is when the loop last handled a stall of its own
	// (stalled): a fence from before it is the same stall.
	stallHandled time.Time
	// coreSilent says the loop found the heartbeat core sending nothing;
	// coreSuspect is the tick at which it first saw it so, to look again
	// at the next (watchCore).
	coreSilent  bool
	coreSuspect time.Time
	// guard probes for other hosts that answer for the held VIPs;
	// probeErr is the last probe's error logged.
	guard    vipGuard
	probeErr string
	// draining: a graceful stop of the active waits, writes paused, for
	// the standby to apply every write (on synced) before it hands over.
	draining bool
	// replaying: the loop handles what replay took off the core's queue.
	replaying bool
}

type command struct {
	force bool
	reply chan error
	// gone says the operator's client gave up waiting (ClientGone).
	gone func() bool
}

type lockChange struct {
	state   lockfile.State
	applied chan struct{}
}

// New builds an agent; it starts nothing.
func New(opt Options) *Agent {
	return &Agent{
		opt:          opt,
		m:            election.New(opt.Election),
		log:          opt.Log,
		cmds:         make(chan command),
		synced:       make(chan bool, 1),
		statusReq:    make(chan chan struct{}),
		locks:        make(chan lockChange),
		loopDone:     make(chan struct{}),
		newSession:   make(chan struct{}, 1),
		wrote:        make(chan struct{}, 1),
		paths:        map[string]bool{},
		heardBack:    map[string]bool{},
		noise:        map[string]*pathNoise{},
		wentDown:     map[string]uint64{},
		faults:       map[string]string{},
		reported:     map[string]time.Time{},
		failovers:    map[string]uint64{},
		dropsLogged:  map[string]uint64{},
		framesLogged: map[string]heartbeat.PathFrames{},
		app:          newQueue(),
		guard:        vipGuard{lease: opt.Lease, every: opt.Probe},
	}
}

// edges are what the loop hears from the goroutines Run starts.
type edges struct {
	checks    <-chan health.Event
	vipEvents chan vip.Event
	hbErr     chan error
	watchErr  chan error
	// probe asks probeVIPs for a probe; probed is its answer.
	probe  chan struct{}
	probed chan probeResult
}

// Run runs the node until ctx ends, then stops gracefully: an active node
// hands its VIPs to the standby before Run returns (make-before-break). It
// returns only after every goroutine it started has ended.
func (a *Agent) Run(ctx context.Context) error {
	defer close(a.loopDone)
	// The edges get their own context: they must keep running through
	// the handoff that follows ctx's end.
	edgeCtx, stopEdges := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	appStop := make(chan struct{})
	defer func() {
		close(appStop)
		stopEdges()
		wg.Wait()
	}()
	goes := func(f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f()
		}()
	}
	e := edges{vipEvents: make(chan vip.Event, 16), hbErr: make(chan error, 1), watchErr: make(chan error, 1), probe: make(chan struct{}, 1), probed: make(chan probeResult, 1)}
	goes(func() { a.app.run(appStop) })
	if a.opt.Health != nil {
		e.checks = a.opt.Health.Events()
		goes(func() { a.opt.Health.Run(edgeCtx) })
	}
	// The lock as it stands at start, before anything else: a node
	// locked while the daemon was down starts locked. And before the
	// heartbeat core starts: its first frame says what this says
	// (locked, preferred), or a peer whose start-up window ends then
	// takes this node for a plain starting one.
	a.applyLock(lockfile.Read(a.opt.LockFile), time.Now())
	a.opt.Heartbeat.SetLocal(a.local(a.m.Advert()))
	goes(func() { e.hbErr <- a.opt.Heartbeat.Run(edgeCtx) })
	goes(func() { e.watchErr <- a.opt.VIPWatch.Run(edgeCtx, e.vipEvents) })
	goes(func() { a.watchLock(edgeCtx) })
	goes(func() { a.probeVIPs(edgeCtx, e.probe, e.probed) })
	err := a.loop(ctx, e)
	// Nothing is left waiting or paused, and Status serves how it ended.
	a.answer(errors.New("switchover: hapaird is stopping"))
	a.updateStatus()
	return err
}

// loop is the one goroutine that owns the machine: every input comes in
// here, one at a time.
func (a *Agent) loop(ctx context.Context, e edges) error {
	// Held VIPs are renewed on ticks, so ticks come at least that often.
	idle := a.opt.IdleTick
	if idle <= 0 {
		idle = defaultIdleTick
	}
	tick := newTicker(a.opt.Interval, min(idle, renewEvery(a.opt.Lease)))
	defer tick.t.Stop()
	nag := time.NewTicker(redundancyNag)
	defer nag.Stop()
	dropLog := time.NewTicker(dropLogEvery)
	defer dropLog.Stop()
	var refresh <-chan time.Time
	if a.opt.Refresh > 0 {
		t := time.NewTicker(a.opt.Refresh)
		defer t.Stop()
		refresh = t.C
	}

	done := ctx.Done()
	var hardStop <-chan time.Time
	for {
		exit := false
		select {
		case <-done:
			done = nil
			// Bound the drain and the handoff even if the machine
			// never says Exit.
			hardStop = time.After(stopWithin(a.syncedWithin(), a.m.HandoffBound()))
			exit = a.stop()
		case <-hardStop:
			a.log.Warn("handoff did not finish; releasing", "op", "stop")
			a.release()
			return nil
		case ev := <-a.opt.Heartbeat.Events():
			exit = a.heartbeat(ev)
			// A peer that holds the VIPs for less than a tick still
			// makes a probe under way stale.
			a.observeGuard(time.Now())
		case ev := <-e.vipEvents:
			exit = a.vipEvent(ev)
		case ev := <-e.checks:
			exit = a.checkEvent(ev)
		case now := <-tick.t.C:
			// A tick late by more than half a dead interval is this
			// loop's own stall (the whole daemon stopped, its core
			// with it), which the leases handle: the core woke with it
			// and may not have sent yet, so its silence is not judged
			// in the same instant.
			late := !tick.due.IsZero() && now.Sub(tick.due) > a.opt.Dead/2
			tick.fired(now)
			if exit = a.tick(now); !exit {
				exit = a.renewIfDue(now, tick.idle)
			}
			if !exit {
				exit = a.watchCore(time.Now(), late)
			}
			a.guardTick(now, e.probe)
		case r := <-e.probed:
			a.probed(r)
		case <-a.wrote:
			a.wroteAt = time.Now()
			a.advertisePosition(a.wroteAt)
		case <-refresh:
			if a.holding {
				a.opt.VIPs.Announce()
			}
		case reply := <-a.statusReq:
			a.updateStatus()
			close(reply)
		case <-nag.C:
			a.nagRedundancy()
		case <-dropLog.C:
			a.logFrames()
		case lc := <-a.locks:
			exit = a.applyLock(lc.state, time.Now())
			close(lc.applied)
		case <-a.newSession:
			exit = a.stepNewSession()
		case c := <-a.cmds:
			a.switchover(c)
		case ok := <-a.synced:
			if a.draining {
				exit = a.drained(ok)
			} else {
				exit = a.handOver(ok)
			}
		case err := <-e.hbErr:
			a.release()
			return fmt.Errorf("heartbeat stopped: %w", err)
		case err := <-e.watchErr:
			if err != nil {
				a.release()
				return err
			}
		}
		if exit {
			return nil
		}
		tick.next(a.quiet(time.Now()))
	}
}

// stop asks the machine to stop (it hands over first when active); true
// means exit now.
func (a *Agent) stop() bool {
	a.log.Info("stopping", "op", "stop", "role", a.m.Role().String())
	if a.m.Role() != election.Active || !a.m.PeerEligible() {
		return a.step(election.Event{Kind: election.Stop, Now: time.Now()})
	}
	// A planned stop loses no write the standby could still take: as
	// for a switchover, writes pause and the handover waits (up to two
	// dead intervals) until the standby has applied them all. In async
	// mode, without this, the writes of the last milliseconds were
	// acknowledged here and never reached the new active.
	a.draining = true
	if a.readying != nil {
		return false // a switchover's wait is under way: its result serves
	}
	a.awaitSynced()
	return false
}

// syncedWithin bounds a planned handover's wait for the standby to apply
// every write.
func (a *Agent) syncedWithin() time.Duration { return drainWithin(a.opt.Dead) }

func drainWithin(dead time.Duration) time.Duration { return 2 * dead }

// stopWithin bounds a graceful stop: the drain, the handover, and a second.
func stopWithin(drain, handoff time.Duration) time.Duration { return drain + handoff + time.Second }

// StopWithin is the longest a graceful stop of an agent whose dead
// interval is dead takes before it lets go of everything: the daemon asks
// systemd for that long (EXTEND_TIMEOUT_USEC), since with a long dead
// interval it passes the unit's TimeoutStopSec, whose kill would end the
// handover midway.
func StopWithin(dead time.Duration) time.Duration {
	return stopWithin(drainWithin(dead), election.DefaultHandoffBound(dead))
}

// awaitSynced pauses writes and waits off the loop, up to syncedWithin,
// for the standby to apply every write; the outcome comes on synced.
func (a *Agent) awaitSynced() {
	if !a.paused {
		a.opt.Sync.Pause()
		a.paused = true
	}
	bound := a.syncedWithin()
	go func() { a.synced <- a.opt.Sync.WaitSynced(bound) }()
}

// drained hands over for a graceful stop once the standby has every write
// (ok), or the wait's bound passed; true means exit now. A switchover
// whose wait this was is answered when the loop ends.
func (a *Agent) drained(ok bool) bool {
	a.draining = false
	if a.readying != nil {
		a.waiters = append(a.waiters, a.readying.reply)
		a.readying = nil
	}
	if !ok {
		written, acked := a.opt.Sync.Position()
		a.log.Warn("stopping: the standby had not applied every write within the bound; handing over without them", "op", "stop", "behind", written-acked, "bound", a.syncedWithin())
	}
	return a.step(election.Event{Kind: election.Stop, Now: time.Now()})
}

// tick proves the agent alive (the watchdog, and the heartbeat core's
// lease with every frame update), then steps the machine's clock.
func (a *Agent) tick(now time.Time) bool {
	if a.opt.Watchdog != nil {
		a.opt.Watchdog()
	}
	if !a.m.Quiet() {
		// A rule of the clock may fire: the start-up window ends ("peer
		// silent"), a held-down takeover. First hear all the heartbeat
		// core heard: on a loaded node this process may run late, with
		// frames that the real-time core received in time still unread,
		// and its own lateness is not the peer's silence.
		if a.catchUp() {
			return true
		}
		now = time.Now()
	}
	a.opt.Heartbeat.UpdateLocal(a.syncPosition)
	a.pushedAt = now
	return a.step(election.Event{Kind: election.Tick, Now: now})
}

// catchUp handles every event the heartbeat core sent before now. The core
// answers a stats request after every event it sent before it, on the same
// ordered socket, so once Stats returns they all wait in Events.
func (a *Agent) catchUp() (exit bool) {
	a.opt.Heartbeat.Stats()
	for {
		select {
		case ev := <-a.opt.Heartbeat.Events():
			if a.heartbeat(ev) {
				return true
			}
		default:
			return false
		}
	}
}

// advertisePosition puts the store's position in the frames, unless a
// tick did within half an interval.
func (a *Agent) advertisePosition(now time.Time) {
	if now.Sub(a.pushedAt) >= a.opt.Interval/2 {
		a.opt.Heartbeat.UpdateLocal(a.syncPosition)
		a.pushedAt = now
	}
}

// quiet says the loop may tick at its idle rate: the machine's clock has
// nothing due and no writes came lately.
func (a *Agent) quiet(now time.Time) bool {
	return a.m.Quiet() && now.Sub(a.wroteAt) > 2*a.opt.Interval && a.coreSuspect.IsZero()
}

// renewIfDue renews the held VIPs' kernel lease on a tick when a renewal
// falls due before the next idle tick could come (slack): renewals come
// between slack and none early, every third of the lease, so two may be
// missed before it runs out. They ride on the tick because the agent is a
// Go process: a timer of their own woke it once more, and every wake costs
// it several context switches (its poller thread, and the runtime's
// monitor, which sleeps until the next timer and polls for a while after).
// A lease that ran out before the tick is not renewed but handled (lapse);
// true means exit now.
func (a *Agent) renewIfDue(now time.Time, slack time.Duration) bool {
	switch {
	case a.lapsed(time.Now()): // not the tick's time, which a stall makes old
		return a.lapse(time.Now())
	case a.holding && now.Add(slack).Sub(a.renewedAt) >= renewEvery(a.opt.Lease):
		a.renewVIPs()
	}
	return false
}

// lapsed says the held VIPs' kernel lease has run out: no renewal for a
// whole lease. The kernel removes an address no earlier than a lease
// after the renewal that started it, which came just before renewedAt.
func (a *Agent) lapsed(now time.Time) bool {
	return a.holding && a.opt.Lease > 0 && now.Sub(a.renewedAt) >= a.opt.Lease-leaseSlack
}

// leaseSlack allows for the time between the kernel starting a lease and
// renewedAt being read after it.
const leaseSlack = 50 * time.Millisecond

// lapse handles the VIPs' kernel lease running out under this loop, seen
// at the tick that would have renewed it or at the watch's report of the
// VIPs gone, whichever the loop takes first when it runs again. The loop
// went a whole lease without renewing (the process was stopped, the
// virtual machine paused) and the kernel took the VIPs, as it should from
// a hung node. The peer has taken over if it could, and its frames may
// wait unread; putting the VIPs back at once (the renewal did, and so did
// the report, as a VIP removed from outside) made two holders until the
// heartbeat core's fence came through. So the stall is a fault, as when
// the core fences, and only a node still active after it (nobody to hand
// to) claims them again. True means exit now.
func (a *Agent) lapse(now time.Time) bool {
	a.log.Error("the VIPs' kernel lease ran out: this node stalled past it and the kernel removed them", "op", "lapsed", "since_renewal", now.Sub(a.renewedAt).Round(time.Millisecond).String())
	if a.stalled(now) {
		return true
	}
	return a.step(election.Event{Kind: election.VIPRemoved, Now: now})
}

// renewEvery is how often held VIPs' kernel lease is restarted: every
// third of it.
func renewEvery(lease time.Duration) time.Duration { return max(lease/3, 500*time.Millisecond) }

// renewVIPs renews the held VIPs' kernel lease.
func (a *Agent) renewVIPs() {
	if !a.holding {
		return
	}
	a.renewedAt = time.Now()
	if err := a.opt.VIPs.Renew(); err != nil {
		a.log.Error("renewing VIPs", "op", "renew", "err", err)
	}
}

// nagRedundancy logs, now and then, that the pair cannot fail over.
func (a *Agent) nagRedundancy() {
	a.updateStatus()
	if st := a.snapshot(); st.Redundancy != "available" {
		// One message to search the journal for; the reason is an
		// attribute.
		a.log.Warn("redundancy unavailable", "op", "redundancy", "reason", strings.TrimPrefix(st.Redundancy, "unavailable: "), "role", st.Role, "locked", st.Locked)
	}
}

// setPath records a path's state in m (paths or heardBack), which status
// reads under mu.
func (a *Agent) setPath(m map[string]bool, path string, v bool) {
	a.mu.Lock()
	m[path] = v
	a.mu.Unlock()
}

// pathQuiet records a change of a heartbeat path at (pathNoise.change)
// and says not to log it on its own: the path is unsteady. It logs the
// path becoming so.
func (a *Agent) pathQuiet(path string, at time.Time, down, oneWay bool) bool {
	a.mu.Lock()
	n := a.noise[path]
	if n == nil {
		n = &pathNoise{}
		a.noise[path] = n
	}
	if down {
		a.wentDown[path]++
	}
	quiet, began := n.change(at, down, oneWay)
	a.mu.Unlock()
	if began {
		a.log.Warn("heartbeat path unsteady: it went down or one-way again and again; its changes are summed up until it is steady", "op", "path", "path", path,
			"times", unsteadyAt, "within", unsteadyWindow, "every", unsteadyWindow)
	}
	return quiet
}

// step feeds the machine and performs its actions; true means exit now.
func (a *Agent) step(ev election.Event) bool {
	ev.Written, _ = a.opt.Sync.Position()
	ev.StandbyLoading = a.opt.Sync.StandbyLoading()
	exit := false
	acts := a.m.Step(ev)
	// A node that has handed over and exits does not follow the new
	// active: demoted (Transition), its replication would dial it and be
	// gone in the middle of the handshake, a replication error on the new
	// active at a stop.
	exiting := slices.ContainsFunc(acts, func(act election.Action) bool { return act.Kind == election.Exit })
	if exiting && a.peerActive {
		a.peerActive = false
		a.opt.Sync.PeerActive(false)
	}
	for _, act := range acts {
		switch act.Kind {
		case election.ClaimVIPs:
			a.renewedAt = time.Now() // a claim starts the lease
			if err := a.opt.VIPs.Claim(); err != nil {
				a.log.Error("claiming VIPs", "op", "claim", "err", err)
			}
			a.holding = true
		case election.ReleaseVIPs:
			a.release()
		case election.Advertise:
			a.opt.Heartbeat.SetLocal(a.local(act.Advert))
		case election.Transition:
			a.transition(act)
		case election.Refused:
			a.log.Warn(act.Reason, "op", "refused", "role", a.m.Role().String())
			a.answer(errors.New(act.Reason))
		case election.Report:
			// Conditions such as a split brain between two locked nodes
			// are reported on every frame; say it every few seconds.
			if last, ok := a.reported[act.Reason]; !ok || ev.Now.Sub(last) >= reportEvery {
				a.reported[act.Reason] = ev.Now
				a.log.Warn(act.Reason, "op", "report", "role", a.m.Role().String())
				a.publish(statesync.Event{Type: "report", Reason: act.Reason, Node: a.opt.Node, Role: a.m.Role().String()})
			}
		case election.Exit:
			a.log.Info("stopped", "op", "exit", "reason", act.Reason)
			exit = true
		case election.SplitBrainStarted:
			role := a.m.Role()
			a.log.Warn("split brain: the peer is active too; arbitrating", "op", "split-brain", "role", role.String(), "peer", a.opt.Peer)
			a.fireHook(hooks.SplitBrain, election.Action{From: role, To: role, Reason: "both nodes active"})
			a.publish(statesync.Event{Type: "split-brain", Node: a.opt.Node, Role: role.String()})
		case election.NotifyFailover:
			a.notifyFailover(act, ev.Now)
		}
	}
	if p, seen := a.m.Peer(); !exiting && (seen && p.Role == election.Active) != a.peerActive {
		a.peerActive = !a.peerActive
		a.opt.Sync.PeerActive(a.peerActive)
	}
	return exit
}

func (a *Agent) release() {
	if err := a.opt.VIPs.Release(); err != nil {
		a.log.Error("releasing VIPs", "op", "release", "err", err)
	}
	a.holding = false
}

// publish tells the applications, in order with the role changes.
func (a *Agent) publish(ev statesync.Event) {
	if ev.At.IsZero() {
		ev.At = time.Now()
	}
	a.app.put(func() { a.opt.Sync.Publish(ev) })
}

// logFrames logs, since the last call, the frames dropped, by reason,
// each path's lost frames, and what each unsteady path did.
func (a *Agent) logFrames() {
	st := a.opt.Heartbeat.Stats()
	var parts []string
	for reason, n := range st.Drops {
		if d := n - a.dropsLogged[reason]; d > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", reason, d))
		}
		a.dropsLogged[reason] = n
	}
	if len(parts) > 0 {
		slices.Sort(parts)
		a.log.Warn("heartbeat frames dropped", "op", "drops", "since", dropLogEvery, "counts", strings.Join(parts, " "))
	}
	a.mu.Lock()
	names := slices.Sorted(maps.Keys(a.paths))
	a.mu.Unlock()
	for _, name := range names {
		f, last := st.Paths[name], a.framesLogged[name]
		a.framesLogged[name] = f
		// Never below nothing: a late frame takes a loss back.
		lost, heard := f.Lost-min(f.Lost, last.Lost), f.Heard-min(f.Heard, last.Heard)
		share := fmt.Sprintf("%d of %d (%.1f%%)", lost, lost+heard, 100*float64(lost)/float64(max(1, lost+heard)))
		a.mu.Lock()
		now := control.Path{Up: a.paths[name], PeerHears: a.heardBack[name]}.State()
		unsteady, downs, oneWays, settled := false, 0, 0, false
		if n := a.noise[name]; n != nil {
			unsteady, downs, oneWays, settled = n.summary()
		}
		a.mu.Unlock()
		switch {
		case settled && now == "up":
			a.log.Info("heartbeat path steady again", "op", "path", "path", name, "now", now)
		case settled:
			a.log.Warn("heartbeat path steady again, but not up", "op", "path", "path", name, "now", now)
		case unsteady:
			a.log.Warn("heartbeat path unsteady", "op", "path", "path", name, "since", unsteadyWindow,
				"went_down", downs, "one_way", oneWays, "frames_lost", share, "now", now)
			continue
		}
		// One frame in a hundred or more is a link to look at; fewer,
		// at the fast profiles, a note.
		switch {
		case lost == 0:
		case lost*100 >= lost+heard:
			a.log.Warn("heartbeat frames lost", "op", "path", "path", name, "since", dropLogEvery, "frames_lost", share)
		default:
			a.log.Info("heartbeat frames lost", "op", "path", "path", name, "since", dropLogEvery, "frames_lost", share)
		}
	}
}

// Wrote is called by the session service when writes were applied here
// (at most every few milliseconds): the frames should carry the new
// position soon, and the loop ticks at its full rate for a while.
func (a *Agent) Wrote() {
	select {
	case a.wrote <- struct{}{}:
	default:
	}
}

// NewSession is called by the session service when an application
// creates a session, at the time the store took it: the arbitration fact
// "last new session". That time, not when the loop gets to it, is the
// fact: a loop held up on a busy node made an older session look newer
// than the peer's (seen under two CPU hogs: the node with the newest
// session yielded).
func (a *Agent) NewSession(at time.Time) {
	a.sessMu.Lock()
	if at.After(a.sessAt) {
		a.sessAt = at
	}
	a.sessMu.Unlock()
	select {
	case a.newSession <- struct{}{}:
	default:
	}
}

// SyncDegraded is called by the session service when sync mode degrades:
// a WARN when the standby stopped answering, which pages someone; INFO when
// it said it stops, as every planned restart of the standby does (the
// status and the redundancy reminder still say what it costs).
func (a *Agent) SyncDegraded(reason string, planned bool) {
	level := slog.LevelWarn
	if planned {
		level = slog.LevelInfo
	}
	a.log.Log(context.Background(), level, "sync mode degraded to async", "op", "sync", "reason", reason)
	if a.opt.Hooks != nil {
		a.opt.Hooks.Fire(hooks.Env{Event: hooks.SyncDegraded, Reason: reason, Node: a.opt.Node, Peer: a.opt.Peer})
	}
}

func (a *Agent) syncPosition(l *heartbeat.Local) {
	l.SyncWritten, l.SyncAcked = a.opt.Sync.Position()
}

func (a *Agent) transition(act election.Action) {
	a.log.Info("transition", "op", "transition", "from", act.From.String(), "to", act.To.String(), "reason", act.Reason, "peer", a.opt.Peer)
	s := a.opt.Sync
	// A node stepping down refuses writes before the loop goes on (a
	// switchover resumes the paused writers right after): that never
	// waits for the store. A promotion does (its new epoch waits out a
	// snapshot load or a listing of every session), so it runs off the
	// loop, in order with what is told to the applications; a later
	// change overtakes it.
	a.roleGen++
	gen := a.roleGen
	if act.To == election.Active {
		var e [8]byte
		rand.Read(e[:])
		epoch := binary.BigEndian.Uint64(e[:]) | 1
		a.app.put(func() { s.SetRole(gen, act.To.String(), true, a.opt.Node, epoch) })
	} else {
		activeNode := ""
		if p, seen := a.m.Peer(); seen && p.Role == election.Active {
			activeNode = a.opt.Peer
		}
		s.SetRole(gen, act.To.String(), false, activeNode, 0)
	}
	a.publish(statesync.Event{Type: "role", Role: act.To.String(), Previous: act.From.String(), Reason: act.Reason, Node: a.opt.Node})
	switch act.To {
	case election.Active:
		a.fireHook(hooks.Active, act)
	case election.Standby:
		a.fireHook(hooks.Standby, act)
	case election.Fault:
		a.fireHook(hooks.Fault, act)
	}
	a.mu.Lock()
	a.lastTrans = &control.Transition{From: act.From.String(), To: act.To.String(), Reason: act.Reason, At: time.Now()}
	if act.To == election.Active {
		class, _, _ := strings.Cut(act.Reason, ":")
		a.failovers[strings.TrimSpace(class)]++
	}
	a.mu.Unlock()
	if a.opt.Notify != nil {
		a.opt.Notify(act.To.String(), act.Reason)
	}
	if act.From == election.Active && act.To == election.Standby {
		a.answer(nil) // a switchover finished
	}
	if !a.ready && act.From == election.Init {
		a.ready = true
		if a.opt.Ready != nil {
			a.opt.Ready(act.To.String())
		}
	}
}

// notifyFailover tells the applications how complete their sessions are
// after this node took over. The notice is built off the loop: it reads
// every session, which takes a while in a large store. What this node
// held is read now, before it writes anything as the active.
func (a *Agent) notifyFailover(act election.Action, now time.Time) {
	s := a.opt.Sync
	held, _ := s.Position()
	a.app.put(func() {
		fe := s.Failover(act.Reason, a.opt.Peer, held, act.PeerWritten, now)
		a.log.Info("failover", "op", "failover", "sync", fe.Sync, "missing", fe.Missing, "sessions", len(fe.Sessions))
		s.Publish(fe)
	})
}

// switchover readies an operator's switchover: writes pause, and the
// machine is asked once the standby has applied all of them, so the new
// active continues every session (zero loss by construction). The wait
// runs off the loop.
func (a *Agent) switchover(c command) {
	switch {
	case c.gone():
		a.abandoned("switchover")
		c.reply <- errAbandoned
	case a.draining:
		c.reply <- errors.New("switchover: hapaird is stopping")
	case a.m.Role() != election.Active:
		c.reply <- fmt.Errorf("switchover: this node is %v, not active", a.m.Role())
	case a.readying != nil || len(a.waiters) > 0:
		// One is under way: this request gets its answer.
		a.waiters = append(a.waiters, c.reply)
	default:
		// Refused before writes pause: beside a standby that is gone
		// they waited two dead intervals for it, and the refusal then
		// blamed them.
		if why := a.m.SwitchoverRefusal(c.force); why != "" {
			a.log.Warn(why, "op", "refused", "role", a.m.Role().String())
			c.reply <- errors.New(why)
			return
		}
		a.readying = &c
		a.awaitSynced()
	}
}

// handOver asks the machine to hand over once the standby has every write
// (ok), or answers why not; true means exit now.
func (a *Agent) handOver(ok bool) bool {
	c := a.readying
	a.readying = nil
	a.waiters = append(a.waiters, c.reply)
	if !ok {
		a.answer(fmt.Errorf("switchover: the standby has not applied every write within %v; not handing over", a.syncedWithin()))
		return false
	}
	return a.step(election.Event{Kind: election.Switchover, Now: time.Now(), Force: c.force})
}

// answer completes pending switchover requests, and lets the writes they
// held go on: they then see the role of that moment.
func (a *Agent) answer(err error) {
	for _, w := range a.waiters {
		w <- err
	}
	a.waiters = nil
	if a.paused {
		a.paused = false
		a.opt.Sync.Resume()
	}
}

// stepNewSession tells the machine of the newest session, at the time the
// store took it (NewSession).
func (a *Agent) stepNewSession() bool {
	a.wroteAt = time.Now()
	a.sessMu.Lock()
	at := a.sessAt
	a.sessMu.Unlock()
	if at.IsZero() {
		at = a.wroteAt
	}
	return a.step(election.Event{Kind: election.NewSession, Now: at})
}

func (a *Agent) heartbeat(ev heartbeat.Event) bool {
	if !a.replaying && ev.Waited() > lateRead {
		return a.replay(ev)
	}
	// A new session taken before this frame was handled goes to the
	// machine first: the loop's select picks among ready inputs at
	// random, and a frame that starts a split freezes this node's facts,
	// which must hold its newest session (the rule "the last to process a
	// new session stays"). Without this, half the time it did not.
	select {
	case <-a.newSession:
		if a.stepNewSession() {
			return true
		}
	default:
	}
	switch ev.Kind {
	case heartbeat.Running:
		// The start-up window begins once the heartbeats flow: a
		// heartbeat core takes a moment to start, and a window spent
		// deaf would make both nodes active.
		if a.step(election.Event{Kind: election.Start, Now: ev.At}) {
			return true
		}
		if a.m.Locked() {
			return a.step(election.Event{Kind: election.Lock, Now: ev.At, Locked: true})
		}
	case heartbeat.PeerFrame:
		return a.peerFrame(ev)
	case heartbeat.PeerLost:
		if a.peerStopping() {
			a.log.Info("peer stopped: its last frame said so", "op", "peer", "peer", a.opt.Peer)
		} else {
			a.log.Warn("peer lost: silent on every path", "op", "peer", "peer", a.opt.Peer)
		}
		return a.step(election.Event{Kind: election.PeerLost, Now: ev.At})
	case heartbeat.PathUp, heartbeat.PathDown:
		up := ev.Kind == heartbeat.PathUp
		a.setPath(a.paths, ev.Path, up)
		if !up {
			a.setPath(a.heardBack, ev.Path, false)
		}
		if up {
			if !a.pathQuiet(ev.Path, ev.At, false, false) {
				a.log.Info("heartbeat path up", "op", "path", "path", ev.Path)
			}
			return a.step(election.Event{Kind: election.PathUp, Now: ev.At, Path: ev.Path})
		}
		if a.peerStopping() {
			// Nothing is wrong with the path: the peer stopped.
			a.log.Info("heartbeat path down: the peer stopped", "op", "path", "path", ev.Path)
		} else if !a.pathQuiet(ev.Path, ev.At, true, false) {
			a.log.Warn("heartbeat path down", "op", "path", "path", ev.Path)
		}
		return a.step(election.Event{Kind: election.PathDown, Now: ev.At, Path: ev.Path})
	case heartbeat.PathHeard, heartbeat.PathUnheard:
		heard := ev.Kind == heartbeat.PathHeard
		a.setPath(a.heardBack, ev.Path, heard)
		switch {
		case a.pathQuiet(ev.Path, ev.At, false, !heard):
		case heard:
			a.log.Info("the peer hears this node", "op", "path", "path", ev.Path)
		default:
			a.log.Warn("one-way path: this node hears the peer, the peer does not hear it", "op", "path", "path", ev.Path)
		}
		return a.step(election.Event{Kind: election.Heard, Now: ev.At, Path: ev.Path, Heard: heard})
	case heartbeat.PeerAlive:
		a.log.Info("peer heard", "op", "peer", "peer", a.opt.Peer, "path", ev.Path)
	case heartbeat.Twin:
		return a.twin(ev)
	case heartbeat.Unverified, heartbeat.UnverifiedEnded:
		return a.unverifiedPeer(ev)
	case heartbeat.Unanswered, heartbeat.UnansweredEnded:
		return a.unansweredPeer(ev)
	case heartbeat.Rebound:
		a.log.Info("the heartbeat interface was made anew: its path opened on it again", "op", "path", "path", ev.Path)
	case heartbeat.Fenced:
		// This loop stopped renewing the heartbeat core's lease (the
		// process was stopped, or starved): the core has told the peer
		// FAULT, so it took over, and lets the VIPs go once it holds them
		// (or two dead intervals on, unless this is handled first). This
		// node must not come back believing it is active: a fault, at
		// once over.
		if ev.SentAt().Before(a.stallHandled) && a.m.Role() != election.Active {
			// The core fenced this node during the stall the loop has
			// handled already, as the VIPs' lease running out, which
			// made it a standby: one stall, one fault (hooks and all),
			// not a second. When the core sent it, not At: At is when
			// it was read, after. A node that stayed active (nobody to
			// hand to, as it saw the peer then) handles the fence as
			// before: what it knows of the peer may be newer now.
			a.log.Info("the heartbeat core fenced this node in the stall just handled: nothing more to do", "op", "fenced")
			a.opt.Heartbeat.Unfence()
			return false
		}
		a.log.Error("the agent stalled past its lease: its heartbeat core said FAULT, so the peer takes over if it can", "op", "fenced")
		// At the time handled, not the fence's: the machine ignores
		// frames that came before this node's new role, and those the
		// core queued behind the fence while this loop was stuck are a
		// standby's that had not yet taken over. Dated at the fence,
		// they found no active node, and this node claimed the VIPs
		// beside the peer that had.
		exit := a.stalled(time.Now())
		a.opt.Heartbeat.Unfence()
		return exit
	}
	return false
}

// replay handles ev, which waited in the core's queue, and every event
// the core sent before now, as their net effect (netEffect). A loop that
// runs late (its process was stopped, or starved) finds history queued:
// the standby of an active that restarted while it was stopped read the
// peer lost, then the new boot's INIT, and took over from a node that had
// meanwhile taken over itself (a split brain it lost). The core's queue
// is first waited for (Stats), so that what it sent is all in Events.
func (a *Agent) replay(ev heartbeat.Event) bool {
	a.opt.Heartbeat.Stats()
	q := []heartbeat.Event{ev}
	for more := true; more; {
		select {
		case next := <-a.opt.Heartbeat.Events():
			q = append(q, next)
		default:
			more = false
		}
	}
	net := netEffect(q, staleAfter)
	if w := ev.Waited(); w > staleAfter {
		a.log.Info("this loop ran late: what the heartbeat core queued meanwhile is handled as its net effect", "op", "peer", "waited", w.Round(time.Millisecond).String(), "queued", len(q), "superseded", len(q)-len(net))
	}
	a.replaying = true
	defer func() { a.replaying = false }()
	for _, e := range net {
		if a.heartbeat(e) {
			return true
		}
	}
	return false
}

// netEffect is what of the queued events q, in the order the core sent
// them, is still news. Of the peer's frames only the newest: each is the
// peer's whole state, and one with a newer behind it says what the peer
// no longer says (a frame lost on the wire is the same). A path down, or
// the peer lost, that waited longer than stale and came back later in q
// goes with its return: nothing acted on the loss in time, and the peer,
// which has since heard from this node's core, may have acted instead.
// What is left keeps its order.
func netEffect(q []heartbeat.Event, stale time.Duration) []heartbeat.Event {
	drop := make([]bool, len(q))
	last := -1
	for i, e := range q {
		if e.Kind == heartbeat.PeerFrame {
			if last >= 0 {
				drop[last] = true
			}
			last = i
		}
	}
	for i, e := range q {
		var back heartbeat.EventKind
		switch e.Kind {
		case heartbeat.PathDown:
			back = heartbeat.PathUp
		case heartbeat.PeerLost:
			back = heartbeat.PeerAlive
		default:
			continue
		}
		if drop[i] || e.Waited() <= stale {
			continue
		}
		for j := i + 1; j < len(q); j++ {
			if !drop[j] && q[j].Kind == back && (back == heartbeat.PeerAlive || q[j].Path == e.Path) {
				drop[i], drop[j] = true, true
				break
			}
		}
	}
	out := q[:0:0]
	for i, e := range q {
		if !drop[i] {
			out = append(out, e)
		}
	}
	return out
}

// lateRead is how long an event waits unread before the loop counts itself
// late and replays the core's queue (replay): well above the loop's lag on
// an idle node, which costs nothing then.
const lateRead = 5 * time.Millisecond

// peerFrame handles the peer's frame ev.
func (a *Agent) peerFrame(ev heartbeat.Event) bool {
	if w := ev.Waited(); w > staleAfter {
		// Read late: this loop did not run (the process was
		// stopped, or starved) while the frame waited. The core
		// passes on a frame when it says something new, so those
		// queued behind it may say the peer has moved on since: an
		// active whose switchover this node was too stopped to take
		// up stays active once the bound passes, and its "leaving"
		// read after that made this node take over beside it (a
		// split brain it lost). Set aside, as a frame lost on the
		// wire would be, and the peer's next frame asked for.
		a.log.Info("a peer frame read late set aside; asking for the peer's next", "op", "peer", "waited", w.Round(time.Millisecond).String(), "peer_role", ev.Frame.Role.String())
		a.opt.Heartbeat.Renews()
		return false
	}
	a.mu.Lock()
	a.peerAt = ev.At
	a.mu.Unlock()
	a.notePeerDead(ev.Frame.Dead)
	a.notePeerBoot(ev.Frame.Generation)
	wasStopping := a.peerStopping()
	exit := a.step(election.Event{Kind: election.PeerFrame, Now: ev.At, Peer: peerOf(ev.Frame)})
	if !wasStopping && a.peerStopping() {
		// The standby's last frame, sent as it stops, or by its
		// heartbeat core when its daemon died: the peer is declared
		// gone only a dead interval later, and sync writes would
		// wait for it all that time and more. (The service acts on
		// it only while this node is active.)
		died := ev.Frame.Flags&heartbeat.FlagAgentDied != 0
		if died {
			a.log.Warn("the peer's hapaird died: its heartbeat core says so, and ends", "op", "peer", "peer", a.opt.Peer)
		}
		a.opt.Sync.StandbyStopped(!died)
	}
	return exit
}

// staleAfter is how long a peer frame may wait unread and still be acted
// on: half the shortest handover bound a peer uses (1 s, whatever its
// dead interval; the peer's own, not this node's, is the one that ends
// its "leaving"). A peer's word changes under a frame that waited no
// longer only if the peer moved on by itself, which its next frame says
// (the core passes on every change); a leaving peer, the case that
// matters, waits its whole bound for this node before it stays. Well
// above the agent's lag under load (milliseconds), which must not set the
// peer's frames aside: each one set aside costs a frame of the peer's
// (Renews).
var staleAfter = election.DefaultHandoffBound(0) / 2

// peerStopping says the peer's last frame said it stops (Leaving, not
// active), so its silence is no fault. Asked before the machine hears of
// the loss, which forgets the peer.
func (a *Agent) peerStopping() bool {
	p, seen := a.m.Peer()
	return seen && p.Leaving && p.Role != election.Active
}

// stalled handles a stall of this loop past a lease, seen by the heartbeat
// core (Fenced) or by the kernel (the VIPs' lease ran out): a fault, at
// once over, so a node whose peer has taken over meanwhile comes back a
// standby, and one with nobody to hand to stays active (the machine's
// rule). What the core queued in the stall is heard before the fault
// ends: a node whose last word of the peer, from before the stall, said
// it could not take over keeps the VIPs in the fault, and the peer may
// have taken over at the fence since; heard in the fault, the node steps
// down to it (the machine's stallFault); heard after, they made a split
// brain, which this node, active longest, could win.
func (a *Agent) stalled(at time.Time) bool {
	a.stallHandled = time.Now()
	const key = "agent:stalled"
	if a.fault(key, "the agent stalled past its lease", at, true) || a.catchUp() {
		return true
	}
	return a.fault(key, "", at, true)
}

// watchCore faults this node while its heartbeat core has sent nothing
// for two dead intervals (SentAgo): stopped (SIGSTOP, a debugger) or stuck,
// it leaves the node silent to the peer, which takes over, while this
// loop, alive, renewed the VIPs beside it for as long as the core stayed
// so (two holders, 21 s in a test that stopped the core that long). A
// stall's fault: the peer took over without waiting for this node, so
// it does not wait for the peer either; with nobody to hand to, the node
// keeps the VIPs. Two dead intervals, not one: by then the peer has taken
// over if it could, its own timer late or not, while a core late by less
// is a stall the peer may have survived (at turbo, a few milliseconds),
// and a fault then would make the failover itself. Over once the core
// sends again. Read at each tick, so up to an idle tick after the peer
// took over; a check of its own would wake the agent more often at idle.
//
// Silence counts only across two ticks of this loop, the second a busy
// one (quiet), with no frame sent between: the loop ran while the core
// did not. At the first tick after a stop of the whole daemon, the core,
// woken with this loop, may not have sent yet (a 1 s freeze was taken for
// a silent core at a tick on time, and at one late by a quarter second).
// A tick late by more than half a dead interval (late) is that stop
// itself, and starts the look anew. True means exit now.
func (a *Agent) watchCore(now time.Time, late bool) bool {
	ago, ok := a.opt.Heartbeat.SentAgo()
	silent := ok && ago >= 2*a.opt.Dead
	switch {
	case silent && a.coreSilent:
		return false
	case silent && late:
		a.coreSuspect = time.Time{}
		return false
	case silent && !a.coreSuspect.IsZero() && ago >= now.Sub(a.coreSuspect):
		// Silent at the last tick too, and nothing sent since: a fault.
	case silent:
		a.coreSuspect = now
		return false
	default:
		a.coreSuspect = time.Time{}
		if !a.coreSilent {
			return false
		}
	}
	a.coreSuspect = time.Time{}
	a.coreSilent = silent
	const key = "core:silent"
	if silent {
		a.log.Error("the heartbeat core has sent no frame for "+ago.Round(time.Millisecond).String()+", so the peer takes over if it can: is it stopped (SIGSTOP, a debugger)?", "op", "core")
		return a.fault(key, "the heartbeat core sends no frames", now, true)
	}
	a.log.Info("the heartbeat core sends again", "op", "core")
	return a.fault(key, "", now, true)
}

// twin handles another hapaird that sends heartbeats in this node's name:
// a copy of this node's host, its addresses and all (a cloned virtual
// machine booted beside the original), which --check cannot tell from it.
// Each drops the other's frames as its own, so both would hold the VIPs,
// silently. The machine decides which of the two refuses to be active
// (election's Twin); both log it.
func (a *Agent) twin(ev heartbeat.Event) bool {
	reason := "another hapaird runs as node " + a.opt.Node + " (check --node and the hostname on each host); restart this one once fixed"
	exit := a.step(election.Event{Kind: election.Twin, Now: ev.At, Reason: reason, Peer: peerOf(ev.Frame)})
	refuses := a.m.Twinned()
	a.log.Error("another hapaird sends heartbeats as this node: two hosts run as node "+a.opt.Node+"; check --node and the hostname on each",
		"op", "twin", "path", ev.Path, "twin_role", ev.Frame.Role.String(), "twin_generation", fmt.Sprintf("%016x", ev.Frame.Generation), "refuses_active", refuses)
	if refuses {
		a.mu.Lock()
		a.faults["twin"] = reason // for status, and so no check's recovery clears it
		a.mu.Unlock()
	}
	return exit
}

// PeerConfig hears which pair sections of the peer's file differ from this
// node's (config.PairDiffers), and the peer's hapaird version, each time
// replication connects. Each node fails over to its own file, so what
// differs is what the pair gets wrong at the next failover (a VIP only one
// file has is lost then); only the operator can say which file is right,
// so it is reported, loudly, and nothing else changes. Another version is
// expected for the length of a rolling upgrade: said once, as news. Safe
// to call from any goroutine.
func (a *Agent) PeerConfig(differ []string, release string) {
	a.mu.Lock()
	prev, prevRelease := a.configDiffers, a.peerRelease
	a.configDiffers, a.peerRelease = differ, release
	a.mu.Unlock()
	if release != prevRelease && release != "" {
		if release != a.opt.Version {
			a.log.Info("the peer runs another version of hapaird than this node: both should run one version once an upgrade is done", "op", "version", "version", a.opt.Version, "peer_version", release)
		} else if prevRelease != "" {
			a.log.Info("the peer runs this node's version of hapaird again", "op", "version", "version", release)
		}
	}
	switch {
	case len(differ) > 0 && !slices.Equal(prev, differ):
		a.log.Error("the peer's configuration differs from this node's: each node fails over to what its own file says; make the two files the same",
			"op", "config", "differs", strings.Join(differ, "; "))
	case len(differ) == 0 && len(prev) > 0:
		a.log.Info("the peer's configuration agrees with this node's again", "op", "config")
	}
}

// unverifiedPeer handles the peer's node signing with a key this node does
// not hold (a key made on each node, a change made on one node only),
// and its end. Each node drops the other's frames as forged: without this
// both took the VIPs, reported by nothing but a drop counter. The machine
// keeps a starting node from the VIPs while it lasts (election's
// Unverified); both log it, with the fingerprints to compare.
func (a *Agent) unverifiedPeer(ev heartbeat.Event) bool {
	on := ev.Kind == heartbeat.Unverified
	why, cause := "", ""
	switch {
	case on && ev.Frame.Cluster != a.opt.ClusterID:
		// Signed with a key of ours: the same pair, whose files differ
		// in their cluster name (or another pair that holds our key).
		why, cause = fmt.Sprintf("node %d sends as cluster %08x, where this node is cluster %08x (%q)", ev.Frame.Node, ev.Frame.Cluster, a.opt.ClusterID, a.opt.Cluster), "cluster"
		a.log.Error("the peer's heartbeats name another cluster: the two files differ in cluster (or another pair holds this pair's key); hapaird --check prints each node's",
			"op", "keys", "path", ev.Path, "peer_cluster", fmt.Sprintf("%08x", ev.Frame.Cluster), "cluster", fmt.Sprintf("%08x", a.opt.ClusterID))
	case on:
		why, cause = fmt.Sprintf("node %d signs with key %08x, which this node does not hold (it holds %s)", ev.Frame.Node, ev.Frame.Key, heartbeat.FormatFingerprints(a.opt.Keys)), "keys"
		a.log.Error("the peer's heartbeats cannot be verified: the two nodes hold different keys; compare the fingerprints hapaird --check prints on each",
			"op", "keys", "path", ev.Path, "peer_key", fmt.Sprintf("%08x", ev.Frame.Key), "peer_holds", heartbeat.FormatFingerprints(ev.Frame.Held[:]), "holds", heartbeat.FormatFingerprints(a.opt.Keys))
	default:
		a.log.Info("no more heartbeats this node cannot verify or use: the peer's node now signs with a key of ours in this cluster, or stopped", "op", "keys")
	}
	a.mu.Lock()
	a.unverified, a.unverifiedCause = why, cause
	a.mu.Unlock()
	return a.stepUnverified(ev.At)
}

// unansweredPeer handles the peer saying it is active in frames that echo
// an earlier boot of this node's, while nothing of the peer's was usable
// this boot (heartbeat's Unanswered): it has not heard this boot yet, or
// cannot (a one-way link). The machine keeps a starting node from the
// VIPs while it lasts, as for frames it cannot verify.
func (a *Agent) unansweredPeer(ev heartbeat.Event) bool {
	why := ""
	a.unansweredResumed = false
	if ev.Kind == heartbeat.Unanswered {
		why = fmt.Sprintf("node %d says it is active, in frames that echo an earlier boot of this node's: it does not hear this one (a one-way link), or not yet", ev.Frame.Node)
		a.unansweredResumed = ev.Frame.Generation == a.unansweredGen
		a.unansweredGen = ev.Frame.Generation
		if a.unansweredResumed {
			a.log.Warn("the peer's frames came back after a silence, still active and still not answering this node: it was late, not gone, and cannot hear this node", "op", "peer", "path", ev.Path, "role", a.m.Role().String())
		} else {
			a.log.Info("the peer is active and has not yet answered this node's new boot: not taking the VIPs beside it until it answers or falls silent", "op", "peer", "path", ev.Path)
		}
	} else if _, seen := a.m.Peer(); !seen {
		a.log.Info("the peer no longer says it is active without hearing this node", "op", "peer")
	}
	a.mu.Lock()
	a.unanswered = why
	a.mu.Unlock()
	return a.stepUnverified(ev.At)
}

// stepUnverified tells the machine whether the peer's node is there but
// unusable: frames it cannot verify, or an active that does not answer.
func (a *Agent) stepUnverified(at time.Time) bool {
	a.mu.Lock()
	why := cmp.Or(a.unverified, a.unanswered)
	a.mu.Unlock()
	return a.step(election.Event{Kind: election.Unverified, Now: at, Unverified: why != "", Reason: why, Resumed: a.unansweredResumed})
}

// notePeerDead logs when the peer's dead interval, as its frames say it,
// differs from this node's, and when it agrees again: the two are in the
// middle of a change made one node at a time, and each judges the other by
// the longer (heartbeat's judgeDead), so failover is that much slower.
func (a *Agent) notePeerDead(d time.Duration) {
	if d == 0 || d == a.peerDead {
		return
	}
	prev := a.peerDead
	a.peerDead = d
	switch {
	case d != a.opt.Dead:
		a.log.Warn("the peer runs another dead interval than this node: each judges the other by the longer until both run the same configuration", "op", "timers", "dead", a.opt.Dead, "peer_dead", d, "judged_by", max(d, a.opt.Dead))
	case prev != 0:
		a.log.Info("the peer runs this node's dead interval again", "op", "timers", "dead", a.opt.Dead)
	}
}

// notePeerBoot logs a peer heard from a new boot: its hapaird restarted
// (an upgrade, a crash, a reboot). A restart quicker than the dead
// interval is never a loss of the peer, and nothing else said it; the
// boot counter (a generation's high half) tells the operator which start
// this is.
func (a *Agent) notePeerBoot(gen uint64) {
	prev := a.peerBoot
	a.peerBoot = gen
	if prev != 0 && gen != prev {
		a.log.Info("peer restarted: its frames come from a new boot", "op", "peer", "peer", a.opt.Peer, "boot", gen>>32, "previous_boot", prev>>32)
	}
}

func (a *Agent) checkEvent(ev health.Event) bool {
	level := slog.LevelInfo
	if !ev.Healthy {
		level = slog.LevelWarn
	}
	a.log.Log(context.Background(), level, "check changed", "op", "check", "check", ev.Name, "healthy", ev.Healthy, "critical", ev.Critical, "detail", ev.Detail)
	state := "healthy"
	if !ev.Healthy {
		state = "failing"
	}
	a.publish(statesync.Event{Type: "check", Node: a.opt.Node, Reason: ev.Name + " " + state + ": " + ev.Detail})
	if !ev.Critical {
		return false
	}
	reason := ""
	if !ev.Healthy {
		reason = "check " + ev.Name + " failed: " + ev.Detail
	}
	return a.setFault("check:"+ev.Name, reason, ev.At)
}

func (a *Agent) fireHook(event string, act election.Action) {
	if a.opt.Hooks == nil {
		return
	}
	a.opt.Hooks.Fire(hooks.Env{Event: event, Role: act.To.String(), PreviousRole: act.From.String(), Reason: act.Reason, Node: a.opt.Node, Peer: a.opt.Peer})
}

func (a *Agent) vipEvent(ev vip.Event) bool {
	now := time.Now()
	switch ev.Kind {
	case vip.Removed:
		if a.lapsed(now) {
			return a.lapse(now)
		}
		if a.holding {
			// The heartbeat core may have let it go: it fenced this
			// node while this loop did not run, and the peer holds the
			// VIPs now. Its fence waits in the core's queue, read
			// first, or the VIP went back beside the peer's until it
			// came (3 ms, a run of the resumed node's test).
			if a.catchUp() {
				return true
			}
			if !a.holding {
				return false
			}
			a.log.Warn("held VIP removed from outside", "op", "watch", "vip", ev.Addr.String())
		}
		return a.step(election.Event{Kind: election.VIPRemoved, Now: now})
	case vip.Foreign:
		// Not ours to remove: whoever added it may mean it. But a node
		// that is not active answers ARP for it beside the active, and
		// one that is can neither renew nor release it.
		a.log.Error("a VIP was added on this node for good, by hand or by the network configuration: while this node is not active it answers for it beside the active; delete it",
			"op", "watch", "vip", ev.Addr.String(), "role", a.m.Role().String())
	case vip.CarrierDown:
		a.log.Warn("public link lost carrier", "op", "watch", "iface", ev.Interface)
		return a.setFault("link:"+ev.Interface, "public link "+ev.Interface+" lost carrier", now)
	case vip.CarrierUp:
		a.log.Info("public link carrier back", "op", "watch", "iface", ev.Interface)
		return a.setFault("link:"+ev.Interface, "", now)
	}
	return false
}

// setFault records (reason != "") or clears a failing condition and tells
// the machine when health as a whole changed.
func (a *Agent) setFault(key, reason string, now time.Time) bool {
	return a.fault(key, reason, now, false)
}

// fault is setFault, whose health event says whether the fault is this
// node's own stall (election.Event.Stalled).
func (a *Agent) fault(key, reason string, now time.Time, stalled bool) bool {
	a.mu.Lock()
	before := len(a.faults) == 0
	if reason == "" {
		delete(a.faults, key)
	} else {
		a.faults[key] = reason
	}
	after := len(a.faults) == 0
	first := reason
	for _, r := range a.faults {
		first = r
		break
	}
	a.mu.Unlock()
	if before == after {
		return false
	}
	return a.step(election.Event{Kind: election.Health, Now: now, Healthy: after, Reason: first, Stalled: stalled})
}

// watchLock follows the lock file for changes made by other means than
// SetLock (the CLI while the daemon was down, an editor, config
// management), by inotify, and hands each new state to the loop.
func (a *Agent) watchLock(ctx context.Context) {
	started := func(err error) {
		if err != nil {
			a.log.Warn("cannot watch the lock file; checking it every 500ms", "op", "lock", "err", err)
		}
	}
	lockfile.Watch(ctx, a.opt.LockFile, 500*time.Millisecond, started, func() {
		a.lockMu.Lock()
		defer a.lockMu.Unlock()
		a.sendLock(ctx, lockfile.Read(a.opt.LockFile))
	})
}

// sendLock hands st to the loop and waits until it is in force.
func (a *Agent) sendLock(ctx context.Context, st lockfile.State) error {
	lc := lockChange{state: st, applied: make(chan struct{})}
	select {
	case a.locks <- lc:
	case <-ctx.Done():
		return ctx.Err()
	case <-a.loopDone:
		return errors.New("hapaird is stopping")
	}
	select {
	case <-lc.applied:
		return nil
	case <-a.loopDone:
		return errors.New("hapaird is stopping")
	}
}

// SetLock locks or unlocks this node for an operator, through the daemon:
// the lock file is written (durably) and the lock applied before SetLock
// returns, so a lock is in force when the command that set it answers.
func (a *Agent) SetLock(ctx context.Context, locked bool, text string) error {
	a.lockMu.Lock()
	defer a.lockMu.Unlock()
	if control.ClientGone(ctx) {
		a.abandoned(map[bool]string{true: "lock", false: "unlock"}[locked])
		return errAbandoned
	}
	var err error
	if locked {
		err = lockfile.Write(a.opt.LockFile, text)
	} else {
		err = lockfile.Remove(a.opt.LockFile)
	}
	if err != nil {
		return fmt.Errorf("lock file %s: %w", a.opt.LockFile, err)
	}
	return a.sendLock(ctx, lockfile.State{Locked: locked, Info: text})
}

// errAbandoned answers an operator's command whose client had gone.
var errAbandoned = errors.New("not applied: the client gave up waiting")

// abandoned logs an operator's command that is not applied because its
// client gave up waiting for it (control.ClientGone): this process did
// not run meanwhile, and the operator was told it failed.
func (a *Agent) abandoned(what string) {
	a.log.Warn("an operator's command was not applied: its client gave up waiting while hapaird did not run (the operator was told it failed)", "op", what)
}

// applyLock puts a lock state in force; true means exit now.
func (a *Agent) applyLock(st lockfile.State, now time.Time) bool {
	a.mu.Lock()
	a.lockInfo = st.Info
	a.mu.Unlock()
	if st.Err != nil && st.Err.Error() != a.lockErr {
		a.log.Error("the lock file cannot be read: this node counts as locked until it can", "op", "lock", "file", a.opt.LockFile, "err", st.Err)
	}
	a.lockErr = ""
	if st.Err != nil {
		a.lockErr = st.Err.Error()
	}
	if st.Locked == a.m.Locked() {
		return false
	}
	info := strings.TrimSpace(st.Info)
	a.log.Warn("lock changed", "op", "lock", "locked", st.Locked, "info", info)
	role := a.m.Role()
	a.fireHook(hooks.Lock, election.Action{From: role, To: role, Reason: fmt.Sprintf("locked=%v %s", st.Locked, info)})
	return a.step(election.Event{Kind: election.Lock, Now: now, Locked: st.Locked})
}

// Switchover asks the loop to hand over and waits for the outcome: the
// peer active, or why not.
func (a *Agent) Switchover(ctx context.Context, force bool) error {
	if control.ClientGone(ctx) {
		a.abandoned("switchover")
		return errAbandoned
	}
	reply := make(chan error, 1)
	select {
	case a.cmds <- command{force: force, reply: reply, gone: func() bool { return control.ClientGone(ctx) }}:
	case <-ctx.Done():
		return ctx.Err()
	case <-a.loopDone:
		return errors.New("switchover: hapaird is stopping")
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-a.loopDone:
		return errors.New("switchover: hapaird is stopping")
	}
}

func peerOf(f heartbeat.Frame) election.Peer {
	roles := map[heartbeat.Role]election.Role{heartbeat.RoleInit: election.Init, heartbeat.RoleStandby: election.Standby, heartbeat.RoleActive: election.Active, heartbeat.RoleFault: election.Fault}
	return election.Peer{
		Role:       roles[f.Role],
		Locked:     f.Flags&heartbeat.FlagLocked != 0,
		Fault:      f.Flags&heartbeat.FlagFault != 0,
		Leaving:    f.Flags&heartbeat.FlagLeaving != 0,
		SplitBrain: f.Flags&heartbeat.FlagSplitBrain != 0,
		Holding:    f.Flags&heartbeat.FlagHolding != 0,
		Deaf:       f.Flags&heartbeat.FlagDeaf != 0,
		Fenced:     f.Flags&heartbeat.FlagFenced != 0,
		Facts: election.Facts{
			Node: f.Node, Locked: f.Flags&heartbeat.FlagLocked != 0, Preferred: f.Flags&heartbeat.FlagPreferred != 0,
			ActiveFor: f.ActiveFor, LastNewSession: f.LastNewSession,
		},
		Generation: f.Generation, Written: f.SyncWritten,
	}
}

func (a *Agent) local(ad election.Advert) heartbeat.Local {
	roles := map[election.Role]heartbeat.Role{election.Init: heartbeat.RoleInit, election.Standby: heartbeat.RoleStandby, election.Active: heartbeat.RoleActive, election.Fault: heartbeat.RoleFault}
	l := heartbeat.Local{Role: roles[ad.Role], ActiveSince: ad.ActiveSince, LastNewSession: ad.LastNewSession}
	a.syncPosition(&l)
	for _, b := range []struct {
		on   bool
		flag heartbeat.Flags
	}{{ad.Locked, heartbeat.FlagLocked}, {ad.Fault, heartbeat.FlagFault}, {ad.Leaving, heartbeat.FlagLeaving}, {ad.SplitBrain, heartbeat.FlagSplitBrain}, {ad.Preferred, heartbeat.FlagPreferred}, {ad.Holding, heartbeat.FlagHolding}} {
		if b.on {
			l.Flags |= b.flag
		}
	}
	if ad.Frozen != nil {
		l.Frozen = &heartbeat.FrozenAges{ActiveFor: ad.Frozen.ActiveFor, LastNewSession: ad.Frozen.LastNewSession}
	}
	return l
}
