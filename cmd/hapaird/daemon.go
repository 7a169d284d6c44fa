package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	sdnotify "github.com/coreos/go-systemd/v22/daemon"
	"github.com/hapair/hapair/config"
	"github.com/hapair/hapair/election"
	"github.com/hapair/hapair/health"
	"github.com/hapair/hapair/heartbeat"
	"github.com/hapair/hapair/internal/agent"
	"github.com/hapair/hapair/internal/control"
	"github.com/hapair/hapair/internal/hooks"
	"github.com/hapair/hapair/internal/metrics"
	"github.com/hapair/hapair/statesync"
	"github.com/hapair/hapair/vip"
	"golang.org/x/sys/unix"
)

func vipManager(cfg *config.Config, self *config.Node) (*vip.Manager, error) {
	var addrs []vip.Addr
	for _, v := range cfg.VIPs {
		addrs = append(addrs, vip.Addr{Prefix: v.Prefix, Interface: v.VIPInterface(self)})
	}
	return vip.New(addrs, vip.Options{Lease: cfg.Lease, Count: cfg.GARPCount, Spacing: cfg.GARPSpacing})
}

// instanceLock takes the per-node runtime lock; a second daemon (or a
// --cleanup while the daemon runs) fails here.
func instanceLock(cfg *config.Config) (*os.File, error) {
	dir := filepath.Dir(cfg.Socket)
	// Traversable for group hapair, whose members use the socket (0660).
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, "hapaird.lock"), os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("another hapaird is running for this node (lock %s held)", f.Name())
		}
		return nil, err
	}
	f.Truncate(0)
	fmt.Fprintf(f, "%d\n", os.Getpid())
	return f, nil
}

func cleanup(cfg *config.Config, self *config.Node, stdout, stderr io.Writer) int {
	lock, err := instanceLock(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "hapaird --cleanup:", err)
		return 1
	}
	defer lock.Close()
	m, err := vipManager(cfg, self)
	if err != nil {
		fmt.Fprintln(stderr, "hapaird --cleanup:", err)
		return 1
	}
	defer m.Close()
	removed, err := m.Cleanup()
	for _, a := range removed {
		fmt.Fprintf(stdout, "removed %s\n", a)
	}
	if err != nil {
		fmt.Fprintln(stderr, "hapaird --cleanup:", err)
		return 1
	}
	if len(removed) == 0 {
		fmt.Fprintln(stdout, "no VIP held here")
	}
	return 0
}

func daemon(cfg *config.Config, self *config.Node, rule string, stderr io.Writer) int {
	log := slog.New(slog.NewTextHandler(stderr, nil)).With("node", self.Name)
	if err := runDaemon(cfg, self, rule, log); err != nil {
		log.Error(err.Error())
		return 1
	}
	return 0
}

func runDaemon(cfg *config.Config, self *config.Node, rule string, log *slog.Logger) error {
	peer := cfg.Peer(self)
	log.Info("starting", "op", "start", "version", version, "config", cfg.File, "found_by", rule, "peer", peer.Name, "profile", cfg.Profile, "replication_tls", cfg.TLSCert != "")
	for _, ifn := range interfacesOf(cfg, self) {
		if _, err := net.InterfaceByName(ifn); err != nil {
			return fmt.Errorf("interface %s (from %s): %w", ifn, cfg.File, err)
		}
	}
	lock, err := instanceLock(cfg)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := os.MkdirAll(cfg.StateDir, 0o750); err != nil {
		return err
	}

	vips, err := vipManager(cfg, self)
	if err != nil {
		return err
	}
	defer vips.Close()
	// Not active yet: whatever VIP is here is a leftover of a crash.
	removed, err := vips.Cleanup()
	for _, a := range removed {
		log.Warn("removed stale VIP", "op", "cleanup", "vip", a.String())
	}
	if err != nil {
		return err
	}

	gen, err := heartbeat.NextGeneration(cfg.StateDir)
	if err != nil {
		return err
	}
	coreCfg := heartbeat.CoreConfig{
		Endpoint: heartbeat.Config{
			Cluster: cfg.ClusterID, Node: self.ID, Keys: cfg.Keys,
			Interval: cfg.Interval, Dead: cfg.DeadInterval, Generation: gen, StateDir: cfg.StateDir,
		},
		RawInterface: self.HeartbeatInterface,
		UDPLocal:     netip.AddrPortFrom(self.ReplicationAddress, uint16(cfg.HeartbeatPort)),
		UDPPeer:      netip.AddrPortFrom(peer.ReplicationAddress, uint16(cfg.HeartbeatPort)),
		Lease:        coreLease(cfg.DeadInterval),
		RTPriority:   coreRTPriority,
	}
	for _, v := range cfg.VIPs {
		coreCfg.VIPs = append(coreCfg.VIPs, v.Prefix.String()+" "+v.VIPInterface(self))
	}
	if peer.HeartbeatMAC != nil {
		coreCfg.RawPeerMAC = peer.HeartbeatMAC.String()
	}
	hb, err := heartbeat.NewCore(coreCfg, startCore)
	if err != nil {
		return err
	}
	hb.OnHello = func(h heartbeat.CoreHello) {
		if h.RealTime && h.Locked {
			log.Info("heartbeat core running", "op", "core", "realtime", true, "memory_locked", true)
			return
		}
		log.Warn("heartbeat core without full isolation: liveness may suffer on a loaded node", "op", "core",
			"realtime", h.RealTime, "realtime_error", h.RTError, "memory_locked", h.Locked, "lock_error", h.LockError)
	}
	// Until the agent and the replicator run and own them, a failed start
	// closes what it opened.
	var undo []func() error
	running := false
	defer func() {
		for i := len(undo) - 1; i >= 0 && !running; i-- {
			undo[i]()
		}
	}()

	replAddr := netip.AddrPortFrom(self.ReplicationAddress, uint16(cfg.ReplicationPort)).String()
	replLn, err := net.Listen("tcp", replAddr)
	if err != nil {
		return fmt.Errorf("replication listener: %w", err)
	}
	undo = append(undo, replLn.Close)
	var tlsServer, tlsClient *tls.Config
	if cfg.TLSCert != "" {
		tlsServer, tlsClient, err = statesync.TLSConfigs(config.ForNode(cfg.TLSCert, self), config.ForNode(cfg.TLSKey, self), cfg.TLSCA, peer.Name)
		if err != nil {
			return err
		}
	}
	store := statesync.NewStore(statesync.Limits{MaxSessions: cfg.MaxSessions, MaxData: cfg.MaxData, MaxMemory: cfg.MaxMemory})
	var a *agent.Agent
	var svc *statesync.Service
	repl := statesync.NewReplicator(store, statesync.ReplConfig{
		Keys: cfg.Keys,
		Peer: netip.AddrPortFrom(peer.ReplicationAddress, uint16(cfg.ReplicationPort)).String(),
		OnDropped: func(ids []string) {
			log.Warn("sessions dropped on resync from the active", "op", "resync", "count", len(ids))
			svc.Hub().Publish(statesync.Event{Type: "sessions-dropped", Reason: "resynchronised from the active node", IDs: ids})
		},
		OnError:   rateLimited(log, "replication"),
		TLSServer: tlsServer, TLSClient: tlsClient,
		Poll: replPoll(cfg),
	})
	svc = statesync.NewService(store, repl, statesync.ServiceConfig{
		Mode: statesync.Mode(cfg.SyncMode), SyncTimeout: cfg.SyncTimeout, SyncPoll: cfg.SyncPoll,
		OnNewSession: func(t time.Time) { a.NewSession(t) },
		OnDegraded:   func(reason string) { a.SyncDegraded(reason) },
	})
	var checks []health.Config
	for _, c := range cfg.Checks {
		checks = append(checks, health.Config{Name: c.Name, Kind: c.Kind, Target: c.TargetFor(self), Interval: c.Interval, Timeout: c.Timeout,
			Rise: c.Rise, Fall: c.Fall, Critical: c.Critical, StatusMin: c.StatusMin, StatusMax: c.StatusMax, Body: c.ExpectBody})
	}
	monitor, err := health.New(checks)
	if err != nil {
		return err
	}
	var hks []hooks.Hook
	for _, h := range cfg.Hooks {
		hks = append(hks, hooks.Hook{On: h.On, Command: h.Command, Timeout: h.Timeout})
	}
	hookRunner := hooks.New(hks, log)
	defer hookRunner.Close()
	watch, err := vips.Subscribe()
	if err != nil {
		return err
	}
	undo = append(undo, watch.Close)
	a = agent.New(agent.Options{
		Health: monitor, Hooks: hookRunner,
		Election:  election.Config{Node: self.ID, Preferred: cfg.Primary == self.Name, Dead: cfg.DeadInterval, StartupWindow: cfg.StartupWindow()},
		Heartbeat: hb, VIPs: vips, VIPWatch: watch, Log: log, Sync: svc, SyncMode: statesync.Mode(cfg.SyncMode),
		Interval: cfg.Interval, Dead: cfg.DeadInterval, Lease: cfg.Lease, Refresh: cfg.GARPRefresh,
		LockFile: filepath.Join(cfg.StateDir, "locked"),
		Cluster:  cfg.Cluster, Node: self.Name, Peer: peer.Name, Profile: cfg.Profile, Version: version,
		Ready: func(role string) {
			sdnotify.SdNotify(false, sdnotify.SdNotifyReady+"\nSTATUS=role "+role)
		},
		Notify: func(role, reason string) {
			sdnotify.SdNotify(false, "STATUS=role "+role+": "+reason)
		},
		Watchdog: watchdog(),
	})

	mux := control.NewServeMux(a)
	svc.Register(mux)
	srv, err := serveControl(cfg.Socket, mux, 0o660, "hapair")
	if err != nil {
		return err
	}
	defer srv.Close()
	// Operator commands on a socket of their own, for root only.
	admin, err := serveControl(config.AdminSocket(cfg.Socket), control.NewAdminMux(a), 0o600, "")
	if err != nil {
		return err
	}
	defer admin.Close()
	if cfg.MetricsListen != "" {
		ml, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			return fmt.Errorf("metrics listener: %w", err)
		}
		msrv := &http.Server{Handler: metrics.Handler(a.Status), ReadHeaderTimeout: 5 * time.Second}
		go msrv.Serve(ml)
		defer msrv.Close()
	}

	running = true
	replCtx, stopRepl := context.WithCancel(context.Background())
	replDone := make(chan struct{})
	go func() {
		defer close(replDone)
		repl.Run(replCtx, replLn)
	}()
	defer func() {
		stopRepl()
		<-replDone
	}()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		sdnotify.SdNotify(false, sdnotify.SdNotifyStopping)
	}()
	err = a.Run(ctx)
	// Whatever happened, a stopping daemon holds no VIP.
	if _, cerr := vips.Cleanup(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	return err
}

// coreLease is how long the agent loop may go without renewing the
// heartbeat core's lease before the core stops the heartbeats, so that a
// hung agent fails over as a hung node would. Long against any pause the
// loop takes on a busy node (it waits on no disk and no store lock), short
// against the systemd watchdog (5 s), which restarts a hung daemon.
func coreLease(dead time.Duration) time.Duration { return max(2*time.Second, 10*dead) }

// watchdog returns the agent's watchdog ping when systemd asked for one:
// the loop calls it every tick, and it pings at half the watchdog period,
// so a hung loop (not only a dead process) trips the watchdog.
func watchdog() func() {
	period, err := sdnotify.SdWatchdogEnabled(false)
	if err != nil || period == 0 {
		return nil
	}
	var last time.Time
	return func() {
		if time.Since(last) >= period/2 {
			sdnotify.SdNotify(false, sdnotify.SdNotifyWatchdog)
			last = time.Now()
		}
	}
}

// rateLimited logs errors of one kind at most once a second, with how many
// were suppressed: a broken link must not flood the journal.
func rateLimited(log *slog.Logger, what string) func(error) {
	var mu sync.Mutex
	var last time.Time
	var suppressed int
	return func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if time.Since(last) < time.Second {
			suppressed++
			return
		}
		log.Warn(what+" error", "op", what, "err", err, "suppressed", suppressed)
		last, suppressed = time.Now(), 0
	}
}

func serveControl(path string, h http.Handler, mode os.FileMode, group string) (*http.Server, error) {
	// The instance lock is ours, so a socket file here is a dead daemon's.
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, mode); err != nil {
		l.Close()
		return nil, err
	}
	// Members of group hapair may use the API (the package creates it).
	if group != "" {
		if g, err := user.LookupGroup(group); err == nil {
			if gid, err := strconv.Atoi(g.Gid); err == nil {
				os.Chown(path, -1, gid)
			}
		}
	}
	// Bounds for a client that connects and dawdles: the headers within
	// 5 s, an idle keep-alive connection closed after a minute. No read
	// or write timeout: event subscriptions and the binary session stream
	// are long-lived by design.
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 64 << 10}
	go srv.Serve(l)
	return srv, nil
}

// replPoll is how long the standby polls for the next operation: in sync
// mode, as long as the active polls for its acknowledgement.
func replPoll(cfg *config.Config) time.Duration {
	if cfg.SyncMode != "sync" {
		return 0
	}
	return cfg.SyncPoll
}
