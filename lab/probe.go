package lab

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// Prober sends ICMP echo requests to one address from inside a namespace at
// a fixed rate and records when each was sent and when its reply came back.
// It measures what a client of the VIP sees: the outage (see gap).
type Prober struct {
	conn *net.IPConn
	dst  net.Addr
	v6   bool
	id   int

	mu       sync.Mutex
	sent     []time.Time   // by sequence number
	replies  []reply       // in the order they came
	answered chan struct{} // closed at the first reply
}

type reply struct {
	seq int
	at  time.Time
}

// NewProber opens an ICMP socket in namespace ns aimed at addr.
func NewProber(ns string, addr netip.Addr) (*Prober, error) {
	p := &Prober{v6: addr.Is6(), id: rand.IntN(0xffff), dst: &net.IPAddr{IP: addr.AsSlice()}, answered: make(chan struct{})}
	network, laddr := "ip4:icmp", "0.0.0.0"
	if p.v6 {
		network, laddr = "ip6:ipv6-icmp", "::"
	}
	err := Do(ns, func() error {
		c, err := net.ListenPacket(network, laddr)
		if err != nil {
			return err
		}
		p.conn = c.(*net.IPConn)
		// Replies are timed by the kernel as they arrive: the time
		// this process reads them at is late whenever its CPU is busy
		// (with both nodes of the lab, during a failover above all).
		rc, err := p.conn.SyscallConn()
		if err == nil {
			rc.Control(func(fd uintptr) {
				err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
			})
		}
		if err != nil {
			p.conn.Close()
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("lab: probe socket in %s: %w", ns, err)
	}
	return p, nil
}

// Close ends the probe's socket, which also ends Run.
func (p *Prober) Close() error { return p.conn.Close() }

func (p *Prober) send(seq int) error {
	var typ icmp.Type = ipv4.ICMPTypeEcho
	if p.v6 {
		typ = ipv6.ICMPTypeEchoRequest
	}
	now := time.Now()
	p.mu.Lock()
	p.sent = append(p.sent, now)
	p.mu.Unlock()
	body := make([]byte, 8)
	binary.BigEndian.PutUint64(body, uint64(now.UnixNano()))
	b, err := (&icmp.Message{Type: typ, Body: &icmp.Echo{ID: p.id, Seq: seq & 0xffff, Data: body}}).Marshal(nil)
	if err != nil {
		return err
	}
	_, err = p.conn.WriteTo(b, p.dst)
	return err
}

// Run sends a probe every interval until ctx ends, recording replies.
func (p *Prober) Run(ctx context.Context, interval time.Duration) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.read()
	}()
	t := time.NewTicker(interval)
	defer t.Stop()
	for seq := 0; ; seq++ {
		p.send(seq)
		select {
		case <-ctx.Done():
			p.conn.SetReadDeadline(time.Now())
			<-done
			return
		case <-t.C:
		}
	}
}

func (p *Prober) read() {
	proto := 1
	if p.v6 {
		proto = 58
	}
	buf, oob := make([]byte, 1500), make([]byte, 128)
	for {
		n, oobn, _, _, err := p.conn.ReadMsgIP(buf, oob)
		if err != nil {
			return
		}
		now := arrival(oob[:oobn])
		msg := buf[:n]
		if !p.v6 && n >= 20 {
			// A raw IPv4 socket reads the IP header too.
			msg = buf[int(buf[0]&0x0f)*4 : n]
		}
		m, err := icmp.ParseMessage(proto, msg)
		if err != nil {
			continue
		}
		if e, ok := m.Body.(*icmp.Echo); ok && e.ID == p.id && (m.Type == ipv4.ICMPTypeEchoReply || m.Type == ipv6.ICMPTypeEchoReply) {
			p.mu.Lock()
			if len(p.replies) == 0 {
				close(p.answered)
			}
			// The wire carries 16 bits of the sequence: the reply is
			// to the newest probe that has them.
			last := len(p.sent) - 1
			p.replies = append(p.replies, reply{seq: last - (last-e.Seq)&0xffff, at: now})
			p.mu.Unlock()
		}
	}
}

// arrival is the kernel's receive time in a message's control data, or now
// if it has none.
func arrival(oob []byte) time.Time {
	msgs, _ := unix.ParseSocketControlMessage(oob)
	for _, m := range msgs {
		if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= int(unsafe.Sizeof(unix.Timespec{})) {
			ts := (*unix.Timespec)(unsafe.Pointer(&m.Data[0]))
			return time.Unix(ts.Unix())
		}
	}
	return time.Now()
}

// Replies is how many replies came back so far.
func (p *Prober) Replies() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.replies)
}

// LastReply is when the latest reply came, or the zero time.
func (p *Prober) LastReply() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.replies) == 0 {
		return time.Time{}
	}
	return p.replies[len(p.replies)-1].at
}

// LongestGap is the outage seen at or after since, and how many probes
// went unanswered in it (see gap).
func (p *Prober) LongestGap(since time.Time) (time.Duration, int) {
	return p.gap(since, false)
}

// GapAfter is the outage after at, with at counted as the reply to the
// last probe sent before it: the outage of a fault at at+probe that cut
// the client off at once, whatever filter cut it a little earlier.
func (p *Prober) GapAfter(at time.Time) (time.Duration, int) {
	return p.gap(at, true)
}

// gap is the client's longest outage among the replies at or after since.
// Between two consecutive replies with a probe between them that was never
// answered, it is the time between the two replies: the service was gone
// for at most that. Between two with none lost, it is only the second
// probe's round trip: every probe was answered, and a gap that is there
// because this prober sent late (its timer or its CPU, busy with both
// nodes in one lab) is not the service's. Replies to the 1 ms probes of a
// graceful stop came 2-3 ms apart with no probe lost, which the time
// between replies alone read as an outage. lost counts the probes never
// answered between the replies it looked at.
func (p *Prober) gap(since time.Time, sinceAnswered bool) (gap time.Duration, lost int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	answered := make(map[int]bool, len(p.replies))
	for _, r := range p.replies {
		answered[r.seq] = true
	}
	prev := reply{seq: -1}
	if sinceAnswered {
		prev = reply{seq: -1, at: since}
		for seq, at := range p.sent {
			if at.Before(since) {
				prev.seq = seq
			}
		}
	}
	for _, r := range p.replies {
		if r.at.Before(since) {
			if !sinceAnswered {
				prev = r
			}
			continue
		}
		if !prev.at.IsZero() {
			g := r.at.Sub(prev.at)
			n := lostBetween(answered, prev.seq, r.seq)
			if n == 0 {
				g = r.at.Sub(p.sent[r.seq])
			}
			gap, lost = max(gap, g), lost+n
		}
		prev = r
	}
	return gap, lost
}

// lostBetween counts the probes sent after probe a and before probe b that
// were never answered (none if b came before a).
func lostBetween(answered map[int]bool, a, b int) int {
	n := 0
	for s := a + 1; s < b; s++ {
		if !answered[s] {
			n++
		}
	}
	return n
}

// Reach reports whether addr answers an echo from inside ns within timeout.
func Reach(ns string, addr netip.Addr, timeout time.Duration) error {
	p, err := NewProber(ns, addr)
	if err != nil {
		return err
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	go func() {
		select {
		case <-p.answered:
			cancel()
		case <-ctx.Done():
		}
	}()
	p.Run(ctx, 50*time.Millisecond)
	if p.Replies() == 0 {
		return errors.New("lab: " + addr.String() + " did not answer from " + ns + " within " + timeout.String())
	}
	return nil
}
