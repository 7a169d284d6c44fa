package lab

import (
	"fmt"
	"strings"
	"sync/atomic"
)

// Drop is traffic a filter drops at a node's ingress: on Device, what
// Match (an nftables expression) selects; empty, everything.
type Drop struct{ Device, Match string }

// HeartbeatDrops select hapair's heartbeats: raw frames on the heartbeat
// link and the UDP path on the replication link, leaving replication
// itself alone.
var HeartbeatDrops = []Drop{{Heartbeat, "ether type 0x88b5"}, {Repl, "udp dport 7405"}}

// VRRPDrops select keepalived's adverts on the public link.
var VRRPDrops = []Drop{{Public, "ip protocol vrrp"}}

var filters atomic.Int64

// DropAt drops, at node's ingress, what drops select and nothing else, as
// a NIC that lost its receive side or a switch filter would: an nftables
// netdev ingress hook (tc's classifiers are not in every kernel). heal
// lets it through again; the pair's Close removes it with the namespace.
func (p *Pair) DropAt(node string, drops []Drop) (heal func() error, err error) {
	table := fmt.Sprintf("hplab_drop%d", filters.Add(1))
	var b strings.Builder
	fmt.Fprintf(&b, "table netdev %s {\n", table)
	for i, d := range drops {
		fmt.Fprintf(&b, "  chain c%d { type filter hook ingress device %q priority 0; %s drop; }\n", i, d.Device, d.Match)
	}
	b.WriteString("}\n")
	nft := func(rules string) error {
		cmd := Command(p.Node(node), "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(rules)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("lab: nft: %v\n%s\n%s", err, rules, out)
		}
		return nil
	}
	if err := nft(b.String()); err != nil {
		return nil, err
	}
	healed := false
	return func() error {
		if healed {
			return nil
		}
		healed = true
		return nft("delete table netdev " + table + "\n")
	}, nil
}
