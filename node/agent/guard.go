package agent

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/hapair/hapair/election"
	"github.com/hapair/hapair/internal/control"
	"github.com/hapair/hapair/vip"
)

// The active asks the network whether another host answers for its VIPs
// (vip.Manager.Probe): a VIP left on the old keepalived master while a
// pair moves to hapair, an address given out twice, or the peer active
// too where the heartbeat links are cut and the public network is not.
// None of these shows in the heartbeats, and each sends clients to one
// host or the other as their ARP caches happen to say. keepalived, ucarp
// and Pacemaker's IPaddr2 do not look.
// A probe (every [announce] probe while this node holds the VIPs, 30 s by
// default) costs a frame per VIP and two sockets open for probeWait.
const (
	// probeWait is how long a probe listens for answers; on a LAN they
	// come within a millisecond.
	probeWait = 500 * time.Millisecond
	// probeSettle is how long this node has held the VIPs, and the peer
	// said it holds none, before a probe: a handover's old holder lets
	// go after the new one claims (make-before-break), and its kernel may
	// still answer for those milliseconds.
	probeSettle = time.Second
)

// vipGuard decides when to probe and tells what changed between probes.
// It has no clock and no sockets: the loop passes the time and what it
// knows, and runs the probe off the loop (probeVIPs).
type vipGuard struct {
	// every spaces the probes (0: none): a host that takes a VIP later
	// is found within it.
	every time.Duration
	// lease is the VIP lease: a peer silent for longer has no VIP left
	// in its kernel unless its agent runs (it is active too).
	lease time.Duration

	holdingSince time.Time // zero: this node holds no VIP
	clearSince   time.Time // the peer is heard and says it holds none, since
	silentSince  time.Time // the peer is not heard, since
	last         time.Time // the last probe began
	probing      bool
	// epoch counts what makes a probe's answer stale: this node letting
	// go, or the peer saying it may hold the VIPs. A probe that began
	// in another epoch is not read.
	epoch, probeEpoch uint64
	seen              map[string]conflict
	read              uint64 // answers read (for status)
}

// conflict is another host seen answering for a VIP, and since when.
type conflict struct {
	vip.Sighting
	since time.Time
}

// observe tells the guard what the loop knows now: whether this node
// holds the VIPs, and whether the peer is heard and may hold them (it
// says so, or is active, leaving or in a split).
func (g *vipGuard) observe(now time.Time, holding, peerHeard, peerMayHold bool) {
	switch {
	case !holding:
		if !g.holdingSince.IsZero() {
			g.holdingSince, g.last, g.seen = time.Time{}, time.Time{}, nil
			g.epoch++
		}
	case g.holdingSince.IsZero():
		g.holdingSince = now
	}
	// Any change in what the peer may be doing makes a probe under way
	// stale: from clear to silent too, as a peer lost may have taken
	// over in the same instant.
	clear, silent := peerHeard && !peerMayHold, !peerHeard
	if clear != !g.clearSince.IsZero() || silent != !g.silentSince.IsZero() {
		g.epoch++
	}
	switch {
	case clear && g.clearSince.IsZero():
		g.clearSince = now
	case !clear:
		g.clearSince = time.Time{}
	}
	switch {
	case silent && g.silentSince.IsZero():
		g.silentSince = now
	case !silent:
		g.silentSince = time.Time{}
	}
}

// due says whether a probe should begin now; begin records that it did.
func (g *vipGuard) due(now time.Time) bool {
	switch {
	case g.every <= 0, g.probing, g.holdingSince.IsZero(), now.Sub(g.holdingSince) < probeSettle:
		return false
	case !g.last.IsZero() && now.Sub(g.last) < g.every:
		return false
	}
	clear := !g.clearSince.IsZero() && now.Sub(g.clearSince) >= probeSettle
	gone := !g.silentSince.IsZero() && now.Sub(g.silentSince) >= g.lease+probeSettle
	return clear || gone
}

func (g *vipGuard) begin(now time.Time) {
	g.probing, g.last, g.probeEpoch = true, now, g.epoch
}

// done takes a probe's answer: the hosts seen for the first time, and
// those no longer seen. An answer from another epoch changes nothing.
func (g *vipGuard) done(now time.Time, seen []vip.Sighting) (appeared []conflict, gone []conflict) {
	g.probing = false
	if g.probeEpoch != g.epoch {
		return nil, nil
	}
	g.read++
	next := map[string]conflict{}
	for _, s := range seen {
		k := s.Addr.String() + " " + s.MAC.String()
		c, ok := g.seen[k]
		if !ok {
			c = conflict{Sighting: s, since: now}
			appeared = append(appeared, c)
		}
		next[k] = c
	}
	for k, c := range g.seen {
		if _, ok := next[k]; !ok {
			gone = append(gone, c)
		}
	}
	g.seen = next
	return appeared, gone
}

// failed takes a probe that could not ask (a socket it could not open):
// it says nothing of who answers, so what was seen stands.
func (g *vipGuard) failed() { g.probing = false }

// conflicts lists what the last probe saw, for status, in one order.
func (g *vipGuard) conflicts() []control.VIPConflict {
	out := []control.VIPConflict{}
	for _, c := range g.seen {
		out = append(out, control.VIPConflict{VIP: c.Addr.Prefix.Addr().String(), Interface: c.Addr.Interface, MAC: c.MAC.String(), Since: c.since})
	}
	slices.SortFunc(out, func(a, b control.VIPConflict) int {
		return cmp.Or(cmp.Compare(a.VIP, b.VIP), cmp.Compare(a.MAC, b.MAC))
	})
	return out
}

// probeResult is one probe's answer, for the loop.
type probeResult struct {
	seen []vip.Sighting
	err  error
}

// probeVIPs runs the probes the loop asks for, one at a time, off the
// loop: each listens for probeWait.
func (a *Agent) probeVIPs(ctx context.Context, ask <-chan struct{}, out chan<- probeResult) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-ask:
		}
		seen, err := a.opt.VIPs.Probe(ctx, probeWait)
		select {
		case out <- probeResult{seen, err}:
		case <-ctx.Done():
			return
		}
	}
}

// guardTick tells the guard how things stand and starts a probe when
// one is due.
func (a *Agent) guardTick(now time.Time, ask chan<- struct{}) {
	a.observeGuard(now)
	if !a.guard.due(now) {
		return
	}
	select {
	case ask <- struct{}{}:
		a.guard.begin(now)
	default:
	}
}

// observeGuard tells the guard whether this node holds the VIPs and
// whether the peer is heard and may hold them.
func (a *Agent) observeGuard(now time.Time) {
	peer, heard := a.m.Peer()
	mayHold := peer.Holding || peer.Leaving || peer.SplitBrain || peer.Role == election.Active
	a.guard.observe(now, a.holding, heard, mayHold)
}

// probed reports a probe's answer: each host newly seen answering for a
// VIP this node holds as an error, each no longer seen as news. The guard
// is told how things stand at every tick and peer event, and now.
func (a *Agent) probed(r probeResult) {
	if r.err != nil && r.err.Error() != a.probeErr {
		a.log.Warn("cannot ask the network whether another host answers for the VIPs", "op", "probe", "err", r.err)
	}
	a.probeErr = ""
	if r.err != nil {
		a.probeErr = r.err.Error()
	}
	if r.err != nil && len(r.seen) == 0 {
		// Not "nobody answers": a host seen before is not gone.
		a.guard.failed()
		return
	}
	now := time.Now()
	a.observeGuard(now)
	appeared, gone := a.guard.done(now, r.seen)
	_, heard := a.m.Peer()
	for _, c := range appeared {
		hint := "find the host with this MAC and remove the address there"
		if !heard {
			hint = "the peer is not heard: if this is its MAC, both nodes are active (the heartbeat links are cut and the public network is not)"
		}
		a.log.Error("another host answers for a VIP this node holds: clients reach one or the other, as their ARP caches say; "+hint,
			"op", "probe", "vip", c.Addr.Prefix.Addr().String(), "iface", c.Addr.Interface, "mac", c.MAC.String())
	}
	for _, c := range gone {
		a.log.Info("no other host answers for the VIP any more", "op", "probe", "vip", c.Addr.Prefix.Addr().String(), "mac", c.MAC.String())
	}
}
