package agent

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/hapair/hapair/election"
	"github.com/hapair/hapair/internal/control"
)

// updateStatus refreshes the snapshot Status serves; it runs in the loop,
// when a reader asks, so readers never touch the machine.
func (a *Agent) updateStatus() {
	peer, seen := a.m.Peer()
	s := control.Status{
		Version: a.opt.Version, Cluster: a.opt.Cluster, Node: a.opt.Node, PeerName: a.opt.Peer,
		Role: a.m.Role().String(), Locked: a.m.Locked(), Profile: a.opt.Profile,
		IntervalMs: msOf(a.opt.Interval), DeadMs: msOf(a.opt.Dead),
		Faults: []string{}, VIPs: []string{}, Holding: []string{}, Checks: []control.Check{},
		TLS:        []control.Cert{},
		Peer:       control.PeerStatus{Seen: seen},
		Degraded:   seen && (len(a.m.Degraded()) > 0 || a.oneWay()),
		SplitBrain: a.m.SplitBrain(),
	}
	if seen {
		s.Peer.Role, s.Peer.Locked, s.Peer.Fault = peer.Role.String(), peer.Locked, peer.Fault
		s.Peer.Written = peer.Written
	}
	if a.opt.TLS != nil {
		s.TLS = append(s.TLS, a.opt.TLS()...)
	}
	flaps, until := a.m.Flaps()
	s.HoldDown = control.HoldDown{Ms: msOf(a.opt.Election.HoldDown), Flaps: flaps}
	if !until.IsZero() {
		s.HoldDown.TakeoverInMs = max(msOf(time.Until(until)), 0.001)
	}
	s.Sync = a.syncStatus()
	s.VIPConflicts, s.VIPProbes = a.guard.conflicts(), a.guard.read
	for _, v := range a.opt.VIPs.Addrs() {
		s.VIPs = append(s.VIPs, v.String())
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	s.Lock = strings.TrimSpace(a.lockInfo)
	s.Peer.Unverified, s.Peer.UnverifiedCause = a.unverified, a.unverifiedCause
	if a.unverified == "" && a.unanswered != "" {
		s.Peer.Unverified, s.Peer.UnverifiedCause = a.unanswered, "unanswered"
	}
	s.Peer.ConfigDiffers = slices.Clone(a.configDiffers)
	s.Peer.Version = a.peerRelease
	for _, f := range a.faults {
		s.Faults = append(s.Faults, f)
	}
	slices.Sort(s.Faults)
	s.LastTransition = a.lastTrans
	s.Failovers = maps.Clone(a.failovers)
	if a.holding {
		s.Holding = s.VIPs
	}
	s.Redundancy = redundancy(s)
	a.status = s
}

// msOf is d in milliseconds, the unit of every duration in status.
func msOf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// redundancy says whether the pair can fail over now. Files that differ
// (Peer.ConfigDiffers) do not count: the pair still fails over, and a
// change of the file passes through them between its two restarts, where
// the procedure waits for "available" (docs/operations.md, section 4).
func redundancy(s control.Status) string {
	var why []string
	if s.Locked {
		why = append(why, "this node is locked")
	}
	if s.Peer.Locked {
		why = append(why, "peer is locked")
	}
	if !s.Peer.Seen {
		why = append(why, "peer not seen")
	}
	if s.Peer.Unverified != "" {
		why = append(why, map[string]string{"cluster": "the peer's heartbeats name another cluster", "keys": "the peer's heartbeats cannot be verified (different keys)", "unanswered": "the peer does not answer this node's heartbeats"}[s.Peer.UnverifiedCause])
	}
	if len(s.Faults) > 0 {
		why = append(why, "this node is in fault")
	}
	if s.Peer.Fault {
		why = append(why, "peer is in fault")
	}
	if s.SplitBrain {
		why = append(why, "split brain")
	}
	switch {
	case !s.Sync.Connected:
		why = append(why, "replication not connected")
	case s.Role == election.Active.String() && s.Sync.Acked < s.Sync.Written:
		why = append(why, fmt.Sprintf("standby %d writes behind", s.Sync.Written-s.Sync.Acked))
	}
	if len(why) == 0 {
		return "available"
	}
	return "unavailable: " + strings.Join(why, ", ")
}

// statusWait bounds how long Status waits for the loop to build a
// snapshot; past it (a hung loop) Status says so on the last one.
const statusWait = time.Second

// Status is a snapshot for the control socket, with live counters. The
// loop builds it on demand; a loop that does not answer gets the last
// snapshot, marked.
func (a *Agent) Status() control.Status {
	reply := make(chan struct{})
	answered := false
	timeout := time.NewTimer(statusWait)
	defer timeout.Stop()
	select {
	case a.statusReq <- reply:
		select {
		case <-reply:
			answered = true
		case <-a.loopDone:
		case <-timeout.C:
		}
	case <-a.loopDone:
	case <-timeout.C:
	}
	s := a.snapshot()
	if a.opt.ConfigFile != nil {
		s.ConfigFileDiffers, s.ConfigFileError = a.opt.ConfigFile()
	}
	select {
	case <-a.loopDone:
	default:
		if !answered {
			s.Redundancy = "unavailable: the agent's loop does not answer"
		}
	}
	return s
}

// snapshot is the last status the loop built, with live counters.
func (a *Agent) snapshot() control.Status {
	a.mu.Lock()
	s := a.status
	paths := make([]control.Path, 0, len(a.paths))
	for name, up := range a.paths {
		n := a.noise[name]
		paths = append(paths, control.Path{Name: name, Up: up, PeerHears: up && a.heardBack[name], Unsteady: n != nil && n.unsteady, WentDown: a.wentDown[name]})
	}
	peerAt := a.peerAt
	a.mu.Unlock()
	slices.SortFunc(paths, func(x, y control.Path) int { return strings.Compare(x.Name, y.Name) })
	s.Paths = paths

	iso := a.opt.Heartbeat.Isolation()
	s.Core = control.Core{RealTime: iso.RealTime, MemoryLocked: iso.Locked, Problems: []string{}}
	for _, e := range []string{iso.RTError, iso.LockError} {
		if e != "" {
			s.Core.Problems = append(s.Core.Problems, e)
		}
	}
	st := a.opt.Heartbeat.Stats()
	for i := range s.Paths {
		f := st.Paths[s.Paths[i].Name]
		s.Paths[i].FramesHeard, s.Paths[i].FramesLost = f.Heard, f.Lost
	}
	s.Frames = control.Frames{Sent: st.Sent, Received: st.Received, Dropped: st.Drops,
		CorePauses: st.Pauses, QueuedAtExpiry: st.QueuedAtExpiry, NotReported: st.AgentBehind,
		CoreStalls: st.Stalls, LongestSendGapMs: float64(st.LongestSendGap.Microseconds()) / 1000, Polled: st.Polled, Relieved: st.Relieved}
	// The heartbeat core reports a frame that says nothing new only now
	// and then (heartbeat.Config.Refresh); it knows when the last came.
	if st.LastFrame.After(peerAt) {
		peerAt = st.LastFrame
	}
	if !peerAt.IsZero() {
		s.Peer.LastFrameAge = float64(time.Since(peerAt).Microseconds()) / 1000
	}
	if s.Frames.Dropped == nil {
		s.Frames.Dropped = map[string]uint64{} // {} in JSON, never null
	}
	s.Sync = a.syncStatus()
	s.Redundancy = redundancy(s)
	vs := a.opt.VIPs.Stats()
	s.Announcements, s.AnnounceErrors = vs.Announcements, vs.AnnounceErrors
	if a.opt.LogDropped != nil {
		s.LogDropped = a.opt.LogDropped()
	}
	if a.opt.API != nil {
		s.API = a.opt.API()
	}
	if a.opt.Health != nil {
		s.Checks = append(s.Checks, a.opt.Health.States()...)
	}
	return s
}

func (a *Agent) syncStatus() control.Sync {
	st := a.opt.Sync.Stats()
	return control.Sync{Mode: string(a.opt.SyncMode), Sessions: st.Sessions, Written: st.Written, Acked: st.Acked,
		Connected: st.Connected, TLS: st.Connected && st.OverTLS, Degraded: st.Degraded, Snapshots: st.Snapshots, Resumes: st.Resumes,
		Writes: st.Writes, CutOff: st.CutOff, DegradedReason: st.DegradedReason, StandbyPace: st.StandbyPace}
}

// oneWay says some path that is up does not carry this node's frames to
// the peer. Called from the loop.
func (a *Agent) oneWay() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for p, up := range a.paths {
		if up && !a.heardBack[p] {
			return true
		}
	}
	return false
}
