// Package node builds one hapair node from a validated config.Config and
// runs it (design.md section 1): it is the one place the edges
// (heartbeat, vip, statesync, health, hooks, the control sockets) are made
// and handed to the agent, which owns the election machine. The daemon
// (cmd/hapaird) keeps what belongs to a process: flags, signals, systemd's
// notifications, and starting the heartbeat core as a child.
package node
