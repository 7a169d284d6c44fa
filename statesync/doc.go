// Package statesync is the session service of a node: it keeps the state
// of every application session on the active node and streams it to the
// standby in real time, so the standby can continue the sessions after a
// failover (design.md section 7). It decides no roles: the agent tells it
// whether this node is active (Service.SetRole).
//
// It is split along its seams, each part readable alone:
//
//   - statesync (this package): the write path (the role gate, sync mode's
//     wait for the standby, async mode's backpressure), the application API
//     on a unix socket (HTTP/JSON, and a binary stream for high rates), and
//     the event stream to applications (Hub);
//   - statesync/store: the sessions, their sequence numbers and epochs, and
//     the bounded log a standby resumes from;
//   - statesync/repl: the replication protocol between the two nodes
//     (leader and follower), its authentication, sealing and TLS, and the
//     latency machinery behind one transport file;
//   - statesync/wire: the replication messages' format;
//   - statesync/client: the Go client of the application API.
package statesync
