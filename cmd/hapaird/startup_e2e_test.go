package main

import (
	"encoding/binary"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/mdlayher/packet"

	"github.com/hapair/hapair/heartbeat"
	"github.com/hapair/hapair/lab"
)

// TestFirstFrameSaysWhoItIs starts the preferred node alone, plain and then
// locked, and reads its very first heartbeat on the peer's side of the link.
// It must say what the node's agent says: INIT, preferred, locked or not.
// The heartbeat core used to send before its agent had spoken: INIT with
// no flags. A peer whose start-up window ended on such a frame took the
// preferred node for a plain starting one and became active beside it, two
// holders until arbitration settled it (seen in CI at turbo, where the
// window is 15 ms); a locked node's first frames said it was not locked.
func TestFirstFrameSaysWhoItIs(t *testing.T) {
	c := cluster(t, lab.ConfigOptions{})
	for _, locked := range []bool{false, true} {
		if locked {
			hapairctl(t, c, "a", "lock")
		}
		f := firstFrame(t, c, "a")
		if f.Seq != 1 || f.Role != heartbeat.RoleInit {
			t.Errorf("locked=%v: the first frame heard is number %d and says %v", locked, f.Seq, f.Role)
		}
		if f.Flags&heartbeat.FlagPreferred == 0 {
			t.Errorf("locked=%v: the preferred node's first frame does not say it is preferred (flags %#x)", locked, f.Flags)
		}
		if got := f.Flags&heartbeat.FlagLocked != 0; got != locked {
			t.Errorf("locked=%v: its first frame says locked=%v", locked, got)
		}
		if err := c.Signal("a", syscall.SIGTERM, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
}

// firstFrame starts node's daemon and returns the first heartbeat frame it
// sends on the dedicated link, as the other node's interface receives it.
func firstFrame(t *testing.T, c *lab.Cluster, node string) heartbeat.Frame {
	t.Helper()
	var conn *packet.Conn
	err := lab.Do(c.Node(other(node)), func() error {
		ifi, err := net.InterfaceByName(lab.Heartbeat)
		if err != nil {
			return err
		}
		conn, err = packet.Listen(ifi, packet.Raw, heartbeat.EtherType, nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := c.Start(node); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			t.Fatalf("no heartbeat from %s: %v", node, err)
		}
		if n < 14+heartbeat.FrameLen || binary.BigEndian.Uint16(buf[12:14]) != heartbeat.EtherType {
			continue
		}
		var f heartbeat.Frame
		if err := f.UnmarshalBinary(buf[14 : 14+heartbeat.FrameLen]); err != nil {
			t.Fatal(err)
		}
		return f
	}
}
