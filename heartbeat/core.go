package heartbeat

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// The heartbeat core: liveness that a busy daemon cannot fake (design.md
// section 6). The endpoint runs in a small child process of its own, with
// real-time scheduling and locked memory where the system grants them, so
// neither the daemon's garbage collector (a snapshot of 300,000 sessions
// makes plenty) nor CPU hogs or a busy disk beside it delay a frame or the
// judgement that the peer fell silent. A false failover on a loaded box was
// the failure this replaces: the standby, loading a large snapshot under
// load, took its own stall for the active's silence.
//
// Parent and child talk over a unix SOCK_SEQPACKET pair, one message per
// datagram, first byte the type:
//
//	parent -> child  'I' CoreConfig as JSON (first message)
//	                 'L' local: what to say, and whether to send it now;
//	                     every 'L' also renews the agent's lease
//	                 'S' stats request
//	                 'U' unfence: the agent has handled Fenced
//	                 'R' read the peer's frames at once for a while
//	                     (Endpoint.ReadAtOnce)
//	                 'Q' goodbye: the agent ends, its VIPs handed over or
//	                     released; without it, the end of the socket
//	                     means the agent died, and the core fences
//	child -> parent  'H' CoreHello as JSON (first message)
//	                 'E' event: kind, path index, age in ns, frame (96 bytes)
//	                 'T' stats: counters as big-endian uint64s
//
// Times cross as ages: each process has its own monotonic origin.
//
// Agent and core are one executable today, so they always speak the same
// version. A hitless restart will keep a core under a newer agent
// (design-notes.md, "Designed for, not built"), which is why the two say
// their versions (CoreProtocol) in 'I' and 'H', and why a reader takes
// what a later version may send: a message longer than it knows carries
// fields appended at its end, which it skips; a message of a type it
// does not know is skipped whole; a counts message carries as many
// counters as its writer has, the reader taking those it knows (one it
// lacks reads as zero). A later version grows each message at its end
// only, and sends what the other side must understand only once that
// side's version says it does.

// CoreProtocol is the version of the messages between agent and core that
// this build speaks (see above).
const CoreProtocol = 1

// CoreConfig is what the child needs to run the endpoint.
type CoreConfig struct {
	// Protocol is the agent's CoreProtocol (NewCore sets it).
	Protocol int
	Endpoint Config
	// Raw path: the dedicated interface, and the peer's MAC if known.
	RawInterface string
	RawPeerMAC   string `json:",omitempty"`
	// UDP path between the replication addresses.
	UDPLocal, UDPPeer netip.AddrPort
	// Lease: the agent proves itself alive by sending 'L' at least this
	// often. Past it the core fences the node: its frames say FAULT, so
	// the peer takes over at once, the fence callback releases the VIPs
	// (a hung agent must not keep them until their kernel lease runs
	// out), and the agent learns it (Fenced) when it runs again; the
	// frames say FAULT until it says it has handled that ('U').
	Lease time.Duration
	// VIPs are the addresses the fence callback releases, for it alone to
	// read ("192.0.2.100/24 pub0").
	VIPs []string `json:",omitempty"`
	// RTPriority is the SCHED_RR priority to ask for (0: none).
	RTPriority int
}

// CoreHello says what isolation the child got, and the core's version.
type CoreHello struct {
	Protocol  int
	RealTime  bool
	RTError   string `json:",omitempty"`
	Locked    bool
	LockError string `json:",omitempty"`
}

const (
	msgInit    = 'I'
	msgLocal   = 'L'
	msgStats   = 'S'
	msgUnfence = 'U'
	msgReadNow = 'R'
	msgRenews  = 'N'
	msgBye     = 'Q'
	msgHello   = 'H'
	msgEvent   = 'E'
	msgCounts  = 'T'

	localLen = 1 + 1 + 1 + 2 + 8 + 8 + 1 + 8 + 8 + 8 + 8
	eventLen = 1 + 1 + 1 + 8 + 8 + FrameLen
	// fixedCounts are the counters a counts message carries before one
	// per drop reason (putCounts): scalarCounts, then each of pathNames'
	// heard and lost.
	scalarCounts = 12
	fixedCounts  = scalarCounts + 2*len(pathNames)
	numCounts    = fixedCounts + int(numDropReasons)
)

// pathNames are the core's paths, in order.
var pathNames = [2]string{"raw", "udp"}

// putLocal encodes l into b (localLen bytes) at now.
func putLocal(b []byte, l *Local, now time.Time, sendNow bool) {
	b[0] = msgLocal
	b[1] = 0
	if sendNow {
		b[1] = 1
	}
	b[2] = byte(l.Role)
	binary.BigEndian.PutUint16(b[3:5], uint16(l.Flags))
	since := func(t time.Time) int64 {
		if t.IsZero() {
			return -1
		}
		return int64(now.Sub(t))
	}
	binary.BigEndian.PutUint64(b[5:13], uint64(since(l.ActiveSince)))
	binary.BigEndian.PutUint64(b[13:21], uint64(since(l.LastNewSession)))
	b[21] = 0
	var fa, fl time.Duration
	if l.Frozen != nil {
		b[21] = 1
		fa, fl = l.Frozen.ActiveFor, l.Frozen.LastNewSession
	}
	binary.BigEndian.PutUint64(b[22:30], uint64(fa))
	binary.BigEndian.PutUint64(b[30:38], uint64(fl))
	binary.BigEndian.PutUint64(b[38:46], l.SyncWritten)
	binary.BigEndian.PutUint64(b[46:54], l.SyncAcked)
}

// getLocal decodes b into l at now. frozen is l.Frozen's storage, so
// decoding allocates nothing.
func getLocal(b []byte, l *Local, frozen *FrozenAges, now time.Time) (sendNow bool, err error) {
	if len(b) < localLen {
		return false, fmt.Errorf("heartbeat core: local message of %d bytes", len(b))
	}
	at := func(v uint64) time.Time {
		if int64(v) < 0 {
			return time.Time{}
		}
		return now.Add(-time.Duration(v))
	}
	l.Role = Role(b[2])
	l.Flags = Flags(binary.BigEndian.Uint16(b[3:5]))
	l.ActiveSince = at(binary.BigEndian.Uint64(b[5:13]))
	l.LastNewSession = at(binary.BigEndian.Uint64(b[13:21]))
	l.Frozen = nil
	if b[21] == 1 {
		frozen.ActiveFor = time.Duration(binary.BigEndian.Uint64(b[22:30]))
		frozen.LastNewSession = time.Duration(binary.BigEndian.Uint64(b[30:38]))
		l.Frozen = frozen
	}
	l.SyncWritten = binary.BigEndian.Uint64(b[38:46])
	l.SyncAcked = binary.BigEndian.Uint64(b[46:54])
	return b[1] == 1, nil
}

func pathIndex(name string) byte {
	for i, n := range pathNames {
		if n == name {
			return byte(i)
		}
	}
	return 0xff
}

// ServeCore runs the child's side on conn (the SEQPACKET socket to the
// parent) until the parent goes away, and writes in sent (if any) when it
// sends. isolate applies real-time scheduling and memory locking as cfg
// asks and says what it got; it runs after the config is read and before
// any path is opened. fence releases cfg.VIPs when the agent's lease runs
// out.
func ServeCore(nc net.Conn, sent *SentPage, isolate func(CoreConfig) CoreHello, fence func(CoreConfig)) error {
	return serveCore(nc, isolate, fence, func(cfg CoreConfig) (*Endpoint, error) {
		ep, err := openCore(cfg)
		if err == nil && sent != nil {
			ep.shareSent(sent)
		}
		return ep, err
	})
}

// serveCore is ServeCore with the paths opened by open: the tests' are in
// memory.
func serveCore(nc net.Conn, isolate func(CoreConfig) CoreHello, fence func(CoreConfig), open func(CoreConfig) (*Endpoint, error)) error {
	conn := raw(nc)
	buf := make([]byte, 64<<10)
	cfg, err := readCoreConfig(conn, buf)
	if err != nil {
		return err
	}
	hello := isolate(cfg)
	hello.Protocol = CoreProtocol
	hb, _ := json.Marshal(hello)
	if _, err := conn.Write(append([]byte{msgHello}, hb...)); err != nil {
		return err
	}
	if cfg.Endpoint.Dead <= ReliefUpTo {
		cfg.Endpoint.Relief = true
		// A relief sender waits in a system call holding its P: the
		// loop keeps the Ps it had without them. And a relief whose P
		// the runtime took back meanwhile (it does every 10 ms, the
		// relief never being scheduled anew) takes an idle one when it
		// wakes, with no other thread's help: so there must be idle
		// ones while a stopped CPU's threads hold theirs. And one more
		// P, idle while the loop's runs: with none idle, the runtime's
		// monitor takes a sleeping relief's P back each time it finds
		// the loop running, and after each such take it polls again
		// 20 µs later instead of backing off. At turbo that monitor
		// was a third of the core's CPU, more under a write stream,
		// when the agent's updates keep the loop busier (the core at
		// 46-51 % of a CPU, sync writes 3.7 times slower than at
		// fast); with the spare P, idle turbo costs a quarter less
		// and that write stream 60 % more (design-notes.md).
		runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + ReliefCPUs + 1)
	}
	ep, err := open(cfg)
	if err != nil {
		return err
	}
	if err := readFirstLocal(conn, ep, buf); err != nil {
		return err
	}
	ep.leaseFor(cfg.Lease)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	runErr, readErr := make(chan error, 1), make(chan error, 1)
	wg.Add(3)
	go func() {
		defer wg.Done()
		runErr <- ep.Run(ctx)
	}()
	go func() {
		defer wg.Done()
		forwardEvents(ctx, conn, ep)
	}()
	go func() {
		defer wg.Done()
		readErr <- readParent(ctx, conn, ep, buf)
	}()
	lease := time.NewTimer(cfg.Lease)
	defer lease.Stop()
	// lapse fences the node at the lease's end (unless it is fenced, or
	// locked, already), releases the VIPs once the peer holds them, and
	// tells the agent.
	lapse := func() {
		if !ep.leaseExpired() {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ep.releaseWhenTaken(ctx, func() { fence(cfg) })
		}()
		select {
		case ep.events <- Event{Kind: Fenced, At: time.Now()}:
		case <-ctx.Done():
		}
	}
	for {
		select {
		case err := <-runErr:
			cancel()
			return err
		case err := <-readErr:
			// The agent ended (goodbye), or died: killed -9, by the
			// OOM killer, a panic. A core outlives its agent only to
			// hand over what a dead one held: FAULT at once, so the
			// peer takes over now rather than a dead interval on, and
			// the VIPs released once it holds them, or after two dead
			// intervals (releaseWhenTaken), never left to their
			// kernel lease. A locked node too: its lock keeps its
			// role against the agent's own decisions, and a dead
			// agent holds none (agentDied).
			if errors.Is(err, errBye) {
				cancel()
				conn.Close()
				return nil
			}
			ep.agentDied()
			ep.releaseWhenTaken(ctx, func() { fence(cfg) })
			err = fmt.Errorf("hapaird died (%v): its heartbeat core told the peer FAULT and released the VIPs", err)
			cancel()
			conn.Close()
			return err
		case <-ep.renewed:
			lease.Reset(cfg.Lease)
		case <-ep.unfence:
			ep.setFenced(false)
		case <-ep.lapsed:
			// The agent's renewal came after the lease's end, read
			// before the timer's firing (both were ready when the
			// core woke from a stop of the whole daemon): the lease
			// ended all the same, and runs anew once fenced.
			lapse()
			ep.restartLease()
			lease.Reset(cfg.Lease)
		case <-lease.C:
			lapse()
		}
	}
}

// raw reads and writes the socket between agent and core with raw system
// calls (sysRaw), as the paths are: every frame the agent hears crosses
// it, and at idle its messages are most of what wakes the agent, each of
// which would otherwise wake the runtime's monitor thread too. A
// connection that is no socket (a test's pipe) is used as it is.
func raw(nc net.Conn) io.ReadWriteCloser {
	if sc, ok := nc.(syscall.Conn); ok {
		if rc, err := newRawConn(struct {
			syscall.Conn
			io.Closer
		}{sc, nc}); err == nil {
			return rc
		}
	}
	return nc
}

// readCoreConfig reads the parent's first message: the core's config.
func readCoreConfig(conn io.Reader, buf []byte) (CoreConfig, error) {
	var cfg CoreConfig
	n, err := conn.Read(buf)
	if err != nil {
		return cfg, fmt.Errorf("heartbeat core: reading config: %w", err)
	}
	if n == 0 || buf[0] != msgInit {
		return cfg, errors.New("heartbeat core: first message is not a config")
	}
	if err := json.Unmarshal(buf[1:n], &cfg); err != nil {
		return cfg, fmt.Errorf("heartbeat core: config: %w", err)
	}
	return cfg, nil
}

// openCore opens the core's two paths and its endpoint.
func openCore(cfg CoreConfig) (*Endpoint, error) {
	ifi, err := net.InterfaceByName(cfg.RawInterface)
	if err != nil {
		return nil, fmt.Errorf("heartbeat core: %w", err)
	}
	var mac net.HardwareAddr
	if cfg.RawPeerMAC != "" {
		if mac, err = net.ParseMAC(cfg.RawPeerMAC); err != nil {
			return nil, fmt.Errorf("heartbeat core: %w", err)
		}
	}
	raw, err := RawPath(ifi, mac)
	if err != nil {
		return nil, err
	}
	udp, err := UDPPath(cfg.UDPLocal, cfg.UDPPeer)
	if err != nil {
		raw.Conn.Close()
		return nil, err
	}
	ep, err := New(cfg.Endpoint, raw, udp)
	if err != nil {
		raw.Conn.Close()
		udp.Conn.Close()
		return nil, err
	}
	return ep, nil
}

// leaseExpired fences the node when the agent let its lease run out, and
// says whether it did: its frames say FAULT from now on, so the peer takes
// over at once. A locked node never changes role by itself, not even hung:
// the operator has said no failover now.
func (ep *Endpoint) leaseExpired() bool {
	if ep.fenced.Load() || ep.locked() {
		return false
	}
	ep.setFenced(true)
	return true
}

// agentDied fences the node for an agent that died: its frames say FAULT,
// that the agent died (FlagAgentDied), so the peer can tell a crash from
// a stop, and that the node leaves (its frames end with this core). A
// standby's leaving is its graceful stop's word: its active's sync writes
// stop waiting for a standby that is gone, where they stalled up to the
// sync timeout (TestCrashedStandbyDoesNotStallSyncWrites). An active's is
// a handover: its standby takes over, and the VIPs go once it holds them.
// Also on a locked node, whose lock keeps its role against the agent's
// decisions: a dead agent makes none, its VIPs' lease is not renewed, and
// its peer took over anyway once its frames stopped, while the VIPs stayed
// here until their lease ran out (two holders) or systemd's cleanup (a
// gap); a locked active in fault, by contrast, keeps its VIPs (election).
func (ep *Endpoint) agentDied() {
	ep.mu.Lock()
	ep.local.Flags |= FlagAgentDied | FlagLeaving
	ep.mu.Unlock()
	if !ep.fenced.Load() {
		ep.setFenced(true)
	} else {
		ep.SendNow()
	}
}

// locked says whether the agent last said this node is locked.
func (ep *Endpoint) locked() bool {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	return ep.local.Flags&FlagLocked != 0
}

// errBye is the agent's goodbye: it ends, nothing to fence.
var errBye = errors.New("heartbeat core: the agent said goodbye")

// releaseWhenTaken calls release (the VIPs go) once the peer says it holds
// them (it takes them at our first FAULT frame), or after two dead
// intervals whatever it says: make before break, but a hung node must not
// keep them. Not once the agent has come back and handled the fence
// (unfenced): what it holds is its decision from then on, and a node with
// nobody to hand to keeps its VIPs. A lone node whose agent stalled past
// the lease lost them here two dead intervals after it had resumed.
func (ep *Endpoint) releaseWhenTaken(ctx context.Context, release func()) {
	tick := time.NewTicker(max(ep.cfg.Interval/4, time.Millisecond))
	defer tick.Stop()
	for deadline := time.Now().Add(2 * ep.cfg.Dead); !ep.peerHolds.Load() && time.Now().Before(deadline); {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-ep.taken: // may be an old one: the loop looks again
		}
		if !ep.fenced.Load() {
			return
		}
	}
	if ep.fenced.Load() {
		release()
	}
}

// readFirstLocal waits for the agent's first local, which the parent sends
// right after the hello, and gives it to the endpoint before it sends
// anything: the first frame says what the agent says (INIT, preferred,
// locked, its session position). Frames sent before it said INIT with no
// flags, and a peer whose start-up window ended then took this node for
// a plain starting one, not the preferred node, and became active beside
// it.
func readFirstLocal(conn io.Reader, ep *Endpoint, buf []byte) error {
	n, err := conn.Read(buf)
	if err != nil {
		return err
	}
	if n == 0 || buf[0] != msgLocal {
		return fmt.Errorf("heartbeat core: the agent's first message is %q of %d bytes, not its local", buf[:min(n, 1)], n)
	}
	var l Local
	var frozen FrozenAges
	if _, err := getLocal(buf[:n], &l, &frozen, time.Now()); err != nil {
		return err
	}
	ep.setLocal(&l, false)
	return nil
}

func forwardEvents(ctx context.Context, conn io.Writer, ep *Endpoint) {
	var b [eventLen]byte
	b[0] = msgEvent
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-ep.Events():
			b[1] = byte(ev.Kind)
			b[2] = pathIndex(ev.Path)
			binary.BigEndian.PutUint64(b[3:11], uint64(time.Since(ev.At)))
			binary.BigEndian.PutUint64(b[11:19], uint64(Mono()))
			ev.Frame.put(b[19:])
			if _, err := conn.Write(b[:]); err != nil {
				// The agent is gone. Events are drained, not
				// sent, so the endpoint never waits on them while
				// it hands over (ServeCore).
				for {
					select {
					case <-ctx.Done():
						return
					case <-ep.Events():
					}
				}
			}
		}
	}
}

func readParent(ctx context.Context, conn io.ReadWriter, ep *Endpoint, buf []byte) error {
	var l Local
	var frozen FrozenAges
	var out [1 + 8*numCounts]byte
	out[0] = msgCounts
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return err
		}
		if n == 0 {
			return errors.New("heartbeat core: the agent closed the connection")
		}
		switch buf[0] {
		case msgLocal:
			sendNow, err := getLocal(buf[:n], &l, &frozen, time.Now())
			if err != nil {
				return err
			}
			// The lease the frames go by runs from here, not from when
			// the loop below resets its timer.
			renewed := ep.renewed
			if ep.renewLease() {
				renewed = ep.lapsed
			}
			ep.setLocal(&l, sendNow)
			select {
			case renewed <- struct{}{}:
			default:
			}
		case msgUnfence:
			select {
			case ep.unfence <- struct{}{}:
			default:
			}
		case msgReadNow:
			ep.ReadAtOnce()
		case msgRenews:
			ep.Renews()
		case msgBye:
			return errBye
		case msgStats:
			putCounts(out[1:], &ep.stats)
			if _, err := conn.Write(out[:]); err != nil {
				return err
			}
		default:
			// A later agent's, which this core does without.
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

func putCounts(b []byte, c *Counters) {
	vals := [fixedCounts]uint64{c.sent.Load(), c.recv.Load(), c.sendErrors.Load(), c.stale.Load(), c.pauses.Load(), c.queuedAtExpiry.Load(), uint64(c.lastFrame.Load()), c.agentBehind.Load(), c.stalls.Load(), uint64(c.longestGap.Load()), c.polled.Load(), c.relieved.Load()}
	for i := range c.paths {
		if j := int(pathIndex(c.paths[i].name)); j < len(pathNames) {
			vals[scalarCounts+2*j], vals[scalarCounts+2*j+1] = c.paths[i].heard.Load(), c.paths[i].lost.Load()
		}
	}
	for i, v := range vals {
		binary.BigEndian.PutUint64(b[8*i:], v)
	}
	for i := range c.drops {
		binary.BigEndian.PutUint64(b[8*(len(vals)+i):], c.drops[i].Load())
	}
}

// getCounts reads a counts message's counters: those of a core that has
// fewer (an older one) read as zero, those past the ones this build knows
// (a later core's) are skipped.
func getCounts(b []byte) Stats {
	u := func(i int) uint64 {
		if 8*i+8 > len(b) {
			return 0
		}
		return binary.BigEndian.Uint64(b[8*i:])
	}
	s := Stats{Sent: u(0), Received: u(1), SendErrors: u(2), Stale: u(3), Pauses: u(4), QueuedAtExpiry: u(5), AgentBehind: u(7),
		Stalls: u(8), LongestSendGap: time.Duration(u(9)), Polled: u(10), Relieved: u(11), Drops: map[string]uint64{}}
	if ns := int64(u(6)); ns != 0 {
		s.LastFrame = time.Unix(0, ns)
	}
	for i := range int(numDropReasons) {
		s.Drops[DropReason(i).String()] = u(fixedCounts + i)
	}
	s.Paths = make(map[string]PathFrames, len(pathNames))
	for j, n := range pathNames {
		s.Paths[n] = PathFrames{Heard: u(scalarCounts + 2*j), Lost: u(scalarCounts + 2*j + 1)}
	}
	return s
}

// Core is the parent's side: it runs the child and stands in for the
// endpoint (the agent's Heartbeat). Create with NewCore, then Run.
type Core struct {
	cfg   CoreConfig
	start func() (net.Conn, func() error, error)

	// OnHello, if set, learns what isolation the child got, once it
	// runs.
	OnHello func(CoreHello)
	// Sent, if set, is the page the child writes when it sends in
	// (SentPage; given to it by start).
	Sent *SentPage

	events chan Event
	stats  chan Stats

	mu     sync.Mutex
	conn   io.ReadWriteCloser
	local  Local
	last   Stats
	hello  CoreHello
	sentAt time.Time // the last local sent, which renewed the lease
}

// SentAgo says how long ago the child last sent its frames, false when
// that is not known (no page, or nothing sent yet).
func (c *Core) SentAgo() (time.Duration, bool) {
	if c.Sent == nil {
		return 0, false
	}
	return c.Sent.Ago()
}

// Generation is the heartbeat generation this start sends.
func (c *Core) Generation() uint64 { return c.cfg.Endpoint.Generation }

// Isolation says what the child got: real-time scheduling, locked memory.
func (c *Core) Isolation() CoreHello {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hello
}

// NewCore prepares a core. start launches the child and returns the
// parent's end of its socket and a function that ends the child and waits
// for it; it is called by Run.
func NewCore(cfg CoreConfig, start func() (net.Conn, func() error, error)) (*Core, error) {
	if cfg.Endpoint.Dead <= cfg.Endpoint.Interval {
		return nil, fmt.Errorf("heartbeat: dead interval %v must be above interval %v", cfg.Endpoint.Dead, cfg.Endpoint.Interval)
	}
	if _, err := NewSigner(cfg.Endpoint.Keys); err != nil {
		return nil, err
	}
	cfg.Protocol = CoreProtocol
	return &Core{cfg: cfg, start: start, events: make(chan Event, 256), stats: make(chan Stats, 1)}, nil
}

// Events is where the core reports, as Endpoint.Events.
func (c *Core) Events() <-chan Event { return c.events }

// SetLocal changes what this node says and has it sent at once.
func (c *Core) SetLocal(l Local) {
	c.mu.Lock()
	c.local = l
	c.mu.Unlock()
	c.send(true)
}

// UpdateLocal changes what this node says at the next tick; it also renews
// the agent's lease, so the agent calls it every tick.
//
// What did not change is not sent again until an eighth of the lease has
// passed: a busy agent ticks every half interval, and need not wake the
// core each time; an idle one ticks every quarter of the lease, and
// renews it with each tick.
func (c *Core) UpdateLocal(f func(*Local)) {
	c.mu.Lock()
	before := c.local
	f(&c.local)
	same := c.local == before && time.Since(c.sentAt) < c.cfg.Lease/8
	c.mu.Unlock()
	if !same {
		c.send(false)
	}
}

func (c *Core) send(now bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sendLocked(now)
}

// sendLocked sends the local, c.mu held.
func (c *Core) sendLocked(now bool) {
	var b [localLen]byte
	if c.conn == nil {
		return
	}
	c.sentAt = time.Now()
	putLocal(b[:], &c.local, c.sentAt, now)
	c.conn.Write(b[:])
}

// Unfence tells the core the agent has handled Fenced: its frames may say
// what the agent says again.
func (c *Core) Unfence() { c.message(msgUnfence) }

// ReadAtOnce asks the core to read the peer's frames as they come for a
// while (Endpoint.ReadAtOnce). Any goroutine may call it.
func (c *Core) ReadAtOnce() { c.message(msgReadNow) }

// Renews asks the core to pass on the peer's next frame even if it says
// nothing new (Endpoint.Renews). Any goroutine may call it.
func (c *Core) Renews() { c.message(msgRenews) }

// message sends the core a message of one byte, typ.
func (c *Core) message(typ byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		c.conn.Write([]byte{typ})
	}
}

// Stats asks the child for its counters; if it does not answer promptly,
// the last answer stands.
func (c *Core) Stats() Stats {
	c.mu.Lock()
	conn, last := c.conn, c.last
	c.mu.Unlock()
	if conn == nil {
		return last
	}
	select {
	case <-c.stats: // a late answer to an earlier request
	default:
	}
	if _, err := conn.Write([]byte{msgStats}); err != nil {
		return last
	}
	select {
	case s := <-c.stats:
		c.mu.Lock()
		c.last = s
		c.mu.Unlock()
		return s
	case <-time.After(100 * time.Millisecond):
		return last
	}
}

// Run starts the child and relays until ctx ends or the child fails.
func (c *Core) Run(ctx context.Context) error {
	nc, stop, err := c.start()
	if err != nil {
		return fmt.Errorf("heartbeat core: %w", err)
	}
	stopped := false
	defer func() {
		if !stopped {
			stop()
		}
	}()
	conn := raw(nc)
	init, _ := json.Marshal(c.cfg)
	if _, err := conn.Write(append([]byte{msgInit}, init...)); err != nil {
		conn.Close()
		return fmt.Errorf("heartbeat core: %w", err)
	}
	buf := make([]byte, 64<<10)
	n, err := conn.Read(buf)
	if err != nil || n == 0 || buf[0] != msgHello {
		conn.Close()
		return fmt.Errorf("heartbeat core: no hello from the child: %v", err)
	}
	var hello CoreHello
	json.Unmarshal(buf[1:n], &hello)
	if hello.Protocol < CoreProtocol {
		// A core this agent cannot drive (none today: the two are one
		// executable). It ends on goodbye, without fencing: its agent
		// has not run it, so it holds nothing.
		conn.Write([]byte{msgBye})
		conn.Close()
		return fmt.Errorf("heartbeat core: the core speaks protocol %d, older than this agent's %d", hello.Protocol, CoreProtocol)
	}
	c.mu.Lock()
	c.hello = hello
	c.mu.Unlock()
	if c.OnHello != nil {
		c.OnHello(hello)
	}
	// The child waits for the local before it sends a frame
	// (readFirstLocal): it is the first message, before any the agent
	// sends once conn is set.
	c.mu.Lock()
	c.conn = conn
	c.sendLocked(true)
	c.mu.Unlock()
	go func() {
		<-ctx.Done()
		// The agent is done with the VIPs (handed over or released):
		// the core ends without fencing (ServeCore).
		c.mu.Lock()
		conn.Write([]byte{msgBye})
		c.mu.Unlock()
		conn.Close()
	}()
	for {
		n, err := conn.Read(buf)
		if err != nil || n == 0 {
			if ctx.Err() != nil {
				return nil
			}
			// How it ended says why: killed (the OOM killer, a kill
			// -9 of the wrong pid), or an exit after its own error.
			stopped = true
			if werr := stop(); werr != nil {
				err = werr
			}
			return fmt.Errorf("heartbeat core: child gone: %v", err)
		}
		switch {
		case buf[0] == msgEvent && n >= eventLen:
			ev := Event{Kind: EventKind(buf[1]), At: time.Now().Add(-time.Duration(binary.BigEndian.Uint64(buf[3:11]))), Sent: int64(binary.BigEndian.Uint64(buf[11:19]))}
			if int(buf[2]) < len(pathNames) {
				ev.Path = pathNames[buf[2]]
			}
			if ev.Kind == PeerFrame || ev.Kind == Twin || ev.Kind == Unverified || ev.Kind == Unanswered {
				if err := ev.Frame.UnmarshalBinary(buf[19:eventLen]); err != nil {
					return fmt.Errorf("heartbeat core: %w", err)
				}
			}
			select {
			case c.events <- ev:
			case <-ctx.Done():
				return nil
			}
		case buf[0] == msgCounts:
			select {
			case c.stats <- getCounts(buf[1:n]):
			default:
			}
		case buf[0] == msgEvent:
			return fmt.Errorf("heartbeat core: event of %d bytes", n)
		default:
			// A later core's, which this agent does without.
		}
	}
}
