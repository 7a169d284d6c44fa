// Package hooks runs the operator's commands on transitions (active,
// standby, fault, split-brain, lock, sync-degraded). Hooks run off the
// caller, each with a timeout, so a slow or failing hook never delays a
// failover; its output goes to the daemon's log. Each configured hook runs
// one call at a time, in the order the calls were fired: its "standby" call
// must not finish before the "active" call of the transition before it, or
// the operator's script ends in the wrong state. Different hooks do not wait
// for each other, so one that hangs until its timeout delays only itself.
package hooks

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hapair/hapair/internal/command"
)

// Events a hook can be run on, the names config and hooks' environment
// use.
const (
	Active       = "active"        // this node became active
	Standby      = "standby"       // this node became standby
	Fault        = "fault"         // this node went to fault
	SplitBrain   = "split-brain"   // both nodes active: arbitrating
	Lock         = "lock"          // this node was locked or unlocked
	SyncDegraded = "sync-degraded" // sync replication fell back to async
)

// Events lists every event, in the order messages give them.
var Events = []string{Active, Standby, Fault, SplitBrain, Lock, SyncDegraded}

// Hook is one configured command.
type Hook struct {
	On      []string
	Command []string
	Timeout time.Duration
}

// Runner fires hooks. Close waits for running ones.
type Runner struct {
	hooks []Hook
	log   *slog.Logger
	wg    sync.WaitGroup

	mu      sync.Mutex
	pending map[int][]run // by index in hooks
	busy    map[int]bool  // a goroutine is working through pending[i]
}

type run struct {
	env  Env
	vars []string
}

// New makes a runner; it starts nothing until Fire.
func New(hooks []Hook, log *slog.Logger) *Runner {
	return &Runner{hooks: hooks, log: log, pending: map[int][]run{}, busy: map[int]bool{}}
}

// Env is what a hook learns, as HAPAIR_* environment variables.
type Env struct {
	Event, Role, PreviousRole, Reason, Node, Peer string
}

// Fire queues every hook registered for env.Event and returns at once.
func (r *Runner) Fire(env Env) {
	vars := []string{
		"HAPAIR_EVENT=" + env.Event, "HAPAIR_ROLE=" + env.Role, "HAPAIR_PREVIOUS_ROLE=" + env.PreviousRole,
		"HAPAIR_REASON=" + env.Reason, "HAPAIR_NODE=" + env.Node, "HAPAIR_PEER=" + env.Peer,
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, h := range r.hooks {
		if !slices.Contains(h.On, env.Event) {
			continue
		}
		r.pending[i] = append(r.pending[i], run{env: env, vars: vars})
		if !r.busy[i] {
			r.busy[i] = true
			r.wg.Add(1)
			go r.work(i)
		}
	}
}

// work runs hook i's pending calls in order until none is left.
func (r *Runner) work(i int) {
	defer r.wg.Done()
	for {
		r.mu.Lock()
		if len(r.pending[i]) == 0 {
			r.busy[i] = false
			r.mu.Unlock()
			return
		}
		next := r.pending[i][0]
		r.pending[i] = r.pending[i][1:]
		r.mu.Unlock()
		r.exec(r.hooks[i], next)
	}
}

func (r *Runner) exec(h Hook, x run) {
	start := time.Now()
	out, err := command.Run(context.Background(), h.Command, x.vars, h.Timeout)
	attrs := []any{"op", "hook", "event", x.env.Event, "command", strings.Join(h.Command, " "), "took", time.Since(start).Round(time.Millisecond), "output", strings.TrimSpace(out)}
	if err != nil {
		r.log.Warn("hook failed", append(attrs, "err", err)...)
		return
	}
	r.log.Info("hook ran", attrs...)
}

// Close waits for running hooks, each bounded by its timeout: a hook fired
// by the last transition of a stopping daemon still runs to its end.
func (r *Runner) Close() { r.wg.Wait() }
