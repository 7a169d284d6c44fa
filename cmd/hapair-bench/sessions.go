package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/hapair/hapair/lab"
	"github.com/hapair/hapair/statesync/client"
	"github.com/hapair/hapair/statesync/store"
)

// Session replication, hapair against Redis with a replica, over the same
// namespaces: throughput of 256-byte updates, replication lag, sync-write
// latency and memory per session.

type syncFigures struct {
	name          string
	rate          float64       // writes per second, applied on the standby
	lagP99        float64       // writes behind, sampled
	syncP50       time.Duration // one write acknowledged by the standby
	syncP99       time.Duration
	ownP50        time.Duration // the same, each node on CPUs of its own
	ownP99        time.Duration
	memPerSession float64 // bytes of RSS per 256-byte session
	note          string
}

var payload = []byte(strings.Repeat("x", 256))

func benchHapairSync(bin string, writes, sessions int) (syncFigures, error) {
	f := syncFigures{name: "hapair (Go client stream)"}
	// Async at the fast heartbeat profile: replication flat out must not
	// cause a false failover.
	c, act, done, err := startPair(bin, "sync", lab.ConfigOptions{Profile: "fast"})
	if err != nil {
		return f, err
	}
	defer done()
	sb := map[string]string{"a": "b", "b": "a"}[act]
	before, _ := c.Status(act)
	st, err := client.New(c.Socket(act)).Stream(context.Background())
	if err != nil {
		return f, err
	}
	defer st.Close()
	const ids = 10000
	if _, err := pipeline(st, ids, func(i int) (store.OpKind, string) { return store.OpCreate, "s" + strconv.Itoa(i) }); err != nil {
		return f, err
	}
	if err := c.WaitSynced(act, 10*time.Second); err != nil {
		return f, err
	}
	lagsOf := sampleLag(c, act)
	start := time.Now()
	last, err := pipeline(st, writes, func(i int) (store.OpKind, string) { return store.OpUpdate, "s" + strconv.Itoa(i%ids) })
	if err != nil {
		lagsOf()
		return f, err
	}
	for {
		s, err := c.Status(sb)
		if err == nil && s.Sync.Written >= last {
			break
		}
		if time.Since(start) > 2*time.Minute {
			lagsOf()
			return f, errors.New("standby never caught up")
		}
		time.Sleep(time.Millisecond)
	}
	f.rate = float64(writes) / time.Since(start).Seconds()
	f.lagP99 = pctF(lagsOf(), 99)
	after, _ := c.Status(act)
	if after.Role != "ACTIVE" || (after.LastTransition != nil && before.LastTransition != nil && after.LastTransition.At != before.LastTransition.At) {
		f.note = "FALSE FAILOVER during the run"
	} else {
		f.note = "no false failover at " + strings.TrimPrefix(profileLabel("fast"), "hapair ") + " during the run"
	}
	st.Close()

	done()
	f.memPerSession, err = hapairMemPerSession(bin, sessions)
	return f, err
}

// sampleLag samples the standby's distance behind the active every 5 ms
// until the returned func is called; it returns the samples.
func sampleLag(c *lab.Cluster, act string) (stop func() []float64) {
	quit := make(chan struct{})
	lags := make(chan []float64)
	go func() {
		var l []float64
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-quit:
				lags <- l
				return
			case <-t.C:
				if s, err := c.Status(act); err == nil {
					l = append(l, float64(s.Sync.Written-min(s.Sync.Acked, s.Sync.Written)))
				}
			}
		}
	}()
	return func() []float64 {
		close(quit)
		return <-lags
	}
}

// hapairMemPerSession measures the bytes of RSS a 256-byte session costs
// on a sync-mode pair's active.
func hapairMemPerSession(bin string, sessions int) (float64, error) {
	c2, act, done2, err := startPair(bin, "sync2", lab.ConfigOptions{SyncMode: "sync"})
	if err != nil {
		return 0, err
	}
	defer done2()
	st2, err := client.New(c2.Socket(act)).Stream(context.Background())
	if err != nil {
		return 0, err
	}
	defer st2.Close()
	// Per session: the growth from sessions/2 to sessions, so fixed costs
	// (the replication log filling up, memory freed earlier and reused)
	// count for neither system, and the map or dict doubles once.
	var rss [2]int
	for half := range rss {
		base := half * sessions / 2
		if _, err := pipeline(st2, sessions/2, func(i int) (store.OpKind, string) {
			return store.OpCreate, fmt.Sprintf("mem-%08d", base+i)
		}); err != nil {
			return 0, err
		}
		time.Sleep(200 * time.Millisecond)
		rss[half] = rssOf(c2.Pid(act)) * 1024
	}
	return float64(rss[1]-rss[0]) / float64(sessions/2), nil
}

// startPair starts a pair of daemons with o in fresh namespaces and waits
// until one is active and its standby in sync; done removes everything.
func startPair(bin, name string, o lab.ConfigOptions) (c *lab.Cluster, act string, done func(), err error) {
	p, err := lab.New(lab.Options{})
	if err != nil {
		return nil, "", nil, err
	}
	dir, _ := os.MkdirTemp("", "hapair-bench-"+name+"-")
	done = func() {
		p.Close()
		os.RemoveAll(dir)
	}
	if c, err = p.NewCluster(bin, dir, o); err == nil {
		if act, err = c.Settle(10 * time.Second); err == nil {
			err = c.WaitSynced(act, 10*time.Second)
		}
	}
	if err != nil {
		done()
		return nil, "", nil, err
	}
	return c, act, done, nil
}

// pipeline sends n writes of payload on st and returns the last sequence.
func pipeline(st *client.Stream, n int, op func(int) (store.OpKind, string)) (uint64, error) {
	errc := make(chan error, 1)
	go func() {
		for i := 0; i < n; i++ {
			k, id := op(i)
			if err := st.Send(k, id, payload); err != nil {
				errc <- err
				return
			}
		}
		errc <- st.Flush()
	}()
	var last uint64
	for i := 0; i < n; i++ {
		r, err := st.Recv()
		if err != nil {
			return 0, err
		}
		if r.Err != nil {
			return 0, r.Err
		}
		last = r.Seq
	}
	return last, <-errc
}

func rssOf(pid int) int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	return 0
}

func pctF(v []float64, p int) float64 {
	if len(v) == 0 {
		return 0
	}
	d := make([]time.Duration, len(v))
	for i, x := range v {
		d[i] = time.Duration(x)
	}
	return float64(pct(d, p))
}

// Redis with a replica, for comparison.

func ensureRedis() error {
	if _, err := exec.LookPath("redis-server"); err == nil {
		return nil
	}
	return aptInstall("redis-server", "redis-tools")
}

type resp struct {
	c  net.Conn
	br *bufio.Reader
	bw *bufio.Writer
}

func dialRedis(ns, addr string) (*resp, error) {
	var c net.Conn
	err := lab.Do(ns, func() (err error) {
		c, err = net.DialTimeout("tcp", addr, 2*time.Second)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &resp{c: c, br: bufio.NewReaderSize(c, 64<<10), bw: bufio.NewWriterSize(c, 64<<10)}, nil
}

func (r *resp) send(args ...[]byte) {
	fmt.Fprintf(r.bw, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(r.bw, "$%d\r\n", len(a))
		r.bw.Write(a)
		r.bw.WriteString("\r\n")
	}
}

// reply reads one reply line (bulk replies are returned whole).
func (r *resp) reply() (string, error) {
	l, err := r.br.ReadString('\n')
	if err != nil {
		return "", err
	}
	if strings.HasPrefix(l, "-") {
		return "", errors.New(strings.TrimSpace(l))
	}
	if strings.HasPrefix(l, "$") {
		n, _ := strconv.Atoi(strings.TrimSpace(l[1:]))
		if n < 0 {
			return "", nil
		}
		b := make([]byte, n+2)
		_, err := ioReadFull(r.br, b)
		return string(b[:n]), err
	}
	return strings.TrimSpace(l), nil
}

func ioReadFull(br *bufio.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := br.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func info(r *resp, section, key string) string {
	r.send([]byte("INFO"), []byte(section))
	r.bw.Flush()
	s, _ := r.reply()
	m := regexp.MustCompile(`(?m)^` + key + `:(\S+)`).FindStringSubmatch(s)
	if m == nil {
		return ""
	}
	return m[1]
}

func benchRedis(writes, sessions int) (syncFigures, error) {
	f := syncFigures{name: "Redis 7 + replica"}
	if err := ensureRedis(); err != nil {
		return f, err
	}
	p, err := lab.New(lab.Options{})
	if err != nil {
		return f, err
	}
	defer p.Close()
	dir, _ := os.MkdirTemp("", "hapair-bench-redis-")
	defer os.RemoveAll(dir)
	start := func(ns, name string, extra ...string) error {
		d := filepath.Join(dir, name)
		os.MkdirAll(d, 0o755)
		args := append([]string{"--port", "6379", "--save", "", "--appendonly", "no", "--protected-mode", "no", "--dir", d, "--daemonize", "no"}, extra...)
		cmd := lab.Command(ns, "redis-server", args...)
		_, err := p.Start(cmd)
		return err
	}
	master, replica := lab.ReplAddr["a"].Addr().String(), lab.ReplAddr["b"].Addr().String()
	if err := start(p.A, "master", "--bind", "127.0.0.1", master); err != nil {
		return f, err
	}
	if err := start(p.B, "replica", "--bind", "127.0.0.1", replica, "--replicaof", master, "6379"); err != nil {
		return f, err
	}
	var r *resp
	deadline := time.Now().Add(10 * time.Second)
	for {
		if r == nil {
			r, _ = dialRedis(p.A, "127.0.0.1:6379")
		}
		if r != nil && info(r, "replication", "connected_slaves") == "1" {
			break
		}
		if time.Now().After(deadline) {
			return f, errors.New("redis replica did not attach")
		}
		time.Sleep(50 * time.Millisecond)
	}
	defer r.c.Close()
	// Pipelined SETs, as redis-benchmark -P 64 -d 256 runs them. Timed
	// also end to end: until the replica has applied the last one.
	t0 := time.Now()
	out, err := lab.Command(p.A, "redis-benchmark", "-h", "127.0.0.1", "-p", "6379", "-t", "set", "-d", "256", "-P", "64",
		"-n", strconv.Itoa(writes), "-r", "10000", "-q").CombinedOutput()
	if err != nil {
		return f, fmt.Errorf("redis-benchmark: %v\n%s", err, out)
	}
	if m := regexp.MustCompile(`SET: ([0-9.]+) requests per second`).FindStringSubmatch(string(out)); m != nil {
		f.rate, _ = strconv.ParseFloat(m[1], 64)
	}
	// The flood may have pushed the replica into a full resync: wait until
	// it is online and caught up (also before timing WAIT).
	if err := redisCaughtUp(r, time.Minute); err != nil {
		return f, err
	}
	e2e := float64(writes) / time.Since(t0).Seconds()
	f.note = fmt.Sprintf("redis-benchmark -P 64 (50 clients): rate acknowledged by the master; end to end until the replica applied the last SET (process start included): %.0f/s", e2e)
	f.memPerSession, err = redisMemPerSession(r, sessions)
	return f, err
}

// redisCaughtUp waits until the replica is online and at the master's
// offset.
func redisCaughtUp(r *resp, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		off := info(r, "replication", "master_repl_offset")
		s := info(r, "replication", "slave0")
		if strings.Contains(s, "state=online") && strings.Contains(s, "offset="+off+",") {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("redis replica did not catch up after the flood")
		}
		time.Sleep(time.Millisecond)
	}
}

// redisMemPerSession measures the bytes of RSS a 256-byte SET costs the
// master, as hapairMemPerSession does for hapair.
func redisMemPerSession(r *resp, sessions int) (float64, error) {
	var rss [2]int
	for half := range rss {
		for i := half * sessions / 2; i < (half+1)*sessions/2; i++ {
			r.send([]byte("SET"), []byte(fmt.Sprintf("mem-%08d", i)), payload)
			if i%1000 == 999 {
				r.bw.Flush()
				for j := 0; j < 1000; j++ {
					if _, err := r.reply(); err != nil {
						return 0, err
					}
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
		rss[half], _ = strconv.Atoi(info(r, "memory", "used_memory_rss"))
	}
	return float64(rss[1]-rss[0]) / float64(sessions/2), nil
}

func renderSync(figs []syncFigures) string {
	var b strings.Builder
	fmt.Fprint(&b, "\n## Session state replication\n\n")
	fmt.Fprint(&b, "256-byte session updates; the standby (replica) in the other namespace over the replication veth. Throughput for hapair is end to end: until the standby has applied the last write. Sync latency: one write at a time that returns only once the standby applied it (hapair `sync_mode = \"sync\"` with the default `sync_poll`, Redis `SET` + `WAIT 1`), both over a unix socket, master and replica in the same two namespaces as hapair's pair, alternating in 10 rounds that each start after 300 ms idle; measured twice: with both nodes and the client sharing this machine's CPUs, and with each node on CPUs of its own (the first half of them for the active, or master, and the client; the second for the standby, or replica), as on two servers. Memory: RSS growth of the active (master) per 256-byte session from 100,000 to 200,000 sessions (the slope: fixed costs such as the replication log, and memory freed earlier and reused, count for neither).\n\n")
	fmt.Fprintln(&b, "| system | writes/s | lag p99 | sync write p50 | sync write p99 | own CPUs: sync p50 | own CPUs: sync p99 | RSS per session | note |")
	fmt.Fprintln(&b, "|---|---:|---:|---:|---:|---:|---:|---:|---|")
	for _, f := range figs {
		lag := "n/a"
		if f.rate > 0 && f.name != "Redis 7 + replica" {
			lag = fmt.Sprintf("%.0f writes = %.1f ms", f.lagP99, f.lagP99/f.rate*1000)
		}
		fmt.Fprintf(&b, "| %s | %.0f | %s | %.1f µs | %.1f µs | %.1f µs | %.1f µs | %.0f B | %s |\n", f.name, f.rate, lag, us(f.syncP50), us(f.syncP99), us(f.ownP50), us(f.ownP99), f.memPerSession, f.note)
	}
	if len(figs) == 2 && figs[1].rate > 0 && figs[1].syncP50 > 0 {
		h, r := figs[0], figs[1]
		verdict := func(ok bool) string {
			if ok {
				return "met"
			}
			return "MISSED"
		}
		tput := h.rate / r.rate
		fmt.Fprintf(&b, "\nTargets, as ratios hapair / Redis in this run:\n\n")
		fmt.Fprintf(&b, "| target | ratio | |\n|---|---:|---|\n")
		fmt.Fprintf(&b, "| throughput >= Redis pipelined SET | %.2f | %s |\n", tput, verdict(tput >= 1))
		fmt.Fprintf(&b, "| replication lag p99 < 5 ms at that load | %.1f ms | %s |\n", h.lagP99/h.rate*1000, verdict(h.lagP99/h.rate*1000 < 5))
		fmt.Fprintf(&b, "| sync write p50 <= SET + WAIT 1 | %.2f | %s |\n", float64(h.syncP50)/float64(r.syncP50), verdict(h.syncP50 <= r.syncP50))
		fmt.Fprintf(&b, "| sync write p99 <= SET + WAIT 1 | %.2f | %s |\n", float64(h.syncP99)/float64(r.syncP99), verdict(h.syncP99 <= r.syncP99))
		if r.ownP50 > 0 {
			fmt.Fprintf(&b, "| sync write p50 <= SET + WAIT 1, each node on CPUs of its own | %.2f | %s |\n", float64(h.ownP50)/float64(r.ownP50), verdict(h.ownP50 <= r.ownP50))
			fmt.Fprintf(&b, "| sync write p99 <= SET + WAIT 1, each node on CPUs of its own | %.2f | %s |\n", float64(h.ownP99)/float64(r.ownP99), verdict(h.ownP99 <= r.ownP99))
		}
		fmt.Fprintf(&b, "| memory per session < Redis | %.2f | %s |\n", h.memPerSession/r.memPerSession, verdict(h.memPerSession < r.memPerSession))
	}
	return b.String()
}

// zeroLoss runs rounds of kill -9 failovers of the active in sync mode
// while a client writes, and counts acknowledged writes the new active
// lacks (the promise of sync mode: none).
type zeroLoss struct {
	rounds, acked, checked, missing int
}

func benchZeroLoss(bin string, rounds int) (zeroLoss, error) {
	z := zeroLoss{}
	c, _, done, err := startPair(bin, "loss", lab.ConfigOptions{Profile: "fast", SyncMode: "sync"})
	if err != nil {
		return z, err
	}
	defer done()
	other := map[string]string{"a": "b", "b": "a"}
	acked := map[string]int{} // session -> highest acknowledged value
	for round := 0; round < rounds; round++ {
		act, err := c.Settle(10 * time.Second)
		if err != nil {
			return z, fmt.Errorf("round %d: %w", round, err)
		}
		if err := c.WaitSynced(act, 10*time.Second); err != nil {
			return z, fmt.Errorf("round %d: %w", round, err)
		}
		st, err := client.New(c.Socket(act)).Stream(context.Background())
		if err != nil {
			return z, err
		}
		w := lab.StartWrites(st, round, 64)
		// The node dies with writes flowing.
		if err := w.WaitCount(50, 10*time.Second); err != nil {
			return z, err
		}
		if err := c.Isolate(act, false); err != nil {
			return z, err
		}
		c.Kill(act)
		st.Close()
		for id, v := range w.Wait() {
			acked[id] = v
		}
		z.acked += w.Count()
		if err := c.WaitRole(other[act], "ACTIVE", 5*time.Second); err != nil {
			return z, fmt.Errorf("round %d: %w", round, err)
		}
		z.checked += len(acked)
		z.missing += c.Missing(other[act], acked)
		z.rounds++
	}
	return z, nil
}

func renderZeroLoss(z zeroLoss, rounds int, err error) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n### Sync mode under kill -9\n\n")
	fmt.Fprintf(&b, "A sync-mode pair at the fast profile; a client writes through one stream as fast as answers come back; the active is cut off and killed -9 after 50 ms; once the other node is active, every write ever acknowledged (highest value per session) is read back from it. Then the killed node restarts, resyncs, and the next round fails the other way.\n\n")
	fmt.Fprintf(&b, "| rounds | writes acknowledged | session checks | missing |\n|---:|---:|---:|---:|\n")
	fmt.Fprintf(&b, "| %d of %d | %d | %d | %d |\n", z.rounds, rounds, z.acked, z.checked, z.missing)
	if err != nil {
		fmt.Fprintf(&b, "\nStopped early: %v\n", err)
	}
	return b.String()
}

// startRedisBeside starts a Redis master beside c's active and a replica
// beside its standby, on port 6380 of the replication addresses, and
// returns a connection to the master's unix socket once the replica is
// online, and the two processes.
func startRedisBeside(c *lab.Cluster, act string) (rc *resp, master, replica int, err error) {
	p, dir := c.Pair, c.Dir
	ns := map[string]string{"a": p.A, "b": p.B}
	sb := map[string]string{"a": "b", "b": "a"}[act]
	masterAt, replicaAt := lab.ReplAddr[act].Addr().String(), lab.ReplAddr[sb].Addr().String()
	sock := filepath.Join(dir, "redis.sock")
	var pids []int
	for _, n := range []struct {
		ns, bind string
		extra    []string
	}{
		{ns[act], masterAt, []string{"--unixsocket", sock, "--unixsocketperm", "700"}},
		{ns[sb], replicaAt, []string{"--replicaof", masterAt, "6380"}},
	} {
		d, _ := os.MkdirTemp(dir, "redis-")
		args := append([]string{"--port", "6380", "--bind", n.bind, "--save", "", "--appendonly", "no", "--protected-mode", "no", "--dir", d, "--daemonize", "no"}, n.extra...)
		// ip netns exec execs redis-server: the same process.
		cmd := lab.Command(n.ns, "redis-server", args...)
		if _, err := p.Start(cmd); err != nil {
			return nil, 0, 0, err
		}
		pids = append(pids, cmd.Process.Pid)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if rc == nil {
			if conn, err := net.Dial("unix", sock); err == nil {
				rc = &resp{c: conn, br: bufio.NewReaderSize(conn, 64<<10), bw: bufio.NewWriterSize(conn, 64<<10)}
			}
		}
		if rc != nil && strings.Contains(info(rc, "replication", "slave0"), "state=online") {
			break
		}
		if time.Now().After(deadline) {
			return nil, 0, 0, errors.New("redis replica did not attach")
		}
	}
	return rc, pids[0], pids[1], nil
}

// benchSyncLatency measures one write at a time that returns only once the
// standby applied it: hapair in sync mode, and Redis's SET + WAIT 1 with
// its master and replica in the same two namespaces, both reached over a
// unix socket. The two alternate in rounds, so a noisy stretch of the
// machine falls on both. ownCPUs gives each node CPUs of its own
// (asTwoMachines), the client those of the active (master).
func benchSyncLatency(bin string, samples int, ownCPUs bool) (h, r [2]time.Duration, err error) {
	if err := ensureRedis(); err != nil {
		return h, r, err
	}
	c, act, done, err := startPair(bin, "lat", lab.ConfigOptions{SyncMode: "sync"})
	if err != nil {
		return h, r, err
	}
	defer done()
	st, err := client.New(c.Socket(act)).Stream(context.Background())
	if err != nil {
		return h, r, err
	}
	defer st.Close()
	if _, err := st.Do(store.OpCreate, "lat", payload); err != nil {
		return h, r, err
	}

	rc, master, replica, err := startRedisBeside(c, act)
	if err != nil {
		return h, r, err
	}
	defer rc.c.Close()
	if ownCPUs {
		sb := map[string]string{"a": "b", "b": "a"}[act]
		undo, err := asTwoMachines([]int{c.Pid(act), master}, []int{c.Pid(sb), replica})
		if err != nil {
			return h, r, err
		}
		defer undo()
	}

	const rounds = 10
	var hl, rl []time.Duration
	// Each round starts from an idle machine: a virtual machine's host
	// keeps recently busy CPUs ready to wake for a while, and one
	// system's round must not warm them for the other's.
	cool := func() { time.Sleep(300 * time.Millisecond) }
	for round := 0; round < rounds; round++ {
		cool()
		for i := 0; i < samples/rounds; i++ {
			t0 := time.Now()
			if _, err := st.Do(store.OpUpdate, "lat", payload); err != nil {
				return h, r, err
			}
			hl = append(hl, time.Since(t0))
		}
		cool()
		for i := 0; i < samples/rounds; i++ {
			t0 := time.Now()
			rc.send([]byte("SET"), []byte("lat"), payload)
			rc.send([]byte("WAIT"), []byte("1"), []byte("1000"))
			rc.bw.Flush()
			if _, err := rc.reply(); err != nil {
				return h, r, err
			}
			if n, err := rc.reply(); err != nil || n != ":1" {
				return h, r, fmt.Errorf("WAIT: %q %v", n, err)
			}
			rl = append(rl, time.Since(t0))
		}
	}
	return [2]time.Duration{pct(hl, 50), pct(hl, 99)}, [2]time.Duration{pct(rl, 50), pct(rl, 99)}, nil
}
