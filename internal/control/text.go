package control

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hapair/hapair/election"
	"github.com/hapair/hapair/statesync/repl"
)

// Text renders a status for people, as hapairctl status prints it.
func (s Status) Text() string {
	var b strings.Builder
	s.writeRoles(&b)
	s.writeHeartbeat(&b)
	holding := "none"
	if len(s.Holding) > 0 {
		holding = strings.Join(s.Holding, ", ")
	}
	fmt.Fprintf(&b, "VIPs held here: %s\n", holding)
	for _, c := range s.VIPConflicts {
		fmt.Fprintf(&b, "VIP ALSO ANSWERED BY ANOTHER HOST: %s on %s by %s, since %s: clients reach one or the other; remove the address from that host\n",
			c.VIP, c.Interface, c.MAC, c.Since.Format(time.DateTime))
	}
	s.writeSessions(&b)
	if s.Lock != "" {
		fmt.Fprintf(&b, "lock: %s\n", s.Lock)
	}
	for _, f := range s.Faults {
		fmt.Fprintf(&b, "fault: %s\n", f)
	}
	// Shown once an application holds many: a client made per request
	// is seen filling the socket before it is refused.
	if a := s.API; a.Refused > 0 || (a.Max > 0 && a.Open >= a.Max/4) {
		fmt.Fprintf(&b, "application socket: %d of %d connections open, %d refused\n", a.Open, a.Max, a.Refused)
	}
	if s.LogDropped > 0 {
		fmt.Fprintf(&b, "log: %d lines dropped (stderr, the journal, did not take them in time)\n", s.LogDropped)
	}
	s.writeChecks(&b)
	for _, c := range s.TLS {
		mark := ""
		switch now := time.Now(); {
		case !now.Before(c.NotAfter) || now.Before(c.NotBefore):
			mark = " (NOT VALID NOW: the replication link fails)"
		case c.NotAfter.Sub(now) < repl.RenewWithin:
			mark = " (EXPIRES SOON)"
		}
		fmt.Fprintf(&b, "tls: %s (%s) valid until %s%s\n", c.File, c.Subject, c.NotAfter.UTC().Format(time.RFC3339), mark)
	}
	if t := s.LastTransition; t != nil {
		fmt.Fprintf(&b, "last transition: %s -> %s at %s: %s\n", t.From, t.To, t.At.Format(time.RFC3339Nano), t.Reason)
	}
	s.writeFrames(&b)
	return b.String()
}

// writeRoles writes this node's and the peer's roles, and redundancy.
func (s Status) writeRoles(b *strings.Builder) {
	fmt.Fprintf(b, "%s: %s", s.Node, s.Role)
	if s.Locked {
		fmt.Fprint(b, " (LOCKED)")
	}
	fmt.Fprintf(b, "    peer %s: ", s.PeerName)
	if s.Peer.Seen {
		fmt.Fprintf(b, "%s, last frame %.1fms ago", s.Peer.Role, s.Peer.LastFrameAge)
		if s.Peer.Locked {
			fmt.Fprint(b, " (LOCKED)")
		}
		// A node in fault may keep its role: locked, or its hapaird
		// dead and its heartbeat core saying so for it.
		if s.Peer.Fault && s.Peer.Role != "FAULT" {
			fmt.Fprint(b, " (IN FAULT)")
		}
	} else {
		fmt.Fprint(b, "not heard")
	}
	switch {
	case s.Peer.Unverified != "" && s.Peer.UnverifiedCause == "unanswered":
		fmt.Fprintf(b, "\nPEER DOES NOT ANSWER: %s", s.Peer.Unverified)
	case s.Peer.Unverified != "" && s.Peer.UnverifiedCause == "cluster":
		fmt.Fprintf(b, "\nCLUSTER NAMES DIFFER: the peer's heartbeats name another cluster: %s", s.Peer.Unverified)
	case s.Peer.Unverified != "":
		fmt.Fprintf(b, "\nKEYS DIFFER: the peer's heartbeats cannot be verified: %s", s.Peer.Unverified)
	}
	if v := s.Peer.Version; v != "" && v != s.Version {
		fmt.Fprintf(b, "\npeer version: %s, this node %s", v, s.Version)
	}
	if d := s.Peer.ConfigDiffers; len(d) > 0 {
		fmt.Fprintf(b, "\nCONFIG DIFFERS: the peer's file differs from this node's in %s: each node fails over to what its own file says", strings.Join(d, "; "))
	}
	if d := s.ConfigFileDiffers; len(d) > 0 {
		fmt.Fprintf(b, "\nconfig file edited since the start: %s differ from what this daemon runs; a restart applies them (check it with hapaird --check, restart the standby first)", strings.Join(d, ", "))
	} else if e := s.ConfigFileError; e != "" {
		fmt.Fprintf(b, "\nconfig file no longer readable to compare with what this daemon runs: %s", e)
	}
	fmt.Fprintf(b, "\nredundancy: %s\n", s.Redundancy)
	if s.SplitBrain {
		fmt.Fprintln(b, "SPLIT BRAIN: both nodes active")
	}
	if h := s.HoldDown; h.TakeoverInMs > 0 {
		fmt.Fprintf(b, "FLAPPING LINK: peer lost soon after it came back; taking over in %v if it stays silent (hold_down %v, %d flaps)\n", ms(h.TakeoverInMs).Round(time.Millisecond), ms(h.Ms), h.Flaps)
	} else if h.Flaps > 0 {
		fmt.Fprintf(b, "peer flaps: %d (returns after being lost; hold_down %v)\n", h.Flaps, ms(h.Ms))
	}
}

// State says in a word or two how the path is: up, DOWN, or ONE-WAY.
func (p Path) State() string {
	switch {
	case !p.Up:
		return "DOWN"
	case !p.PeerHears:
		return "ONE-WAY (the peer does not hear this node)"
	}
	return "up"
}

// writeHeartbeat writes the paths, the timers and the core's rights.
func (s Status) writeHeartbeat(b *strings.Builder) {
	var paths []string
	for _, p := range s.Paths {
		st := p.State()
		if p.Unsteady {
			st = "UNSTEADY, now " + st
		}
		if p.FramesLost > 0 || p.WentDown > 0 {
			times := fmt.Sprintf("%d times", p.WentDown)
			if p.WentDown == 1 {
				times = "once"
			}
			st += fmt.Sprintf(" (%d of %d frames lost, down %s)", p.FramesLost, p.FramesLost+p.FramesHeard, times)
		}
		paths = append(paths, p.Name+" "+st)
	}
	deg := ""
	if s.Degraded {
		deg = " (degraded)"
	}
	fmt.Fprintf(b, "heartbeat: %s%s; every %v, dead after %v (%s)\n", strings.Join(paths, ", "), deg, ms(s.IntervalMs), ms(s.DeadMs), s.Profile)
	if !s.Core.RealTime || !s.Core.MemoryLocked {
		fmt.Fprintf(b, "heartbeat core WITHOUT real-time scheduling or locked memory: a loaded node may miss heartbeats (%s)\n", strings.Join(s.Core.Problems, "; "))
	}
}

// writeSessions writes the session store's replication.
func (s Status) writeSessions(b *strings.Builder) {
	conn := "connected"
	switch {
	case !s.Sync.Connected:
		conn = "NOT connected"
	case s.Sync.TLS:
		conn = "connected over TLS"
	case len(s.TLS) > 0:
		// Only tls.optional connects a node with TLS without it.
		conn = "connected WITHOUT TLS (the peer has none; tls.optional)"
	}
	syncDeg := ""
	if s.Sync.Degraded {
		syncDeg = " (DEGRADED to async)"
	}
	pos := fmt.Sprintf("applied up to write %d", s.Sync.Written)
	if s.Role == election.Active.String() {
		pos = fmt.Sprintf("written %d, standby applied %d", s.Sync.Written, s.Sync.Acked)
	}
	fmt.Fprintf(b, "sessions: %d, replication %s, mode %s%s, %s\n", s.Sync.Sessions, conn, s.Sync.Mode, syncDeg, pos)
	if s.Sync.Degraded && s.Sync.DegradedReason != "" {
		pace := ""
		switch p := s.Sync.StandbyPace; {
		case p == nil: // not measured yet
		case *p < 0.5:
			pace = "; the standby applied no writes lately"
		default:
			pace = fmt.Sprintf("; the standby applied %.0f writes/s lately", *p)
		}
		fmt.Fprintf(b, "sync degraded: %s%s; sync comes back once the standby can apply what it lacks within half the sync timeout\n", s.Sync.DegradedReason, pace)
	}
}

// writeChecks writes one line per health check.
func (s Status) writeChecks(b *strings.Builder) {
	for _, c := range s.Checks {
		st, crit, detail := "ok", "", ""
		if !c.Healthy {
			st, detail = "FAILING", ": "+c.Detail
		}
		if !c.Critical {
			crit = " (not critical)"
		}
		fmt.Fprintf(b, "check %s (%s)%s: %s since %s%s\n", c.Name, c.Kind, crit, st, c.Since.Format(time.RFC3339), detail)
	}
}

// writeFrames writes the frame counters, drops by reason.
func (s Status) writeFrames(b *strings.Builder) {
	var drops []string
	for k, v := range s.Frames.Dropped {
		if v > 0 {
			drops = append(drops, fmt.Sprintf("%s %d", k, v))
		}
	}
	slices.Sort(drops)
	fmt.Fprintf(b, "frames: %d sent, %d received", s.Frames.Sent, s.Frames.Received)
	if len(drops) > 0 {
		fmt.Fprintf(b, ", dropped: %s", strings.Join(drops, ", "))
	}
	fmt.Fprintln(b)
}

// ms is a JSON millisecond figure as a duration.
func ms(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }
