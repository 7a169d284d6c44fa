// Package metrics exposes a node's state to Prometheus. Everything is read
// from the daemon's status snapshot when scraped, so metrics cost nothing
// on the failover path.
package metrics

import (
	"net/http"
	"net/netip"
	"strings"

	"github.com/hapair/hapair/election"
	"github.com/hapair/hapair/internal/control"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("hapair_"+name, help, labels, nil)
}

var (
	dRole       = desc("role", "1 for this node's current role.", "role")
	dPeerSeen   = desc("peer_seen", "1 while the peer is heard on some heartbeat path.")
	dPathUp     = desc("heartbeat_path_up", "1 while a heartbeat path is up.", "path")
	dPathHeard  = desc("heartbeat_path_peer_hears", "1 while the peer hears this node on a heartbeat path (its frames there echo ours).", "path")
	dPathLost   = desc("heartbeat_path_frames_lost_total", "The peer's heartbeat frames on a path that never came (gaps in their numbers): a lossy link shows here before it costs a failover.", "path")
	dPathHeardN = desc("heartbeat_path_frames_heard_total", "The peer's new authentic heartbeat frames heard on a path.", "path")
	dPathDowns  = desc("heartbeat_path_down_total", "Times a heartbeat path went down (not when the peer stopped).", "path")
	dUnsteady   = desc("heartbeat_path_unsteady", "1 while a heartbeat path goes down or one-way again and again (three times in 10 s, until a still 10 s).", "path")
	dSent       = desc("heartbeat_frames_sent_total", "Heartbeat frames sent.")
	dRecv       = desc("heartbeat_frames_received_total", "Authentic heartbeat frames received.")
	dDropped    = desc("heartbeat_frames_dropped_total", "Heartbeat frames dropped, by reason.", "reason")
	dPauses     = desc("heartbeat_core_pauses_total", "Times the heartbeat core found it had not run for half a dead interval (the node is too loaded for its profile).")
	dStalls     = desc("heartbeat_core_stalls_total", "Times no heartbeat frame left this node for a whole dead interval, as long as the peer waits (a failover then was the host's doing: it kept the heartbeat core off its CPU).")
	dRelieved   = desc("heartbeat_relieved_total", "Heartbeat frames a relief sender on another CPU sent because one CPU kept the heartbeat core's loop from sending on time (turbo profile).")
	dLongest    = desc("heartbeat_longest_send_gap_seconds", "The longest time between two heartbeat frames this node sent.")
	dQueued     = desc("heartbeat_queued_at_expiry_total", "Times a heartbeat path was due to go down with frames unread in its socket.")
	dPolled     = desc("heartbeat_polled_total", "Peer frames the heartbeat core read at its own wake-ups (an active node with a standby peer) rather than when they came.")
	dBehind     = desc("heartbeat_frames_not_reported_total", "Peer frames the heartbeat core did not pass to an agent that was behind.")
	dFailovers  = desc("transitions_to_active_total", "Times this node became active, by reason.", "reason")
	dLocked     = desc("locked", "1 while this node is locked.")
	dPeerLocked = desc("peer_locked", "1 while the peer says it is locked.")
	dRedundant  = desc("redundancy_available", "1 when both nodes are unlocked, the peer is seen and sync is complete.")
	dSplit      = desc("split_brain", "1 while both nodes are active.")
	dFlaps      = desc("peer_flaps_total", "Times the peer was heard again after being lost, from the same boot: flaps of the link (a peer back from a restart is not counted).")
	dHeldDown   = desc("takeover_held_down", "1 while a takeover waits out the hold-down of a flapping link.")
	dVIPs       = desc("vips_held", "VIPs this node holds.")
	dConflicts  = desc("vip_conflicts", "Other hosts that answered for a VIP this node holds when it last asked (every 30s while it holds them), by VIP: clients reach one or the other.", "vip")
	dSessions   = desc("sessions", "Sessions held by this node.")
	dWritten    = desc("replication_written_seq", "Last session write sequence written or applied here.")
	dAcked      = desc("replication_acked_seq", "Last sequence the standby applied (active only).")
	dLag        = desc("replication_lag_writes", "Writes the standby has not applied yet (active only).")
	dConnected  = desc("replication_connected", "1 while the replication link is connected.")
	dSyncDeg    = desc("sync_degraded", "1 while sync mode runs as async.")
	dCheck      = desc("check_healthy", "1 while a check is healthy.", "check", "kind", "critical")
	dWrites     = desc("session_writes_total", "Session writes accepted on this node.")
	dCutOff     = desc("event_subscribers_cut_off_total", "Event stream subscribers dropped for not reading.")
	dAnnounce   = desc("vip_announcements_total", "Gratuitous ARP / unsolicited NA rounds sent.")
	dAnnErr     = desc("vip_announcement_errors_total", "Announcements that failed.")
	dLogDropped = desc("log_lines_dropped_total", "Log lines dropped because stderr (the journal) did not take them.")
	dAPIConns   = desc("api_connections", "Connections open on the application socket.")
	dAPIMax     = desc("api_connections_max", "Connections the application socket keeps open at most.")
	dAPIRefused = desc("api_connections_refused_total", "Connections the application socket refused for having the most it keeps open.")
	dTLSExpiry  = desc("tls_certificate_expiry_timestamp_seconds", "When a certificate of the replication link's TLS ends (Unix time): this node's and the CA's, as last read (at start, each day, and when the replication link took in renewed files).", "file", "subject")
	dCfgDiffers = desc("peer_config_differs", "Parts of the configuration file ([[vip]], [[check]], ...) in which the peer's differs from this node's, as the peer said when replication last connected.")
)

type collector struct{ status func() control.Status }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dRole, dPeerSeen, dPathUp, dPathHeard, dPathLost, dPathHeardN, dPathDowns, dUnsteady, dSent, dRecv, dDropped, dPauses, dStalls, dRelieved, dLongest, dQueued, dPolled, dBehind, dFailovers, dLocked, dPeerLocked, dRedundant, dSplit, dFlaps, dHeldDown, dVIPs, dConflicts, dSessions, dWritten, dAcked, dLag, dConnected, dSyncDeg, dCheck, dWrites, dCutOff, dAnnounce, dAnnErr, dLogDropped, dAPIConns, dAPIMax, dAPIRefused, dCfgDiffers, dTLSExpiry} {
		ch <- d
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.status()
	g := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	n := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, l...)
	}
	for _, r := range election.Roles {
		g(dRole, b2f(s.Role == r.String()), strings.ToLower(r.String()))
	}
	g(dPeerSeen, b2f(s.Peer.Seen))
	for _, p := range s.Paths {
		g(dPathUp, b2f(p.Up), p.Name)
		g(dPathHeard, b2f(p.PeerHears), p.Name)
		n(dPathLost, float64(p.FramesLost), p.Name)
		n(dPathHeardN, float64(p.FramesHeard), p.Name)
		n(dPathDowns, float64(p.WentDown), p.Name)
		g(dUnsteady, b2f(p.Unsteady), p.Name)
	}
	n(dSent, float64(s.Frames.Sent))
	n(dRecv, float64(s.Frames.Received))
	n(dPauses, float64(s.Frames.CorePauses))
	n(dStalls, float64(s.Frames.CoreStalls))
	n(dRelieved, float64(s.Frames.Relieved))
	g(dLongest, s.Frames.LongestSendGapMs/1000)
	n(dQueued, float64(s.Frames.QueuedAtExpiry))
	n(dPolled, float64(s.Frames.Polled))
	n(dBehind, float64(s.Frames.NotReported))
	for reason, v := range s.Frames.Dropped {
		n(dDropped, float64(v), reason)
	}
	for reason, v := range s.Failovers {
		n(dFailovers, float64(v), reason)
	}
	g(dLocked, b2f(s.Locked))
	g(dPeerLocked, b2f(s.Peer.Locked))
	g(dRedundant, b2f(s.Redundancy == "available"))
	g(dSplit, b2f(s.SplitBrain))
	n(dFlaps, float64(s.HoldDown.Flaps))
	g(dHeldDown, b2f(s.HoldDown.TakeoverInMs > 0))
	g(dVIPs, float64(len(s.Holding)))
	// A series for each VIP held, 0 while nobody else answers, so that
	// an alert names the VIP and a series does not come and go; and one
	// for a VIP still reported after this node let it go (status keeps a
	// sighting until the probe looks again).
	conflicts := map[string]int{}
	for _, c := range s.VIPConflicts {
		conflicts[c.VIP]++
	}
	for _, v := range s.Holding {
		if p, err := netip.ParsePrefix(strings.SplitN(v, " ", 2)[0]); err == nil {
			a := p.Addr().String()
			if _, seen := conflicts[a]; !seen {
				conflicts[a] = 0
			}
		}
	}
	for addr, hosts := range conflicts {
		g(dConflicts, float64(hosts), addr)
	}
	g(dSessions, float64(s.Sync.Sessions))
	g(dWritten, float64(s.Sync.Written))
	g(dConnected, b2f(s.Sync.Connected))
	g(dSyncDeg, b2f(s.Sync.Degraded))
	if s.Role == election.Active.String() {
		g(dAcked, float64(s.Sync.Acked))
		g(dLag, float64(s.Sync.Written-min(s.Sync.Acked, s.Sync.Written)))
	}
	n(dWrites, float64(s.Sync.Writes))
	n(dCutOff, float64(s.Sync.CutOff))
	n(dAnnounce, float64(s.Announcements))
	n(dAnnErr, float64(s.AnnounceErrors))
	n(dLogDropped, float64(s.LogDropped))
	g(dAPIConns, float64(s.API.Open))
	g(dAPIMax, float64(s.API.Max))
	n(dAPIRefused, float64(s.API.Refused))
	g(dCfgDiffers, float64(len(s.Peer.ConfigDiffers)))
	for _, c := range s.TLS {
		g(dTLSExpiry, float64(c.NotAfter.Unix()), c.File, c.Subject)
	}
	for _, chk := range s.Checks {
		g(dCheck, b2f(chk.Healthy), chk.Name, chk.Kind, map[bool]string{true: "true", false: "false"}[chk.Critical])
	}
}

// Handler serves the node's metrics, plus the Go runtime's and the
// process's.
func Handler(status func() control.Status) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{status}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}
