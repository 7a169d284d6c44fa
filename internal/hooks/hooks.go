// Package hooks runs the operator's commands on transitions (active,
// standby, fault, split-brain, lock, sync-degraded). Each run is
// asynchronous with a timeout, so a slow or failing hook never delays a
// failover; its output goes to the daemon's log.
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
}

// New makes a runner; it starts nothing until Fire.
func New(hooks []Hook, log *slog.Logger) *Runner {
	return &Runner{hooks: hooks, log: log}
}

// Env is what a hook learns, as HAPAIR_* environment variables.
type Env struct {
	Event, Role, PreviousRole, Reason, Node, Peer string
}

// Fire starts every hook registered for env.Event and returns at once.
func (r *Runner) Fire(env Env) {
	vars := []string{
		"HAPAIR_EVENT=" + env.Event, "HAPAIR_ROLE=" + env.Role, "HAPAIR_PREVIOUS_ROLE=" + env.PreviousRole,
		"HAPAIR_REASON=" + env.Reason, "HAPAIR_NODE=" + env.Node, "HAPAIR_PEER=" + env.Peer,
	}
	for _, h := range r.hooks {
		if !slices.Contains(h.On, env.Event) {
			continue
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			start := time.Now()
			out, err := command.Run(context.Background(), h.Command, vars, h.Timeout)
			attrs := []any{"op", "hook", "event", env.Event, "command", strings.Join(h.Command, " "), "took", time.Since(start).Round(time.Millisecond), "output", strings.TrimSpace(out)}
			if err != nil {
				r.log.Warn("hook failed", append(attrs, "err", err)...)
				return
			}
			r.log.Info("hook ran", attrs...)
		}()
	}
}

// Close waits for running hooks, each bounded by its timeout: a hook fired
// by the last transition of a stopping daemon still runs to its end.
func (r *Runner) Close() { r.wg.Wait() }
