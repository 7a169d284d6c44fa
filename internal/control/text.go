package control

import (
	"fmt"
	"github.com/hapair/hapair/election"
	"slices"
	"strings"
	"time"
)

// Text renders a status for people, as hapairctl status prints it.
func (s Status) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s", s.Node, s.Role)
	if s.Locked {
		fmt.Fprint(&b, " (LOCKED)")
	}
	fmt.Fprintf(&b, "    peer %s: ", s.PeerName)
	if s.Peer.Seen {
		fmt.Fprintf(&b, "%s, last frame %.1fms ago", s.Peer.Role, s.Peer.LastFrameAge)
		if s.Peer.Locked {
			fmt.Fprint(&b, " (LOCKED)")
		}
	} else {
		fmt.Fprint(&b, "not heard")
	}
	fmt.Fprintf(&b, "\nredundancy: %s\n", s.Redundancy)
	if s.SplitBrain {
		fmt.Fprintln(&b, "SPLIT BRAIN: both nodes active")
	}
	var paths []string
	for _, p := range s.Paths {
		st := "up"
		switch {
		case !p.Up:
			st = "DOWN"
		case !p.PeerHears:
			st = "ONE-WAY (the peer does not hear this node)"
		}
		paths = append(paths, p.Name+" "+st)
	}
	deg := ""
	if s.Degraded {
		deg = " (degraded)"
	}
	fmt.Fprintf(&b, "heartbeat: %s%s; every %v, dead after %v (%s)\n", strings.Join(paths, ", "), deg, ms(s.IntervalMs), ms(s.DeadMs), s.Profile)
	if !s.Core.RealTime || !s.Core.MemoryLocked {
		fmt.Fprintf(&b, "heartbeat core WITHOUT real-time scheduling or locked memory: a loaded node may miss heartbeats (%s)\n", strings.Join(s.Core.Problems, "; "))
	}
	holding := "none"
	if len(s.Holding) > 0 {
		holding = strings.Join(s.Holding, ", ")
	}
	fmt.Fprintf(&b, "VIPs held here: %s\n", holding)
	conn := "connected"
	if !s.Sync.Connected {
		conn = "NOT connected"
	}
	syncDeg := ""
	if s.Sync.Degraded {
		syncDeg = " (DEGRADED to async)"
	}
	pos := fmt.Sprintf("applied up to write %d", s.Sync.Written)
	if s.Role == election.Active.String() {
		pos = fmt.Sprintf("written %d, standby applied %d", s.Sync.Written, s.Sync.Acked)
	}
	fmt.Fprintf(&b, "sessions: %d, replication %s, mode %s%s, %s\n", s.Sync.Sessions, conn, s.Sync.Mode, syncDeg, pos)
	if s.Lock != "" {
		fmt.Fprintf(&b, "lock: %s\n", s.Lock)
	}
	for _, f := range s.Faults {
		fmt.Fprintf(&b, "fault: %s\n", f)
	}
	for _, c := range s.Checks {
		st := "ok"
		if !c.Healthy {
			st = "FAILING"
		}
		crit := ""
		if !c.Critical {
			crit = " (not critical)"
		}
		detail := ""
		if !c.Healthy {
			detail = ": " + c.Detail
		}
		fmt.Fprintf(&b, "check %s (%s)%s: %s since %s%s\n", c.Name, c.Kind, crit, st, c.Since.Format(time.RFC3339), detail)
	}
	if t := s.LastTransition; t != nil {
		fmt.Fprintf(&b, "last transition: %s -> %s at %s: %s\n", t.From, t.To, t.At.Format(time.RFC3339Nano), t.Reason)
	}
	var drops []string
	for k, v := range s.Frames.Dropped {
		if v > 0 {
			drops = append(drops, fmt.Sprintf("%s %d", k, v))
		}
	}
	slices.Sort(drops)
	fmt.Fprintf(&b, "frames: %d sent, %d received", s.Frames.Sent, s.Frames.Received)
	if len(drops) > 0 {
		fmt.Fprintf(&b, ", dropped: %s", strings.Join(drops, ", "))
	}
	fmt.Fprintln(&b)
	return b.String()
}

// ms is a JSON millisecond figure as a duration.
func ms(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }
