// Package statesync keeps the state of every application session on the
// active node and streams it to the standby in real time, so the standby
// can continue the sessions after a failover (design.md section 7). It
// decides no roles: the agent tells it whether this node is active.
//
// The pieces: Store (sessions and an ordered, bounded log of operations),
// the replication protocol over TCP (Leader on the active, Follower on the
// standby), and the application API on a unix socket (HTTP/JSON, and a
// binary stream for high rates, see package statesync/client).
//
// Replication messages are length-prefixed, big-endian:
//
//	0  length of what follows      4
//	4  type                        1
//	5  body                        length-1
//
//	hello     standby->active  epoch u64, applied seq u64
//	snapshot  active->standby  epoch u64, seq u64, count u64
//	entry     active->standby  version u64, id (u16 length + bytes), data (u32 length + bytes)
//	resume    active->standby  epoch u64
//	op        active->standby  seq u64, kind u8, id (u16 + bytes), data (u32 + bytes)
//	ack       standby->active  seq u64, cumulative
//	ping      active->standby  (empty) when idle; answered with an ack
//
// Before any of these, both ends prove they hold the shared key with a
// mutual HMAC-SHA-256 challenge-response over fresh nonces (auth.go).
//
// Sequence numbers order every write. A standby resumes from its last
// applied sequence when the active still holds that part of its log and
// the stream is the same (same epoch: the active's term); otherwise it gets
// a consistent snapshot, then the stream. A standby that falls behind the
// log's bound is resynced by snapshot, so a slow standby never makes the
// active's memory grow without bound.
package statesync
