package main

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/hapair/hapair/lab"
)

// TestManyVIPsMoveTogether runs a pair with 64 VIPs on one interface, as
// a load balancer's pair carries: a host loss and a switchover move every
// one of them, take every one from the old holder, and move the client's
// ARP entry for each (which only the new active's announcements can do:
// the client asked once, before).
func TestManyVIPsMoveTogether(t *testing.T) {
	const n = 64
	vips := []netip.Addr{lab.VIP.Addr()}
	var extra strings.Builder
	for i := 1; i < n; i++ {
		a4 := lab.VIP.Addr().As4()
		a4[3] += byte(i) // .101 to .163, beside the lab's .100
		vips = append(vips, netip.AddrFrom4(a4))
		fmt.Fprintf(&extra, "\n[[vip]]\naddress = %q\n", netip.PrefixFrom(vips[i], 24))
	}
	c := cluster(t, lab.ConfigOptions{Extra: extra.String()})
	act := settle(t, c)

	// holdsAll waits until node holds every VIP and the client's entry
	// for each names node's interface; the other node none.
	holdsAll := func(node, after string) {
		t.Helper()
		mac := c.MAC(node).String()
		var missing, stale, left []netip.Addr
		if !pollUntil(3*time.Second, func() bool {
			missing, stale, left = nil, nil, nil
			for _, v := range vips {
				if !c.Holds(node, v) {
					missing = append(missing, v)
				}
				if c.ClientNeighbour(v).String() != mac {
					stale = append(stale, v)
				}
				if c.Holds(other(node), v) {
					left = append(left, v)
				}
			}
			return len(missing)+len(stale)+len(left) == 0
		}) {
			t.Fatalf("%s: %s lacks %v; the client's entry names another for %v; %s still holds %v", after, node, missing, stale, other(node), left)
		}
	}
	for _, v := range vips {
		if err := lab.Reach(c.Client, v, 2*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	holdsAll(act, "start")

	res, err := c.Run("host-loss", time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res)
	if _, err := c.Settle(10 * time.Second); err != nil { // the old active back, as standby
		t.Fatal(err)
	}
	holdsAll(res.To, "host loss")

	switchover(t, c, res.To)
	holdsAll(res.From, "switchover")
}
