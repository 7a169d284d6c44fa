package election

import (
	"fmt"
	"strings"
	"time"
)

// The harness runs two machines against each other on a fake clock, with
// a network the test can cut, heal, crash and restart, as etcd/raft's
// network does. It imitates the heartbeat package: frames every interval
// and at once on Advertise, peer lost after the dead interval of silence,
// and Heard when the peer's frames say it hears this node (they echo
// ours), forgotten when the peer is lost.

const (
	hInterval = 100 * time.Millisecond
	hDead     = 300 * time.Millisecond
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

type hnode struct {
	name     string
	id       uint8
	m        *Machine
	up       bool // process running
	holds    bool // holds the VIPs
	exited   bool
	lastRx   time.Time
	alive    bool // peer heard within dead
	heard    bool // the peer's frames echo ours (Heard last said)
	deaf     bool // frames to this node are lost (a one-way link)
	nextSend time.Time
	locked   bool
	ad       Advert // what its frames say: the last Advertise's
	// offset skews this node's clock: machines only ever subtract their
	// own readings, so no offset may change an outcome.
	offset time.Duration
}

type harness struct {
	now      time.Time
	nodes    [2]*hnode
	linked   bool
	holdDown time.Duration // Config.HoldDown of machines started from now
	log      []string
}

func newHarness() *harness {
	h := &harness{now: epoch, linked: true}
	for i, n := range []string{"a", "b"} {
		h.nodes[i] = &hnode{name: n, id: uint8(i + 1)}
	}
	return h
}

func (h *harness) logf(format string, args ...any) {
	h.log = append(h.log, fmt.Sprintf("%6dms ", h.now.Sub(epoch).Milliseconds())+fmt.Sprintf(format, args...))
}

func (h *harness) start(i int) {
	n := h.nodes[i]
	n.m = New(Config{Node: n.id, Preferred: i == 0, Dead: hDead, HoldDown: h.holdDown})
	n.up, n.exited, n.alive, n.holds, n.heard = true, false, false, false, false
	n.nextSend = h.now
	h.step(i, Event{Kind: Start})
	if n.locked {
		h.step(i, Event{Kind: Lock, Locked: true})
	}
}

// cut breaks the link between the nodes: no frame gets through, either
// way; heal mends it, and a one-way loss (deafen) too.
func (h *harness) cut() {
	if h.linked {
		h.linked = false
		h.logf("link cut")
	}
}

func (h *harness) heal() {
	if !h.linked || h.nodes[0].deaf || h.nodes[1].deaf {
		h.linked = true
		h.nodes[0].deaf, h.nodes[1].deaf = false, false
		h.logf("link healed")
	}
}

// deafen loses every frame to node i, and none from it.
func (h *harness) deafen(i int) {
	h.nodes[i].deaf = true
	h.logf("%s hears nothing", h.nodes[i].name)
}

// crash stops node i at once, as kill -9 would; its VIPs stay until the
// lease would run out, which the harness treats as immediately.
func (h *harness) crash(i int) {
	h.nodes[i].up = false
	h.nodes[i].holds = false
	h.logf("%s crashes", h.nodes[i].name)
}

// step feeds node i an event stamped with its own clock.
func (h *harness) step(i int, ev Event) {
	n := h.nodes[i]
	if !n.up {
		return
	}
	ev.Now = h.now.Add(n.offset)
	for _, a := range n.m.Step(ev) {
		switch a.Kind {
		case ClaimVIPs:
			n.holds = true
		case ReleaseVIPs:
			n.holds = false
		case Advertise:
			n.ad = a.Advert
			n.nextSend = h.now // send now
		case Transition, Refused, Report:
			h.logf("%s %v", n.name, a)
		case Exit:
			h.logf("%s %v", n.name, a)
			n.up, n.exited = false, true
		}
	}
}

// frame is what node i's frame says, with ages computed now.
func (h *harness) frame(i int) Peer {
	n := h.nodes[i]
	ad := n.ad
	now := h.now.Add(n.offset)
	f := Facts{Node: n.id, Locked: ad.Locked, Preferred: ad.Preferred, ActiveFor: -1, LastNewSession: -1}
	if !ad.ActiveSince.IsZero() {
		f.ActiveFor = now.Sub(ad.ActiveSince).Truncate(time.Millisecond)
	}
	if !ad.LastNewSession.IsZero() {
		f.LastNewSession = now.Sub(ad.LastNewSession).Truncate(time.Millisecond)
	}
	if ad.Frozen != nil {
		f = ad.Frozen.onTheWire() // frames carry whole milliseconds
	}
	// The heartbeat core says Deaf while it hears no frame of the peer's.
	return Peer{Role: ad.Role, Locked: ad.Locked, Fault: ad.Fault, Leaving: ad.Leaving, SplitBrain: ad.SplitBrain, Holding: ad.Holding, Deaf: !n.alive, Facts: f}
}

// advance moves time forward by d in 1ms steps, delivering frames.
func (h *harness) advance(d time.Duration) {
	end := h.now.Add(d)
	for h.now.Before(end) {
		h.tick()
		h.now = h.now.Add(time.Millisecond)
	}
}

func (h *harness) tick() {
	// Sends repeat until quiet: a frame can make the receiver advertise
	// at once, which the sender must hear in the same instant.
	for round := 0; round < 8; round++ {
		sent := false
		for i, n := range h.nodes {
			if !n.up || h.now.Before(n.nextSend) {
				continue
			}
			sent = true
			n.nextSend = h.now.Add(hInterval)
			if !h.linked {
				continue
			}
			p := h.nodes[1-i]
			if !p.up || p.deaf {
				continue
			}
			p.lastRx = h.now
			p.alive = true
			// The frame echoes the peer's newest, fresh while the
			// sender hears it.
			if echo := n.up && n.alive; echo != p.heard {
				p.heard = echo
				h.step(1-i, Event{Kind: Heard, Path: "raw", Heard: echo})
			}
			h.step(1-i, Event{Kind: PeerFrame, Peer: h.frame(i)})
		}
		if !sent {
			break
		}
	}
	for i, n := range h.nodes {
		if !n.up {
			continue
		}
		if n.alive && h.now.Sub(n.lastRx) >= hDead {
			n.alive, n.heard = false, false
			h.step(i, Event{Kind: PathDown, Path: "raw"})
			h.step(i, Event{Kind: PeerLost})
		}
		if h.now.Sub(epoch).Milliseconds()%10 == 0 {
			h.step(i, Event{Kind: Tick})
		}
	}
}

func (h *harness) roles() string {
	var s []string
	for _, n := range h.nodes {
		r := "down"
		if n.up {
			r = n.m.Role().String()
		}
		if n.holds {
			r += "+vip"
		}
		s = append(s, n.name+"="+r)
	}
	return strings.Join(s, " ")
}

func (h *harness) bothActive() bool {
	return h.nodes[0].up && h.nodes[1].up && h.nodes[0].m.Role() == Active && h.nodes[1].m.Role() == Active
}
