package lab

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/hapair/hapair/internal/control"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Result is what a client of the VIP saw during one failover.
type Result struct {
	Scenario  string
	From, To  string        // the node that held the VIP, and the one that took it
	VIPAfter  time.Duration // fault to VIP configured on the new holder
	Outage    time.Duration // the client's longest outage (Prober.LongestGap)
	Lost      int           // probes the client sent that were never answered
	ProbeRate time.Duration
}

func (r Result) String() string {
	lost := "no probe lost"
	if r.Lost > 0 {
		lost = fmt.Sprintf("%d lost", r.Lost)
	}
	return fmt.Sprintf("%s: VIP moved %s -> %s in %v; client outage %v (probe every %v, %s)",
		r.Scenario, r.From, r.To, r.VIPAfter.Round(10*time.Microsecond), r.Outage.Round(10*time.Microsecond), r.ProbeRate, lost)
}

// Scenarios a Cluster can run; each starts from a settled pair and leaves
// one again.
var Scenarios = []string{"host-loss", "graceful-stop", "switchover", "process-death", "daemon-crash"}

// ActiveNode asks both daemons and returns the one that is ACTIVE.
func (c *Cluster) ActiveNode() (string, error) {
	var found []string
	for _, n := range []string{"a", "b"} {
		if s, err := c.Status(n); err == nil && s.Role == "ACTIVE" {
			found = append(found, n)
		}
	}
	if len(found) != 1 {
		return "", fmt.Errorf("lab: %d active nodes", len(found))
	}
	return found[0], nil
}

// Settle starts what is not running, restores every link and waits until
// one node is ACTIVE with the VIP, the other STANDBY, the standby is
// attached to the active's session replication, and both nodes hear each
// other on every heartbeat path (paths come up one by one, and a test
// that reads the pair's state at once must not see one still coming).
func (c *Cluster) Settle(within time.Duration) (active string, err error) {
	for _, n := range []string{"a", "b"} {
		if err := c.Isolate(n, true); err != nil {
			return "", err
		}
	}
	for _, n := range []string{"a", "b"} {
		if c.Media && !c.mediaRunning(n) {
			if err := c.StartMedia(n); err != nil {
				return "", err
			}
		}
		if !c.Running(n) {
			if err := c.Start(n); err != nil {
				return "", err
			}
		}
	}
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if act, err := c.ActiveNode(); err == nil {
			other := "b"
			if act == "b" {
				other = "a"
			}
			if s, err := c.Status(other); err == nil && s.Role == "STANDBY" && s.Peer.Seen && s.Sync.Connected && c.Holds(act, VIP.Addr()) && !c.Holds(other, VIP.Addr()) && allPathsUp(s) {
				if s, err := c.Status(act); err == nil && allPathsUp(s) {
					return act, nil
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return "", fmt.Errorf("lab: pair did not settle within %v", within)
}

// allPathsUp says whether s's node hears its peer on both heartbeat paths
// of a lab pair, the raw and the UDP one. Status lists a path only once it
// was heard: an active that reads its standby at its own send tick
// (heartbeat's polling) hears the second path up to an interval later,
// and a scrape in between lacked it (TestMetricsScrape).
func allPathsUp(s *control.Status) bool {
	up := 0
	for _, p := range s.Paths {
		if !p.Up {
			return false
		}
		up++
	}
	return up == 2
}

// Run performs one scenario on a settled pair and measures it.
func (c *Cluster) Run(scenario string, probe time.Duration) (Result, error) {
	from, err := c.Settle(10 * time.Second)
	if err != nil {
		return Result{}, err
	}
	to := "b"
	if from == "b" {
		to = "a"
	}
	var fault func() error
	switch scenario {
	case "host-loss":
		return c.MeasureHostLoss(from, to, probe, c.Pid(from), func() error { return c.Kill(from) })
	case "graceful-stop":
		fault = func() error { return c.Signal(from, syscall.SIGTERM, 0) }
	case "daemon-crash":
		// hapaird alone killed -9 (the OOM killer, a panic): its
		// heartbeat core lives on to hand over.
		fault = func() error { return c.Kill(from) }
	case "process-death":
		if !c.Media {
			return Result{}, fmt.Errorf("lab: process-death needs ConfigOptions.Media")
		}
		fault = func() error { return c.KillMedia(from) }
	case "switchover":
		fault = func() error {
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				c.Admin(from).Switchover(ctx, false)
			}()
			return nil
		}
	default:
		return Result{}, fmt.Errorf("lab: unknown scenario %q (have %v)", scenario, Scenarios)
	}
	res, err := c.Measure(scenario, from, to, probe, fault)
	if err != nil {
		return res, err
	}
	if scenario == "graceful-stop" {
		// The stopped daemon exits by itself, and must exit cleanly.
		if err := c.reap(from, 5*time.Second, false); err != nil {
			return res, fmt.Errorf("lab: %s after SIGTERM: %w", from, err)
		}
	}
	return res, nil
}

// Measure injects fault on a settled pair whose VIP is on from, and
// measures how long until the VIP is on to and the longest gap the client,
// probing every probe, saw. Any agent's faults can be measured this way.
func (p *Pair) Measure(scenario, from, to string, probe time.Duration, fault func() error) (Result, error) {
	return p.measure(scenario, from, to, probe, nil, fault)
}

// MeasureHostLoss measures the loss of from's host, whose agent is pid (and
// its children): the client loses it, its processes stop at once (SIGSTOP:
// no frame leaves after the fault), and once the VIP is on to, its links
// are cut and kill ends the agent. The links are not cut first because
// taking a link down holds the kernel's rtnl lock for milliseconds, which
// the survivor's address claim waits for: a cost of one shared lab kernel
// that a lost host does not put on its peer. The client loses it by a
// filter at its public ingress (no rtnl), set just before the clock
// starts (nft takes 30-60 ms here); its outage counts from one probe
// before the clock, as if the fault had come right after an answer.
func (p *Pair) MeasureHostLoss(from, to string, probe time.Duration, pid int, kill func() error) (Result, error) {
	var heal func() error
	defer func() {
		if heal != nil {
			heal()
		}
	}()
	cut := func() (err error) {
		heal, err = p.DropAt(from, []Drop{{Device: Public}})
		return err
	}
	if pid <= 0 {
		return Result{}, fmt.Errorf("lab: host-loss: %s runs no agent", from)
	}
	// The children (hapaird's heartbeat core, keepalived's VRRP
	// process) send the frames: they stop first.
	procs := append(Children(pid), pid)
	res, err := p.measure("host-loss", from, to, probe, cut, func() error { return Freeze(procs) })
	if ierr := p.Isolate(from, false); err == nil {
		err = ierr
	}
	if kerr := kill(); err == nil {
		err = kerr
	}
	return res, err
}

// measure is Measure with prepare, run once the client reaches the VIP and
// before the clock starts, which cuts the client off from from: the
// outage then counts from one probe before the clock.
func (p *Pair) measure(scenario, from, to string, probe time.Duration, prepare, fault func() error) (Result, error) {
	pr, err := NewProber(p.Client, p.probed())
	if err != nil {
		return Result{}, err
	}
	defer pr.Close()
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		pr.Run(ctx, probe)
	}()
	defer func() {
		stop()
		<-done
	}()
	// Warm: the client must be reaching the VIP before the fault.
	warm := time.Now().Add(2 * time.Second)
	for pr.Replies() < 20 {
		if time.Now().After(warm) {
			return Result{}, fmt.Errorf("lab: client does not reach the VIP before the fault")
		}
		time.Sleep(time.Millisecond)
	}
	if prepare != nil {
		if err := prepare(); err != nil {
			return Result{}, err
		}
	}
	// The VIP is watched from the fault's first instant: a fault of
	// several steps (freeze, cut three links, kill) may take longer
	// than the failover it causes.
	seen, stopWatch, err := p.watchVIP(to, 10*time.Second, 20*time.Millisecond)
	if err != nil {
		return Result{}, err
	}
	defer stopWatch()
	start := time.Now()
	if err := fault(); err != nil {
		return Result{}, err
	}
	at := <-seen
	if at.IsZero() {
		return Result{}, fmt.Errorf("lab: %s: VIP not on %s after 10s", scenario, to)
	}
	vipAt := at.Sub(start)
	// Let the client reach the new holder, then a little more so a late
	// gap would show.
	for pr.LastReply().Before(start.Add(vipAt)) {
		if time.Since(start) > 10*time.Second {
			return Result{}, fmt.Errorf("lab: %s: client never reached the VIP on %s", scenario, to)
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	outage, lost := pr.LongestGap(start.Add(-probe))
	if prepare != nil {
		// The client was cut off before the clock started; as if by
		// the fault itself, right after an answer.
		outage, lost = pr.GapAfter(start.Add(-probe))
	}
	return Result{Scenario: scenario, From: from, To: to, VIPAfter: vipAt, Outage: outage, Lost: lost, ProbeRate: probe}, nil
}

// names says whether msgs hold a new-address notification of addr.
func names(msgs []syscall.NetlinkMessage, addr netip.Addr) bool {
	for i := range msgs {
		if msgs[i].Header.Type != unix.RTM_NEWADDR {
			continue
		}
		attrs, err := syscall.ParseNetlinkRouteAttr(&msgs[i])
		if err != nil {
			return true // unreadable: let the check decide
		}
		for _, a := range attrs {
			if ip, ok := netip.AddrFromSlice(a.Value); ok && (a.Attr.Type == unix.IFA_LOCAL || a.Attr.Type == unix.IFA_ADDRESS) && ip == addr {
				return true
			}
		}
	}
	return false
}

// watchVIP says on seen when the VIP is first on node, at most within from
// now (the zero time if not). It is timed when the kernel's notification of
// a new address is read, by a goroutine that does nothing else in between:
// a poll every 100 µs, as before, read up to a millisecond late on a CPU
// that the handover itself kept busy, since the poll has to be scheduled
// and then ask the kernel twice. The notification is sent when the address
// is added, and a check that the VIP is there confirms it. A reading that
// times out (every recheck) checks too, in case a notification was lost;
// that can only read late. stop ends the watch and waits for it.
func (p *Pair) watchVIP(node string, within, recheck time.Duration) (seen <-chan time.Time, stop func(), err error) {
	ns, err := netns.GetFromName(p.Node(node))
	if err != nil {
		return nil, nil, fmt.Errorf("lab: namespace of %s: %w", node, err)
	}
	s, err := nl.SubscribeAt(ns, netns.None(), unix.NETLINK_ROUTE, unix.RTNLGRP_IPV4_IFADDR, unix.RTNLGRP_IPV6_IFADDR)
	ns.Close()
	if err != nil {
		return nil, nil, fmt.Errorf("lab: watch addresses on %s: %w", node, err)
	}
	tv := unix.NsecToTimeval(recheck.Nanoseconds())
	if err := s.SetReceiveTimeout(&tv); err != nil {
		s.Close()
		return nil, nil, fmt.Errorf("lab: watch addresses on %s: %w", node, err)
	}
	out := make(chan time.Time, 1)
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		deadline := time.Now().Add(within)
		for {
			msgs, _, err := s.Receive()
			at := time.Now()
			// Confirmed only for a notification that names the probed
			// VIP (or none read): with many VIPs, a check after each
			// other VIP's notification made this watch list the
			// addresses tens of times, on the CPUs the handover needs.
			if (err != nil || names(msgs, p.probed())) && p.Holds(node, p.probed()) {
				out <- at
				return
			}
			select {
			case <-quit:
				out <- time.Time{}
				return
			default:
			}
			if at.After(deadline) {
				out <- time.Time{}
				return
			}
		}
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			close(quit)
			wg.Wait()
			s.Close()
		})
	}
	return out, stop, nil
}

// WaitSynced waits until active's standby is attached and has applied
// every session write.
func (c *Cluster) WaitSynced(active string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		s, err := c.Status(active)
		if err == nil && s.Sync.Connected && s.Sync.Acked == s.Sync.Written {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lab: replication from %s not in sync after %v: %+v %v", active, within, s, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
