package heartbeat

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"
)

// Path is one way to the peer. The endpoint owns Conn from New on and
// closes it when Run returns.
type Path struct {
	Name string // "raw", "udp": for events, status and metrics
	Conn net.PacketConn
	// Peer is where frames go. On the raw path it is the broadcast address
	// until the peer's MAC is known.
	Peer net.Addr
	// Learn replaces Peer with the source of the first authentic frame, so
	// the raw path turns from broadcast to unicast by itself.
	Learn bool
	// ifindex is a packet socket's interface (RawPath), which its sends
	// name; ifname is its name, by which rebind finds it made anew, and
	// peerMAC the peer's MAC as configured (nil: learned).
	ifindex int
	ifname  string
	peerMAC net.HardwareAddr
}

// Config sets up an Endpoint. Zero durations mean the default profile.
type Config struct {
	Cluster    uint32
	Node       uint8
	Keys       [][]byte
	Interval   time.Duration // default 100ms
	Dead       time.Duration // default 300ms
	Generation uint64        // this start's boot generation (NextGeneration)
	// StateDir, when set, keeps the highest generation seen from the peer
	// across this node's restarts.
	StateDir string
	// Relief runs a relief sender on each of two CPUs (relief.go), for
	// a dead interval short enough that one CPU kept from running for
	// that long is to be expected (ReliefUpTo); on a single CPU it does
	// nothing. The caller leaves the runtime a P for each beside the
	// loop's.
	Relief bool
	// Refresh, when set, reports a peer frame that says nothing new to
	// the agent (the same role, flags, generation and position; ages
	// only when frozen) at most this often, instead of every frame: at
	// idle the agent, a process of its own behind the heartbeat core,
	// need not wake for every frame. Liveness is judged here either way,
	// and Stats says when the last frame came.
	Refresh time.Duration
}

// Local is what this node says about itself in every frame.
type Local struct {
	Role  Role
	Flags Flags
	// ActiveSince and LastNewSession are monotonic instants; zero means
	// "not active" and "no new session". Frames carry their ages.
	ActiveSince    time.Time
	LastNewSession time.Time
	// Frozen, when set, is sent instead of the ages above: during a split
	// brain both nodes must arbitrate from one fixed snapshot each.
	Frozen      *FrozenAges
	SyncWritten uint64
	SyncAcked   uint64
}

// FrozenAges are arbitration ages fixed at one instant; negative: none.
type FrozenAges struct {
	ActiveFor      time.Duration
	LastNewSession time.Duration
}

// EventKind is what an Event reports.
type EventKind int

// Event kinds.
const (
	PathUp      EventKind = iota // first authentic frame on a path, or again after it went down
	PathDown                     // a path silent for the dead interval
	PeerAlive                    // the peer is heard on some path
	PeerLost                     // every path silent for the dead interval
	PeerFrame                    // an authentic, fresh frame
	Running                      // the endpoint sends and listens: the first event of Run
	Fenced                       // the agent's lease ran out: the core said FAULT and released the VIPs
	PathHeard                    // the peer hears us on a path (its frames there echo ours)
	PathUnheard                  // it no longer does, though we still hear it there
	// Twin: another process has sent frames in this node's name, of
	// its own generation, for a dead interval (Frame is its last): two
	// hosts run as the same node. Once per generation of the twin, and
	// again after it was silent for a dead interval.
	Twin
	// Rebound: the raw path's interface was deleted and made again
	// under its name, and the path was opened anew on it (rebind).
	Rebound
	// Unverified: for a dead interval the peer's node has sent frames
	// signed with a key this node does not hold, and not one authentic
	// frame came (Frame: the last, as sent, unverified): the two hold
	// different keys. Once, until UnverifiedEnded: such frames stopped
	// for a dead interval, or an authentic one came.
	Unverified
	UnverifiedEnded
	// Unanswered: an authentic frame of the peer's that says it is
	// active came, while nothing of the peer's was usable this boot:
	// it echoes an earlier boot of this node's (the peer has not heard
	// this one yet, or cannot: a one-way link), so it may be a recording,
	// and is dropped (Frame: it). Once, until UnansweredEnded: a frame
	// came that is used, or none such for the peer's dead interval.
	Unanswered
	UnansweredEnded
)

func (k EventKind) String() string {
	return [...]string{"path-up", "path-down", "peer-alive", "peer-lost", "peer-frame", "running", "fenced", "path-heard", "path-unheard", "twin", "rebound", "unverified", "unverified-ended", "unanswered", "unanswered-ended"}[k]
}

// Event is one observation, stamped with the monotonic time it was made.
type Event struct {
	Kind  EventKind
	Path  string
	Frame Frame // PeerFrame only
	At    time.Time
	// Sent is when the heartbeat core passed the event on to its agent,
	// on this host's CLOCK_MONOTONIC (Mono), which both processes read
	// alike; zero for an event that did not come through a core. At is
	// rebuilt in the agent from the event's age when it was sent, so the
	// time it then waited in the socket, unread by a stopped agent, is in
	// Sent alone (Waited).
	Sent int64
}

// Waited is how long ev has waited since its core sent it: unread while
// the agent did not run. Zero for an event that came through no core.
func (ev *Event) Waited() time.Duration {
	if ev.Sent == 0 {
		return 0
	}
	return time.Duration(Mono() - ev.Sent)
}

// SentAt is when ev's core sent it, on this process's clock (At for an
// event that came through no core): At is rebuilt when the agent reads
// the event, so for one that waited unread it is the time of the read.
func (ev *Event) SentAt() time.Time {
	if ev.Sent == 0 {
		return ev.At
	}
	return time.Now().Add(-ev.Waited())
}

// Mono reads CLOCK_MONOTONIC in nanoseconds: one clock for every process
// on the host, where a time.Time's monotonic reading is its process's own.
// A raw call, as the core's others (sysRaw): it never blocks.
func Mono() int64 {
	var ts unix.Timespec
	sysRaw(unix.SYS_CLOCK_GETTIME, unix.CLOCK_MONOTONIC, uintptr(unsafe.Pointer(&ts)), 0, 0, 0, 0)
	return ts.Nano()
}

// Endpoint sends this node's heartbeats on every path and watches the
// peer's. Create with New, then Run.
type Endpoint struct {
	cfg    Config
	paths  []pathState
	signer *Signer
	recv   *receiver
	store  peerGenerations
	events chan Event
	kick   chan struct{}
	rx     chan rxFrame
	stats  Counters

	// seq numbers every send; the copies of one frame on each path share
	// it, so the receiver reports each frame once, and never one older
	// than what it already reported. Frames held in a neighbour queue
	// while a link was down arrive in a burst after it, oldest first.
	seq      uint64
	reported uint64 // highest sequence reported as PeerFrame
	repGen   uint64 // the generation reported belongs to
	// staleGen is the generation of the peer's newest authentic frame
	// that was dropped as stale or as an older boot, echoed back while
	// none is reported (repGen 0). A node whose state directory was lost
	// starts with a boot counter below the one its peer remembers: the
	// peer drops its frames as an older boot unless they echo the peer's
	// own generation, and its frames, echoing our lost boot, are stale
	// here (or of an older boot, when the state directory was copied from
	// the peer and remembers a generation above the peer's). Each would
	// wait for the other's echo for ever, and this node, hearing nothing,
	// would take the VIPs beside the active. Echoing proves nothing to
	// us, so nothing here trusts that frame; it lets the peer trust ours
	// (receiver.check: its counter went back, but it echoes us).
	staleGen uint64
	// peerHeld are the keys the peer's last authentic frame said it
	// holds; until one arrives (or when we share none), frames are
	// signed with each of our keys in turn, so the peer can verify every
	// few frames whichever of ours it holds, and learn which we hold.
	peerHeld  [HeldKeys]uint32
	peerKnown bool
	// reportedView and reportedAt are what the last PeerFrame reported
	// said to the agent (agentView), and when (Config.Refresh).
	reportedView Frame
	reportedAt   time.Time
	// saidRole and saidFlags are what this node's last frame said
	// (FlagDeaf aside); changedSeq is the sequence of the first frame
	// that said them, while the peer's answer to it (its first frame
	// echoing it) is still to be reported whatever Refresh says
	// (receive).
	saidRole   Role
	saidFlags  Flags
	changedSeq uint64
	// sent remembers when recent frames left, by sequence, so an echo
	// tells how fresh the peer's hearing of us is.
	sent [sentRing]struct {
		seq uint64
		at  time.Time
	}

	// fenced marks every frame FAULT: the agent's lease ran out
	// (ServeCore), and the peer must take over at once.
	fenced atomic.Bool
	// leaseEnd, under mu, is when the agent's lease runs out (ServeCore;
	// zero: no lease). A frame sent after it is marked as fenced frames
	// are, before the lease's timer has fenced the node: after a pause
	// of the whole host (a virtual machine paused, the daemon stopped
	// with its core), the sender and the timer wake together, and a frame
	// sent first said what the agent last gave, ACTIVE, to a peer that
	// had taken over meanwhile (a split brain to it, hooks and all, until
	// the fence came). A locked node is not fenced (leaseExpired).
	leaseEnd time.Time
	lease    time.Duration // its length, set once (leaseFor)
	// peerHolds says the peer's newest frame says it is active and holds
	// the VIPs.
	peerHolds atomic.Bool
	// taken is signalled when peerHolds turns true, so releaseWhenTaken
	// lets go of the VIPs at that frame, not at its next check (a
	// quarter interval on: 25 ms of two holders at the default profile).
	taken   chan struct{}
	renewed chan struct{}
	lapsed  chan struct{} // a renewal came after the lease's end
	unfence chan struct{}
	persist chan uint64 // the peer's generation, to write to StateDir
	// readNow is signalled by ReadAtOnce; readAtOnceUntil, the loop's
	// own, is when the reading at once it asked for ends.
	readNow         chan struct{}
	readAtOnceUntil time.Time
	// renews is set by Renews: the next peer frame is reported whatever
	// Refresh says.
	renews atomic.Bool

	// canPoll: every path's socket is owned (sockIO), so the loop can
	// read them itself instead of waking for each frame; peerRole is the
	// role the peer's newest reported frame says; polled is the frame
	// the loop reads into.
	canPoll  bool
	peerRole Role
	polled   rxFrame
	// peerDead is the dead interval the peer's frames say it runs (zero:
	// not said); the peer is judged by judgeDead. peerDeaf: its newest
	// frame said it hears none of ours (FlagDeaf).
	peerDead time.Duration
	peerDeaf bool
	// twinSeen is the newest twin, another process sending in this
	// node's name (twin).
	twinSeen twinState
	// unver follows frames from the peer's node that no key of ours
	// verifies (unverified); unans the peer's authentic frames that say
	// it is active and that could not be used (unanswered).
	unver unverState
	unans unansState

	// sendMu is held by Run whenever it is not parked waiting, and by a
	// relief sender while it sends for it (relief.go): what sendAll reads
	// of the loop's state is the loop's. deaf is what the loop's next
	// frame says of hearing the peer. ranAt and sentAt are when the loop
	// last ran and a frame last left, as mono readings.
	sendMu sync.Mutex
	deaf   bool
	epoch  time.Time
	ranAt  atomic.Int64
	sentAt atomic.Int64
	// sentPage, if set, is where sentAt is shared with the agent.
	sentPage *SentPage
	// relievedLast says a relief sender sent the last frame.
	relievedLast atomic.Bool
	// park, when set (by tests), is called where the loop parks, without
	// sendMu: a loop kept from running, as by a CPU that stopped.
	park atomic.Pointer[func()]

	mu     sync.Mutex
	local  Local
	frozen FrozenAges // local.Frozen's storage, for setLocal
	peers  []net.Addr // current destination per path
}

type pathState struct {
	Path
	// io reads and writes the socket without allocating, with kernel
	// receive times; nil for a conn that is no socket.
	io *sockIO
	// learned is the peer's MAC the raw path sends to, once Learn found
	// it.
	learned    [6]byte
	hasLearned bool
	up         bool
	lastRx     time.Time
	// reading is closed when the path's reader ends (nil: none runs);
	// closing stop tells it to.
	reading, stop chan struct{}
	// rearmed is when this node last found itself paused: the dead
	// interval counts from the later of it and lastRx, since a node that
	// did not run could not have heard anything.
	rearmed time.Time
	// peerGen and peerSeq are the newest of the peer's frames heard on
	// this path, which this path's frames echo back; heardBack says the
	// peer's frames on this path echo one of ours sent within a dead
	// interval: the peer hears us on it.
	peerGen, peerSeq uint64
	heardBack        bool
	// echo is the path's round trip as the peer's echoes show it: see
	// roundTrip.
	echo roundTrip
	// genAt is when this path first heard the peer's generation: the
	// peer, started then, could not have heard a frame of ours sent
	// before (sentWithin).
	genAt time.Time
	// lookedAt is when rebind last looked for the path's interface.
	lookedAt time.Time
}

// silentSince is where the path's dead interval starts.
func (p *pathState) silentSince() time.Time {
	if p.rearmed.After(p.lastRx) {
		return p.rearmed
	}
	return p.lastRx
}

type rxFrame struct {
	path int
	n    int
	buf  [FrameLen + 1]byte // one spare byte tells an over-long frame
	// from is the sender, read from a conn that is no socket; a packet
	// socket gives mac instead, without allocating.
	from   net.Addr
	mac    [6]byte
	hasMAC bool
	at     time.Time
}

// sentRing is how many recent sends the endpoint remembers (at the fastest
// profile, well over two dead intervals of frames).
const sentRing = 64

// New checks cfg and takes ownership of the paths' connections.
func New(cfg Config, paths ...Path) (*Endpoint, error) {
	if cfg.Interval == 0 {
		cfg.Interval = 100 * time.Millisecond
	}
	if cfg.Dead == 0 {
		cfg.Dead = 3 * cfg.Interval
	}
	if cfg.Dead <= cfg.Interval {
		return nil, fmt.Errorf("heartbeat: dead interval %v must be above interval %v", cfg.Dead, cfg.Interval)
	}
	if len(paths) == 0 || len(paths) > 255 {
		return nil, errors.New("heartbeat: need 1 to 255 paths")
	}
	s, err := NewSigner(cfg.Keys)
	if err != nil {
		return nil, err
	}
	e := &Endpoint{
		cfg:     cfg,
		epoch:   time.Now(),
		signer:  s,
		events:  make(chan Event, 256),
		kick:    make(chan struct{}, 1),
		rx:      make(chan rxFrame, 64),
		taken:   make(chan struct{}, 1),
		renewed: make(chan struct{}, 1),
		lapsed:  make(chan struct{}, 1),
		unfence: make(chan struct{}, 1),
		persist: make(chan uint64, 1),
		readNow: make(chan struct{}, 1),
	}
	if cfg.StateDir != "" {
		e.store = peerGenerations{path: filepath.Join(cfg.StateDir, "peer-generation")}
	}
	gen, err := e.store.load()
	if err != nil {
		return nil, err
	}
	e.recv = newReceiver(cfg.Cluster, cfg.Node, s, len(paths), cfg.Generation, gen)
	e.unans.seq = make([]uint64, len(paths))
	e.canPoll = true
	e.stats.paths = make([]pathCounts, len(paths))
	for i, p := range paths {
		e.stats.paths[i].name = p.Name
		ps := pathState{Path: p, io: newSockIO(p.Conn, p.ifindex, EtherType)}
		if pa, ok := p.Peer.(*packet.Addr); ok && ps.io != nil && ps.io.link {
			ps.io.setPeer(pa.HardwareAddr)
		}
		e.canPoll = e.canPoll && ps.io != nil && ps.io.owned()
		e.paths = append(e.paths, ps)
		e.peers = append(e.peers, p.Peer)
	}
	return e, nil
}

// Events is where the endpoint reports. Peer frames the reader has no room
// for are skipped (counted); other events wait for room, so a reader that
// stops for long stalls the endpoint (the heartbeat core's lease fences a
// hung agent first).
func (e *Endpoint) Events() <-chan Event { return e.events }

// Stats reads the counters.
func (e *Endpoint) Stats() Stats { return e.stats.snapshot() }

// SetLocal changes what this node says and sends it at once on every path:
// a change of role, lock or fault must not wait for the next tick.
func (e *Endpoint) SetLocal(l Local) {
	e.mu.Lock()
	e.local = l
	e.mu.Unlock()
	e.SendNow()
}

// UpdateLocal changes what this node says without sending at once, for
// facts that may wait for the next tick (statesync positions).
func (e *Endpoint) UpdateLocal(f func(*Local)) {
	e.mu.Lock()
	f(&e.local)
	e.mu.Unlock()
}

// setLocal is SetLocal for a Local whose Frozen the caller will reuse:
// it is copied, and nothing is allocated.
func (e *Endpoint) setLocal(l *Local, now bool) {
	e.mu.Lock()
	e.local = *l
	if l.Frozen != nil {
		e.frozen = *l.Frozen
		e.local.Frozen = &e.frozen
	}
	e.mu.Unlock()
	if now {
		e.SendNow()
	}
}

// leaseFor says the agent holds a lease of d, from now (leaseEnd). Called
// once, before the agent's messages are read.
func (e *Endpoint) leaseFor(d time.Duration) {
	e.mu.Lock()
	e.lease, e.leaseEnd = d, time.Now().Add(d)
	e.mu.Unlock()
}

// renewLease restarts the agent's lease from now, if it holds one, unless
// it has run out: then it says so (lapsed) and leaves it run out. A
// renewal read after the lease's end is from an agent that was stopped
// past it (the daemon stopped with its core, a paused virtual machine):
// the lease ended, as it does when the timer fires, and the node is
// fenced before the lease runs again (restartLease). Renewed here, the
// frames said ACTIVE again, and the timer, reset, fenced nobody: to a peer
// that had taken over at the fenced frames, a split brain.
func (e *Endpoint) renewLease() (lapsed bool) {
	now := time.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.lease == 0 {
		return false
	}
	if now.After(e.leaseEnd) {
		return true
	}
	e.leaseEnd = now.Add(e.lease)
	return false
}

// restartLease starts the agent's lease anew from now, once the core has
// fenced the node for a renewal that came after the lease's end.
func (e *Endpoint) restartLease() {
	e.mu.Lock()
	e.leaseEnd = time.Now().Add(e.lease)
	e.mu.Unlock()
}

// setFenced marks (true) every frame FAULT from now on, sending one at
// once, or stops marking them.
func (e *Endpoint) setFenced(f bool) {
	e.fenced.Store(f)
	e.SendNow()
}

// SendNow sends a frame on every path now.
func (e *Endpoint) SendNow() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// PeerAddr is the current destination on path i (the learned MAC on the
// raw path).
func (e *Endpoint) PeerAddr(i int) net.Addr {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.peers[i]
}

// Run sends and receives until ctx ends, then closes the connections and
// returns once every goroutine it started has ended.
func (e *Endpoint) Run(ctx context.Context) error {
	// Taken first and given back last: no relief sends once Run returns.
	e.sendMu.Lock()
	defer e.sendMu.Unlock()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		e.persistPeer(ctx)
	}()
	stopRelief := make(chan struct{})
	defer func() {
		close(stopRelief)
		// Closing a conn that is no socket ends its reader; what the
		// readers took meanwhile is dropped: the endpoint is done.
		for _, p := range e.paths {
			p.Conn.Close()
		}
		e.stopReaders(func(*rxFrame) bool { return true })
		for _, p := range e.paths {
			if p.io != nil {
				p.io.close()
			}
		}
		wg.Wait()
	}()
	if err := e.startReaders(ctx); err != nil {
		return err
	}
	if cpus := reliefCPUs(); e.cfg.Relief && cpus != nil {
		if err := e.startRelief(cpus, stopRelief, &wg); err != nil {
			return fmt.Errorf("heartbeat: relief sender: %w", err)
		}
	}
	polling := false

	tick, err := newFDTimer()
	if err != nil {
		return err
	}
	defer tick.Close()
	tick.Reset(e.cfg.Interval, e.cfg.Interval)
	live, err := newFDTimer()
	if err != nil {
		return err
	}
	defer live.Close()
	live.Reset(e.cfg.Dead, 0)
	peerAlive := false
	out := make([]byte, 0, FrameLen)
	if !e.emit(ctx, Event{Kind: Running, At: time.Now()}) {
		return nil
	}
	e.sendAll(out, !peerAlive, false)
	// The loop runs at least once per interval (the ticker), so a longer
	// gap since its last run means this process did not run: a GC pause,
	// a starved CPU, a stopped VM. Its own lateness is never taken for the
	// peer's silence (corosync does the same): the dead interval restarts.
	// It is counted by this node's own dead interval (what the profile
	// asks of this host), but restarts the peer's only when it could take
	// that one past its end: half the interval the peer is judged by,
	// which the peer's may make longer. Restarted at every late wake-up
	// counted by its own, a loaded fast node never lost a slower peer.
	lastRun := time.Now()
	var r rxFrame
	for {
		e.deaf = !peerAlive
		e.ranAt.Store(e.mono())
		e.sendMu.Unlock()
		if park := e.park.Load(); park != nil {
			(*park)()
		}
		send, got, readNow := false, false, false
		select {
		case <-ctx.Done():
		case <-tick.C:
			send = true
		case <-e.kick:
			send = true
		case r = <-e.rx:
			got = true
		case <-live.C:
		case <-e.readNow:
			readNow = true
		}
		e.sendMu.Lock()
		if ctx.Err() != nil {
			// What the agent said last goes out before the endpoint
			// ends: a node that stops gracefully says so (Leaving), and
			// its peer takes it for stopped, not lost.
			select {
			case <-e.kick:
				send = true
			default:
			}
			if send {
				e.sendAll(out, !peerAlive, false)
			}
			return nil
		}
		if send {
			// Sent before the peer's frames are read, so that a
			// send never waits on the agent (receive may): after a
			// late wake-up its echo is as old as the pause (FlagLate).
			e.sendAll(out, !peerAlive, time.Since(lastRun) > e.cfg.Dead/2)
		}
		if got && !e.receive(ctx, &r, &peerAlive) {
			return nil
		}
		now := time.Now()
		if gap := now.Sub(lastRun); gap > e.cfg.Dead/2 {
			e.stats.pauses.Add(1)
			if gap > e.judgeDead()/2 {
				for i := range e.paths {
					e.paths[i].rearmed = now
				}
			}
		}
		lastRun = now
		if readNow {
			e.readAtOnceUntil = now.Add(e.judgeDead())
		}
		if polling && !e.poll(ctx, &peerAlive) {
			return nil
		}
		if !e.receiveQueued(ctx, &peerAlive) {
			return nil
		}
		recheck, ok := e.expire(ctx, now, &peerAlive)
		if !ok || !e.unverifiedEnded(ctx, now, peerAlive) || !e.unansweredEnded(ctx, now, peerAlive) {
			return nil
		}
		if ok, err := e.rebind(ctx, now, polling, &peerAlive); !ok || err != nil {
			return err
		}
		if want := e.wantPoll(now, peerAlive); want != polling {
			if want {
				handle := func(r *rxFrame) bool { return e.receive(ctx, r, &peerAlive) }
				if !e.stopReaders(handle) || !e.receiveQueued(ctx, &peerAlive) {
					return nil
				}
			} else if err := e.startReaders(ctx); err != nil {
				return err
			}
			polling = want
		}
		next := e.nextDeadline(now)
		if recheck {
			next = min(next, e.cfg.Interval/4)
		}
		live.Reset(next, 0)
	}
}

// wantPoll says the loop should read the sockets itself, at its own wake-ups
// (the send ticks, and the deadlines it keeps), rather than have readers
// wake it for each frame: when this node is active in the steady state,
// with a standby peer. Each frame then costs no wake-up of its own, the
// active's part of keepalived's (whose master only sends). Liveness is
// judged as before, from the kernel's receive times, and the sockets are
// read before any path is declared silent; what waits up to an interval
// is only the active's answer to what the standby says, and in the steady
// state it has nothing to answer. Anything else reads at once: a handover
// (the active waits for the standby's Holding to release), a split brain,
// a fenced core, a peer that is not a standby, and a peer lost: when it
// comes back it may be active too (both were, during an isolation), and
// the split's arbitration compares each node's facts frozen when it first
// hears the other; an active that read the returning peer only at its next
// tick froze up to an interval before the peer did (the peer freezes on
// the frame this node sends once it has seen the split), and a newer
// session could lose to an older one by that skew. And for a dead
// interval after ReadAtOnce.
func (e *Endpoint) wantPoll(now time.Time, peerAlive bool) bool {
	if !e.canPoll || !peerAlive || e.fenced.Load() || e.peerRole != RoleStandby || now.Before(e.readAtOnceUntil) {
		return false
	}
	e.mu.Lock()
	role, flags := e.local.Role, e.local.Flags
	e.mu.Unlock()
	return role == RoleActive && flags&(FlagLeaving|FlagSplitBrain|FlagFault) == 0
}

// ReadAtOnce has the endpoint read the peer's frames as they come, not at
// its own wake-ups, for the peer's dead interval: the agent saw its
// standby's replication connection end. What the standby's core says next
// (its daemon died, or stops) is what sync writes wait for, and read at
// the active's next tick it held them up to an interval (100 ms at the
// default profile); the frame may also arrive just after the connection's
// end, so one read now would not do. It does not wait.
func (e *Endpoint) ReadAtOnce() {
	select {
	case e.readNow <- struct{}{}:
	default:
	}
}

// Renews has the endpoint report the peer's next frame to the agent even
// if it says nothing new: the agent set aside what it had read late
// (a frame that waited in its queue while it did not run may tell of a
// peer that has moved on since) and needs the peer's word as it is now.
// It does not wait.
func (e *Endpoint) Renews() { e.renews.Store(true) }

// pollBatch bounds the frames one poll reads from a path: a flood (forged
// frames are read to be dropped) waits for the next wake-up rather than
// hold up the send tick.
const pollBatch = 64

// poll reads and handles what every path's socket holds; false when ctx
// ended.
func (e *Endpoint) poll(ctx context.Context, peerAlive *bool) bool {
	r := &e.polled
	for i := range e.paths {
		io := e.paths[i].io
		for range pollBatch {
			*r = rxFrame{path: i, hasMAC: io.link}
			ok, n, at, mac, err := io.poll(r.buf[:])
			if !ok || err != nil {
				// An error (a veth going down) is read again at
				// the next wake-up, as a reader would.
				break
			}
			r.n, r.at, r.mac = n, at, mac
			e.stats.polled.Add(1)
			if !e.receive(ctx, r, peerAlive) {
				return false
			}
		}
	}
	return true
}

// startReaders starts a reader on every path, each waiting on its socket.
func (e *Endpoint) startReaders(ctx context.Context) error {
	for i := range e.paths {
		if err := e.startReader(ctx, i); err != nil {
			return err
		}
	}
	return nil
}

// startReader starts path i's reader.
func (e *Endpoint) startReader(ctx context.Context, i int) error {
	p := &e.paths[i]
	if p.io != nil {
		if err := p.io.watch(); err != nil {
			return fmt.Errorf("heartbeat: %s: %w", p.Name, err)
		}
	}
	reading, stop := make(chan struct{}), make(chan struct{})
	p.reading, p.stop = reading, stop
	go func() {
		defer close(reading)
		e.read(ctx, i, stop)
	}()
	return nil
}

// endReader tells path i's reader to end, and takes an owned socket out of
// the poller, which wakes a reader waiting on it.
func (e *Endpoint) endReader(i int) {
	p := &e.paths[i]
	if p.stop != nil {
		close(p.stop)
		p.stop = nil
	}
	if p.io != nil {
		p.io.unwatch()
	}
}

// stopReaders ends every path's reader and waits for them, passing each
// frame one took meanwhile to handle (a reader that has a frame hands it
// over before it ends); false when handle said so.
func (e *Endpoint) stopReaders(handle func(*rxFrame) bool) bool {
	for i := range e.paths {
		e.endReader(i)
	}
	for i := range e.paths {
		if !e.waitReader(i, handle) {
			return false
		}
	}
	return true
}

// waitReader waits for path i's reader, told to end, to end, passing each
// frame a reader took meanwhile to handle; false when handle said so.
func (e *Endpoint) waitReader(i int, handle func(*rxFrame) bool) bool {
	p := &e.paths[i]
	for p.reading != nil {
		select {
		case <-p.reading:
			p.reading = nil
		case r := <-e.rx:
			if !handle(&r) {
				return false
			}
		}
	}
	return true
}

// lookEvery bounds how often rebind looks for the interface of a raw path
// that is down.
const lookEvery = time.Second

// rebind opens a raw path that is down anew when its interface was deleted
// and made again under its name, as NetworkManager does to a VLAN or a
// bond on "nmcli con down" and "up", and ifupdown on ifdown and ifup: a
// packet socket stays bound to the interface it was opened on, by index,
// and neither hears nor reaches anything on its successor, so the path
// stayed down until a restart, the pair on one path without saying why.
// It looks once a second at most; an interface not back yet, or the same
// one (the peer, or the cable, is silent), is left as it is. false when
// ctx ended.
func (e *Endpoint) rebind(ctx context.Context, now time.Time, polling bool, peerAlive *bool) (bool, error) {
	for i := range e.paths {
		p := &e.paths[i]
		if p.up || p.ifname == "" || now.Sub(p.lookedAt) < lookEvery {
			continue
		}
		p.lookedAt = now
		ifi, err := net.InterfaceByName(p.ifname)
		if err != nil || ifi.Index == p.ifindex {
			continue
		}
		np, err := RawPath(ifi, p.peerMAC)
		if err != nil {
			continue // again at the next look
		}
		e.endReader(i)
		if !e.waitReader(i, func(r *rxFrame) bool { return e.receive(ctx, r, peerAlive) }) {
			np.Conn.Close()
			return false, nil
		}
		p.Conn.Close()
		if p.io != nil {
			p.io.close()
		}
		p.Path, p.io, p.hasLearned = np, newSockIO(np.Conn, np.ifindex, EtherType), false
		if p.io != nil {
			p.io.setPeer(np.Peer.(*packet.Addr).HardwareAddr)
		}
		e.mu.Lock()
		e.peers[i] = np.Peer
		e.mu.Unlock()
		if !e.emit(ctx, Event{Kind: Rebound, Path: p.Name, At: now}) {
			return false, nil
		}
		if !polling {
			if err := e.startReader(ctx, i); err != nil {
				return false, err
			}
		}
		// Heard at once, not at the next tick.
		e.SendNow()
	}
	return true, nil
}

// receiveQueued handles what the readers already took off the sockets, so
// it is heard before anything is declared silent; false when ctx ended.
func (e *Endpoint) receiveQueued(ctx context.Context, peerAlive *bool) bool {
	for {
		select {
		case r := <-e.rx:
			if !e.receive(ctx, &r, peerAlive) {
				return false
			}
		default:
			return true
		}
	}
}

// persistPeer keeps the peer's generation in StateDir. Writing may fail on
// a read-only disk; the receiver still protects this run, so nothing is
// dropped for it.
func (e *Endpoint) persistPeer(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case g := <-e.persist:
			e.store.store(g)
		}
	}
}

// read is path i's reader: it takes each frame off the socket as it comes
// and hands it to the loop, until ctx ends or stop is closed.
func (e *Endpoint) read(ctx context.Context, i int, stop <-chan struct{}) {
	conn, io := e.paths[i].Conn, e.paths[i].io
	// One frame, reused: a conn that is no socket takes its buffer
	// through an interface, which puts it on the heap, so one made per
	// frame would be an allocation per frame. What goes to e.rx is a copy.
	var r rxFrame
	for {
		r = rxFrame{}
		var err error
		if io != nil {
			r.n, r.at, r.mac, err = io.read(r.buf[:])
			r.hasMAC = io.link
		} else {
			r.n, r.from, err = conn.ReadFrom(r.buf[:])
			r.at = time.Now()
		}
		if err != nil {
			// A socket read through its RawConn says os.ErrClosed;
			// a duplicate unwatched (an os.File), that it is closing.
			select {
			case <-stop:
				return
			default:
			}
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) {
				return
			}
			// A veth going down makes reads fail briefly; keep reading.
			time.Sleep(e.cfg.Interval / 4)
			continue
		}
		r.path = i
		select {
		case e.rx <- r:
		case <-ctx.Done():
			return
		}
	}
}

func (e *Endpoint) emit(ctx context.Context, ev Event) bool {
	select {
	case e.events <- ev:
		return true
	case <-ctx.Done():
		return false
	}
}

func (e *Endpoint) receive(ctx context.Context, r *rxFrame, peerAlive *bool) bool {
	var f Frame
	reason, ok := e.recv.check(r.buf[:r.n], r.path, e.seq, &f)
	if !ok {
		e.stats.drops[reason].Add(1)
		switch reason {
		case DropTwin:
			return e.twin(ctx, &f, r)
		case DropKeyID, DropPeerCluster:
			return e.unverified(ctx, &f, r, *peerAlive)
		case DropStale, DropOldGeneration:
			if e.repGen == 0 {
				e.staleGen = f.Generation
				return e.unanswered(ctx, &f, r)
			}
		}
		return true
	}
	e.stats.recv.Add(1)
	// The peer heard a frame of this boot's numbered above any this
	// process sent: its memory went back, a virtual machine restored
	// from a snapshot taken while it ran. The peer drops every frame
	// numbered below what it heard as replayed, so for as long as the
	// snapshot is old it heard nothing of this node, which heard it (a
	// node restored as active could stay active beside the one that took
	// over). Number on from past the echo (each path's in turn).
	if f.EchoGeneration == e.cfg.Generation && f.EchoSeq > e.seq {
		e.seq = f.EchoSeq
	}
	e.peerDead = f.Dead
	if e.recv.genChanged {
		e.recv.genChanged = false
		// Written by persistPeer, off this goroutine: an fsync on a
		// busy disk must not delay a heartbeat. Only the newest value
		// matters, so an unwritten older one is dropped.
		select {
		case <-e.persist:
		default:
		}
		e.persist <- e.recv.gen
	}
	p := &e.paths[r.path]
	if p.Learn {
		e.learn(p, r)
	}
	p.lastRx = r.at
	if !p.up {
		p.up = true
		if !e.emit(ctx, Event{Kind: PathUp, Path: p.Name, At: r.at}) {
			return false
		}
	}
	if f.Generation != p.peerGen {
		p.peerGen, p.peerSeq, p.genAt = f.Generation, 0, r.at
	}
	e.stats.paths[r.path].frame(p.peerSeq, f.Seq)
	p.peerSeq = max(p.peerSeq, f.Seq)
	if !e.judgeEcho(ctx, p, &f, r.at) {
		return false
	}
	if !*peerAlive {
		*peerAlive = true
		if !e.emit(ctx, Event{Kind: PeerAlive, Path: p.Name, At: r.at}) {
			return false
		}
	}
	if f.Generation == e.repGen && f.Seq <= e.reported {
		// The other path's copy of a frame already reported, or an
		// older frame that arrived late: alive, but nothing new.
		e.stats.stale.Add(1)
		return true
	}
	// A peer that starts to say it hears none of ours (it started, or
	// came back) gets a frame at once rather than at the next tick: a
	// starting node decides within its start-up window, three of its own
	// dead intervals (90 ms at fast), which a peer at the default profile
	// (a frame every 100 ms) could outlast; and after a heal, the two
	// arbitrate as soon as each hears the other. Once per such change:
	// a peer that stays deaf (a one-way link) costs nothing more.
	deaf := f.Flags&FlagDeaf != 0
	if deaf && (!e.peerDeaf || f.Generation != e.repGen) {
		e.SendNow()
	}
	e.peerDeaf = deaf
	e.repGen, e.reported = f.Generation, f.Seq
	e.peerHeld, e.peerKnown = f.Held, true
	e.peerRole = f.Role
	if holds := f.Role == RoleActive && f.Flags&FlagHolding != 0; !e.peerHolds.Swap(holds) && holds {
		select {
		case e.taken <- struct{}{}:
		default:
		}
	}
	e.stats.lastFrame.Store(r.at.UnixNano())
	v := agentView(f)
	// The peer's first frame sent after it heard a change of ours is
	// its answer to it, and the agent hears it even if it says what the
	// last one said: an active whose check failed and recovered within
	// one frame (an interface bounced) went from ACTIVE to STANDBY in the
	// peer's eyes, and the peer, not the preferred node, stays a standby
	// and says nothing new. This node, preferred, takes over on that
	// frame; at Refresh's pace neither held the VIPs for 5 s.
	answer := e.changedSeq != 0 && f.EchoGeneration == e.cfg.Generation && f.EchoSeq >= e.changedSeq
	if answer {
		e.changedSeq = 0
	} else if !e.renews.Swap(false) && e.cfg.Refresh > 0 && v == e.reportedView && r.at.Sub(e.reportedAt) < e.cfg.Refresh {
		return true
	}
	// A peer frame is a whole state: when the agent is behind, a frame it
	// has no room for is skipped (the next one says as much), so a slow
	// agent never holds up the core's frames and judgement; the lease
	// covers an agent that stopped. Half the queue stays for what happens
	// once (a path down, the peer lost), which waits for room.
	if len(e.events) >= cap(e.events)/2 {
		e.stats.agentBehind.Add(1)
		e.reportedView = Frame{}
		return true
	}
	e.reportedView, e.reportedAt = v, r.at
	return e.emit(ctx, Event{Kind: PeerFrame, Path: p.Name, Frame: f, At: r.at})
}

// twin follows f, an authentic frame in this node's name that this process
// did not send. A twin that has kept sending for a dead interval, with
// its frames' numbers going up and no gap of a dead interval between
// them, is reported, once for as long as it keeps on: this node's own
// frames from before a restart, held in a queue, come as one burst and
// end sooner.
func (e *Endpoint) twin(ctx context.Context, f *Frame, r *rxFrame) bool {
	t := &e.twinSeen
	dead := e.judgeDead()
	if f.Generation != t.gen || r.at.Sub(t.last) >= dead {
		*t = twinState{gen: f.Generation, since: r.at, last: r.at, seq: f.Seq}
		return true
	}
	if f.Seq <= t.seq {
		return true // the other path's copy, or a replay
	}
	t.seq, t.last = f.Seq, r.at
	if t.reported || r.at.Sub(t.since) < dead {
		return true
	}
	t.reported = true
	return e.emit(ctx, Event{Kind: Twin, Path: e.paths[r.path].Name, Frame: *f, At: r.at})
}

// unverified follows f, a frame from the peer's node signed with a key
// this node does not hold (decoded, not verified). During a rolling key
// change a node's first frames after its restart are signed with its
// newest key until it hears which keys the peer holds, less than an
// interval; frames that keep coming for a dead interval, with no authentic
// frame among them, mean the two nodes hold different keys (a key made on
// each node, a change done on one node only). Reported once (Unverified)
// until unverifiedEnded.
func (e *Endpoint) unverified(ctx context.Context, f *Frame, r *rxFrame, peerAlive bool) bool {
	u := &e.unver
	if f.Node == e.cfg.Node {
		return true // a twin with another key: nothing this node can tell
	}
	if u.last.IsZero() || r.at.Sub(u.last) >= e.judgeDead() {
		u.since = r.at
	}
	u.last = r.at
	if u.reported || peerAlive || r.at.Sub(u.since) < e.judgeDead() {
		return true
	}
	u.reported = true
	return e.emit(ctx, Event{Kind: Unverified, Path: e.paths[r.path].Name, Frame: *f, At: r.at})
}

// unverifiedEnded ends an Unverified report once the peer's node sent no
// such frame for twice a dead interval (goneAfter), or an authentic frame
// came.
func (e *Endpoint) unverifiedEnded(ctx context.Context, now time.Time, peerAlive bool) bool {
	u := &e.unver
	if !u.reported || (!peerAlive && !e.goneAfter(now, u.last, e.judgeDead())) {
		return true
	}
	*u = unverState{}
	return e.emit(ctx, Event{Kind: UnverifiedEnded, At: now})
}

// unanswered follows f, an authentic frame of the peer's that was dropped
// as stale or as of an older boot while none was used this boot. Each
// restart of this node brings some: the peer's frames echo this node's
// previous boot until it hears this one, and answers; a peer at the default
// profile that reads its socket at its own ticks answers up to 100 ms
// later, past a fast node's start-up window. One that cannot hear this
// node (a one-way link) never answers. Either way a peer is there, and if
// it says it is active, this node taking the VIPs at the end of its
// start-up window would make two holders, the second unheard by the first
// for as long as the link stays one-way. Reported at once (Unanswered),
// and until UnansweredEnded: the peer could be a recording, and only fresh
// frames prove it is there, but a recording can at most keep a starting
// node standby, as frames this node cannot verify can.
//
// Only a frame numbered past every such frame of the peer's boot on its
// path counts, and none of a boot older than the newest seen: the rest
// are a recording played again (each path numbers its frames upwards).
// Its agent takes a report whose frame continues the boot of the
// report before for a live active that does not hear this node, and a
// node that took over on that report's end yields (the machine's
// deafPeerSplit); a recording of what it already saw must not make it.
func (e *Endpoint) unanswered(ctx context.Context, f *Frame, r *rxFrame) bool {
	u := &e.unans
	switch {
	case f.Generation < u.gen:
		return true
	case f.Generation > u.gen:
		u.gen = f.Generation
		clear(u.seq)
	case f.Seq <= u.seq[r.path]:
		return true
	}
	u.seq[r.path] = f.Seq
	if f.Role != RoleActive {
		return true
	}
	u.last, u.dead = r.at, max(e.cfg.Dead, f.Dead)
	if u.reported {
		return true
	}
	u.reported = true
	return e.emit(ctx, Event{Kind: Unanswered, Path: e.paths[r.path].Name, Frame: *f, At: r.at})
}

// unansweredEnded ends an Unanswered report once a frame of the peer's was
// used, or none that said it is active came for twice the dead interval
// its frames said (goneAfter).
func (e *Endpoint) unansweredEnded(ctx context.Context, now time.Time, peerAlive bool) bool {
	u := &e.unans
	if !u.reported || (!peerAlive && !e.goneAfter(now, u.last, u.dead)) {
		return true
	}
	u.last, u.dead, u.reported = time.Time{}, 0, false
	return e.emit(ctx, Event{Kind: UnansweredEnded, At: now})
}

// goneAfter says whether a peer whose frames this node can neither verify
// nor use (Unverified, Unanswered), the last of them received at last, is
// gone at now: none for twice dead, and none waiting in a socket. A
// standby takes the report's end for the peer's silence, and takes over.
// Such a peer does not hear this node either (it holds another key, or
// cannot hear it: a one-way link), so if it was only late (a stall of its
// sender, a burst of loss), the two are active beside each other where a
// peer heard both ways is arbitrated at its next frame: one that holds
// another key until the fault ends, one that does not answer until this
// node yields to its returning frames (the machine's deafPeerSplit). One
// dead interval was a stall's length: the active's frames stopped for
// 29-33 ms at fast (27 ms) on an overloaded test machine, and the
// restarted standby it could not hear took over beside it until the link
// healed. The price is a slower takeover when such a peer really died, a
// fault on top of the one that made its frames unusable.
func (e *Endpoint) goneAfter(now, last time.Time, dead time.Duration) bool {
	if now.Sub(last) < 2*dead {
		return false
	}
	for i := range e.paths {
		if e.paths[i].queued() {
			return false // read at the loop's next turn
		}
	}
	return true
}

// unansState is what unanswered keeps: when the last such frame came, and
// the dead interval, the longer of the two nodes', that ends it; and,
// across reports, the newest boot of the peer's such frames came from and
// the highest number seen of it on each path.
type unansState struct {
	last     time.Time
	dead     time.Duration
	reported bool
	gen      uint64
	seq      []uint64
}

// unverState is what unverified keeps.
type unverState struct {
	since, last time.Time
	reported    bool
}

// twinState is what twin keeps of the newest twin.
type twinState struct {
	gen         uint64
	since, last time.Time
	seq         uint64
	reported    bool
}

// learn makes the sender of r, an authentic frame, the path's destination
// (the raw path turns unicast); a new address is made only when it
// changes.
func (e *Endpoint) learn(p *pathState, r *rxFrame) {
	var to net.Addr
	switch {
	case r.hasMAC && (!p.hasLearned || p.learned != r.mac):
		p.learned, p.hasLearned = r.mac, true
		p.io.setPeer(r.mac[:])
		to = &packet.Addr{HardwareAddr: net.HardwareAddr(append([]byte(nil), r.mac[:]...))}
	case r.from != nil:
		to = r.from
	default:
		return
	}
	e.mu.Lock()
	e.peers[r.path] = to
	e.mu.Unlock()
}

// agentView is what of a peer frame the agent acts on: the frame without
// its sequence, path, keys, echo and signature, and with its ages reduced
// to "none" or "some" unless frozen (a split brain arbitrates on frozen
// ages; live ones change with every frame and are used for nothing else).
func agentView(f Frame) Frame {
	f.Path, f.Key, f.Held, f.Seq, f.MAC = 0, 0, [HeldKeys]uint32{}, 0, [32]byte{}
	f.EchoGeneration, f.EchoSeq, f.SyncAcked = 0, 0, 0
	f.Flags &^= FlagLate // the peer's loop, not what it says
	if f.Flags&FlagSplitBrain == 0 {
		f.ActiveFor, f.LastNewSession = min(f.ActiveFor, 0), min(f.LastNewSession, 0)
	}
	return f
}

// expire reports paths silent for the dead interval, and the peer once all
// are. Deadlines are monotonic readings, so a wall-clock step changes
// nothing. A path whose socket still holds frames that its reader has not
// taken is not silent: the reader is late, not the peer; recheck asks to
// look again shortly. That grace ends a dead interval later, so a reader
// that never runs again cannot keep a dead peer alive.
func (e *Endpoint) expire(ctx context.Context, now time.Time, peerAlive *bool) (recheck, ok bool) {
	anyUp := false
	dead := e.judgeDead()
	for i := range e.paths {
		p := &e.paths[i]
		if silent := now.Sub(p.silentSince()); p.up && silent >= dead {
			if silent < 2*dead && p.queued() {
				e.stats.queuedAtExpiry.Add(1)
				recheck = true
			} else {
				// Nothing crosses a path that is down: when it
				// comes back, the peer's first frame that echoes
				// ours says PathHeard again (the agent forgets it
				// on PathDown).
				p.up, p.heardBack = false, false
				if !e.emit(ctx, Event{Kind: PathDown, Path: p.Name, At: now}) {
					return false, false
				}
			}
		}
		anyUp = anyUp || p.up
	}
	if *peerAlive && !anyUp {
		*peerAlive = false
		// The peer's next frame, whatever it says, is news.
		e.reportedView, e.reportedAt = Frame{}, time.Time{}
		return false, e.emit(ctx, Event{Kind: PeerLost, At: now})
	}
	return recheck, true
}

// judgeEcho reports, from the echo in f (the peer's, received on p at at),
// that the peer hears us on p again or no longer does; false when ctx
// ended. Not from a late frame (FlagLate) as long as its echo is within
// lateEchoes: it echoes what the peer's loop read before a pause, which
// says that the loop was late, not whether the link carries our frames.
// Taken for a one-way link, every stall of the peer's loop at turbo
// warned of one on every path. The peer's next frame says.
func (e *Endpoint) judgeEcho(ctx context.Context, p *pathState, f *Frame, at time.Time) bool {
	if f.Flags&FlagLate != 0 {
		if age, ok := e.echoAge(f, at); ok && age <= lateEchoes*e.judgeDead()+p.echo.least() {
			return true
		}
	}
	heard := e.echoFresh(p, f, at)
	if heard == p.heardBack || !heard && !e.sentWithin(at, p.genAt, e.roundTrip(p)) {
		return true
	}
	p.heardBack = heard
	kind := PathUnheard
	if heard {
		kind = PathHeard
	}
	return e.emit(ctx, Event{Kind: kind, Path: p.Name, At: at})
}

// echoFresh says whether f, from the peer on path p, echoes a frame of
// ours that left within a dead interval and the round trip the path
// allows for (roundTrip) before at. A new echo is a sample of it.
func (e *Endpoint) echoFresh(p *pathState, f *Frame, at time.Time) bool {
	age, ok := e.echoAge(f, at)
	if !ok {
		return false
	}
	p.echo.sample(f.EchoSeq, age, at)
	return age <= e.judgeDead()+e.roundTrip(p)
}

// roundTrip is the round trip p's echoes allow for. Their least age is
// the round trip and the peer's wait for its next send, a constant up to
// an interval set by the phase between the two timers. Within an
// interval it is a short link, and none is allowed: a fresh echo is then
// at most two intervals old (our interval and the round trip), within
// the dead interval by one. Allowed whole there, the phase made a one-way
// link said up to an interval late (a split at the default profile
// lasted 100 ms longer). Longer is a long link, allowed whole, the phase
// a margin against its jitter (TestLongLinkIsNoOneWayLink failed under
// load with an interval taken off). sentWithin takes the same, or an echo
// that had just gone stale still found a frame the peer should have
// echoed since: a node back from a pause of its own took its peer's
// queued frames for a one-way link.
func (e *Endpoint) roundTrip(p *pathState) time.Duration {
	if least := p.echo.least(); least > e.cfg.Interval {
		return least
	}
	return 0
}

// echoAge is how long before at this node sent the frame f echoes; false
// when f echoes none this node remembers sending.
func (e *Endpoint) echoAge(f *Frame, at time.Time) (time.Duration, bool) {
	if f.EchoGeneration != e.cfg.Generation || f.EchoSeq == 0 {
		return 0, false
	}
	s := e.sent[f.EchoSeq%sentRing]
	if s.seq != f.EchoSeq {
		return 0, false
	}
	return at.Sub(s.at), true
}

// lateEchoes bounds, in dead intervals and a round trip, the age of a late
// frame's echo that is not judged: the echo was fresh when the peer's loop
// last ran, and its relief covers a loop that does not run for reliefFor
// dead intervals at most. An older one is judged after all, so a one-way
// link is still said beside a peer whose loop is late at every wake-up,
// and marks every frame.
const lateEchoes = reliefFor + 1

// sentWithin says whether this node sent a frame that the peer, hearing
// it, would have echoed by at: one sent within a dead interval before at
// and at least half of one before (the peer sends at least twice a dead
// interval), both a round trip rtt earlier, and not before since, when
// the peer's process started. Only then can a frame received at at,
// echoing none of ours that fresh, show that the peer does not hear us.
// After a pause of this node's own (a stopped virtual machine), the
// peer's frames that queued meanwhile, and those on their way when it
// sent again, echo nothing fresh because nothing was sent, not because
// the link lost it; a node that took them for a one-way link yielded to
// the one-way rule instead of arbitrating. And a peer restarted within a
// dead interval (systemctl restart) sends before it hears anything: its
// peer warned of a one-way link on every path. Looked at only when the
// path would turn unheard.
func (e *Endpoint) sentWithin(at, since time.Time, rtt time.Duration) bool {
	dead := e.judgeDead()
	for _, s := range e.sent {
		if age := at.Sub(s.at) - rtt; s.seq != 0 && age >= dead/2 && age <= dead && !s.at.Before(since) {
			return true
		}
	}
	return false
}

// roundTrip follows a path's round trip: the least age, when it came back,
// of a frame of ours the peer echoed for the first time, over the last
// one to two windows. A peer that hears us echoes our newest frame at
// its next send, so the least age is the way there and back. Only new
// echoes count: a peer that stops hearing us echoes the same frame,
// older and older, and that is the one-way link the echo is there to
// show. Without it, a link whose round trip is over the dead interval
// less an interval (18 ms at the fast profile, 4 ms at turbo: two sites
// apart) was one-way on every path, both ways, for as long as it ran
// (TestLongLinkIsNoOneWayLink).
type roundTrip struct {
	seq  uint64    // the newest echo sampled
	from time.Time // when the current window began
	// cur and prev are the least samples of the current window and the
	// one before, if it has any (hasCur, hasPrev).
	cur, prev       time.Duration
	hasCur, hasPrev bool
}

// rttWindow is how long a window of round-trip samples lasts.
const rttWindow = 2 * time.Second

// sample takes the age of our frame seq, echoed at at.
func (r *roundTrip) sample(seq uint64, age time.Duration, at time.Time) {
	if seq <= r.seq && r.hasCur {
		return
	}
	r.seq = seq
	if !r.hasCur || at.Sub(r.from) >= rttWindow {
		r.prev, r.hasPrev = r.cur, r.hasCur
		r.cur, r.hasCur, r.from = age, true, at
		return
	}
	r.cur = min(r.cur, age)
}

// least is the round trip: the least sample of the two windows (0: none).
func (r *roundTrip) least() time.Duration {
	switch {
	case r.hasCur && r.hasPrev:
		return min(r.cur, r.prev)
	case r.hasCur:
		return r.cur
	}
	return 0
}

// judgeDead is the dead interval the peer is judged by: the longer of
// this node's and the one the peer's frames say it runs. Each node sends
// at its own interval, so while the two run different timers (a change
// made one node at a time) a node at fast would take a peer that sends
// every 100 ms for lost, and the peer, at the default profile, would
// never see it otherwise; by the longer, neither does (each runs at least
// three of its intervals to its dead interval). This node's own stalls
// are counted by its own, and restart the peer's by this one (Run).
func (e *Endpoint) judgeDead() time.Duration { return max(e.cfg.Dead, e.peerDead) }

// write sends b on path i: a socket through its sockIO, which names the
// peer without allocating; anything else through WriteTo.
func (e *Endpoint) write(p *pathState, i int, b []byte) error {
	if p.io != nil && p.io.direct {
		return p.io.writeTo(b)
	}
	e.mu.Lock()
	dst := e.peers[i]
	e.mu.Unlock()
	_, err := p.Conn.WriteTo(b, dst)
	return err
}

// queued tells whether the path's socket holds a frame not yet read
// (SIOCINQ). Connections that are not sockets (test pipes) never do.
func (p *pathState) queued() bool {
	return p.io != nil && p.io.inQueue() > 0
}

// nextDeadline is how long the loop may sleep before a deadline of its
// own: a path's silence, and the end of a report of a peer whose frames
// this node cannot use (Unanswered, Unverified). A standby takes over on
// that end, so it is kept on time, not left to the next send tick (up to
// an interval late, 100 ms at the default profile).
func (e *Endpoint) nextDeadline(now time.Time) time.Duration {
	next := e.cfg.Dead
	dead := e.judgeDead()
	for _, p := range e.paths {
		if p.up {
			if d := p.silentSince().Add(dead).Sub(now); d < next {
				next = d
			}
		}
	}
	if u := &e.unans; u.reported {
		next = min(next, e.goneIn(now, u.last, u.dead))
	}
	if u := &e.unver; u.reported {
		next = min(next, e.goneIn(now, u.last, dead))
	}
	return max(next, 0)
}

// goneIn is how long until goneAfter may say a peer whose last unusable
// frame came at last is gone. Past that, goneAfter waits on a frame still
// queued in a socket: the loop looks again shortly, as expire's recheck
// does, rather than spin until a reader takes it.
func (e *Endpoint) goneIn(now, last time.Time, dead time.Duration) time.Duration {
	if d := last.Add(2 * dead).Sub(now); d > 0 {
		return d
	}
	return e.cfg.Interval / 4
}

// sendAll sends this node's frame on every path; deaf says this node hears
// no peer (FlagDeaf), late that its echo is as old as a pause of the loop
// (FlagLate: a relief's frame, or the loop's first after a pause).
func (e *Endpoint) sendAll(buf []byte, deaf, late bool) {
	now := time.Now()
	e.mu.Lock()
	l := e.local
	var frozen FrozenAges
	if l.Frozen != nil {
		frozen = *l.Frozen
	}
	lapsed := !e.leaseEnd.IsZero() && now.After(e.leaseEnd) && l.Flags&FlagLocked == 0
	e.mu.Unlock()
	if e.fenced.Load() || lapsed {
		l.Flags |= FlagFault | FlagFenced
	}
	if deaf {
		l.Flags |= FlagDeaf
	}
	if late {
		l.Flags |= FlagLate
	}
	f := Frame{
		Cluster: e.cfg.Cluster, Node: e.cfg.Node, Role: l.Role, Flags: l.Flags, Dead: e.cfg.Dead,
		Generation: e.cfg.Generation, ActiveFor: -1, LastNewSession: -1,
		SyncWritten: l.SyncWritten, SyncAcked: l.SyncAcked,
	}
	if !l.ActiveSince.IsZero() {
		f.ActiveFor = now.Sub(l.ActiveSince)
	}
	if !l.LastNewSession.IsZero() {
		f.LastNewSession = now.Sub(l.LastNewSession)
	}
	if l.Frozen != nil {
		f.ActiveFor, f.LastNewSession = frozen.ActiveFor, frozen.LastNewSession
	}
	if e.seq > 0 {
		e.stats.sendGap(now.Sub(e.sent[e.seq%sentRing].at), e.cfg.Dead)
	}
	e.seq++
	f.Seq = e.seq
	// What the agent decided, not whether the core hears the peer (that
	// the peer hears us again is no news to answer) or whether its loop
	// ran late.
	if said := f.Flags &^ (FlagDeaf | FlagLate); f.Role != e.saidRole || said != e.saidFlags {
		e.saidRole, e.saidFlags, e.changedSeq = f.Role, said, e.seq
	}
	e.sent[e.seq%sentRing].seq, e.sent[e.seq%sentRing].at = e.seq, now
	key, ok := e.signer.Choose(e.peerHeld)
	if !e.peerKnown || !ok {
		key = int(e.seq % uint64(e.signer.Keys()))
	}
	for i := range e.paths {
		p := &e.paths[i]
		f.Path = uint8(i)
		// The generation echoed is the peer's newest on any path (what
		// proves the frame fresh to it); the sequence is what this path
		// heard itself, none if it heard nothing of that generation, so
		// the peer learns which direction of which path works.
		f.EchoGeneration, f.EchoSeq = e.repGen, 0
		switch {
		case e.repGen == 0:
			f.EchoGeneration = e.staleGen
		case p.peerGen == e.repGen:
			f.EchoSeq = p.peerSeq
		}
		b := e.signer.AppendFrame(buf[:0], &f, key)
		if err := e.write(p, i, b); err != nil {
			e.stats.sendErrors.Add(1)
			continue
		}
		e.stats.sent.Add(1)
	}
	sent := e.mono()
	e.sentAt.Store(sent)
	if e.sentPage != nil {
		e.sentPage.word(1).Store(sent)
	}
	e.relievedLast.Store(false)
}

// shareSent has the endpoint write when it sends in page, for its agent
// to read (SentPage). Before Run.
func (e *Endpoint) shareSent(page *SentPage) {
	page.word(0).Store(Mono() - e.mono())
	e.sentPage = page
}
