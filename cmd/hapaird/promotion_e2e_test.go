package main

import (
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/hapair/hapair/heartbeat"
	"github.com/hapair/hapair/lab"
	"golang.org/x/sys/unix"
)

// Issue 14.6: a promoting node says ACTIVE before it claims the VIPs (an
// active peer sees a split a claim earlier) and Holding once it has
// claimed them; the leaving node lets go only at Holding, so a handoff
// never leaves the VIP without a holder. Judged on the wire, from a port
// of the heartbeat switch, and by the kernel's addresses.
func TestPromotionSaysActiveThenHolding(t *testing.T) {
	p, c := clusterOnSwitch(t)
	if err := c.WaitSynced("a", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// One socket for every interface of the switch: frames arriving from
	// a and from b land in one queue, in the order the switch got them.
	var fd int
	err := lab.Do(p.Tap, func() (err error) {
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	macs := map[string]string{}
	for _, node := range []string{"a", "b"} {
		lab.Do(p.Node(node), func() error {
			ifi, err := net.InterfaceByName(lab.Heartbeat)
			if err == nil {
				macs[ifi.HardwareAddr.String()] = node
			}
			return err
		})
	}
	if len(macs) != 2 {
		t.Fatalf("heartbeat MACs %v", macs)
	}

	type seen struct {
		node string
		f    heartbeat.Frame
	}
	var frames []seen
	stop := make(chan struct{})
	captured := make(chan struct{})
	go func() {
		defer close(captured)
		buf := make([]byte, 2048)
		// Once stopped, it still reads what the socket queued, and what
		// a sends as it steps down: a loaded machine runs this reader
		// late (in one CI run beside a disk flood it had read 4 frames
		// when a said STANDBY), and what it has not read it never sees.
		var until time.Time
		steppedDown := false
		for {
			select {
			case <-stop:
				if until.IsZero() {
					until = time.Now().Add(2 * time.Second)
				}
			default:
			}
			if !until.IsZero() && (steppedDown || time.Now().After(until)) {
				return
			}
			n, from, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				continue // the receive timeout: look at stop again
			}
			if ll, ok := from.(*unix.SockaddrLinklayer); !ok || ll.Pkttype == unix.PACKET_OUTGOING {
				continue // the switch's own copy going out to the other port
			}
			if n < 14 || binary.BigEndian.Uint16(buf[12:14]) != heartbeat.EtherType {
				continue
			}
			node, ok := macs[net.HardwareAddr(buf[6:12]).String()]
			var f heartbeat.Frame
			if !ok || f.UnmarshalBinary(buf[14:n]) != nil {
				continue
			}
			frames = append(frames, seen{node, f})
			steppedDown = steppedDown || node == "a" && f.Role == heartbeat.RoleStandby
		}
	}()

	holders := c.WatchHolders()
	defer holders.Stop()
	hapairctl(t, c, "a", "switchover")
	err = c.WaitRole("a", "STANDBY", 2*time.Second)
	close(stop)
	<-captured
	if err != nil {
		t.Fatal(err)
	}
	if none, _ := holders.Stop(); none > 0 {
		t.Errorf("no node held the VIP for %v during the switchover", none)
	}

	// b: STANDBY, then ACTIVE without Holding, then ACTIVE with it. a
	// says STANDBY only after b's first Holding frame.
	firstActive, firstHolding, aStandby := -1, -1, -1
	for i, s := range frames {
		holding := s.f.Flags&heartbeat.FlagHolding != 0
		switch {
		case s.node == "b" && s.f.Role == heartbeat.RoleActive && firstActive < 0:
			firstActive = i
			if holding {
				t.Errorf("b's first ACTIVE frame already says Holding: it claimed before saying ACTIVE")
			}
		case s.node == "b" && s.f.Role == heartbeat.RoleActive && holding && firstHolding < 0:
			firstHolding = i
		case s.node == "a" && s.f.Role == heartbeat.RoleStandby && aStandby < 0:
			aStandby = i
		}
	}
	t.Logf("%d frames: b ACTIVE at %d, b Holding at %d, a STANDBY at %d", len(frames), firstActive, firstHolding, aStandby)
	switch {
	case firstActive < 0 || firstHolding < 0 || aStandby < 0:
		t.Fatalf("missing from the capture: b ACTIVE %d, b Holding %d, a STANDBY %d", firstActive, firstHolding, aStandby)
	case aStandby < firstHolding:
		t.Errorf("a stepped down (frame %d) before b said it holds the VIPs (frame %d)", aStandby, firstHolding)
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
