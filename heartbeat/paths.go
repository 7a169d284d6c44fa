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
	p := Path{Name: "raw", Conn: c, Peer: &packet.Addr{HardwareAddr: peerMAC}}
	if peerMAC == nil {
		p.Peer = &packet.Addr{HardwareAddr: net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
		p.Learn = true
	}
	return p, nil
}

// UDPPath opens the second path: the same frames over UDP between the two
// nodes' replication addresses.
func UDPPath(local, peer netip.AddrPort) (Path, error) {
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(local))
	if err != nil {
		return Path{}, fmt.Errorf("heartbeat: udp %s: %w", local, err)
	}
	return Path{Name: "udp", Conn: c, Peer: net.UDPAddrFromAddrPort(peer)}, nil
}
