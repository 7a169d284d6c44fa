package election

import (
	"fmt"
	"time"
)

// Role of a node.
type Role int

// Roles.
const (
	Init Role = iota
	Standby
	Active
	Fault
)

// Roles lists every role, in order; its String is the name status, logs,
// metrics and the session service use.
var Roles = []Role{Init, Standby, Active, Fault}

var roleNames = [...]string{"INIT", "STANDBY", "ACTIVE", "FAULT"}

func (r Role) String() string {
	if r >= 0 && int(r) < len(roleNames) {
		return roleNames[r]
	}
	return fmt.Sprintf("Role(%d)", int(r))
}

// Facts are what a node says about itself for arbitration. Ages are
// measured on the sender's own monotonic clock; a negative age means
// "never" (not active, no new session).
type Facts struct {
	Node           uint8
	Locked         bool
	Preferred      bool
	ActiveFor      time.Duration
	LastNewSession time.Duration
}

// FactsUnit is the resolution of the ages in Facts as frames carry them
// (heartbeat's putAge keeps whole milliseconds).
const FactsUnit = time.Millisecond

// onTheWire is f as the peer hears it: its ages cut to whole FactsUnits
// (a negative one, "none", stays as it is).
func (f Facts) onTheWire() Facts {
	cut := func(d time.Duration) time.Duration {
		if d < 0 {
			return d
		}
		return d.Truncate(FactsUnit)
	}
	f.ActiveFor, f.LastNewSession = cut(f.ActiveFor), cut(f.LastNewSession)
	return f
}

// Peer is the content of the peer's latest frame.
type Peer struct {
	Role       Role
	Locked     bool
	Fault      bool
	Leaving    bool
	SplitBrain bool
	// Holding: the peer has claimed the VIPs (it says ACTIVE a claim
	// earlier, so that an active peer sees a split at once, and a leaving
	// node waits for Holding before it lets go: make-before-break).
	Holding bool
	// Deaf: the peer hears no frame of ours (its heartbeat core lost us,
	// or has not heard us yet): it cannot hear what we say now.
	Deaf bool
	// Fenced: the peer's agent stopped renewing its heartbeat core's
	// lease (it hangs), and the core says FAULT for it: nothing on that
	// node decides anything until the agent is back.
	Fenced bool
	Facts  Facts
	// Generation is the peer's boot generation: a new one means the
	// peer's daemon restarted, and lost every session it held.
	Generation uint64
	// Written is the peer's session-store position (written when
	// active, applied when standby); positions go on across failovers,
	// so the two nodes' are comparable.
	Written uint64
}

// EventKind says what happened.
type EventKind int

// Events.
const (
	// Start begins the start-up window.
	Start EventKind = iota
	// Tick lets time-based rules fire (start-up window, handoff bound).
	Tick
	// PeerFrame: an authentic frame from the peer, in Event.Peer.
	PeerFrame
	// PeerLost: every heartbeat path silent for the dead interval.
	PeerLost
	// PathDown and PathUp: one path's liveness, in Event.Path.
	PathDown
	PathUp
	// Lock: this node's lock was set or cleared (Event.Locked).
	Lock
	// Health: this node's critical checks (Event.Healthy, Event.Reason).
	Health
	// VIPRemoved: a held VIP vanished from under us.
	VIPRemoved
	// Stop: a graceful stop; hand over first if active.
	Stop
	// Switchover: an operator asks the active to hand over and stay up.
	Switchover
	// NewSession: an application created a session on this node.
	NewSession
	// Heard: whether the peer hears this node on a path (Event.Path,
	// Event.Heard), from the echo in its frames there.
	Heard
	// Twin: another node runs under this node's name (Event.Peer: its
	// role and generation; Event.Reason). Unless this node may stay
	// active, a fault that never clears and that does not wait for an
	// eligible standby: the twin may hold the VIPs too.
	Twin
	// Unverified: whether the peer's node sends frames that no key of
	// this node verifies, and nothing authentic (Event.Unverified): the
	// two hold different keys; or authentic frames saying it is active
	// that this node cannot use (they echo an earlier boot of its: the
	// peer does not hear it). A starting node that hears only that
	// does not take the VIPs beside it; it takes them once such frames
	// stop, as from a peer that fell silent.
	Unverified
)

var eventNames = [...]string{"start", "tick", "peer-frame", "peer-lost", "path-down", "path-up", "lock", "health", "vip-removed", "stop", "switchover", "new-session", "heard", "twin", "unverified"}

func (k EventKind) String() string {
	if int(k) < len(eventNames) {
		return eventNames[k]
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is one input to Step. Now is a monotonic reading from the caller.
type Event struct {
	Kind    EventKind
	Now     time.Time
	Peer    Peer
	Path    string
	Locked  bool
	Healthy bool
	Reason  string
	Force   bool // Switchover: also when this node is locked
	// Stalled (Health): the fault is this node's own stall past its
	// heartbeat core's lease or its VIPs': the core has told the peer
	// to take over already (FlagFenced), so this node steps down.
	Stalled bool
	// Written is this node's session-store position at Now; the caller
	// sets it on every event.
	Written uint64
	// StandbyLoading: this node is active and its standby is still
	// loading its snapshot (it lacks sessions this node holds); the
	// caller sets it on every event.
	StandbyLoading bool
	Heard          bool // Heard
	// Unverified: the peer's node sends frames no key of ours verifies,
	// or authentic ones this node cannot use (Reason: which, for the
	// transition at the end of the start-up window).
	Unverified bool
	// Resumed (Unverified): the frames this node cannot use continue a
	// boot of the peer's whose frames it saw before, numbered past them:
	// a live active that does not hear this node, whose frames stopped
	// for a while (a stall of its sender, a burst of loss) and came back.
	Resumed bool
}

// ActionKind says what the caller must do.
type ActionKind int

// Actions.
const (
	// ClaimVIPs: add and announce the VIPs.
	ClaimVIPs ActionKind = iota
	// ReleaseVIPs: remove them.
	ReleaseVIPs
	// Advertise: what this node says changed (Action.Advert); send a
	// frame now.
	Advertise
	// Transition: the role changed (From, To, Reason): log one line,
	// notify applications, run hooks.
	Transition
	// Refused: an operator command was not carried out (Reason).
	Refused
	// Report: a condition an operator must hear about (split brain with
	// both locked, a fault on a locked active), in Reason.
	Report
	// Exit: a graceful stop is complete; the daemon may exit.
	Exit
	// SplitBrainStarted: the peer is active too, and this node has begun
	// to arbitrate: tell the operator and the applications.
	SplitBrainStarted
	// NotifyFailover: this standby became active (Reason): tell the
	// applications how complete their sessions are against PeerWritten.
	NotifyFailover
)

var actionNames = [...]string{"claim-vips", "release-vips", "advertise", "transition", "refused", "report", "exit", "split-brain-started", "notify-failover"}

func (k ActionKind) String() string {
	if int(k) < len(actionNames) {
		return actionNames[k]
	}
	return fmt.Sprintf("ActionKind(%d)", int(k))
}

// Action is one output of Step.
type Action struct {
	Kind     ActionKind
	From, To Role
	Reason   string
	// PeerWritten, on NotifyFailover, is the last position the old
	// active advertised: what this node should hold for the failover to
	// be complete.
	PeerWritten uint64
	// Advert, on Advertise, is what the frames say from now on.
	Advert Advert
}

func (a Action) String() string {
	switch a.Kind {
	case Transition:
		return fmt.Sprintf("%v %v->%v (%s)", a.Kind, a.From, a.To, a.Reason)
	case Refused, Report, Exit, NotifyFailover:
		return fmt.Sprintf("%v (%s)", a.Kind, a.Reason)
	}
	return a.Kind.String()
}

// Advert is what this node puts in its frames. When Frozen is set, the
// frames carry Frozen's ages instead of ages computed at send time: both
// nodes must arbitrate from the very same two snapshots.
type Advert struct {
	Role           Role
	Locked         bool
	Fault          bool
	Leaving        bool
	SplitBrain     bool
	Preferred      bool
	Holding        bool      // the VIPs are claimed
	ActiveSince    time.Time // zero: not active
	LastNewSession time.Time // zero: none
	Frozen         *Facts
}
