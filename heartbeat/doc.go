// Package heartbeat gives hapair's authenticated heartbeats: the frame
// format, its MAC, the replay window, the raw-Ethernet and UDP paths, and
// the peer's liveness per path (design.md section 6). It reports what it
// hears; it decides no roles.
//
// A frame is 128 bytes, big-endian:
//
//	 0  magic "HPHB"                  4
//	 4  version (2)                   1
//	 5  type (1 = heartbeat)          1
//	 6  flags                         2   locked, fault, leaving, split brain, preferred, holding,
//	                                      deaf, agent died, fenced, late (bits 0-9, in that order)
//	 8  cluster id                    4   FNV-1a of the cluster name
//	12  node id                       1
//	13  role                          1
//	14  path index                    1   the path sent on (authenticated)
//	15  dead interval                 1   the sender's: unit<<6 | n, n units of 1 ms, 10 ms, 100 ms
//	                                      or 1 s, rounded up; 0: not said (an older sender's reserved byte)
//	16  signing key fingerprint       4   Fingerprint of the key that made the MAC
//	20  held key fingerprints        12   the sender's first three keys, newest first; 0: none
//	32  boot generation               8   raised at every start of the sender
//	40  sequence                      8   per generation, from 1; one per send, shared by the paths
//	48  active for, ms                8   ^0: not active
//	56  last new session age, ms      8   ^0: none
//	64  statesync written             8
//	72  statesync acknowledged        8
//	80  echo: receiver's generation   8   as the sender last heard it; 0: not heard
//	88  echo: receiver's sequence     8
//	96  HMAC-SHA-256 over bytes 0-95 32
//
// The echo proves a frame fresh to its receiver (it names the receiver's
// current boot) and tells it, per path, whether the sender hears it: a
// one-way path is seen from the side that is not heard.
//
// Version 2 replaced version 1's key id (a position in the receiver's own
// list of keys, which broke every rotation whose lists differed) with key
// fingerprints, and added the echo.
//
// Holding says the sender has claimed the VIPs. A promoting node says
// ACTIVE first and Holding once it has claimed them: a node that is
// active too sees the split at once, and a leaving node keeps its VIPs
// until its peer holds them (make-before-break).
//
// Ages, never wall-clock times, cross the wire: each side measures them on
// its own monotonic clock when the frame is sent, so clock skew between the
// nodes cannot change an arbitration.
//
// On the dedicated link frames travel as EtherType 0x88B5 (IEEE 802 Local
// Experimental EtherType 1); the second path carries the same bytes over
// UDP. A receiver checks the header, then the MAC, then the generation and
// replay window, and only then trusts the content; every rejection has a
// reason and a counter.
package heartbeat
