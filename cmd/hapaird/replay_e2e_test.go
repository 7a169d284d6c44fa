package main

import (
	"encoding/binary"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hapair/hapair/heartbeat"
	"github.com/hapair/hapair/lab"
	"github.com/hapair/hapair/lab/labtest"
	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"
)

// Issue 14.5: frames recorded before a node's restart cannot pass for the
// peer's. A third port on the heartbeat segment records the active's
// frames; the standby restarts (its replay windows start empty); the
// active is killed and the recording is played to the standby: it must
// still see the active gone and take over within the bound.
func TestReplayedFramesDoNotHideTheActivesLoss(t *testing.T) {
	p, c := clusterOnSwitch(t)
	// The tap's ends of a's and b's heartbeat veths. A socket for every
	// EtherType sees what a bridge port receives before the bridge takes
	// it; one for 0x88B5 alone would not.
	var rec, inj *packet.Conn
	err := lab.Do(p.Tap, func() error {
		ha, err := net.InterfaceByName("ha")
		if err != nil {
			return err
		}
		hb, err := net.InterfaceByName("hb")
		if err != nil {
			return err
		}
		if rec, err = packet.Listen(ha, packet.Raw, unix.ETH_P_ALL, nil); err != nil {
			return err
		}
		inj, err = packet.Listen(hb, packet.Raw, heartbeat.EtherType, nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()
	defer inj.Close()

	// Four seconds of a's frames (the socket sees both directions; a's
	// carry a's source address). Played back once each at their own
	// pace, they would keep a dead a alive for four seconds, each frame
	// new to a standby whose replay windows restarted empty.
	var aMAC net.HardwareAddr
	lab.Do(p.A, func() error {
		ifi, err := net.InterfaceByName(lab.Heartbeat)
		if err == nil {
			aMAC = ifi.HardwareAddr
		}
		return err
	})
	var recorded [][]byte
	buf := make([]byte, 2048)
	until := time.Now().Add(4 * time.Second)
	for time.Now().Before(until) {
		rec.SetReadDeadline(until)
		n, _, err := rec.ReadFrom(buf)
		if err != nil {
			break
		}
		if n > 14 && binary.BigEndian.Uint16(buf[12:14]) == heartbeat.EtherType && net.HardwareAddr(buf[6:12]).String() == aMAC.String() {
			recorded = append(recorded, append([]byte(nil), buf[:n]...))
		}
	}
	if len(recorded) < 20 {
		t.Fatalf("recorded %d of a's frames", len(recorded))
	}

	if err := c.Kill("b"); err != nil {
		t.Fatal(err)
	}
	if err := c.Start("b"); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitRole("b", "STANDBY", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitSynced("a", 10*time.Second); err != nil {
		t.Fatal(err)
	}

	stop, played := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(played)
		dst := &packet.Addr{HardwareAddr: net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}} // the recorded header decides
		for _, f := range recorded {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond): // the default interval
			}
			inj.WriteTo(f, dst)
		}
	}()
	defer func() {
		close(stop)
		wg.Wait()
	}()
	// a's host is lost: its heartbeat core and agent stop at once. A
	// killed agent's core would say FAULT, and b would take over on that
	// frame, with the recording no part of it: b must take over on a's
	// silence, through the frames played to it.
	pid := c.Pid("a")
	if err := lab.Freeze(append(lab.Children(pid), pid)); err != nil {
		t.Fatal(err)
	}
	// Killed at the end, or by the pair's Close if the test stops early;
	// its frozen core gets the parent-death signal, SIGCONT, and ends.
	defer c.Kill("a")
	if err := c.WaitRole("b", "ACTIVE", 2*time.Second); err != nil {
		t.Fatalf("the recording kept the dead active alive: %v", err)
	}
	// The recording plays on after the takeover (about 4 s): every frame
	// of it is dropped, and b stays active.
	select {
	case <-played:
	case <-time.After(10 * time.Second):
		t.Fatal("the recording did not play out within 10s")
	}
	s, err := c.Status("b")
	if err != nil {
		t.Fatal(err)
	}
	if s.Frames.Dropped["stale"] == 0 || s.Role != "ACTIVE" {
		t.Errorf("after the recording, b is %s with drops %v; want ACTIVE, the replayed frames counted as stale", s.Role, s.Frames.Dropped)
	}
}

// clusterOnSwitch runs a pair whose heartbeat link goes through a switch
// (the pair's tap namespace) that the test can listen and send on, with
// a active.
func clusterOnSwitch(t *testing.T) (*lab.Pair, *lab.Cluster) {
	t.Helper()
	if daemonBin == "" {
		t.Skip("end-to-end tests need root for network namespaces")
	}
	p := labtest.NewPair(t, lab.Options{HeartbeatSwitch: true})
	c := clusterOn(t, p, lab.ConfigOptions{})
	if act := settle(t, c); act != "a" {
		t.Fatalf("%s active, want a", act)
	}
	return p, c
}
