package lab

import (
	"fmt"
	"regexp"
	"strconv"
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
// lets it through again; the pair's Close removes the rest with the
// namespace.
func (p *Pair) DropAt(node string, drops []Drop) (heal func() error, err error) {
	heal, _, err = p.filter(node, drops, "", false)
	return heal, err
}

// LoseAt drops percent of what drops select at node's ingress, each
// packet at random, as a lossy link would (netem is not in every kernel
// either). dropped counts what it dropped, per drop, up to now or, once
// healed, up to the heal.
func (p *Pair) LoseAt(node string, drops []Drop, percent int) (heal func() error, dropped func() ([]uint64, error), err error) {
	return p.filter(node, drops, fmt.Sprintf("numgen random mod 100 < %d", percent), true)
}

var counted = regexp.MustCompile(`counter k(\d+) \{\s*packets (\d+)`)

// filter drops what drops select and also matches at node's ingress,
// counting it. Healing takes the rules away, and with keep leaves their
// counters to read (the table goes with the namespace): read first, a
// frame could still be dropped between the read and the heal.
func (p *Pair) filter(node string, drops []Drop, also string, keep bool) (heal func() error, dropped func() ([]uint64, error), err error) {
	table := fmt.Sprintf("hplab_drop%d", filters.Add(1))
	var b, unset strings.Builder
	fmt.Fprintf(&b, "table netdev %s {\n", table)
	for i, d := range drops {
		fmt.Fprintf(&b, "  counter k%d { }\n", i)
		fmt.Fprintf(&b, "  chain c%d { type filter hook ingress device %q priority 0; %s %s counter name \"k%d\" drop; }\n", i, d.Device, d.Match, also, i)
		fmt.Fprintf(&unset, "delete chain netdev %s c%d\n", table, i)
	}
	b.WriteString("}\n")
	if !keep {
		unset.Reset()
		fmt.Fprintf(&unset, "delete table netdev %s\n", table)
	}
	nft := func(rules string, args ...string) ([]byte, error) {
		cmd := Command(p.Node(node), "nft", args...)
		cmd.Stdin = strings.NewReader(rules)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("lab: nft: %v\n%s\n%s", err, rules, out)
		}
		return out, nil
	}
	if _, err := nft(b.String(), "-f", "-"); err != nil {
		return nil, nil, err
	}
	healed := false
	heal = func() error {
		if healed {
			return nil
		}
		healed = true
		// One transaction: every chain goes at once.
		_, err := nft(unset.String(), "-f", "-")
		return err
	}
	dropped = func() ([]uint64, error) {
		out, err := nft("", "list", "table", "netdev", table)
		if err != nil {
			return nil, err
		}
		n := make([]uint64, len(drops))
		found := 0
		for _, m := range counted.FindAllSubmatch(out, -1) {
			i, _ := strconv.Atoi(string(m[1]))
			if i < len(n) {
				n[i], _ = strconv.ParseUint(string(m[2]), 10, 64)
				found++
			}
		}
		if found != len(drops) {
			return nil, fmt.Errorf("lab: %d counters in table %s, want %d:\n%s", found, table, len(drops), out)
		}
		return n, nil
	}
	return heal, dropped, nil
}

// Shape makes dev's egress on node a slow link: a token bucket of rate
// (tc's units: "10mbit") in front of pfifo_fast, the kernel's classic
// queue, which serves its three bands by the packets' priority and holds
// the device's 1000 packets, as a NIC of that speed queues. undo takes it
// away; the pair's Close does with the namespace.
func (p *Pair) Shape(node, dev, rate string) (undo func() error, err error) {
	tc := func(args ...string) error {
		if out, err := Command(p.Node(node), "tc", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("lab: tc %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	// tbf's own limit is that of the queue it makes; with pfifo_fast in
	// its place the latency says nothing, so any will do.
	if err := tc("qdisc", "add", "dev", dev, "root", "handle", "1:", "tbf", "rate", rate, "burst", "32kbit", "latency", "10s"); err != nil {
		return nil, err
	}
	if err := tc("qdisc", "add", "dev", dev, "parent", "1:1", "handle", "10:", "pfifo_fast"); err != nil {
		tc("qdisc", "del", "dev", dev, "root")
		return nil, err
	}
	return func() error { return tc("qdisc", "del", "dev", dev, "root") }, nil
}
