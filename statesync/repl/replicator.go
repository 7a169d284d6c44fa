// Package repl is the replication protocol between the two nodes' session
// stores: the active leads (it streams its store's log, or a snapshot, to
// the standby) and the standby follows (it applies what comes, in order,
// and acknowledges it). It decides no roles: the service tells it whether
// this node is active (SetActive).
//
// A connection: the standby dials (Config.Dial, TCP to the peer by
// default), both ends prove they hold a shared key (auth.go), everything
// after travels sealed (seal.go), optionally inside TLS (tls.go). The
// standby says what it holds (hello); the active resumes it from its log
// when it can, or sends a snapshot, then streams operations; the standby
// acknowledges cumulatively (leader.go, follower.go). The latency
// machinery, polling for acknowledgements and for the next operation, is
// in transport.go. Message formats are package wire's.
//
// Sequence numbers order every write. A standby resumes from its last
// applied sequence when the active still holds that part of its log and
// the stream is the same (same epoch: the active's term); otherwise it gets
// a consistent snapshot, then the stream. A standby that falls behind the
// log's bound is resynced by snapshot, so a slow standby never makes the
// active's memory grow without bound.
package repl

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hapair/hapair/statesync/store"
)

// keepalive and deadAfter bound how long a cut link goes unnoticed: a cut
// must break the connection so the standby reconnects (and resumes)
// instead of waiting out TCP's own timers (retransmissions give up after
// about 15 minutes). Liveness is the heartbeats' business, not this: what
// waits on deadAfter is only a reconnection, and a cut shorter than it
// heals without one.
//
// The kernel watches the link (keepAlive): after keepalive without
// traffic it probes every keepalive, and a connection whose probes, or
// whose data, go unacknowledged for deadAfter fails. Its timers wake
// neither daemon. A standby whose kernel does so says it once, with a
// ping after its hello; until one does (a test's socket pair, an older
// standby that still times its reads), an idle leader pings every
// keepalive and each end takes deadAfter without traffic for a dead link.
// Those pings woke both daemons twice a second (the ping, its
// acknowledgement): at the default profile, a quarter of an idle pair's
// context switches.
//
// setupAllow replaces deadAfter while a connection sets up, when each end
// is silent by design for as long as the store takes: the standby waits
// for the active to copy every session into a snapshot, and the active
// for the standby to load it (its first acknowledgement). With deadAfter
// there, a loaded node with 300,000 sessions never finished a snapshot:
// each attempt timed out in the copy, the standby dialled again, and the
// next copy queued behind the last on the store lock. A peer that dies
// meanwhile closes its socket; only a link cut during set-up is noticed
// this late, and a node that fails meanwhile is the heartbeats' business.
// For the same reason the active's kernel bounds unacknowledged data only
// once set-up is over: a standby loading a snapshot reads nothing, and
// the stream that follows fills its window.
const (
	keepalive  = time.Second
	deadAfter  = 3 * time.Second
	setupAllow = 30 * time.Second
)

// Store is what replication needs of the session store (*store.Store): its
// positions, its log and snapshots on the active, applying and loading on
// the standby.
type Store interface {
	Seq() (epoch, seq uint64)
	SetEpoch(e uint64)
	Resume(epoch, seq uint64) (pos int64, ok bool)
	Changed() <-chan struct{}
	Wake()
	ReadLog(dst []byte, pos int64, max int) ([]byte, int64, bool)
	Snapshot() (epoch, seq uint64, pos int64, sessions []store.Session)
	Apply(now time.Time, epoch uint64, ops ...store.Op) error
	Load(epoch, seq uint64, sessions []store.Session, now time.Time) (dropped []string)
	SetFollowing(epoch uint64)
}

// Config sets up a Replicator.
type Config struct {
	Keys [][]byte
	// Peer is the other node's replication address, dialled while this
	// node is standby; the active hears only connections from its
	// address.
	Peer string
	// Dial, if set, opens a connection to the active in place of a TCP
	// dial to Peer (tests hand over one end of a socket pair).
	Dial func(ctx context.Context) (net.Conn, error)
	// OnDropped, if set, is told which local sessions a snapshot from the
	// active is about to replace or remove (after a split brain, the
	// loser's sessions from the isolation).
	OnDropped func(ids []string)
	// OnError, if set, hears connection errors (for rate-limited logs).
	OnError func(error)
	// OnApplied, if set, hears that this standby applied and
	// acknowledged more of the stream (or a snapshot), from the
	// follower's goroutine: it must not block.
	OnApplied func()
	// OnStandbyLost, if set, hears that an attached standby's connection
	// ended by itself, on the active, from the connection's goroutine: it
	// must not block.
	OnStandbyLost func()
	// Poll, if set, is how long a standby polls the link for the next
	// operation before its reader sleeps (sync mode: the writer waits for
	// this standby, and the standby's wake-up is part of its wait). Not
	// over TLS.
	Poll time.Duration
	// Sums are this node's config.PairSums and Release its hapaird
	// version, sent to the peer once per connection; OnPeerConfig, if
	// set, hears the peer's. It must not block: the active calls it from
	// the acknowledgement reader.
	Sums         map[string]uint64
	Release      string
	OnPeerConfig func(sums map[string]uint64, release string)
	// TLSServer and TLSClient, when set, wrap the replication link in TLS
	// (mutual: each side presents a certificate the other verifies). The
	// key-based challenge-response still runs inside it.
	TLSServer, TLSClient *tls.Config
	// TLSOptional: TLS when the peer speaks it, the key's sealing alone
	// when it does not, for the rolling change that turns TLS on or off
	// (one node with it, the other without, between two restarts). The
	// active tells the two apart by the connection's first bytes; the
	// standby dials without TLS once after an active answered its
	// handshake with something that is not TLS.
	TLSOptional bool
	// AwaitPeer: a standby dials only once told the peer is active
	// (PeerActive), and else once per AwaitFallback (default 1 s);
	// failures meanwhile are not passed to OnError. A peer that is not
	// active closes every connection, so dialling it is noise: at each
	// start of a pair, both nodes logged a replication error; two
	// standbys dialled each other 20 times a second; a node alone in
	// fault dialled a peer that was down. The fallback costs a missed
	// hint a second, not replication.
	AwaitPeer     bool
	AwaitFallback time.Duration
}

// monoBase makes instants storable in an atomic integer as monotonic
// offsets (Replicator.peerActiveAt).
var monoBase = time.Now()

// activeGrace is how long after its peer said it is active a standby's
// failures to follow it go unreported (Config.AwaitPeer).
const activeGrace = time.Second

// Replicator streams the store to the standby while this node is active,
// and follows the active while it is standby.
type Replicator struct {
	cfg   Config
	store Store
	acks  acks // what the attached standby acknowledged, in this epoch

	mu       sync.Mutex
	active   bool
	roleCtx  context.Context
	roleStop context.CancelFunc
	changed  chan struct{}
	current  context.CancelFunc // the attached standby's connection

	sending    atomic.Pointer[sender]  // the attached standby's, while active
	pump       atomic.Pointer[ackPump] // likewise
	loaded     atomic.Uint64           // the standby streams once it acknowledged this: its snapshot or resume point
	connected  atomic.Bool             // following the active
	leading    atomic.Int32            // standby connections being served
	attached   atomic.Uint64           // standby connections begun, ever
	snapshots  atomic.Uint64
	resumes    atomic.Uint64
	authErrors atomic.Uint64
	rejected   atomic.Uint64 // records that failed to open: tampering
	refused    atomic.Uint64 // connections not from the peer, or too many unproven
	pings      atomic.Uint64
	unproven   chan struct{} // a slot per connection still authenticating
	// peerActive is the last PeerActive, and peerActiveAt when it last
	// turned true (a mono reading); peerUp wakes a standby waiting for it
	// (Config.AwaitPeer).
	peerActive   atomic.Bool
	peerActiveAt atomic.Int64
	// overTLS: the last connection that proved itself runs in TLS;
	// plainNext: an optional standby tries its next one without
	// (Config.TLSOptional).
	overTLS, plainNext atomic.Bool
	peerUp             chan struct{}
}

// New makes a replicator for st; it starts as standby.
func New(st Store, cfg Config) *Replicator {
	if cfg.AwaitFallback == 0 {
		cfg.AwaitFallback = time.Second
	}
	if cfg.Dial == nil {
		d := net.Dialer{Timeout: time.Second, KeepAlive: time.Second}
		cfg.Dial = func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", cfg.Peer) }
	}
	r := &Replicator{cfg: cfg, store: st, changed: make(chan struct{}, 1), unproven: make(chan struct{}, maxUnproven), peerUp: make(chan struct{}, 1)}
	r.acks.sig = make(chan struct{})
	r.roleCtx, r.roleStop = context.WithCancel(context.Background())
	return r
}

// SetActive switches between leading and following. A node that becomes
// active starts a new epoch (epoch; 0 when the caller has set it in the
// store already), so standbys of the old stream take a snapshot, or resume
// (Store.Resume).
func (r *Replicator) SetActive(active bool, epoch uint64) {
	if active && epoch != 0 {
		r.NewEpoch(epoch)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if active == r.active && r.roleCtx.Err() == nil {
		return
	}
	r.active = active
	r.roleStop()
	r.roleCtx, r.roleStop = context.WithCancel(context.Background())
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// PeerActive says whether the peer's heartbeats say it is active: what a
// standby waits for before it dials (Config.AwaitPeer).
func (r *Replicator) PeerActive(active bool) {
	// Its one caller is the agent's loop. The instant goes first, so that
	// a standby that reads the peer active never reads an older instant.
	if active && !r.peerActive.Load() {
		r.peerActiveAt.Store(int64(time.Since(monoBase)))
	}
	if r.peerActive.Swap(active) != active && active {
		select {
		case r.peerUp <- struct{}{}:
		default:
		}
	}
}

// NewEpoch starts a new stream in the store (store.SetEpoch), before this
// node leads: it waits for the store (a snapshot being loaded or copied),
// so the caller may make it off its loop. Acknowledgements of the old
// stream no longer count.
func (r *Replicator) NewEpoch(epoch uint64) {
	r.store.SetEpoch(epoch)
	r.acks.set(0)
}

// Attached counts the standby connections this node has begun to serve:
// one begun after a count was read is a standby that connected anew.
func (r *Replicator) Attached() uint64 { return r.attached.Load() }

// Acked is the highest sequence the standby acknowledged in this epoch.
func (r *Replicator) Acked() uint64 { return r.acks.load() }

// WaitAcked waits until the standby acknowledged seq, or until timeout.
func (r *Replicator) WaitAcked(seq uint64, timeout time.Duration) bool {
	return r.acks.wait(seq, timeout, nil, nil)
}

// WaitAckedOr is WaitAcked that also gives up when stop or gone closes.
func (r *Replicator) WaitAckedOr(seq uint64, timeout time.Duration, stop, gone <-chan struct{}) bool {
	return r.acks.wait(seq, timeout, stop, gone)
}

// SpinAcked polls the attached standby's connection for the
// acknowledgement of seq for up to d (transport.go), and says whether it
// came; false at once without a standby, or over TLS.
func (r *Replicator) SpinAcked(seq uint64, d time.Duration) bool {
	p := r.pump.Load()
	return p != nil && p.spin(&r.acks, seq, d)
}

// Active says whether this node leads (SetActive).
func (r *Replicator) Active() bool {
	_, active := r.role()
	return active
}

func (r *Replicator) role() (context.Context, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.roleCtx, r.active
}

// Connected says whether a standby is attached (active) or this node is
// attached to the active (standby).
func (r *Replicator) Connected() bool { return r.connected.Load() || r.leading.Load() > 0 }

// OverTLS says whether the last connection that proved itself runs in TLS.
func (r *Replicator) OverTLS() bool { return r.overTLS.Load() }

// Following says whether an attached standby has loaded its snapshot (or
// resumed) and now applies the stream.
func (r *Replicator) Following() bool {
	return r.leading.Load() > 0 && r.acks.load() >= r.loaded.Load()
}

// Loading says whether an attached standby is still loading its snapshot
// (or has not yet acknowledged its resume point): it lacks sessions this
// node holds.
func (r *Replicator) Loading() bool {
	return r.leading.Load() > 0 && r.acks.load() < r.loaded.Load()
}

// Stats counts the replicator's events.
type Stats struct {
	Snapshots, Resumes, AuthErrors uint64
	// Rejected counts connections ended by a record that failed to
	// open: altered or injected on the way.
	Rejected uint64
	// Refused counts connections closed unheard: not from the peer's
	// address, or beyond maxUnproven authenticating at once.
	Refused uint64
	// Pings counts the pings sent to idle standbys that did not say
	// their kernel keeps the connection (an older release).
	Pings uint64
}

// maxUnproven bounds the connections authenticating at once.
const maxUnproven = 4

// Stats reads the counters.
func (r *Replicator) Stats() Stats {
	return Stats{Snapshots: r.snapshots.Load(), Resumes: r.resumes.Load(), AuthErrors: r.authErrors.Load(), Rejected: r.rejected.Load(), Refused: r.refused.Load(), Pings: r.pings.Load()}
}

// Run accepts standbys on ln while active and follows the peer while
// standby, until ctx ends; it closes ln and returns when all its
// goroutines have ended.
func (r *Replicator) Run(ctx context.Context, ln net.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.accept(ctx, ln, &wg)
	}()
	go func() {
		<-ctx.Done()
		ln.Close()
		r.mu.Lock()
		r.roleStop()
		r.mu.Unlock()
	}()
	for ctx.Err() == nil {
		rc, active := r.role()
		if active {
			select {
			case <-rc.Done():
			case <-ctx.Done():
			}
			continue
		}
		if r.cfg.AwaitPeer && !r.peerActive.Load() && !r.awaitPeer(ctx, rc) {
			continue
		}
		err := r.follow(rc)
		r.connected.Store(false)
		// ErrNotFollowing: this node became active while ops were on
		// their way (its role's context ends a moment later), no fault.
		if err != nil && rc.Err() == nil && r.cfg.OnError != nil && !r.peerNotReady() && !errors.Is(err, store.ErrNotFollowing) {
			r.cfg.OnError(err)
		}
		select { // back off before dialling again
		case <-time.After(50 * time.Millisecond):
		case <-rc.Done():
		case <-ctx.Done():
		}
	}
	return nil
}

// peerNotReady says a failure to follow the peer is to be expected, not
// reported (Config.AwaitPeer): it is not active, or said so less than
// activeGrace ago. A node's frames say ACTIVE a little before its
// replication accepts (its promotion runs off its loop), and a standby
// that dialled at once was turned away at each start of a pair.
func (r *Replicator) peerNotReady() bool {
	return r.cfg.AwaitPeer && (!r.peerActive.Load() || time.Since(monoBase)-time.Duration(r.peerActiveAt.Load()) < activeGrace)
}

// closedByPeer drops io.EOF: the other end closed an established
// connection, as it does when it stops or steps down, which the heartbeats
// tell; a reset or a timeout is still an error. The active logged a
// replication error each time its standby was stopped.
func closedByPeer(err error) error {
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// awaitPeer waits until the peer is said to be active, or AwaitFallback
// passes, and says whether to dial: not if this node's role changed or ctx
// ended meanwhile.
func (r *Replicator) awaitPeer(ctx, rc context.Context) bool {
	t := time.NewTimer(r.cfg.AwaitFallback)
	defer t.Stop()
	for {
		select {
		case <-r.peerUp:
			// The signal may be older than the peer's last change:
			// given while this loop was not waiting (it followed an
			// active peer), and the peer has stepped down since. A
			// node demoted at its stop then dialled a peer that was
			// not active, or dialled it and was gone mid-way.
			if !r.peerActive.Load() {
				continue
			}
		case <-t.C:
		case <-rc.Done():
			return false
		case <-ctx.Done():
			return false
		}
		return true
	}
}

func (r *Replicator) accept(ctx context.Context, ln net.Listener, wg *sync.WaitGroup) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		rc, active := r.role()
		if !active {
			c.Close()
			continue
		}
		// Only the peer may connect, and only a few connections may be
		// proving themselves at once: a stranger cannot hold the
		// listener busy, nor make the active spend on handshakes.
		if !r.fromPeer(c) {
			r.refused.Add(1)
			c.Close()
			continue
		}
		select {
		case r.unproven <- struct{}{}:
		default:
			r.refused.Add(1)
			c.Close()
			continue
		}
		lc, cancel := context.WithCancel(rc)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cancel()
			err := r.lead(lc, cancel, c)
			if err != nil && lc.Err() == nil && r.cfg.OnError != nil {
				r.cfg.OnError(err)
			}
		}()
	}
}

// fromPeer says whether c comes from the peer's address (any port).
func (r *Replicator) fromPeer(c net.Conn) bool {
	peer, err := netip.ParseAddrPort(r.cfg.Peer)
	if err != nil {
		return true // a name, not an address: the handshake decides
	}
	from, err := netip.ParseAddrPort(c.RemoteAddr().String())
	return err == nil && from.Addr().Unmap() == peer.Addr().Unmap()
}

func handshake(ctx context.Context, c *tls.Conn) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := c.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("statesync: tls: %w", err)
	}
	return nil
}

// ackEvery bounds how many applied ops go unacknowledged while data keeps
// arriving.
const ackEvery = 256

// closeOnDone closes c when ctx ends, unblocking its reads and writes.
func closeOnDone(ctx context.Context, c net.Conn) (stop func()) {
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
		case <-done:
		}
		c.Close()
	}()
	return func() { close(done) }
}

// takeOver makes cancel the standby connection's, ending the previous one:
// one standby at a time, and only an authenticated one replaces it.
func (r *Replicator) takeOver(cancel context.CancelFunc) {
	r.mu.Lock()
	prev := r.current
	r.current = cancel
	r.mu.Unlock()
	if prev != nil {
		prev()
	}
}

// secure readies a fresh replication connection, as the active (server)
// or the standby: TLS if configured, then the key's challenge-response
// both ways. Failures to prove identity are counted.
func (r *Replicator) secure(ctx context.Context, c net.Conn, server bool) (*sealedConn, error) {
	tcp, _ := c.(*net.TCPConn)
	if tcp != nil {
		tcp.SetNoDelay(true)
		if !keepAlive(tcp, !server) {
			tcp = nil
		}
	}
	var tc *tls.Conn
	switch {
	case server && r.cfg.TLSServer != nil && r.cfg.TLSOptional:
		pc, isTLS, err := sniffTLS(c)
		if err != nil {
			return nil, err
		}
		if c = pc; isTLS {
			tc = tls.Server(c, r.cfg.TLSServer)
		}
	case server && r.cfg.TLSServer != nil:
		tc = tls.Server(c, r.cfg.TLSServer)
	case !server && r.cfg.TLSClient != nil && !(r.cfg.TLSOptional && r.plainNext.Load()):
		tc = tls.Client(c, r.cfg.TLSClient)
	}
	// An optional standby goes without TLS only for the one connection
	// after an active answered its handshake with something that is not
	// TLS: two optional nodes never settle on less for a failure of
	// another kind, and an active that now speaks TLS is tried in TLS
	// again at the next connection.
	if !server && r.cfg.TLSOptional {
		r.plainNext.Store(false)
	}
	if tc != nil {
		if err := handshake(ctx, tc); err != nil {
			r.authErrors.Add(1)
			var notTLS tls.RecordHeaderError
			if !server && r.cfg.TLSOptional && errors.As(err, &notTLS) {
				r.plainNext.Store(true)
			}
			return nil, err
		}
		c = tc
	}
	// An optional peer tries TLS first: its handshake fails the key's
	// here as a stranger's would, but is no stranger's. The connection
	// itself stays unwrapped, so a sync writer can poll its socket.
	ac := net.Conn(c)
	var first *firstBytes
	if server && tc == nil && r.cfg.TLSServer == nil {
		first = &firstBytes{Conn: c}
		ac = first
	}
	send, recv, err := authenticate(ac, r.cfg.Keys, server, 2*time.Second)
	if err != nil {
		if first != nil && first.n == len(first.head) && tlsRecord(first.head[:]) {
			return nil, ErrPeerOffersTLS
		}
		if errors.Is(err, ErrAuth) {
			r.authErrors.Add(1)
		}
		return nil, err
	}
	r.overTLS.Store(tc != nil)
	sc, err := newSealedConn(c, send, recv, func() { r.rejected.Add(1) })
	if err != nil {
		return nil, err
	}
	sc.tcp = tcp
	return sc, nil
}

// keepAlive hands a TCP connection's liveness to the kernel (see
// keepalive), and says whether it took it. bounded also makes data that
// stays unacknowledged for deadAfter fail the connection, which the
// active may ask for only once its standby has loaded what it was sent
// (boundUnacked).
func keepAlive(c *net.TCPConn, bounded bool) bool {
	err := c.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: keepalive, Interval: keepalive, Count: int(deadAfter / keepalive)})
	if err == nil && bounded {
		err = boundUnacked(c)
	}
	return err == nil
}

// boundUnacked fails c when data or keepalive probes go unacknowledged
// for deadAfter, or the peer's window stays closed that long
// (TCP_USER_TIMEOUT); keepalive probes alone fail it only after their
// count and interval, a keepalive later.
func boundUnacked(c *net.TCPConn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	cerr := raw.Control(func(fd uintptr) {
		err = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(deadAfter/time.Millisecond))
	})
	return errors.Join(cerr, err)
}

// sniffTLS reads a fresh connection's first bytes and says whether they
// open a TLS handshake (a handshake record, version 3.x) or the key's own
// (32 random bytes, which look like one once in about 3 million connections:
// that one fails, and the standby dials again). What it read is read
// again first from the connection it returns.
func sniffTLS(c net.Conn) (net.Conn, bool, error) {
	var h [3]byte
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err := io.ReadFull(c, h[:])
	c.SetReadDeadline(time.Time{})
	if err != nil {
		return nil, false, fmt.Errorf("statesync: first bytes: %w", err)
	}
	return &peekedConn{Conn: c, head: h[:]}, tlsRecord(h[:]), nil
}

// tlsRecord says whether h, a connection's first three bytes, open a TLS
// handshake record (version 3.x).
func tlsRecord(h []byte) bool { return h[0] == 22 && h[1] == 3 && h[2] <= 4 }

// firstBytes keeps the first bytes read from a connection.
type firstBytes struct {
	net.Conn
	head [3]byte
	n    int
}

func (f *firstBytes) Read(b []byte) (int, error) {
	n, err := f.Conn.Read(b)
	f.n += copy(f.head[f.n:], b[:n])
	return n, err
}

// peekedConn gives back head before reading on from the connection.
type peekedConn struct {
	net.Conn
	head []byte
}

func (p *peekedConn) Read(b []byte) (int, error) {
	if len(p.head) > 0 {
		n := copy(b, p.head)
		p.head = p.head[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}
