package heartbeat

import (
	"sync/atomic"
	"time"
)

// DropReason says why a received frame was ignored.
type DropReason int

// Drop reasons, in the order a frame is checked.
const (
	DropShort DropReason = iota
	DropMagic
	DropVersion
	DropMalformed
	DropCluster
	DropOwnNode
	DropKeyID
	DropMAC
	DropOldGeneration
	DropReplay
	DropStale // echoes an earlier boot of ours: recorded before we started
	// DropTwin: an authentic frame in this node's name that this process
	// did not send (another generation): another host runs as this node,
	// or this node's own frames from before a restart came late.
	DropTwin
	// DropPeerCluster: an authentic frame of the peer's node under another
	// cluster name (the name changed in one node's file): reported as
	// Unverified, as a peer that holds another key is.
	DropPeerCluster
	numDropReasons
)

var dropNames = [numDropReasons]string{
	"short", "bad_magic", "unknown_version", "malformed", "other_cluster",
	"own_node", "unknown_key", "bad_mac", "old_generation", "replayed",
	"stale", "twin", "peer_other_cluster",
}

func (r DropReason) String() string {
	if r < 0 || r >= numDropReasons {
		return "unknown"
	}
	return dropNames[r]
}

// Counters are an endpoint's frame counts, safe to read at any time.
type Counters struct {
	drops [numDropReasons]atomic.Uint64
	// lastFrame is when the newest new peer frame arrived, Unix
	// nanoseconds (0: none): a wall-clock instant, as it crosses from
	// the heartbeat core to the agent.
	lastFrame atomic.Int64
	sent      atomic.Uint64
	recv      atomic.Uint64
	// sendErrors counts frames a path failed to send (link down, say).
	sendErrors atomic.Uint64
	// stale counts authentic frames that kept a path alive but were not
	// reported: the second path's copy, or a late one.
	stale atomic.Uint64
	// pauses counts the times the endpoint found that it had not run for
	// half a dead interval, and restarted the dead interval.
	pauses atomic.Uint64
	// stalls counts the times this node sent no frame for a whole dead
	// interval or more, as long as its peer waits: the peer rightly took
	// it for lost. longestGap is the longest time between two sends, in
	// ns. A pause of two thirds of a dead interval is enough, coming an
	// interval after the last frame. They tell a false failover that the
	// host caused (it kept the core off its CPU) from one the daemon did.
	stalls     atomic.Uint64
	longestGap atomic.Int64
	// queuedAtExpiry counts the times a path was due to go down while its
	// socket still held unread frames.
	queuedAtExpiry atomic.Uint64
	// agentBehind counts peer frames not reported because the agent
	// had not read what came before.
	agentBehind atomic.Uint64
	// polled counts frames the loop read itself, at its own wake-ups
	// (Endpoint.poll), rather than woken by a reader.
	polled atomic.Uint64
	// relieved counts the frames a relief sender sent because the loop
	// was late (relief.go).
	relieved atomic.Uint64
	// paths count the peer's frames per path, in the endpoint's order.
	paths []pathCounts
}

// pathCounts are one path's counts of the peer's frames: heard, new and
// authentic; lost, the gaps in their sequence (the peer sends every frame
// on every path, numbered once), less those that came late. A lossy link
// shows here long before it costs a failover, where a path's state only
// says when three frames in a row were lost.
type pathCounts struct {
	name        string
	heard, lost atomic.Uint64
}

// frame counts a frame numbered seq, where newest is the highest heard
// on the path from the peer's boot (0: none yet, so nothing is missed).
func (c *pathCounts) frame(newest, seq uint64) {
	c.heard.Add(1)
	switch {
	case newest == 0:
	case seq > newest+1:
		c.lost.Add(seq - newest - 1)
	case seq < newest && c.lost.Load() > 0:
		// Counted lost when a later frame came first (the UDP path
		// may reorder); only this goroutine writes.
		c.lost.Add(^uint64(0))
	}
}

// PathFrames are one path's counts of the peer's frames since start.
type PathFrames struct {
	// Heard counts the peer's new authentic frames on the path; Lost,
	// those the peer sent on it that never came.
	Heard, Lost uint64
}

// Stats is a snapshot of Counters.
type Stats struct {
	Sent, Received, SendErrors, Stale   uint64
	Pauses, QueuedAtExpiry, AgentBehind uint64
	Stalls                              uint64
	LongestSendGap                      time.Duration
	// Polled counts the frames (of any kind) the loop read itself, at its
	// own wake-ups, rather than when they came: an active node's.
	Polled uint64
	// Relieved counts the frames a relief sender sent for a late loop:
	// each is a time one CPU kept the core from sending on time.
	Relieved uint64
	Drops    map[string]uint64
	// LastFrame is when the peer's newest authentic frame arrived (zero:
	// none yet).
	LastFrame time.Time
	// Paths are the peer's frames per path, by name.
	Paths map[string]PathFrames
}

func (c *Counters) snapshot() Stats {
	s := Stats{Sent: c.sent.Load(), Received: c.recv.Load(), SendErrors: c.sendErrors.Load(), Stale: c.stale.Load(), Pauses: c.pauses.Load(), QueuedAtExpiry: c.queuedAtExpiry.Load(), AgentBehind: c.agentBehind.Load(),
		Stalls: c.stalls.Load(), LongestSendGap: time.Duration(c.longestGap.Load()), Polled: c.polled.Load(), Relieved: c.relieved.Load(), Drops: map[string]uint64{}}
	if ns := c.lastFrame.Load(); ns != 0 {
		s.LastFrame = time.Unix(0, ns)
	}
	for i := range c.drops {
		s.Drops[DropReason(i).String()] = c.drops[i].Load()
	}
	s.Paths = make(map[string]PathFrames, len(c.paths))
	for i := range c.paths {
		p := &c.paths[i]
		s.Paths[p.name] = PathFrames{Heard: p.heard.Load(), Lost: p.lost.Load()}
	}
	return s
}

// sendGap records d between two of this node's sends.
func (c *Counters) sendGap(d, dead time.Duration) {
	if d >= dead {
		c.stalls.Add(1)
	}
	for {
		l := c.longestGap.Load()
		if int64(d) <= l || c.longestGap.CompareAndSwap(l, int64(d)) {
			return
		}
	}
}
