package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hapair/hapair/config"
	"github.com/hapair/hapair/election"
	"github.com/hapair/hapair/health"
	"github.com/hapair/hapair/heartbeat"
	"github.com/hapair/hapair/internal/control"
	"github.com/hapair/hapair/internal/hooks"
	"github.com/hapair/hapair/internal/metrics"
	"github.com/hapair/hapair/node/agent"
	"github.com/hapair/hapair/statesync"
	"github.com/hapair/hapair/statesync/repl"
	"github.com/hapair/hapair/statesync/store"
	"github.com/hapair/hapair/vip"
)

// Options are what the process gives a node. Log and StartCore are
// required; the rest is optional.
type Options struct {
	Log *slog.Logger
	// Version is reported in status.
	Version string
	// FoundBy says how the daemon found itself in the config (logged).
	FoundBy string
	// StartCore starts the heartbeat core (a child process running
	// ServeCore) and returns the parent's end of its socket. The core
	// inherits lock, the node's instance lock, and holds it as long as
	// it lives: past a dead agent, while it hands over. It shares sent
	// with the core, which writes there when it sends (SentPage).
	StartCore func(lock, sent *os.File) (net.Conn, func() error, error)
	// Ready is called once the first role is decided, Notify on every
	// transition, Watchdog on every tick of the agent's loop.
	Ready    func(role string)
	Notify   func(role, reason string)
	Watchdog func()
	// WatchdogPeriod is systemd's watchdog period (0: none); the agent's
	// idle tick stays within a quarter of it.
	WatchdogPeriod time.Duration
	// LogDropped counts the log lines dropped for a stderr that did not
	// take them (optional; reported in status).
	LogDropped func() uint64
}

// Node is one running hapair node. Create with New, then Run once.
type Node struct {
	cfg  *config.Config
	self *config.Node
	log  *slog.Logger

	lock   *os.File
	vips   *vip.Manager
	repl   *repl.Replicator
	replLn net.Listener
	// certs are the replication link's certificates' dates, as last
	// read (at start, at a renewal the link took in, and each day);
	// certsRead asks watchCerts to read them again.
	certsMu   sync.Mutex
	certs     []repl.CertDate
	certsRead chan struct{}
	svc       *statesync.Service
	agent     *agent.Agent
	hooks     *hooks.Runner
	api       *limitListener // the application socket, set before Run
	serve     []func()       // the servers' accept loops, started by Run
	closers   []func() error
	// handed over: closed by New if it fails, and else by the one that
	// runs them (the replicator its listener, the agent its VIP watch).
	handedOver []func() error
}

// New opens everything a node needs (instance lock, VIP manager, heartbeat
// core, replication listener, control sockets) and wires it; it starts no
// goroutine. On error, what it opened is closed again.
func New(cfg *config.Config, self *config.Node, opt Options) (*Node, error) {
	peer := cfg.Peer(self)
	log := opt.Log
	log.Info("starting", "op", "start", "version", opt.Version, "config", cfg.File, "found_by", opt.FoundBy, "peer", peer.Name, "profile", cfg.Profile, "replication_tls", cfg.TLSCert != "")
	if errs := Preflight(cfg, self); len(errs) > 0 {
		return nil, errs
	}
	n := &Node{cfg: cfg, self: self, log: log}
	if err := n.open(peer, opt); err != nil {
		for i := len(n.handedOver) - 1; i >= 0; i-- {
			n.handedOver[i]()
		}
		n.close()
		return nil, err
	}
	return n, nil
}

// open does New's work; what it opened is in n, for New to close on error.
func (n *Node) open(peer *config.Node, opt Options) error {
	cfg, self, log := n.cfg, n.self, n.log
	var err error
	if n.lock, err = instanceLock(cfg); err != nil {
		return err
	}
	n.closers = append(n.closers, n.lock.Close)
	if err := os.MkdirAll(cfg.StateDir, 0o750); err != nil {
		return err
	}
	if n.vips, err = vipManager(cfg, self); err != nil {
		return err
	}
	n.closers = append(n.closers, n.vips.Close)
	// Not active yet: whatever VIP is here is a leftover of a crash, of
	// this configuration or of the one the last run read (vipRecord).
	recorded, err := readVIPRecord(cfg.StateDir)
	if err != nil {
		log.Warn("VIP record partly unreadable: what it names is released, the rest is not", "op", "cleanup", "err", err)
	}
	removed, err := n.vips.Cleanup(recorded...)
	for _, a := range removed {
		log.Warn("removed stale VIP", "op", "cleanup", "vip", a.String())
	}
	if err != nil {
		return err
	}
	// Before the first claim. Not kept (a full disk, say), the record
	// names what the last run held, which the next cleanup releases all
	// the same; only an edit made since goes unread.
	if err := writeVIPRecord(cfg.StateDir, n.vips.Addrs()); err != nil {
		log.Error("VIP record not kept: a crash with a VIP edited out of the config since would leave that VIP until its lease ends", "op", "start", "err", err)
	}
	sent, err := heartbeat.NewSentPage()
	if err != nil {
		return err
	}
	n.closers = append(n.closers, sent.Close)
	hb, err := n.heartbeatCore(peer, func() (net.Conn, func() error, error) { return opt.StartCore(n.lock, sent.File()) })
	if err != nil {
		return err
	}
	hb.Sent = sent
	if err := n.sessions(peer, opt.Version, hb); err != nil {
		return err
	}
	monitor, err := health.New(checks(cfg, self))
	if err != nil {
		return err
	}
	var hks []hooks.Hook
	for _, h := range cfg.Hooks {
		hks = append(hks, hooks.Hook{On: h.On, Command: h.Command, Timeout: h.Timeout})
	}
	n.hooks = hooks.New(hks, log)
	watch, err := n.vips.Subscribe()
	if err != nil {
		return err
	}
	n.handedOver = append(n.handedOver, watch.Close)
	n.agent = agent.New(agent.Options{
		Health: monitor, Hooks: n.hooks,
		Election:  election.Config{Node: self.ID, Preferred: cfg.Primary == self.Name, Dead: cfg.DeadInterval, StartupWindow: cfg.StartupWindow(), HoldDown: cfg.HoldDown, Generation: hb.Generation()},
		Heartbeat: hb, VIPs: n.vips, VIPWatch: watch, Log: log, Sync: n.svc, SyncMode: statesync.Mode(cfg.SyncMode),
		Interval: cfg.Interval, Dead: cfg.DeadInterval, Lease: cfg.Lease, Refresh: cfg.GARPRefresh, Probe: cfg.VIPProbe,
		IdleTick: idleTick(cfg.DeadInterval, opt.WatchdogPeriod),
		LockFile: filepath.Join(cfg.StateDir, "locked"),
		Cluster:  cfg.Cluster, Node: self.Name, Peer: peer.Name, Profile: cfg.Profile, Version: opt.Version, Keys: heartbeat.Fingerprints(cfg.Keys),
		TLS: n.currentCerts, ClusterID: cfg.ClusterID, ConfigFile: newFileWatch(cfg).differs,
		Ready: opt.Ready, Notify: opt.Notify, Watchdog: opt.Watchdog, LogDropped: opt.LogDropped,
		API: func() control.Conns { return n.api.conns() },
	})
	return n.listen()
}

// heartbeatCore makes the heartbeat endpoint, run by a core process.
func (n *Node) heartbeatCore(peer *config.Node, start func() (net.Conn, func() error, error)) (*heartbeat.Core, error) {
	cfg, self := n.cfg, n.self
	gen, degraded, err := heartbeat.NextGeneration(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	if degraded != nil {
		n.log.Error("boot counter not kept: the node runs, and its peer hears it as it hears a node whose state was lost", "op", "start", "dir", cfg.StateDir, "err", degraded)
	}
	coreCfg := heartbeat.CoreConfig{
		Endpoint: heartbeat.Config{
			Cluster: cfg.ClusterID, Node: self.ID, Keys: cfg.Keys,
			Interval: cfg.Interval, Dead: cfg.DeadInterval, Generation: gen, StateDir: cfg.StateDir,
			// The agent hears of a frame that says nothing new every
			// few seconds, not every interval: at idle it need not wake.
			// Nothing in it waits on them (status has the last frame's
			// time from the core); the one use is the agent repeating,
			// every reportEvery, a condition that lasts (a split brain
			// between two locked nodes), so they come as often. At 1 s,
			// they were one of the agent's four wake-ups a second.
			Refresh: 5 * time.Second,
		},
		RawInterface: self.HeartbeatInterface,
		UDPLocal:     netip.AddrPortFrom(self.ReplicationAddress, uint16(cfg.HeartbeatPort)),
		UDPPeer:      netip.AddrPortFrom(peer.ReplicationAddress, uint16(cfg.HeartbeatPort)),
		Lease:        coreLease(cfg.DeadInterval),
		RTPriority:   RTPriority,
	}
	for _, v := range cfg.VIPs {
		coreCfg.VIPs = append(coreCfg.VIPs, v.Prefix.String()+" "+v.VIPInterface(self))
	}
	if peer.HeartbeatMAC != nil {
		coreCfg.RawPeerMAC = peer.HeartbeatMAC.String()
	}
	hb, err := heartbeat.NewCore(coreCfg, start)
	if err != nil {
		return nil, err
	}
	if msg := PreemptionWarning(cfg); msg != "" {
		n.log.Warn(msg, "op", "core")
	}
	hb.OnHello = func(h heartbeat.CoreHello) {
		if h.RealTime && h.Locked {
			n.log.Info("heartbeat core running", "op", "core", "realtime", true, "memory_locked", true)
			return
		}
		n.log.Warn("heartbeat core without full isolation: liveness may suffer on a loaded node", "op", "core",
			"realtime", h.RealTime, "realtime_error", h.RTError, "memory_locked", h.Locked, "lock_error", h.LockError)
	}
	return hb, nil
}

// sessions makes the session store, its replication and the service
// applications use; release is this hapaird's version, which replication
// tells the peer, and hb the heartbeat core, told when a standby's
// connection ends.
func (n *Node) sessions(peer *config.Node, release string, hb *heartbeat.Core) error {
	cfg, self := n.cfg, n.self
	var err error
	replAddr := netip.AddrPortFrom(self.ReplicationAddress, uint16(cfg.ReplicationPort)).String()
	if n.replLn, err = net.Listen("tcp", replAddr); err != nil {
		return fmt.Errorf("replication listener: %w", err)
	}
	n.handedOver = append(n.handedOver, n.replLn.Close)
	var tlsServer, tlsClient *tls.Config
	if cfg.TLSCert != "" {
		n.certsRead = make(chan struct{}, 1)
		reloaded := func(err error) {
			if err != nil {
				n.log.Error("the replication link's certificate files changed but do not load: it goes on with the last ones that did, whatever their end", "op", "tls", "err", err)
				return
			}
			select {
			case n.certsRead <- struct{}{}:
			default:
			}
		}
		tlsServer, tlsClient, err = repl.TLSConfigs(config.ForNode(cfg.TLSCert, self), config.ForNode(cfg.TLSKey, self), cfg.TLSCA, peer.Name, reloaded)
		if err != nil {
			return err
		}
		if n.certs, err = certDates(cfg, self); err != nil {
			return err
		}
	}
	st := store.New(store.Limits{MaxSessions: cfg.MaxSessions, MaxData: cfg.MaxData, MaxMemory: cfg.MaxMemory})
	// The standby polls for the next operation as long as the active
	// polls for its acknowledgement: in sync mode only.
	var poll time.Duration
	if cfg.SyncMode == "sync" {
		poll = cfg.SyncPoll
	}
	sums := cfg.PairSums()
	n.repl = repl.New(st, repl.Config{
		Keys:      cfg.Keys,
		Peer:      netip.AddrPortFrom(peer.ReplicationAddress, uint16(cfg.ReplicationPort)).String(),
		OnDropped: n.sessionsDropped,
		OnError:   replicationErrors(n.log),
		AwaitPeer: true,
		TLSServer: tlsServer, TLSClient: tlsClient, TLSOptional: cfg.TLSOptional,
		Poll: poll,
		Sums: sums, Release: release,
		// Like the service's callbacks below, this reaches the
		// agent, made later, only once Run has started.
		OnPeerConfig: func(peer map[string]uint64, release string) {
			n.agent.PeerConfig(config.PairDiffers(sums, peer), release)
		},
		OnApplied: func() { n.svc.Applied() },
		// Sync writes wait for what the standby's core says of its
		// end; the core reads it at once, not at its next tick.
		OnStandbyLost: hb.ReadAtOnce,
	})
	n.svc = statesync.NewService(st, n.repl, statesync.ServiceConfig{
		Mode: statesync.Mode(cfg.SyncMode), SyncTimeout: cfg.SyncTimeout, SyncPoll: cfg.SyncPoll,
		// The agent is made after the service it uses: these reach
		// it through the node, and run only once Run has started.
		OnNewSession: func(t time.Time) { n.agent.NewSession(t) },
		OnDegraded:   func(reason string, planned bool) { n.agent.SyncDegraded(reason, planned) },
		OnWrite:      func() { n.agent.Wrote() },
	})
	return nil
}

// sessionsDropped tells the applications which sessions a resync from the
// active removed.
func (n *Node) sessionsDropped(ids []string) {
	n.log.Warn("sessions dropped on resync from the active", "op", "resync", "count", len(ids))
	n.svc.Publish(statesync.Event{Type: "sessions-dropped", Reason: "resynchronised from the active node", IDs: ids})
}

func checks(cfg *config.Config, self *config.Node) []health.Config {
	var out []health.Config
	for _, c := range cfg.Checks {
		out = append(out, health.Config{Name: c.Name, Kind: c.Kind, Target: c.TargetFor(self), Interval: c.Interval, Timeout: c.Timeout,
			Rise: c.Rise, Fall: c.Fall, Critical: c.Critical, StatusMin: c.StatusMin, StatusMax: c.StatusMax, Body: c.ExpectBody})
	}
	return out
}

// listen opens the application socket, the operators' socket and the
// metrics listener.
func (n *Node) listen() error {
	mux := control.NewServeMux(n.agent)
	n.svc.Register(mux)
	api, err := n.control(n.cfg.Socket, control.JSONErrors(mux), 0o660, "hapair", appConns)
	if err != nil {
		return err
	}
	n.api = api
	// Operator commands on a socket of their own, for root only.
	if _, err := n.control(config.AdminSocket(n.cfg.Socket), control.JSONErrors(control.NewAdminMux(n.agent)), 0o600, "", adminConns); err != nil {
		return err
	}
	if n.cfg.MetricsListen == "" {
		return nil
	}
	ml, err := net.Listen("tcp", n.cfg.MetricsListen)
	if err != nil {
		return fmt.Errorf("metrics listener: %w", err)
	}
	// Bounded like the control sockets, and more: the page renders in
	// well under a second, so a client that does not take it within 10 s
	// is let go; and the listener keeps metricsConns connections at most.
	srv := &http.Server{Handler: metrics.Handler(n.agent.Status), ReadHeaderTimeout: 5 * time.Second,
		WriteTimeout: 10 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 64 << 10}
	n.server(srv, limitConns(ml, metricsConns, rateLimited(n.log, "metrics listener")))
	return nil
}

// server keeps srv to serve l once Run starts, and to close with the node.
func (n *Node) server(srv *http.Server, l net.Listener) {
	n.serve = append(n.serve, func() { srv.Serve(l) })
	n.closers = append(n.closers, func() error {
		// Close on a server that never served leaves its listener
		// open: close that too.
		l.Close()
		return srv.Close()
	})
}

// Run runs the node until ctx ends, hands over gracefully if active, and
// closes everything; whatever happened, the node holds no VIP afterwards.
func (n *Node) Run(ctx context.Context) error {
	defer n.close()
	for _, serve := range n.serve {
		go serve()
	}
	certsCtx, stopCerts := context.WithCancel(ctx)
	certsDone := make(chan struct{})
	go func() {
		defer close(certsDone)
		n.watchCerts(certsCtx)
	}()
	defer func() {
		stopCerts()
		<-certsDone
	}()
	replCtx, stopRepl := context.WithCancel(context.Background())
	replDone := make(chan struct{})
	go func() {
		defer close(replDone)
		n.repl.Run(replCtx, n.replLn)
	}()
	defer func() {
		stopRepl()
		<-replDone
	}()
	err := n.agent.Run(ctx)
	if _, cerr := n.vips.Cleanup(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	return err
}

// watchCerts says, at start and each day after, what of the replication
// link's certificates fails its handshakes by their dates, or will within
// repl.RenewWithin: a daemon runs for months past the day it read them.
// It reads the files again each day, and when the link took in renewed
// ones, so that what status and the metric say, and the warnings, are
// the files', not the start's. A day is this node's only wake-up for it.
func (n *Node) watchCerts(ctx context.Context) {
	if n.certsRead == nil {
		return
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			t.Reset(24 * time.Hour)
		case <-n.certsRead:
			n.log.Info("the replication link took in renewed certificate files", "op", "tls")
		}
		certs, err := certDates(n.cfg, n.self)
		if err != nil {
			// The link goes on with what it last loaded.
			n.log.Error("the replication link's certificate files cannot be read", "op", "tls", "err", err)
			continue
		}
		n.certsMu.Lock()
		n.certs = certs
		n.certsMu.Unlock()
		failing, soon := repl.DateWarnings(certs, time.Now())
		for _, m := range failing {
			n.log.Error(m, "op", "tls")
		}
		for _, m := range soon {
			n.log.Warn(m, "op", "tls")
		}
	}
}

// currentCerts is what watchCerts last read, for status.
func (n *Node) currentCerts() []repl.CertDate {
	n.certsMu.Lock()
	defer n.certsMu.Unlock()
	return n.certs
}

// close closes what New opened, newest first.
func (n *Node) close() {
	if n.hooks != nil {
		n.hooks.Close()
		n.hooks = nil
	}
	for i := len(n.closers) - 1; i >= 0; i-- {
		n.closers[i]()
	}
	n.closers = nil
}

// coreLease is how long the agent loop may go without renewing the
// heartbeat core's lease before the core stops the heartbeats, so that a
// hung agent fails over as a hung node would. Long against any pause the
// loop takes on a busy node (it waits on no disk and no store lock), short
// against the systemd watchdog (5 s), which restarts a hung daemon.
func coreLease(dead time.Duration) time.Duration { return max(2*time.Second, 10*dead) }

// idleTick is how often an idle agent ticks: every tick renews the core's
// lease (a quarter of it leaves three ticks of slack) and pings systemd's
// watchdog (which wants one every half period). It was a fixed 250 ms,
// four wake-ups a second for a lease of 3 s.
func idleTick(dead, watchdog time.Duration) time.Duration {
	t := coreLease(dead) / 4
	if watchdog > 0 {
		t = min(t, watchdog/4)
	}
	return t
}
