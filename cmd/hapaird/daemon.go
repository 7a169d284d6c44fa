package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	sdnotify "github.com/coreos/go-systemd/v22/daemon"
	"github.com/hapair/hapair/config"
	"github.com/hapair/hapair/internal/logq"
	"github.com/hapair/hapair/node"
	"github.com/hapair/hapair/node/agent"
	"golang.org/x/sys/unix"
)

func cleanup(cfg *config.Config, self *config.Node, stdout, stderr io.Writer) int {
	removed, record, err := node.Cleanup(cfg, self)
	for _, a := range removed {
		fmt.Fprintf(stdout, "removed %s\n", a)
	}
	if record != nil {
		// Lines edited by hand; what could be read was released, and
		// the next start writes the record anew.
		fmt.Fprintln(stderr, "hapaird --cleanup: warning:", record)
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

// cleanupRecorded is --cleanup with a config that does not load, or does
// not name this machine: an edit made while the daemon ran, read only
// now by ExecStopPost after a crash. The VIPs the daemon recorded at its
// start are released all the same: left, they would stay until their
// lease ends, beside the peer that took them over. It finds the state
// directory and socket by a lenient read of the file (config.Paths) or
// the flags. A file that is not TOML at all leaves it only the flags, or,
// run by the unit (ExecStopPost), the unit's own directories, which
// systemd passes every process of the unit (unitPaths); the defaults
// alone could name another daemon's.
func cleanupRecorded(o *options, stdout, stderr io.Writer) {
	sock, dir, err := config.Paths(o.config)
	if err != nil {
		sock, dir = unitPaths()
	}
	if o.socket != "" {
		sock = o.socket
	}
	if o.stateDir != "" {
		dir = o.stateDir
	}
	if sock == "" || dir == "" {
		fmt.Fprintf(stderr, "hapaird --cleanup: no VIP released: the file does not say where the state directory is (--state-dir and --socket would)\n")
		return
	}
	removed, record, err := node.CleanupRecorded(sock, dir)
	for _, a := range removed {
		fmt.Fprintf(stdout, "removed %s (recorded in %s at the daemon's start)\n", a, dir)
	}
	if err = errors.Join(err, record); err != nil {
		fmt.Fprintln(stderr, "hapaird --cleanup:", err)
	}
}

// unitPaths is the socket and state directory of the systemd unit this
// process runs in ("" when it runs in none): its RuntimeDirectory and
// StateDirectory, which systemd names in $RUNTIME_DIRECTORY and
// $STATE_DIRECTORY (the first, where the unit has several), with the
// socket's default name. Those are the shipped unit's and the defaults';
// a file that set its own socket elsewhere put the daemon's lock there,
// and a heartbeat core still handing over under it is then not waited
// for: its VIPs go before the peer holds them, one holder at most.
func unitPaths() (socket, stateDir string) {
	run, _, _ := strings.Cut(os.Getenv("RUNTIME_DIRECTORY"), ":")
	state, _, _ := strings.Cut(os.Getenv("STATE_DIRECTORY"), ":")
	if run == "" || state == "" {
		return "", ""
	}
	return filepath.Join(run, filepath.Base(config.DefaultSocket)), state
}

// stopAfterAgent bounds what a stop does once the agent let go: the
// heartbeat core's end and the log's last lines (a second, above), with
// room to spare.
const stopAfterAgent = 5 * time.Second

// logQueue is how many bytes of log lines wait for a journal that does not
// read before the newest are dropped: thousands of lines, far more than a
// failover or a flapping link writes in the seconds a stalled journald
// takes.
const logQueue = 1 << 20

// daemon runs the node until SIGTERM or SIGINT, telling systemd how it
// goes.
func daemon(cfg *config.Config, self *config.Node, rule string, stderr io.Writer) int {
	// The log goes through a queue: a journal that does not read must
	// not hold up the agent's loop (package logq). At exit, the last
	// lines get a moment to reach it.
	q := logq.New(stderr, logQueue)
	log := slog.New(slog.NewTextHandler(q, nil)).With("node", self.Name)
	go q.Run(func(n uint64) {
		log.Warn("log lines dropped: stderr (the journal) did not take them in time", "op", "log", "dropped", n)
	})
	defer q.Close(time.Second)
	// Nor must PID 1, when it does not read its notify socket.
	sd := systemdNotifier()
	go sd.Run()
	n, err := node.New(cfg, self, node.Options{
		Log: log, Version: version, FoundBy: rule, StartCore: startCore, LogDropped: q.Dropped,
		Ready: sd.Ready,
		Notify: func(role, reason string) {
			sd.Status("role " + role + ": " + reason)
		},
		Watchdog: watchdog(sd), WatchdogPeriod: watchdogPeriod(),
	})
	if err != nil {
		log.Error(err.Error())
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		sd.Stopping(agent.StopWithin(cfg.DeadInterval) + stopAfterAgent)
	}()
	go ignoreStrays(log)
	if err := n.Run(ctx); err != nil {
		log.Error(err.Error())
		return 1
	}
	return 0
}

// ignoreStrays keeps the daemon running through signals whose default
// action would end it, for as long as the process lives (a SIGHUP in the
// middle of a graceful stop's handover must not end it either). An
// operator may send them out of habit: keepalived reloads its
// configuration on SIGHUP and dumps its state on SIGUSR1 and SIGUSR2.
// Ended by one, an active node would fail over with no handover, for a
// reload it does not do (one is designed, not built: design-notes.md).
// They are logged, with what to do instead.
// SIGPIPE is caught too: the journal's end of stderr may go away, which
// must not end an HA daemon. Caught rather than ignored, so that the
// hooks this process starts do not inherit an ignored disposition.
func ignoreStrays(log *slog.Logger) {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGPIPE)
	for sig := range sigs {
		switch sig {
		case syscall.SIGHUP:
			log.Warn("SIGHUP ignored: this version does not reload its configuration; the running one is unchanged (check a new file with hapaird --check, then restart the standby, switch over and restart the other node; hapairctl status names what the file changes)", "op", "signal", "signal", "SIGHUP")
		case syscall.SIGUSR1, syscall.SIGUSR2:
			name := unix.SignalName(sig.(syscall.Signal))
			log.Warn(name+" ignored: hapairctl status and /metrics show this node's state", "op", "signal", "signal", name)
		}
	}
}

// watchdogPeriod is the watchdog period systemd asked for, 0 for none.
func watchdogPeriod() time.Duration {
	period, err := sdnotify.SdWatchdogEnabled(false)
	if err != nil {
		return 0
	}
	return period
}

// watchdog returns the agent's watchdog ping when systemd asked for one:
// the loop calls it every tick, and it asks sd for a ping at half the
// watchdog period, so a hung loop (not only a dead process) trips the
// watchdog.
func watchdog(sd *notifier) func() {
	period := watchdogPeriod()
	if period == 0 {
		return nil
	}
	var last time.Time
	return func() {
		if time.Since(last) >= period/2 {
			sd.Ping()
			last = time.Now()
		}
	}
}
