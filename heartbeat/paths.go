package heartbeat

import (
	"fmt"
	"net"
	"net/netip"

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
	return Path{Name: "udp", Conn: connectedUDP{c}, Peer: net.UDPAddrFromAddrPort(peer)}, nil
}

// connectedUDP is a UDP socket connected to the peer, as a PacketConn.
type connectedUDP struct{ *net.UDPConn }

func (c connectedUDP) WriteTo(b []byte, _ net.Addr) (int, error) { return c.Write(b) }

func (c connectedUDP) ReadFrom(b []byte) (int, net.Addr, error) {
	n, err := c.Read(b)
	return n, c.RemoteAddr(), err
}
