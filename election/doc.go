// Package election is hapair's role state machine and split-brain
// arbitration (design.md sections 3 and 4), as a pure value in the shape
// of etcd/raft's Step: events carry the time, Step returns the actions to
// take, and nothing here reads a clock, touches a file or socket, starts a
// goroutine or logs. The agent owns one Machine and performs its actions.
//
// Roles: INIT -> STANDBY | ACTIVE, STANDBY <-> ACTIVE, any -> FAULT (a
// critical check failed), FAULT -> STANDBY once checks recover. Locked is
// an attribute, not a role: a locked node never changes role by itself.
package election
