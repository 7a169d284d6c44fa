package heartbeat

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/mdlayher/packet"
)

// RawPath opens the dedicated-link path: a packet socket on ifi bound to
// EtherType, so the kernel hands us only heartbeat frames. SOCK_DGRAM lets
// the kernel write the Ethernet header. With peerMAC nil, frames go to the
// broadcast address until the peer's first authentic frame names its MAC.
func RawPath(ifi *net.Interface, peerMAC net.HardwareAddr) (Path, error) {
	c, err := packet.Listen(ifi, packet.Datagram, EtherType, nil)
	if err != nil {
		return Path{}, fmt.Errorf("heartbeat: raw socket on %s: %w", ifi.Name, err)
	}
	if err := prioritize(c, -1); err != nil {
		c.Close()
		return Path{}, fmt.Errorf("heartbeat: raw socket on %s: %w", ifi.Name, err)
	}
	p := Path{Name: "raw", Conn: c, Peer: &packet.Addr{HardwareAddr: peerMAC}, ifindex: ifi.Index, ifname: ifi.Name, peerMAC: peerMAC}
	if peerMAC == nil {
		p.Peer = &packet.Addr{HardwareAddr: net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
		p.Learn = true
	}
	return p, nil
}

// UDPPath opens the second path: the same frames over UDP between the two
// nodes' replication addresses. The socket is connected to the peer, so the
// kernel drops datagrams from any other source before they cost a MAC.
func UDPPath(local, peer netip.AddrPort) (Path, error) {
	c, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(local), net.UDPAddrFromAddrPort(peer))
	if err != nil {
		return Path{}, fmt.Errorf("heartbeat: udp %s: %w", local, err)
	}
	level := unix.IPPROTO_IP
	if !local.Addr().Unmap().Is4() {
		level = unix.IPPROTO_IPV6
	}
	if err := prioritize(c, level); err != nil {
		c.Close()
		return Path{}, fmt.Errorf("heartbeat: udp %s: %w", local, err)
	}
	return Path{Name: "udp", Conn: connectedUDP{c}, Peer: net.UDPAddrFromAddrPort(peer)}, nil
}

// Heartbeats go ahead of bulk traffic in the host's queues, and in the
// network's where it honours classes. The UDP path shares the
// replication link, whose stream (a snapshot, a flat-out write load)
// fills the interface's queue: behind it, in pfifo_fast's one band for
// both, a frame waited for the queue to drain (up to its 1000 packets:
// 12 ms at 1 Gbit/s, 1.2 s at 10 Mbit/s), and the path went down while
// its link was only busy (TestBusyReplicationLinkIsNoDeadPeer). fq_codel,
// many distributions' default, serves a sparse flow first anyway.
const (
	// framePriority is the frames' priority in the kernel
	// (TC_PRIO_INTERACTIVE, the most a process sets without
	// CAP_NET_ADMIN): pfifo_fast's first band, and the class a VLAN's
	// egress-qos-map turns into its PCP.
	framePriority = 6
	// frameTOS is DSCP CS6, network control, as VRRP's adverts carry.
	frameTOS = 0xc0
)

// prioritize marks what c sends: the priority, and with level (IPPROTO_IP
// or IPPROTO_IPV6; -1 for a packet socket) the traffic class.
func prioritize(c syscall.Conn, level int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		switch level {
		case unix.IPPROTO_IP:
			serr = os.NewSyscallError("setsockopt IP_TOS", unix.SetsockoptInt(int(fd), level, unix.IP_TOS, frameTOS))
		case unix.IPPROTO_IPV6:
			serr = os.NewSyscallError("setsockopt IPV6_TCLASS", unix.SetsockoptInt(int(fd), level, unix.IPV6_TCLASS, frameTOS))
		}
		if serr == nil {
			// After IP_TOS, which sets the priority from the TOS.
			serr = os.NewSyscallError("setsockopt SO_PRIORITY", unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PRIORITY, framePriority))
		}
	}); err != nil {
		return err
	}
	return serr
}

// connectedUDP is a UDP socket connected to the peer, as a PacketConn.
type connectedUDP struct{ *net.UDPConn }

func (c connectedUDP) WriteTo(b []byte, _ net.Addr) (int, error) { return c.Write(b) }

func (c connectedUDP) ReadFrom(b []byte) (int, net.Addr, error) {
	n, err := c.Read(b)
	return n, c.RemoteAddr(), err
}
