package config

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"slices"
)

// Pair sections are the parts of the file the two nodes must agree on:
// each node acts on its own file, so when the other takes over the pair
// runs the other's. A VIP that one node's file lacks is lost at a
// failover, a check only one node runs fails the pair over one way and
// not back, and a standby that keeps fewer sessions drops some on a
// snapshot. The nodes send each other a sum per section on
// the replication link (statesync/wire's config message) and say which
// differ.
//
// Left out on purpose: what may differ between two hosts (paths, the
// metrics listener, TLS files), what the pair already compares another
// way (the cluster name and the keys: a peer that differs there is never
// heard; the heartbeat timers: every frame carries its sender's dead
// interval), and ports (replication on another port never connects, so
// its sums are never read).
//
// The ids are stable on the wire; a later version may add sections, and
// a section only one side knows is not compared.
var pairSections = []struct {
	id, keys string
	sum      func(c *Config, h hash.Hash)
}{
	{"vip", "[[vip]]", func(c *Config, h hash.Hash) {
		vips := make([]string, len(c.VIPs))
		for i, v := range c.VIPs {
			vips[i] = v.Prefix.String() + " " + v.Interface
		}
		slices.Sort(vips) // the order of the list changes nothing
		for _, v := range vips {
			fmt.Fprintln(h, v)
		}
	}},
	{"node", "[[node]]", func(c *Config, h hash.Hash) {
		for _, n := range c.Nodes { // in order: the first is node 1
			fmt.Fprintln(h, n.Name, n.HeartbeatInterface, n.HeartbeatMAC, n.PublicInterface, n.PublicAddress, n.ReplicationAddress)
		}
	}},
	{"primary", "primary", func(c *Config, h hash.Hash) { fmt.Fprintln(h, c.Primary) }},
	{"sessions", "sync_mode and [sessions]", func(c *Config, h hash.Hash) {
		fmt.Fprintln(h, c.SyncMode, c.MaxSessions, c.MaxData, c.MaxMemory, c.SyncTimeout, c.SyncPoll)
	}},
	{"failover", "lease, hold_down and [announce]", func(c *Config, h hash.Hash) {
		fmt.Fprintln(h, c.Lease, c.HoldDown, c.GARPCount, c.GARPSpacing, c.GARPRefresh, c.VIPProbe)
	}},
	{"check", "[[check]]", func(c *Config, h hash.Hash) {
		checks := make([]string, len(c.Checks))
		for i, k := range c.Checks {
			checks[i] = fmt.Sprintf("%q %q %q %v %v %d %d %v %d %d %q", k.Name, k.Kind, k.Target, k.Interval, k.Timeout, k.Rise, k.Fall, k.Critical, k.StatusMin, k.StatusMax, k.ExpectBody)
		}
		slices.Sort(checks)
		for _, k := range checks {
			fmt.Fprintln(h, k)
		}
	}},
	{"hook", "[[hook]]", func(c *Config, h hash.Hash) {
		for _, k := range c.Hooks { // in order: hooks for one event run in it
			fmt.Fprintf(h, "%q %q %v\n", k.On, k.Command, k.Timeout)
		}
	}},
}

// PairSums is a sum of each pair section of c, by section id.
func (c *Config) PairSums() map[string]uint64 {
	sums := make(map[string]uint64, len(pairSections))
	for _, s := range pairSections {
		h := sha256.New()
		s.sum(c, h)
		sums[s.id] = binary.BigEndian.Uint64(h.Sum(nil))
	}
	return sums
}

// PairDiffers names, as the file's keys, the sections whose sums differ
// between mine and the peer's, in the file's order; sections that only
// one side sends are not compared.
func PairDiffers(mine, peer map[string]uint64) []string {
	var differ []string
	for _, s := range pairSections {
		m, ok1 := mine[s.id]
		p, ok2 := peer[s.id]
		if ok1 && ok2 && m != p {
			differ = append(differ, s.keys)
		}
	}
	return differ
}
