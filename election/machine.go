package election

import (
	"fmt"
	"time"
)

// Config is one node's view of the timers and itself.
type Config struct {
	Node      uint8
	Preferred bool
	Dead      time.Duration
	// StartupWindow is how long a starting node listens for its peer
	// before claiming the VIPs (default 3 dead intervals).
	StartupWindow time.Duration
	// HandoffBound is how long a leaving active waits for the standby to
	// say it holds the VIPs before it releases anyway, or, for a
	// switchover, stays (default 2 dead intervals, a second at least).
	// A planned handover keeps the VIPs until then (make before break),
	// so a long bound costs nothing when the standby takes over; two dead
	// intervals alone (10 ms at turbo) were shorter than a loaded
	// standby's claim, and a stop released the VIPs before anybody held
	// them, a switchover stayed beside a standby that had taken over.
	HandoffBound time.Duration
	// HoldDown damps a flapping link (0: off). A standby that lost its
	// peer within HoldDown of the peer's last return from a loss takes
	// over only once the peer has been silent for HoldDown, not for the
	// dead interval: a link going down and up faster than that makes no
	// role change per flap, while a failure that follows a quiet spell
	// still fails over at once.
	HoldDown time.Duration
	// CatchUpBound is how long an active in fault that kept its VIPs for
	// want of a standby waits, once a standby is back, for that standby
	// to hold its sessions before it steps down anyway (default
	// DefaultCatchUpBound); its standby waits twice that for it.
	CatchUpBound time.Duration
	// Generation is this node's heartbeat generation: of two active
	// twins (two hosts run as this node), the lower stays (Twin).
	Generation uint64
}

// Machine is one node's role state machine. The zero value is not usable;
// create with New.
type Machine struct {
	cfg Config

	role        Role
	locked      bool
	healthy     bool
	faultReason string
	// stallFault: the fault is this node's own stall past a lease
	// (Event.Stalled), which its heartbeat core told the peer of.
	stallFault  bool
	startedAt   time.Time
	activeSince time.Time
	// roleAt is when this node took its current role: a peer frame
	// received before it predates anything this role said.
	roleAt         time.Time
	lastNewSession time.Time

	// twin: another node runs under this node's name (twinned).
	twin bool
	// unverified: the peer's node sends frames no key of ours verifies,
	// or authentic ones this node cannot use, and nothing usable
	// (Unverified); unverifiedWhy says which, for the transition.
	unverified    bool
	unverifiedWhy string
	// deafSince is when this active node began to hear, in frames it
	// cannot use, an active peer that does not hear it and that it had
	// heard so before (Event.Resumed; deafPeerSplit). Zero: none.
	deafSince time.Time

	peerSeen bool
	peer     Peer
	down     map[string]bool // heartbeat paths down: degraded
	// heard says, per path, whether the peer hears us there; oneWayAt
	// is when the one-way split began (oneWay), zero while it does not
	// hold.
	heard    map[string]bool
	oneWayAt time.Time
	// written is this node's store position; peerActiveWritten the last
	// position the peer advertised while active.
	written           uint64
	peerActiveWritten uint64

	// The hold-down (Config.HoldDown): lostAt is when the peer was last
	// lost, lostGeneration its boot generation then; returnedAt when it
	// was last heard again after a loss from the same boot (flaps counts
	// those returns), holdUntil when a held-down takeover is due (zero:
	// none pending).
	lostAt, returnedAt, holdUntil time.Time
	lostGeneration                uint64
	flaps                         uint64

	holding       bool // the VIPs are claimed (ClaimVIPs until ReleaseVIPs)
	leaving       bool
	leaveDeadline time.Time
	exitAfter     bool // leaving for a graceful stop, not a switchover
	// switchDue: a switchover waits, until then, for the standby's
	// heartbeats to show every write of ours (awaitSwitchover);
	// switchForce is its --force. Zero: none waits.
	switchDue   time.Time
	switchForce bool

	// An active in fault beside a standby that came back with older
	// session state waits, from catchUpSince, for the standby's position
	// to reach catchUpMark (handOverInFault); its standby waits, from
	// peerFaultSince, for it to step down. Zero: nothing waits.
	catchUpSince   time.Time
	catchUpMark    uint64
	peerFaultSince time.Time
	// peerSince is when the peer was last heard anew: its first frame
	// after a loss, or of a new boot.
	peerSince time.Time
	// handedInFault: this node stepped down from active on a fault and
	// its peer has not yet taken over (takeBackInFault).
	handedInFault bool

	// splitSeen: both nodes are active (this one not leaving) and this
	// node has said so (SplitBrainStarted); frozen is its snapshot for
	// the arbitration, taken once the peer hears it (splitBrain).
	splitSeen bool
	frozen    *Facts

	acts []Action
}

// New makes a machine in INIT. Send Start before anything else.
func New(cfg Config) *Machine {
	if cfg.StartupWindow == 0 {
		cfg.StartupWindow = 3 * cfg.Dead
	}
	if cfg.HandoffBound == 0 {
		cfg.HandoffBound = DefaultHandoffBound(cfg.Dead)
	}
	if cfg.CatchUpBound == 0 {
		cfg.CatchUpBound = DefaultCatchUpBound
	}
	return &Machine{cfg: cfg, healthy: true, down: map[string]bool{}, heard: map[string]bool{}}
}

// Role is the current role.
func (m *Machine) Role() Role { return m.role }

// DefaultHandoffBound is Config.HandoffBound's default for a dead interval.
func DefaultHandoffBound(dead time.Duration) time.Duration { return max(2*dead, time.Second) }

// DefaultCatchUpBound is Config.CatchUpBound's default: a standby that
// restarted loads a 300,000-session snapshot (77 MB) in about two seconds
// here; an active in fault serves badly meanwhile, but it did before the
// standby came back too.
const DefaultCatchUpBound = 5 * time.Second

// HandoffBound is how long a planned handover waits for the standby to
// hold the VIPs.
func (m *Machine) HandoffBound() time.Duration { return m.cfg.HandoffBound }

// Locked says whether this node is locked.
func (m *Machine) Locked() bool { return m.locked }

// Peer is the peer's latest frame, and whether one was heard since the
// peer was last lost.
func (m *Machine) Peer() (Peer, bool) { return m.peer, m.peerSeen }

// Degraded lists the heartbeat paths that are down while the peer is
// still heard on another.
func (m *Machine) Degraded() []string {
	var out []string
	for p, d := range m.down {
		if d {
			out = append(out, p)
		}
	}
	return out
}

// Flaps is how often the peer came back after being lost, and until when
// a takeover is held down (zero: none pending).
func (m *Machine) Flaps() (flaps uint64, holdUntil time.Time) { return m.flaps, m.holdUntil }

// Quiet says that no rule of the machine's clock can fire before some
// other event comes: not starting, not handing over, no takeover held
// down, no active peer while active (a split, or a one-way link counting
// its dead interval). A quiet machine may be ticked seldom.
func (m *Machine) Quiet() bool {
	switch {
	case m.role == Init, m.leaving, !m.holdUntil.IsZero(), m.splitSeen, !m.switchDue.IsZero(), !m.catchUpSince.IsZero(), !m.peerFaultSince.IsZero():
		return false
	case m.role == Active && m.peerSeen && m.peer.Role == Active:
		return false
	}
	return true
}

// SplitBrain says whether this node is active with an active peer, and
// arbitrating with it or waiting for it to hear this node.
func (m *Machine) SplitBrain() bool { return m.splitSeen }

// Advert is what this node says in its frames now.
func (m *Machine) Advert() Advert {
	return Advert{
		Role: m.role, Locked: m.locked, Fault: m.role == Fault || !m.healthy,
		Leaving: m.leaving, SplitBrain: m.frozen != nil, Preferred: m.cfg.Preferred, Holding: m.holding,
		ActiveSince: m.activeSince, LastNewSession: m.lastNewSession, Frozen: m.frozen,
	}
}

// facts are this node's arbitration facts at now.
//
// Events come in the order the agent handles them, each stamped when it
// happened: a peer frame with the kernel's receive time, a new session
// with the time the store took it. So a frame handled after a new session
// may be stamped before it (the heartbeat core read the frame late: an
// active node's core reads its standby at its send tick), and the split it
// starts is frozen at an instant before the session. The session was still
// handled first, so it is this node's newest fact: its age is 0, not below
// zero, which arbitration reads as none (the node with the newest session
// yielded). The same holds for becoming active.
func (m *Machine) facts(now time.Time) Facts {
	f := Facts{Node: m.cfg.Node, Locked: m.locked, Preferred: m.cfg.Preferred, ActiveFor: -1, LastNewSession: -1}
	if !m.activeSince.IsZero() {
		f.ActiveFor = max(now.Sub(m.activeSince), 0)
	}
	if !m.lastNewSession.IsZero() {
		f.LastNewSession = max(now.Sub(m.lastNewSession), 0)
	}
	return f
}

func (m *Machine) emit(a Action) { m.acts = append(m.acts, a) }

// advertise asks for a frame now, saying what this node says at this step.
func (m *Machine) advertise() { m.emit(Action{Kind: Advertise, Advert: m.Advert()}) }

// claim and release are the one place the VIPs change hands.
func (m *Machine) claim() {
	m.holding = true
	m.emit(Action{Kind: ClaimVIPs})
}

func (m *Machine) release() {
	m.holding = false
	m.emit(Action{Kind: ReleaseVIPs})
}

// Step feeds one event and returns the actions to take, in order.
func (m *Machine) Step(ev Event) []Action {
	m.acts = nil
	m.written = ev.Written
	switch ev.Kind {
	case Start:
		m.startedAt = ev.Now
		m.advertise()
	case Tick:
		if m.startedAt.IsZero() {
			return nil // the start-up window has not begun
		}
		m.tick(ev.Now)
		m.oneWaySplit(ev.Now)
		m.deafPeerSplit(ev.Now)
	case PeerFrame:
		m.peerFrame(ev)
	case PeerLost:
		m.peerLost(ev.Now)
	case PathDown, PathUp:
		m.down[ev.Path] = ev.Kind == PathDown
		if ev.Kind == PathDown {
			// Nothing crosses a path that is down; the heartbeat core
			// forgets the peer's echo there too, and says Heard again
			// when it comes back.
			delete(m.heard, ev.Path)
		}
	case Lock:
		m.lock(ev)
	case Health:
		m.health(ev)
	case VIPRemoved:
		if m.role == Active && !m.leaving {
			m.claim()
		}
	case Stop:
		m.handOff(ev.Now, true, false)
	case Switchover:
		m.handOff(ev.Now, false, ev.Force)
	case Twin:
		m.twinned(ev)
	case Unverified:
		m.unverified, m.unverifiedWhy = ev.Unverified, ev.Reason
		switch {
		case !ev.Unverified || !ev.Resumed || m.role != Active:
			m.deafSince = time.Time{}
		case m.deafSince.IsZero():
			m.deafSince = ev.Now
		}
		if !m.unverified && m.role == Standby && !m.peerSeen && m.holdUntil.IsZero() {
			m.takeOver(ev.Now, "peer silent: the heartbeats this node could not verify or use stopped")
		}
	case NewSession:
		m.lastNewSession = ev.Now
	case Heard:
		m.heard[ev.Path] = ev.Heard
	}
	if ev.Kind != Switchover {
		m.awaitSwitchover(ev.Now)
	}
	switch {
	case !m.oneWay():
		m.oneWayAt = time.Time{}
	case m.oneWayAt.IsZero():
		m.oneWayAt = ev.Now
	}
	return m.acts
}

// become is the one place roles change.
func (m *Machine) become(to Role, now time.Time, reason string) {
	from := m.role
	if from == to {
		return
	}
	m.role = to
	m.roleAt = now
	switch {
	case to == Active:
		m.activeSince = now
		// Say ACTIVE before claiming, so that a peer that is active
		// too sees the split a claim earlier; then claim, then say
		// Holding, which a leaving peer waits for before it releases
		// (make-before-break: no moment without a holder).
		m.advertise()
		m.claim()
	case from == Active:
		m.activeSince = time.Time{}
		m.release()
	}
	if to != Active {
		m.frozen, m.splitSeen = nil, false
		m.leaving = false
		m.deafSince = time.Time{}
	}
	m.catchUpSince, m.peerFaultSince = time.Time{}, time.Time{}
	m.handedInFault = from == Active && to == Fault && !m.twin
	m.emit(Action{Kind: Transition, From: from, To: to, Reason: reason})
	if from == Standby && to == Active {
		m.emit(Action{Kind: NotifyFailover, From: from, To: to, Reason: reason, PeerWritten: m.peerActiveWritten})
	}
	if to == Standby && m.peerSeen {
		// A standby that starts beside an active in fault with newer
		// sessions may have loaded them before it hears that active's
		// next frame; judged only then, it took over at once, before
		// the active had seen it caught up: a split brain the active
		// won, and a session dropped on each node's resync (CI).
		m.awaitFaultedPeer(now)
	}
	m.advertise()
}

// awaitFaultedPeer starts the wait for an active peer in fault with newer
// session state to hand it over (the Standby rule in peerFrame).
func (m *Machine) awaitFaultedPeer(now time.Time) {
	p := m.peer
	if !m.peerFaultSince.IsZero() || p.Role != Active || !p.Fault || p.Leaving || p.Fenced || p.Locked || !m.peerNewer() {
		return
	}
	m.peerFaultSince = now
	m.emit(Action{Kind: Report, Reason: fmt.Sprintf("peer in fault, with newer session state (position %d, ours %d): taking over once it hands over", p.Written, m.written)})
}

// heardAnywhere says whether the peer hears us on some path.
func (m *Machine) heardAnywhere() bool {
	for _, h := range m.heard {
		if h {
			return true
		}
	}
	return false
}

// unheard says whether this node hears its peer but the peer hears it on
// no path: a one-way link.
func (m *Machine) unheard() bool { return m.peerSeen && !m.heardAnywhere() }

// oneWay says both nodes are active, neither leaving, and the peer, not
// fenced, does not hear this node: a one-way split (oneWaySplit).
func (m *Machine) oneWay() bool {
	return m.role == Active && !m.leaving && m.peerSeen && m.peer.Role == Active && !m.peer.Leaving && !m.peer.Fenced && m.unheard()
}

// oneWaySplit handles both nodes active while the peer does not hear us
// (design.md section 4): the peer can never learn it lost an arbitration,
// so both would stay active for as long as the fault lasts. This node, the
// one that sees the whole picture, yields, once the condition has held for
// a dead interval (after a healed isolation both hear each other within an
// interval and arbitrate as usual). A locked node never changes role by
// itself: it reports. Not to a fenced peer: its agent hangs and its core
// lets the VIPs go to this node.
//
// The interval counts from when the condition began (oneWayAt, read after
// every event). It was taken from the frame that turned the peer active,
// and a fenced active's frame took no start: a frozen active's first
// frames after it thawed said ACTIVE and fenced, and this node yielded at
// its next tick, measured from long before; the thawed node then took
// the VIPs back (CI; TestOneWaySplitCountsFromWhenItBegan).
func (m *Machine) oneWaySplit(now time.Time) {
	if !m.oneWay() || now.Sub(m.oneWayAt) < m.cfg.Dead {
		return
	}
	if m.locked {
		m.emit(Action{Kind: Report, Reason: "one-way link: both nodes active and the peer does not hear this locked node; fix the link or unlock"})
		return
	}
	m.become(Standby, now, "one-way link: the peer is active and does not hear this node; yielding")
}

// deafPeerSplit handles both nodes active while the peer does not hear
// this node and this node cannot use the peer's frames: it took over when
// the frames of an active that cannot hear it (they echo an earlier boot
// of its) stopped for twice the dead interval, and they came back from the
// same boot, numbered past those it saw (Event.Resumed). The peer was late
// (its sender stalled, or the link lost a burst), not gone, and will never
// learn of this node to arbitrate, so, as in oneWaySplit, this node yields
// once it has held for a dead interval; a peer that hears this node again
// within it is arbitrated with as usual. Its frames carry no echo this
// node can check, so they could be a recording of frames it never
// received (played by someone who kept them from it, and then only a
// continuation of the same boot): that keeps this node from the VIPs for
// as long as it plays, which any recording of the peer could already do
// to a starting node, and never makes two holders.
func (m *Machine) deafPeerSplit(now time.Time) {
	if m.role != Active || m.leaving || m.deafSince.IsZero() || now.Sub(m.deafSince) < m.cfg.Dead {
		return
	}
	if m.locked {
		m.emit(Action{Kind: Report, Reason: "one-way link: both nodes active and the peer, which does not hear this locked node, came back after a silence; fix the link or unlock"})
		return
	}
	m.become(Standby, now, "one-way link: the peer, active and unable to hear this node, was only late; yielding")
}

// peerNewer says whether the peer holds newer session state than this
// node: a node that restarted with an empty or older store must never
// become active over it.
func (m *Machine) peerNewer() bool { return m.peerSeen && m.peer.Written > m.written }

func (m *Machine) eligible() bool { return m.healthy && !m.locked }

// PeerEligible says whether the peer would take the VIPs if this node gave
// them up: a standby heard, not locked, in fault or stopping.
func (m *Machine) PeerEligible() bool { return m.peerEligible() }

// peerEligible says whether the peer would take the VIPs if we gave them up.
func (m *Machine) peerEligible() bool {
	return m.peerSeen && m.peer.Role == Standby && !m.peer.Locked && !m.peer.Fault && !m.peer.Leaving
}

// peerIneligible says why the peer would not take the VIPs, for an
// operator whose switchover it refuses.
func (m *Machine) peerIneligible() string {
	switch p := m.peer; {
	case !m.peerSeen:
		return "the peer is not heard"
	case p.Locked:
		return "the peer is locked"
	case p.Fault:
		return "the peer is in fault"
	case p.Leaving:
		return "the peer is stopping"
	default:
		return fmt.Sprintf("the peer is %v", p.Role)
	}
}

func (m *Machine) tick(now time.Time) {
	switch {
	case m.role == Standby && !m.holdUntil.IsZero() && !now.Before(m.holdUntil):
		m.holdUntil = time.Time{}
		m.takeOver(now, fmt.Sprintf("peer lost: silent for %v, past the hold-down of a flapping link (%d flaps)", now.Sub(m.lostAt)+m.cfg.Dead, m.flaps))
	case m.role == Init && m.peerSeen && m.peer.Role == Active && !m.peer.Leaving && !m.healthy:
		// FAULT, not STANDBY, as at the end of the start-up window:
		// its checks fail. When they recover it becomes the standby,
		// and takes over at once if the peer fell silent meanwhile; a
		// STANDBY whose checks failed from the start was never looked
		// at again when they recovered, and stayed one with nobody
		// active.
		m.become(Fault, now, "start-up: "+m.faultReason)
	case m.role == Init && m.peerSeen && m.peer.Role == Active && !m.peer.Leaving:
		m.become(Standby, now, "start-up: peer is active")
	case m.role == Init && m.peerSeen && m.cfg.Preferred && m.eligible() && m.peer.Role != Active && !m.peerNewer():
		m.become(Active, now, fmt.Sprintf("start-up: preferred node, peer is %v", m.peer.Role))
	case m.role == Init && now.Sub(m.startedAt) >= m.cfg.StartupWindow:
		m.endStartup(now)
	case m.role == Active && !m.catchUpSince.IsZero() && !now.Before(m.catchUpSince.Add(m.cfg.CatchUpBound)):
		m.catchUpSince = time.Time{}
		if !m.healthy && !m.locked && m.peerEligible() {
			m.become(Fault, now, fmt.Sprintf("fault: %s (the standby did not catch up within %v: handing over without the sessions it lacks)", m.faultReason, m.cfg.CatchUpBound))
		}
	case m.role == Standby && !m.peerFaultSince.IsZero() && !now.Before(m.peerFaultSince.Add(2*m.cfg.CatchUpBound)):
		m.peerFaultSince = time.Time{}
		if m.peerSeen && m.peer.Role == Active && m.peer.Fault {
			m.takeOver(now, fmt.Sprintf("peer in fault (it did not hand over its newer sessions within %v)", 2*m.cfg.CatchUpBound))
		}
	case m.role == Active && m.leaving && !now.Before(m.leaveDeadline) && m.exitAfter:
		m.finishHandOff(now, fmt.Sprintf("handoff: peer did not take over within %v", m.cfg.HandoffBound))
	case m.role == Active && m.leaving && !now.Before(m.leaveDeadline) && m.peer.Role == Active:
		// The peer took over and has not yet said it holds the VIPs:
		// staying would make two actives, and a split brain to
		// arbitrate, out of a planned switchover.
		m.finishHandOff(now, fmt.Sprintf("handoff: peer is active (it did not say it holds the VIPs within %v)", m.cfg.HandoffBound))
	case m.role == Active && m.leaving && !now.Before(m.leaveDeadline):
		// A switchover the peer did not take up: stay active rather
		// than leave nobody holding the VIPs.
		m.leaving = false
		m.emit(Action{Kind: Refused, Reason: fmt.Sprintf("switchover: peer did not take over within %v; staying active", m.cfg.HandoffBound)})
		m.advertise()
	}
}

// endStartup runs when the start-up window ends without the peer having
// settled our role.
func (m *Machine) endStartup(now time.Time) {
	if !m.healthy {
		m.become(Fault, now, "start-up: "+m.faultReason)
		return
	}
	if !m.peerSeen {
		if m.unverified {
			// Whatever sends them is there, and may hold the VIPs:
			// two holders are worse than none until the keys agree.
			why := m.unverifiedWhy
			if why == "" {
				why = "the peer's heartbeats cannot be verified or used"
			}
			m.become(Standby, now, "start-up: "+why+"; not taking the VIPs beside it")
			return
		}
		if m.locked {
			m.become(Standby, now, "start-up: peer silent, but this node is locked")
			return
		}
		m.become(Active, now, fmt.Sprintf("start-up: peer silent for %v", m.cfg.StartupWindow))
		return
	}
	switch {
	case m.peer.Role == Active:
		m.become(Standby, now, "start-up: peer is active")
	case m.peer.Role == Init && m.peer.Facts.Preferred && !m.peer.Locked && !m.peer.Leaving && !(m.written > m.peer.Written):
		m.become(Standby, now, "start-up: preferred peer is starting")
	case m.peerNewer() && m.peer.Locked && !m.peer.Fault:
		// A locked peer will not take over, so nobody is active; but
		// this node, active, would stream its empty or older store to
		// it, and it would drop every session it kept for the pair (the
		// restarted active of a pair whose standby was locked lost them
		// all, on both nodes). The operator who locked it decides:
		// unlocked, it takes over with every session; stopped, it lets
		// this node take over without them.
		why := fmt.Sprintf("start-up: peer holds newer session state (position %d, ours %d)", m.peer.Written, m.written)
		m.become(Standby, now, why)
		m.emit(Action{Kind: Report, Reason: why + " and is locked: nobody is active. Unlock the peer and it takes over with every session; stop its hapaird and this node takes over without them"})
	case m.peerNewer() && !m.peer.Fault:
		m.become(Standby, now, fmt.Sprintf("start-up: peer holds newer session state (position %d, ours %d)", m.peer.Written, m.written))
	case m.locked:
		m.become(Standby, now, "start-up: no active node, but this node is locked")
	default:
		m.become(Active, now, fmt.Sprintf("start-up: peer is %v", m.peer.Role))
	}
}

func (m *Machine) peerFrame(ev Event) {
	prev, prevSeen := m.peer, m.peerSeen
	m.peer, m.peerSeen = ev.Peer, true
	p := ev.Peer
	if !prevSeen || p.Generation != prev.Generation {
		m.peerSince = ev.Now
	}
	if !prevSeen && !m.lostAt.IsZero() {
		// Back after a loss from the same boot: one flap of the link. A
		// peer back from a restart (an upgrade, a crash, a reboot) says
		// nothing of the link, and counting it held the next takeover
		// down: restart the standby, switch over to it, and a failure of
		// that new active within hold_down waited hold_down.
		if p.Generation == m.lostGeneration {
			m.returnedAt = ev.Now
			m.flaps++
		}
		m.lostAt, m.holdUntil = time.Time{}, time.Time{}
	}
	if p.Role == Active {
		m.peerActiveWritten = p.Written
	}
	if m.role == Standby && prevSeen && prev.Role == Active && p.Generation != prev.Generation && p.Role != Active {
		// The active's daemon restarted faster than the dead interval:
		// it is gone with every session it held, and this standby holds
		// every acknowledged write. It takes over; the restarted node
		// resynchronises from it. Not when the new boot already says
		// ACTIVE: its start-up rules let it take over only when this
		// node could not (its hapaird stopped, its core fenced it) or
		// held no newer sessions, and it may have taken sessions since.
		// Taking over then made a split brain that the restarted node
		// won (it is active longest), or lost only on a session this
		// node took in its milliseconds as an active.
		m.takeOver(ev.Now, "peer restarted: the old active is gone")
		return
	}
	if p.Role == Active {
		m.handedInFault = false
	}
	switch m.role {
	case Fault:
		if p.Role != Active && (p.Leaving || p.Locked || p.Fault) {
			m.takeBackInFault(ev.Now, m.peerIneligible())
		}
	case Init:
		// Decided at the next tick, on the newest frame: after a link
		// comes back, frames queued while it was down arrive first, and
		// the first frame a starting node hears may be stale.
	case Standby:
		if p.Role != Active || !p.Fault {
			m.peerFaultSince = time.Time{}
		}
		switch {
		case p.Role == Active && p.Fault && p.Locked && !p.Leaving:
			// A locked active keeps its role through a fault (section
			// 5) and its VIPs with it: taking over made two actives,
			// and the arbitration the locked one wins, again at every
			// frame (a standby that went ACTIVE and back every 10 ms).
			if !(prevSeen && prev.Role == Active && prev.Fault && prev.Locked) {
				m.emit(Action{Kind: Report, Reason: "peer in fault, but locked: it keeps its role and the VIPs; not taking over"})
			}
		case p.Role == Active && p.Fault && !p.Leaving && !p.Fenced && (m.peerNewer() || !m.peerFaultSince.IsZero()):
			// An active in fault that kept its VIPs for want of a
			// standby (this one was stopped, locked, in fault) hands
			// them over, stepping down to FAULT, once this node holds
			// its sessions (handOverInFault). Taking over first, with an
			// older store, dropped them on both nodes: this one never
			// had them, and the old active resynchronised from it. Not
			// from a fenced peer (its agent hangs: it catches nobody
			// up) or a leaving one; bounded (tick) for an older peer,
			// which does not wait. Once waiting, it waits on after it
			// has caught up, for the peer's word: taking over at the
			// frame that shows it caught up, before the peer had seen
			// it, made a split brain that the peer won (it is active
			// longest), and writes it took meanwhile were lost when it
			// then stepped down (a soak: 31).
			m.awaitFaultedPeer(ev.Now)
		case p.Role == Active && (p.Leaving || p.Fault):
			why := "peer leaving"
			if p.Fault {
				why = "peer in fault"
			}
			m.takeOver(ev.Now, why)
		case p.Role == Fault:
			m.takeOver(ev.Now, "peer in fault")
		case p.Role == Standby && p.Fault && !p.Leaving && !ev.Now.Before(m.roleAt):
			// Nobody holds the VIPs and the peer cannot take them: its
			// checks fail, or its agent stopped and its heartbeat core
			// fenced it. Newer sessions there do not hold this node
			// back, as they do not at the end of the start-up window:
			// a restarted active that deferred to a standby whose
			// hapaird was stopped left nobody active for as long as it
			// stayed stopped.
			m.takeOver(ev.Now, "no active node: the peer is in fault")
		case p.Role == Standby && !p.Leaving && !m.peerNewer() && (m.cfg.Preferred || p.Locked || m.written > p.Written) && !ev.Now.Before(m.roleAt):
			// Nobody holds the VIPs. The node with the newer session
			// state takes them, else the preferred node, or we do when
			// the peer is locked and never will. Not on a frame that
			// came before this node became a standby: one queued while
			// it did not run (a frozen active, back as a standby
			// after its lease ran out) tells of a peer that has since
			// taken over; the peer answers this node's change with a
			// frame of its own, which says.
			m.takeOver(ev.Now, "no active node")
		}
	case Active:
		switch {
		case m.leaving && p.Role == Active && p.Holding:
			m.finishHandOff(ev.Now, "handoff: peer is active")
		case m.leaving && p.Role != Active && p.Leaving && m.exitAfter:
			// Both stop at once (a playbook run on the pair): nobody
			// will take the VIPs, so do not wait for anybody.
			m.finishHandOff(ev.Now, "stopping: the peer is stopping too")
		case m.leaving && p.Role != Active && p.Leaving:
			m.leaving = false
			m.emit(Action{Kind: Refused, Reason: "switchover: the peer is stopping; staying active"})
			m.advertise()
		case m.leaving && p.Role == Standby && (p.Locked || p.Fault):
			// Locked or failing after the handover began (an operator
			// locked it in the same instant, before its frame said
			// so): it will not take over. Said now, not at the bound.
			why := "locked"
			if p.Fault {
				why = "in fault"
			}
			if m.exitAfter {
				m.finishHandOff(ev.Now, "stopping: the peer is "+why+", nobody to hand over to")
				break
			}
			m.leaving = false
			m.emit(Action{Kind: Refused, Reason: "switchover: the peer is " + why + "; staying active"})
			m.advertise()
		case m.leaving && p.Role == Active:
			// It said ACTIVE and is claiming: keep the VIPs until it
			// says it holds them.
		case p.Role == Active && p.Fenced:
			// Its agent hangs, and its heartbeat core says FAULT under
			// the role the agent last gave: it lets the VIPs go once
			// this node holds them, and the agent comes back a standby.
			// No split brain: taken for one, it alerted the operator,
			// and the hung node's frozen facts (a split it was in when
			// it stopped) won the arbitration, so this node yielded to
			// a node that cannot act, and took over again at its next
			// frame. A split seen before it hung is over, and this
			// node announces again, as at the end of any split.
			if m.splitSeen {
				m.frozen, m.splitSeen = nil, false
				m.claim()
				m.advertise()
			}
		case p.Role == Active && !p.Leaving && !m.leaving && m.stallFault && !m.locked:
			// This node stalled past its lease and kept the VIPs, its
			// last word of the peer, from before the stall, saying
			// that the peer could not take them (in fault, say). The
			// peer's frames since, read in the stall's fault, say it
			// took over at the fence its core sent: it holds them
			// rightly, and this node steps down. Taken for a split
			// brain, it alerted the operator, and this node, active
			// longest, took the VIPs back from the one that had
			// served while it hung.
			m.become(Fault, ev.Now, "the peer took over while this node stalled")
		case p.Role == Active && !p.Leaving && !m.leaving:
			m.splitBrain(ev.Now, p)
		case !m.healthy && !m.locked && m.peerEligible():
			m.handOverInFault(ev.Now)
		case m.splitSeen && p.Role != Active:
			// The peer stepped down: the split is over. Claim again:
			// the loser's announcements may have pointed clients at
			// it, and ours must win them back.
			m.frozen, m.splitSeen = nil, false
			m.claim()
			m.advertise()
		}
	}
}

// handOverInFault runs on an active in fault beside a standby that would
// take its VIPs: at each frame of a standby that comes back after the
// fault kept them here for want of one, and at a fault that finds the
// standby just back or still loading (health). It steps down (FAULT; the
// standby takes over) once the standby holds every session this node had
// when it began to wait. A standby that restarted holds none until it has
// loaded a snapshot from this node; handing over before dropped them all,
// on both nodes (this one resynchronises from the new active). Bounded by
// CatchUpBound (tick).
func (m *Machine) handOverInFault(now time.Time) {
	switch {
	case m.catchUpSince.IsZero() && m.peer.Written >= m.written:
		m.become(Fault, now, "fault: "+m.faultReason+" (an eligible standby is back)")
	case m.catchUpSince.IsZero():
		m.catchUpSince, m.catchUpMark = now, m.written
		m.emit(Action{Kind: Report, Reason: fmt.Sprintf("fault on the active node; the standby holds older session state (position %d, ours %d): keeping the VIPs until it has caught up, at most %v", m.peer.Written, m.written, m.cfg.CatchUpBound)})
	case m.peer.Written >= m.catchUpMark:
		m.become(Fault, now, "fault: "+m.faultReason+" (the standby has caught up)")
	}
}

// takeBackInFault makes a node that stepped down from active on a fault
// active again, in fault, when the standby it stepped down for will not
// take over after all: it was stopping, or locked, or failed, in the same
// instant (its frame saying so was not yet in), or it was lost. Design
// section 5: with nobody better to hand to, the active keeps its VIPs in
// fault, as it does when the fault finds no eligible standby; and both in
// fault, the one that was active keeps them. Nobody held them otherwise
// until the peer came back, which then took over with an empty store
// over this node's sessions (a soak: the standby stopped and the active's
// service died 16 ms later). Then, as for any active in fault, a standby
// that comes back takes over once it holds this node's sessions.
func (m *Machine) takeBackInFault(now time.Time, why string) {
	if !m.handedInFault || m.locked || m.healthy || m.twin {
		return
	}
	m.become(Active, now, "fault: "+m.faultReason+"; "+why+": keeping the VIPs in fault")
}

// takeOver makes a standby active if it may.
func (m *Machine) takeOver(now time.Time, why string) {
	switch {
	case m.locked:
		m.emit(Action{Kind: Report, Reason: why + ": not taking over, this node is locked"})
	case !m.healthy:
		m.emit(Action{Kind: Report, Reason: why + ": not taking over, this node is in fault"})
	default:
		m.become(Active, now, why)
	}
}

func (m *Machine) peerLost(now time.Time) {
	m.peerSeen = false
	m.lostGeneration = m.peer.Generation
	m.peer = Peer{}
	for p := range m.down {
		delete(m.down, p)
	}
	for p := range m.heard {
		delete(m.heard, p)
	}
	m.lostAt = now
	m.catchUpSince, m.peerFaultSince = time.Time{}, time.Time{}
	why := fmt.Sprintf("peer lost: all paths silent for %v", m.cfg.Dead)
	switch {
	case m.role == Standby && m.heldDown(now):
		m.holdUntil = now.Add(m.cfg.HoldDown - m.cfg.Dead)
		// The same words every time (the count is in status): the
		// agent says a repeated report once.
		m.emit(Action{Kind: Report, Reason: fmt.Sprintf("%s again within %v of coming back: a flapping link; taking over only if it stays silent for %v (hold_down)", why, m.cfg.HoldDown, m.cfg.HoldDown)})
	case m.role == Standby:
		m.takeOver(now, why)
	case m.role == Fault:
		m.takeBackInFault(now, "the peer was lost before it took over")
	case m.role == Active && m.leaving:
		m.finishHandOff(now, "handoff: "+why)
	case m.role == Active && m.splitSeen:
		m.frozen, m.splitSeen = nil, false
		m.advertise()
	}
}

// heldDown says whether a takeover on a peer lost now waits for the
// hold-down: the peer came back from a loss within HoldDown.
func (m *Machine) heldDown(now time.Time) bool {
	return m.cfg.HoldDown > m.cfg.Dead && !m.returnedAt.IsZero() && now.Sub(m.returnedAt) < m.cfg.HoldDown
}

func (m *Machine) lock(ev Event) {
	if m.locked == ev.Locked {
		return
	}
	m.locked = ev.Locked
	// Unlocked: what the lock held back happens now.
	switch {
	case !m.locked && !m.healthy && m.role == Active && !m.peerEligible() && !m.twin:
		// As for a fault that comes unlocked: a degraded service beats
		// none, and a standby that comes takes over (peerFrame).
		m.emit(Action{Kind: Report, Reason: "unlocked in fault, but no eligible standby: keeping the VIPs: " + m.faultReason})
		m.advertise()
	case !m.locked && !m.healthy && (m.role == Active || m.role == Standby):
		m.become(Fault, ev.Now, "fault (held while locked): "+m.faultReason)
	case !m.locked && m.healthy && m.role == Fault:
		m.become(Standby, ev.Now, "checks recovered (while locked)")
		m.takeOverAlone(ev.Now, "unlocked, checks recovered")
	case !m.locked && m.healthy && m.role == Standby && !m.peerSeen && !m.unverified:
		m.become(Active, ev.Now, "unlocked with the peer lost")
	default:
		m.advertise()
	}
}

func (m *Machine) health(ev Event) {
	if ev.Healthy == m.healthy || ev.Healthy && m.twin {
		return
	}
	m.healthy = ev.Healthy
	m.faultReason = ev.Reason
	m.stallFault = !ev.Healthy && ev.Stalled
	m.catchUpSince = time.Time{}
	switch {
	case m.locked && m.role != Init:
		// A locked node reports its checks but keeps its role, VIPs
		// included: the operator has said no failover now.
		if ev.Healthy {
			m.emit(Action{Kind: Report, Reason: "checks recovered on a locked node"})
		} else {
			m.emit(Action{Kind: Report, Reason: fmt.Sprintf("fault on a locked %v node, keeping its role: %s", m.role, ev.Reason)})
		}
		m.advertise()
	case !ev.Healthy && m.role == Active && !m.peerEligible() && !m.twin:
		// Nobody better to hand to: a degraded service beats none.
		m.emit(Action{Kind: Report, Reason: "fault on the active node, but no eligible standby: keeping the VIPs: " + ev.Reason})
		m.advertise()
	case !ev.Healthy && m.role == Active && !m.twin && !ev.Stalled && m.peer.Written < m.written && (ev.StandbyLoading || ev.Now.Sub(m.peerSince) < m.cfg.CatchUpBound):
		// The standby came back (restarted: an upgrade) and has not
		// dialled yet, or is in the middle of its snapshot of this
		// node's sessions: taking over now, it would have none or part
		// of them, and this node would drop the rest when it
		// resynchronises. Not a standby that follows and has for a
		// while: its position in frames is up to an interval old, and a
		// fault with a standby in sync must fail over at once; nor one
		// whose replication never connects (a wrong key), which would
		// make every fault wait; nor after this node's own stall, on
		// which its core has told the peer to take over (it does not
		// wait for a fenced peer), as the machine of a hung node must.
		m.handOverInFault(ev.Now)
	case !ev.Healthy && m.role != Init:
		m.become(Fault, ev.Now, "fault: "+ev.Reason)
	case ev.Healthy && m.role == Fault:
		m.become(Standby, ev.Now, "checks recovered")
		m.takeOverAlone(ev.Now, "checks recovered")
	default:
		m.advertise()
	}
}

// takeOverAlone runs when this node has just become a standby again (its
// checks recovered, or its lock was lifted from a fault): a standby takes
// over when its peer falls silent, and this one was not a standby when
// that happened, or it never heard its peer at all (a fault through the
// start-up window, as when the service it guards starts after hapaird).
// Nothing else would ever make it active. Frames it cannot verify hold it
// back, as at the end of the start-up window; a loss within a flapping
// link's hold-down waits out the same hold-down a standby would have. A
// peer it hears is left to its frames: the last one may predate this
// node's fault (the peer may be claiming the VIPs now), so acting on it
// could make two holders.
func (m *Machine) takeOverAlone(now time.Time, why string) {
	if m.role != Standby || m.peerSeen || m.unverified {
		return
	}
	why += " with the peer silent"
	if !m.lostAt.IsZero() && m.heldDown(m.lostAt) {
		if until := m.lostAt.Add(m.cfg.HoldDown - m.cfg.Dead); now.Before(until) {
			m.holdUntil = until
			m.emit(Action{Kind: Report, Reason: fmt.Sprintf("%s, lost within %v of coming back: a flapping link; taking over only if it stays silent for %v (hold_down)", why, m.cfg.HoldDown, m.cfg.HoldDown)})
			return
		}
	}
	m.takeOver(now, why)
}

// twinned handles another node that runs under this node's name, Event.Peer
// standing for it. This node may stay as it is if it is active and the
// twin is not (a newcomer still in its start-up window), or both are and
// its generation is the lower: a rule of no meaning but that both apply
// alike, so exactly one of two active twins stays. Otherwise it becomes a
// fault for good: unlike a failed check, one that drops the VIPs with no
// eligible standby in sight, since the one other node there is may hold
// them too; a locked node still keeps its role, as the operator said.
func (m *Machine) twinned(ev Event) {
	t := ev.Peer
	if m.role == Active && (t.Role != Active || m.cfg.Generation < t.Generation) {
		m.emit(Action{Kind: Report, Reason: "staying active beside a twin: " + ev.Reason})
		return
	}
	m.twin = true
	m.healthy, m.faultReason = false, ev.Reason
	switch {
	case m.locked && m.role != Init:
		m.emit(Action{Kind: Report, Reason: fmt.Sprintf("fault on a locked %v node, keeping its role: %s", m.role, ev.Reason)})
		m.advertise()
	case m.role == Active || m.role == Standby:
		m.become(Fault, ev.Now, "fault: "+ev.Reason)
	default:
		m.advertise()
	}
}

// Twinned says this node refuses to be active for good: another node runs
// under its name (Twin).
func (m *Machine) Twinned() bool { return m.twin }

// handOff starts a make-before-break handoff: say we are leaving and keep
// the VIPs until the peer says it is active, or the bound passes.
func (m *Machine) handOff(now time.Time, exit, force bool) {
	if !exit {
		switch why := m.switchoverRefusal(force); {
		case why != "":
			m.emit(Action{Kind: Refused, Reason: why})
			return
		case m.peer.Written < m.written:
			// The standby's own word that it holds every write, not
			// only the replication link's: acknowledgements that
			// came over a connection to a standby that has since
			// restarted (and holds nothing) still count there until
			// its new connection begins. Its heartbeats carry what it
			// has applied, refreshed within an interval of applying.
			// The handover's bound, a second at least: a standby of
			// an earlier version refreshes its position only at its
			// idle ticks (750 ms at the default profile) during a
			// rolling upgrade.
			if m.switchDue.IsZero() {
				m.switchDue = now.Add(m.cfg.HandoffBound)
			}
			m.switchForce = force
			return
		}
	}
	if m.role != Active {
		m.stop(fmt.Sprintf("stopping as %v", m.role))
		return
	}
	m.exitAfter = exit
	if !m.peerEligible() {
		m.finishHandOff(now, "stopping: no standby to hand over to")
		return
	}
	m.leaving = true
	m.leaveDeadline = now.Add(m.cfg.HandoffBound)
	m.advertise()
}

// switchoverRefusal is why a switchover asked now is refused ("": it goes
// ahead, once the standby holds every write).
func (m *Machine) switchoverRefusal(force bool) string {
	switch {
	case m.role != Active:
		return fmt.Sprintf("switchover: this node is %v, not active", m.role)
	case m.locked && !force:
		return "switchover: this node is locked (use --force)"
	case !m.peerEligible():
		return "switchover: no eligible standby peer (" + m.peerIneligible() + ")"
	}
	return ""
}

// SwitchoverRefusal is why a switchover asked now will be refused however
// long it waits ("": it may go ahead), in the words of its Refused action.
// The agent asks before it pauses writes until the standby has applied
// them: beside a standby that is gone, that wait ran its whole bound (two
// dead intervals of stalled writes) for a refusal that blamed the writes.
// A peer still starting may be a standby by the end of the wait, and is
// left to it.
func (m *Machine) SwitchoverRefusal(force bool) string {
	starting := m.peerSeen && m.peer.Role == Init && !m.peer.Locked && !m.peer.Fault && !m.peer.Leaving
	if starting && m.role == Active && (!m.locked || force) {
		return ""
	}
	return m.switchoverRefusal(force)
}

// awaitSwitchover goes on with a switchover that waits for the standby's
// heartbeats to show every write (handOff): once they do, or once the
// standby can no longer take over, handOff is asked again and hands over
// or says why not; past switchDue it is refused. A node that is no longer
// an active staying put (a stop, a fault) has moved on without it.
func (m *Machine) awaitSwitchover(now time.Time) {
	if m.switchDue.IsZero() {
		return
	}
	switch {
	case m.role != Active || m.leaving:
		m.switchDue = time.Time{}
	case m.peer.Written >= m.written || !m.peerEligible() || m.locked && !m.switchForce:
		m.switchDue = time.Time{}
		m.handOff(now, false, m.switchForce)
	case !now.Before(m.switchDue):
		m.switchDue = time.Time{}
		m.emit(Action{Kind: Refused, Reason: fmt.Sprintf("switchover: the standby's heartbeats say it holds writes up to %d, this node up to %d (it restarted, or is still resynchronising); not handing over", m.peer.Written, m.written)})
	}
}

func (m *Machine) finishHandOff(now time.Time, reason string) {
	m.become(Standby, now, reason)
	if m.exitAfter {
		m.stop(reason)
	}
}

// stop ends this node for a graceful stop, not active (any more): its last
// frame says Leaving, so the peer takes it for gone rather than lost (it
// tells its operator the peer stopped, not that its paths went down), and
// neither hands over to it nor waits for it.
func (m *Machine) stop(reason string) {
	m.leaving = true
	m.advertise()
	m.emit(Action{Kind: Exit, Reason: reason})
}

// splitBrain handles an active peer while we are active: freeze our facts
// once, advertise them, and decide as soon as the peer's frozen facts
// arrive. Both nodes then hold the same two snapshots.
//
// The facts are frozen only once the peer hears this node (its frame is
// not Deaf). Ages are compared across the two nodes, so the snapshots must
// be taken at about one instant: the first node to freeze sends its
// snapshot at once, and the other freezes when it arrives. After a
// one-way loss (the peer took over because it lost our frames), a
// snapshot taken when we first saw the peer active would be one it
// cannot hear; it freezes its own when the link heals, up to a dead
// interval later (then this node yields: oneWaySplit), and a session it
// took in between looked older than ours: the newest session lost. So
// this node says the split at once (SplitBrainStarted, and a frame, which
// a peer that has just come to hear us answers with its snapshot) and
// freezes on the first frame that says the peer hears it.
func (m *Machine) splitBrain(now time.Time, p Peer) {
	if !m.splitSeen {
		m.splitSeen = true
		m.emit(Action{Kind: SplitBrainStarted})
		m.advertise()
	}
	if m.frozen == nil {
		if p.Deaf {
			return
		}
		// Frozen as the peer will hear them: both nodes must arbitrate
		// on the same numbers, or two that became active within a
		// FactsUnit of each other may each find itself the one active
		// longest, and both stay.
		f := m.facts(now).onTheWire()
		m.frozen = &f
		m.advertise()
	}
	if !p.SplitBrain {
		return // the peer's snapshot is not out yet
	}
	v, rule := Arbitrate(*m.frozen, p.Facts)
	switch v {
	case NeitherMoves:
		m.emit(Action{Kind: Report, Reason: "split brain: both nodes active and locked; unlock one"})
	case SecondStays:
		m.become(Standby, now, "split brain: peer stays active ("+rule+")")
	}
}
