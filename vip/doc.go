// Package vip claims, announces, renews, releases and watches hapair's
// floating addresses (design.md section 3). It knows nothing of peers or
// roles: the agent says when to claim and release.
//
// A held VIP is added with a kernel lifetime (valid_lft/preferred_lft) that
// the holder renews, so if hapaird hangs or is killed the kernel removes
// the address by itself within the lease. That is also how the package
// tells its own addresses from an operator's: a permanent address is never
// taken over or removed, only reported.
//
// Announcements follow what switches and hosts honour: IPv4 gratuitous ARP
// as both a request and a reply with sender = target = VIP (RFC 5227
// section 3 calls the request form an ARP Announcement; some older stacks
// update only on replies), and for IPv6 an unsolicited Neighbor
// Advertisement to all-nodes with the Override flag (RFC 4861 section
// 7.2.6). Linux accepts the request form even inside its ARP lock time.
package vip
