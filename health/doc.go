// Package health watches the critical components of a node: processes,
// commands, HTTP and TCP services, and links (design.md sections 3 and 8,
// issue "critical component checks"). It reports each check's state
// changes, debounced by rise and fall counts; it decides no roles.
//
// A process check watches its process through a pidfd (pidfd_open(2) and
// poll), so a death is seen the moment it happens, not at the next
// interval; a link check follows carrier changes through a netlink
// subscription. The others sample at their interval.
package health
