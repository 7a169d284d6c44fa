package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"

	"github.com/hapair/hapair/heartbeat"
	"github.com/hapair/hapair/internal/control"
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

// TestDifferentKeysNeverMakeTwoHolders restarts the standby with a key of
// its own, as an operator does who runs hapairctl keygen on each server
// instead of copying the key, or changes it on one node only. Each node
// drops the other's frames as forged; the restarted one used to find its
// peer silent and take the VIPs beside the active, two holders reported
// by nothing but a drop counter. Now it stays standby, both say why, with
// the fingerprints to compare, and it takes over once the active is gone.
func TestDifferentKeysNeverMakeTwoHolders(t *testing.T) {
	c := cluster(t, lab.ConfigOptions{})
	if act := settle(t, c); act != "a" {
		t.Fatalf("%s is active, want a", act)
	}
	dir := t.TempDir()
	keyB := filepath.Join(dir, "b.key")
	if out, err := exec.Command(ctlBin, "keygen", "-o", keyB).CombinedOutput(); err != nil {
		t.Fatalf("hapairctl keygen: %v\n%s", err, out)
	}
	pathA, err := c.KeyFile()
	if err != nil {
		t.Fatal(err)
	}
	keyA, err := os.ReadFile(pathA)
	if err != nil {
		t.Fatal(err)
	}
	cfgB := filepath.Join(dir, "b.toml")
	if err := c.WriteConfigWithKeys(cfgB, keyB); err != nil {
		t.Fatal(err)
	}
	holders := c.WatchHolders()
	defer holders.Stop()
	if err := c.RestartOn("b", cfgB); err != nil {
		t.Fatalf("b restarted with a key of its own: %v", err)
	}
	fpA := fmt.Sprintf("%08x", heartbeat.Fingerprint(keyA))
	for _, node := range []string{"a", "b"} {
		var st *control.Status
		deadline := time.Now().Add(5 * time.Second)
		for {
			if st, err = c.Status(node); err == nil && st.Peer.Unverified != "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s's status never said the peer cannot be verified: %+v, %v", node, st, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if !strings.Contains(st.Redundancy, "cannot be verified") || !strings.Contains(st.Text(), "KEYS DIFFER") {
			t.Errorf("%s's status:\n%s", node, st.Text())
		}
		if node == "b" && !strings.Contains(st.Peer.Unverified, fpA) {
			t.Errorf("b's status does not name a's key %s: %q", fpA, st.Peer.Unverified)
		}
		log, _ := os.ReadFile(c.LogPath(node))
		if !strings.Contains(string(log), "the peer's heartbeats cannot be verified") {
			t.Errorf("%s's log does not say the peer's heartbeats cannot be verified", node)
		}
	}
	if err := c.WaitRole("a", "ACTIVE", time.Second); err != nil {
		t.Error(err)
	}
	// The active stops: what b could not verify stops with it, and b
	// takes over.
	if err := c.Signal("a", syscall.SIGTERM, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitRole("b", "ACTIVE", 10*time.Second); err != nil {
		t.Fatalf("b once a stopped: %v", err)
	}
	if _, both := holders.Stop(); both > 0 || !c.Holds("b", lab.VIP.Addr()) {
		t.Errorf("two holders for %v; b holds the VIP: %v", both, c.Holds("b", lab.VIP.Addr()))
	}
}

// What an operator does every day says nothing alarming: a pair started
// together, a session replicated, the standby restarted (systemctl
// restart: back within the dead interval) and back in sync, a switchover,
// the active stopped (it hands over) and started again later. Every WARN
// or ERROR line is a page for someone. Each start logged a replication
// error on both nodes (each starting node dialled the other, which closed
// the connection, not being active), and two standbys, for as long as
// neither was active, one a second each; a node stopped on purpose was
// taken for lost (its peer logged its paths down, and a replication
// error); and a node restarted within the dead interval was taken for a
// one-way link on every path (its first frames echo nothing: it has heard
// nothing yet).
//
// In sync mode too: the standby's planned stop degrades sync at once (its
// writes need not wait for it), which is said at INFO, not as the WARN of
// a standby that stopped answering.
func TestRoutineOperationsLogNoWarning(t *testing.T) {
	for _, mode := range []string{"async", "sync"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			// Probing every 2 s, so that a probe falls inside the
			// operations (a restart, a switchover, a stop): none of
			// them is another host answering for the VIP.
			routineOperations(t, lab.ConfigOptions{SyncMode: mode, Extra: probeOften})
		})
	}
}

func routineOperations(t *testing.T, o lab.ConfigOptions) {
	c := cluster(t, o)
	act := settle(t, c)
	sb := other(act)
	if _, err := api(t, c, act).Create(t.Context(), "call-1", []byte("v")); err != nil {
		t.Fatal(err)
	}
	waitSynced(t, c, act)
	if err := c.Signal(sb, syscall.SIGTERM, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(sb); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitRole(sb, "STANDBY", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := api(t, c, act).Create(t.Context(), "call-2", []byte("v")); err != nil {
		t.Fatal(err)
	}
	waitSynced(t, c, act)
	switchover(t, c, act)
	// The new active probes once the handover has settled.
	if !pollUntil(10*time.Second, func() bool { s, _ := c.Status(sb); return s != nil && s.VIPProbes > 0 }) {
		t.Errorf("%s did not probe after the switchover", sb)
	}
	if _, err := api(t, c, sb).Create(t.Context(), "call-3", []byte("v")); err != nil {
		t.Fatal(err)
	}
	waitSynced(t, c, sb)
	// The active stopped as systemctl stop does: it hands over first.
	if err := c.Signal(sb, syscall.SIGTERM, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if !pollUntil(5*time.Second, func() bool { return len(logLines(c, act, `msg="peer stopped`)) > 0 }) {
		t.Errorf("%s never said its peer stopped", act)
	}
	if err := c.Start(sb); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitRole(sb, "STANDBY", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	waitSynced(t, c, act)
	for _, n := range []string{"a", "b"} {
		if bad := append(logLines(c, n, "level=WARN"), logLines(c, n, "level=ERROR")...); len(bad) > 0 {
			t.Errorf("%s logged:\n%s", n, strings.Join(bad, "\n"))
		}
	}
}

// Both nodes stopped at once, as a playbook run on the pair does: each
// exits, and neither leaves a VIP behind, whichever saw the other's stop
// first. An active handing over to a standby that says it stops too lets
// go at once rather than wait for its loss or the handover's bound.
func TestBothStoppedAtOnce(t *testing.T) {
	c := cluster(t, lab.ConfigOptions{})
	act := settle(t, c)
	pids := map[string]int{"a": c.Pid("a"), "b": c.Pid("b")}
	sent := time.Now()
	for _, n := range []string{act, other(act)} {
		if err := syscall.Kill(pids[n], syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"a", "b"} {
		if err := c.WaitExit(n, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("both exited %v after the signals; %s: %q", time.Since(sent), act, logLines(c, act, "op=exit"))
	for _, n := range []string{"a", "b"} {
		if c.Holds(n, lab.VIP.Addr()) {
			t.Errorf("%s still holds the VIP after both stopped", n)
		}
	}
}

// A node rebuilt from an image, or whose package was purged and installed
// again (which removes /var/lib/hapair), starts with no record of its
// boots: its generation counter begins again below the one its peer
// remembers of it. Or the operator rebuilding it copied the surviving
// node's /var/lib/hapair along with /etc/hapair: it then also remembers a
// peer generation that is not the peer's. Either way the peer must still
// hear it, and it the peer, so that it comes back as the standby, never a
// second holder beside an active it cannot hear: the standby, then the
// active, which hands over as it stops.
func TestNodeWithItsStateLostRejoins(t *testing.T) {
	c := cluster(t, lab.ConfigOptions{})
	act := settle(t, c)
	files := []string{"generation", "peer-generation"}
	restart := func(n string, state func()) {
		t.Helper()
		if err := c.Signal(n, syscall.SIGTERM, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		state()
		if err := c.Start(n); err != nil {
			t.Fatal(err)
		}
		if err := c.WaitRole(n, "STANDBY", 10*time.Second); err != nil {
			t.Fatal(err)
		}
		// Replication connects once n is standby.
		var st *control.Status
		if !pollUntil(5*time.Second, func() bool {
			st, _ = c.Status(other(n))
			return st != nil && st.Role == "ACTIVE" && st.Redundancy == "available"
		}) {
			t.Errorf("%s after %s came back: %+v", other(n), n, st)
		}
	}
	keep := func() {}
	holders := c.WatchHolders()
	defer holders.Stop()
	for _, n := range []string{other(act), act} {
		// Restarts first, so the peer remembers a counter above 1.
		restart(n, keep)
		restart(n, keep)
		restart(n, func() {
			for _, f := range files {
				if err := os.Remove(filepath.Join(c.StateDir(n), f)); err != nil {
					t.Fatal(err)
				}
			}
		})
		for range 3 {
			restart(n, keep)
		}
		restart(n, func() {
			for _, f := range files {
				b, err := os.ReadFile(filepath.Join(c.StateDir(other(n)), f))
				if err == nil {
					err = os.WriteFile(filepath.Join(c.StateDir(n), f), b, 0o600)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
		})
	}
	// A handover overlaps by a claim (make before break, a few ms); the
	// node that did not hear its peer held the VIPs beside it for good.
	if _, both := holders.Stop(); both > 200*time.Millisecond {
		t.Errorf("two holders for %v", both)
	}
}

// /var fills up (call recordings, logs, a core dump), and the standby is
// restarted meanwhile: by an upgrade, by systemd after a crash, by an
// operator. It must come back as the standby, saying what it could not
// record, not stay down and leave its pair without one; and again at its
// next restart, with the disk still full. A lock it cannot record is
// refused with the reason, never applied in name only.
func TestNodeStartsOnAFullDisk(t *testing.T) {
	c := cluster(t, lab.ConfigOptions{})
	act := settle(t, c)
	sb := other(act)
	if err := c.Signal(sb, syscall.SIGTERM, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	dir := c.StateDir(sb)
	kept := map[string][]byte{}
	for _, f := range []string{"generation", "peer-generation"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		kept[f] = b
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=64k,mode=0750"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	for f, b := range kept {
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	fill, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	for err == nil {
		_, err = fill.Write(make([]byte, 4096))
	}
	fill.Close()
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("filling %s: %v", dir, err)
	}
	for range 2 {
		if err := c.Start(sb); err != nil {
			t.Fatal(err)
		}
		if err := c.WaitRole(sb, "STANDBY", 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := c.Signal(sb, syscall.SIGTERM, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(logLines(c, sb, "boot counter not kept")); n != 2 {
		t.Errorf("%s said %d times that it could not record its boot, want 2", sb, n)
	}
	if err := c.Start(sb); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitRole(sb, "STANDBY", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	args := []string{"lock", "--reason", "disk full", "-c", c.Config, "--socket", c.Socket(sb), "--state-dir", dir}
	out, err := exec.Command(ctlBin, args...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no space left on device") {
		t.Errorf("hapairctl lock on a full disk: %v\n%s", err, out)
	}
	if st, err := c.Status(sb); err != nil || st.Locked {
		t.Errorf("%s after a lock that could not be recorded: %+v, %v", sb, st, err)
	}
	var st *control.Status
	if !pollUntil(5*time.Second, func() bool {
		st, _ = c.Status(act)
		return st != nil && st.Role == "ACTIVE" && st.Redundancy == "available"
	}) {
		t.Errorf("%s beside a standby on a full disk: %+v", act, st)
	}
	// Stopped before the cleanup takes its state directory away.
	if err := c.Signal(sb, syscall.SIGTERM, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}
