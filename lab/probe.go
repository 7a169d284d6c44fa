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

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Prober sends ICMP echo requests to one address from inside a namespace at
// a fixed rate and records when replies come back. It measures what a
// client of the VIP sees: the longest gap between two replies is the
// client-observed outage.
type Prober struct {
	conn *icmp.PacketConn
	dst  net.Addr
	v6   bool
	id   int

	mu       sync.Mutex
	replies  []time.Time
	answered chan struct{} // closed at the first reply
}

// NewProber opens an ICMP socket in namespace ns aimed at addr.
func NewProber(ns string, addr netip.Addr) (*Prober, error) {
	p := &Prober{v6: addr.Is6(), id: rand.IntN(0xffff), dst: &net.IPAddr{IP: addr.AsSlice()}, answered: make(chan struct{})}
	network, laddr := "ip4:icmp", "0.0.0.0"
	if p.v6 {
		network, laddr = "ip6:ipv6-icmp", "::"
	}
	err := Do(ns, func() (err error) {
		p.conn, err = icmp.ListenPacket(network, laddr)
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
	body := make([]byte, 8)
	binary.BigEndian.PutUint64(body, uint64(time.Now().UnixNano()))
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
	buf := make([]byte, 1500)
	for {
		n, _, err := p.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		now := time.Now()
		m, err := icmp.ParseMessage(proto, buf[:n])
		if err != nil {
			continue
		}
		if e, ok := m.Body.(*icmp.Echo); ok && e.ID == p.id && (m.Type == ipv4.ICMPTypeEchoReply || m.Type == ipv6.ICMPTypeEchoReply) {
			p.mu.Lock()
			if len(p.replies) == 0 {
				close(p.answered)
			}
			p.replies = append(p.replies, now)
			p.mu.Unlock()
		}
	}
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
	return p.replies[len(p.replies)-1]
}

// LongestGap is the longest time between two consecutive replies received
// at or after since.
func (p *Prober) LongestGap(since time.Time) time.Duration {
	return p.gap(since, false)
}

// GapAfter is the longest gap between replies after at, with at counted as
// a reply: the outage of a fault at at+probe that cut the client off
// at once, whatever filter cut it a little earlier.
func (p *Prober) GapAfter(at time.Time) time.Duration {
	return p.gap(at, true)
}

func (p *Prober) gap(since time.Time, sinceAnswered bool) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	var gap time.Duration
	var prev time.Time
	for _, r := range p.replies {
		if r.Before(since) {
			if !sinceAnswered {
				prev = r
			}
			continue
		}
		if prev.IsZero() && sinceAnswered {
			prev = since
		}
		if !prev.IsZero() && r.Sub(prev) > gap {
			gap = r.Sub(prev)
		}
		prev = r
	}
	return gap
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
