package main

import (
	"fmt"
	"strings"
	"sync"
	"time"

	sdnotify "github.com/coreos/go-systemd/v22/daemon"
)

// notifier tells systemd how the daemon goes (sd_notify) from a goroutine
// of its own, so that the agent's loop never waits for PID 1.
//
// A message is a datagram on PID 1's notify socket, whose queue holds 10
// by default (net.unix.max_dgram_qlen); while PID 1 does not read (a long
// daemon-reload, which every package installation runs, or a PID 1 busy
// starting a boot's worth of units) the next send blocks. Called from the
// loop, that send held up the transition a failover is made of. Here the
// loop only records what is to be said, and what waits is merged: the
// latest status line replaces an unsent one, READY=1 and a watchdog ping
// stay asked for until sent. A hung loop still trips the watchdog: the
// ping is asked for by the loop's tick, never by this goroutine.
type notifier struct {
	send func(msg string) // blocks while PID 1 does not read

	mu       sync.Mutex
	ready    bool
	status   string
	ping     bool
	stopping bool
	stopFor  time.Duration // how long the stop may take (EXTEND_TIMEOUT_USEC)

	wake chan struct{}
}

func newNotifier(send func(string)) *notifier {
	return &notifier{send: send, wake: make(chan struct{}, 1)}
}

// systemdNotifier sends to $NOTIFY_SOCKET; without one, nothing is sent.
func systemdNotifier() *notifier {
	return newNotifier(func(msg string) { sdnotify.SdNotify(false, msg) })
}

// Ready says the daemon is up, with its role.
func (n *notifier) Ready(role string) {
	n.ask(func() { n.ready, n.status = true, "role "+role })
}

// Status replaces the status line.
func (n *notifier) Status(s string) { n.ask(func() { n.status = s }) }

// Ping asks for a watchdog ping.
func (n *notifier) Ping() { n.ask(func() { n.ping = true }) }

// Stopping says the daemon is stopping, and may take up to within.
// systemd keeps the longer of that and the unit's TimeoutStopSec.
func (n *notifier) Stopping(within time.Duration) {
	n.ask(func() { n.stopping, n.stopFor = true, within })
}

func (n *notifier) ask(f func()) {
	n.mu.Lock()
	f()
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// Run sends what is asked for, one datagram at a time, until the process
// exits (a send blocked on PID 1 must not hold up the exit either).
func (n *notifier) Run() {
	for range n.wake {
		for {
			n.mu.Lock()
			var lines []string
			if n.ready {
				lines = append(lines, sdnotify.SdNotifyReady)
			}
			if n.stopping {
				lines = append(lines, sdnotify.SdNotifyStopping, fmt.Sprintf("EXTEND_TIMEOUT_USEC=%d", n.stopFor.Microseconds()))
			}
			if n.status != "" {
				lines = append(lines, "STATUS="+n.status)
			}
			if n.ping {
				lines = append(lines, sdnotify.SdNotifyWatchdog)
			}
			n.ready, n.stopping, n.status, n.ping = false, false, "", false
			n.mu.Unlock()
			if lines == nil {
				break
			}
			n.send(strings.Join(lines, "\n"))
		}
	}
}
