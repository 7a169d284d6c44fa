package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/hapair/hapair/lab"
)

// Links (issue 17): one-way loss and flapping heartbeats, every contender
// given the same fault on its own heartbeat channel by a filter at a
// node's ingress, as a switch or a NIC that lost its receive side would:
// hapair's raw frames and UDP path, keepalived's VRRP adverts.
//
//   - one-way: the holder's heartbeats are dropped at the other node for
//     oneWayFor; how long both hold the VIP in all, and whether one
//     holder is left at the end;
//   - flapping: all heartbeats between the two are dropped and let
//     through again every 400 ms for flapFor; how often the VIP changes
//     hands (each claim or release on either node counts one);
//   - lossy: lossyPercent of all heartbeats between the two dropped,
//     each at random, for lossyFor: a failing cable or port; how often
//     the VIP changes hands, every move a false failover.
type linkFigures struct {
	name       string
	oneWayBoth time.Duration // both held the VIP, in all, during the fault
	oneWayEnd  int           // holders when the fault ended
	flaps      int
	moves      int // claims and releases during the flapping
	lossyMoves int // claims and releases during the loss
	lossyBoth  time.Duration
	err        error
}

// lossyPercent is the share of heartbeats the lossy stage drops.
const lossyPercent = 20

// linker is what the links bench needs of a contender.
type linker interface {
	links() (p *lab.Pair, drops []lab.Drop, settle func() error)
}

func (h *hapair) links() (*lab.Pair, []lab.Drop, func() error) {
	return h.p, lab.HeartbeatDrops, func() error { _, err := h.c.Settle(10 * time.Second); return err }
}

func (k *keepalived) links() (*lab.Pair, []lab.Drop, func() error) {
	return k.p, lab.VRRPDrops, k.settle
}

// benchLinks measures one contender.
func benchLinks(name string, c contender, oneWayFor, flapFor, lossyFor time.Duration) linkFigures {
	f := linkFigures{name: name}
	l, ok := c.(linker)
	if !ok {
		f.err = fmt.Errorf("no links bench for %s", c.name())
		return f
	}
	p, drops, settle := l.links()
	if f.err = settle(); f.err != nil {
		return f
	}
	holder := "a"
	if p.Holds("b", lab.VIP.Addr()) {
		holder = "b"
	}
	heal, err := p.DropAt(map[string]string{"a": "b", "b": "a"}[holder], drops)
	if err != nil {
		f.err = err
		return f
	}
	w := p.WatchHolders()
	time.Sleep(oneWayFor) // the fault's length
	w.Stop()
	f.oneWayBoth, _, f.oneWayEnd = w.Summary()
	if f.err = heal(); f.err != nil {
		return f
	}
	if f.err = settle(); f.err != nil {
		return f
	}
	w = p.WatchHolders()
	for start := time.Now(); time.Since(start) < flapFor; f.flaps++ {
		var heals []func() error
		for _, n := range []string{"a", "b"} {
			h, err := p.DropAt(n, drops)
			if err != nil {
				f.err = err
				break
			}
			heals = append(heals, h)
		}
		time.Sleep(400 * time.Millisecond) // down
		for _, h := range heals {
			h()
		}
		time.Sleep(400 * time.Millisecond) // up
	}
	time.Sleep(2 * time.Second) // what the last flap leads to
	w.Stop()
	_, f.moves, _ = w.Summary()
	if f.err = settle(); f.err != nil {
		return f
	}
	var heals []func() error
	for _, n := range []string{"a", "b"} {
		h, _, err := p.LoseAt(n, drops, lossyPercent)
		if err != nil {
			f.err = err
			return f
		}
		heals = append(heals, h)
	}
	w = p.WatchHolders()
	time.Sleep(lossyFor) // the fault's length
	w.Stop()
	f.lossyBoth, f.lossyMoves, _ = w.Summary()
	for _, h := range heals {
		if err := h(); err != nil && f.err == nil {
			f.err = err
		}
	}
	return f
}

func renderLinks(figs []linkFigures, oneWayFor, flapFor, lossyFor time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n## One-way, flapping and lossy heartbeats (issue 17)\n\n")
	fmt.Fprintf(&b, "Each contender's own heartbeats (hapair: raw frames and the UDP path; keepalived: VRRP adverts) dropped by a filter at a node's ingress, nothing else. One-way: the holder's heartbeats dropped at the other node for %v. Flapping: all heartbeats between the two dropped and let through again every 400 ms for %v. Lossy: %d %% of all heartbeats between the two dropped, each at random (nftables' `numgen random`), both ways, for %v: every VIP move is a false failover. A VIP move is one claim or release on either node, sampled every millisecond.\n\n", oneWayFor, flapFor, lossyPercent, lossyFor)
	fmt.Fprintf(&b, "| contender | one-way: both hold the VIP, in all | one-way: holders at the end | flapping: flaps | flapping: VIP moves | lossy: VIP moves | lossy: both hold the VIP, in all |\n|---|---|---|---|---|---|---|\n")
	for _, f := range figs {
		if f.err != nil {
			fmt.Fprintf(&b, "| %s | failed: %v | | | | | |\n", f.name, strings.ReplaceAll(f.err.Error(), "\n", " "))
			continue
		}
		fmt.Fprintf(&b, "| %s | %v | %d | %d | %d | %d | %v |\n", f.name, f.oneWayBoth.Round(time.Millisecond), f.oneWayEnd, f.flaps, f.moves, f.lossyMoves, f.lossyBoth.Round(time.Millisecond))
	}
	return b.String()
}

// benchLinksAll runs the links bench for every contender selected.
func benchLinksAll(bin string, quick bool) string {
	oneWayFor, flapFor, lossyFor := 15*time.Second, 60*time.Second, 60*time.Second
	if quick {
		oneWayFor, flapFor, lossyFor = 5*time.Second, 20*time.Second, 20*time.Second
	}
	var figs []linkFigures
	for _, mk := range makers(bin) {
		fmt.Fprintf(os.Stderr, "== links: %s\n", mk.name)
		c, err := mk.make()
		if err != nil {
			figs = append(figs, linkFigures{name: mk.name, err: err})
			continue
		}
		f := benchLinks(mk.name, c, oneWayFor, flapFor, lossyFor)
		fmt.Fprintf(os.Stderr, "   one-way: both %v, %d holders at the end; flapping: %d flaps, %d VIP moves; lossy: %d VIP moves, both %v (%v)\n", f.oneWayBoth, f.oneWayEnd, f.flaps, f.moves, f.lossyMoves, f.lossyBoth, f.err)
		figs = append(figs, f)
		c.close()
	}
	return renderLinks(figs, oneWayFor, flapFor, lossyFor)
}
