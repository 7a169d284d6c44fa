package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hapair/hapair/lab"
)

// scrape fetches /metrics from inside ns: the socket is made on a thread
// in that namespace.
func scrape(t *testing.T, ns, addr string) string {
	t.Helper()
	var conn net.Conn
	err := lab.Do(ns, func() (err error) {
		conn, err = net.DialTimeout("tcp", addr, 2*time.Second)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprint(conn, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
	b, err := io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestMetricsScrape(t *testing.T) {
	c := cluster(t, lab.ConfigOptions{Extra: "\n[metrics]\nlisten = \"127.0.0.1:9405\"\n"})
	act := settle(t, c)
	waitSynced(t, c, act)
	body := scrape(t, c.Node(act), "127.0.0.1:9405")
	for _, want := range []string{
		`hapair_role{role="active"} 1`,
		`hapair_role{role="standby"} 0`,
		`hapair_peer_seen 1`,
		`hapair_heartbeat_path_up{path="raw"} 1`,
		`hapair_heartbeat_path_up{path="udp"} 1`,
		`hapair_redundancy_available 1`,
		`hapair_locked 0`,
		`hapair_api_connections_max 1024`,
		`hapair_api_connections_refused_total 0`,
		`hapair_peer_config_differs 0`,
		`hapair_replication_connected 1`,
		`hapair_vips_held 1`,
		`hapair_vip_conflicts{vip="` + lab.VIP.Addr().String() + `"} 0`,
		`hapair_heartbeat_frames_dropped_total{reason="bad_mac"} 0`,
		`hapair_transitions_to_active_total{reason="start-up"} 1`,
		`# TYPE hapair_heartbeat_frames_sent_total counter`,
		// An idle pair on an idle host: the core was never held up.
		`hapair_heartbeat_core_pauses_total 0`,
		`hapair_heartbeat_core_stalls_total 0`,
		`# TYPE hapair_heartbeat_longest_send_gap_seconds gauge`,
		`# TYPE hapair_heartbeat_relieved_total counter`,
		`hapair_heartbeat_frames_not_reported_total 0`,
		`hapair_session_writes_total 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if t.Failed() {
		t.Logf("scraped:\n%s", body)
	}
}

// A flood of connections to the metrics port, as a port scanner, a
// misconfigured scraper or an attacker on the management network makes
// them, must not grow the agent: it keeps 16 open (node's metricsConns)
// and closes the rest at once; once one of them goes, a scrape works.
func TestMetricsListenerBoundsAFlood(t *testing.T) {
	const addr = "127.0.0.1:9405"
	c := cluster(t, lab.ConfigOptions{Extra: "\n[metrics]\nlisten = \"" + addr + "\"\n"})
	act := settle(t, c)
	ns, pid := c.Node(act), c.Pid(act)
	fds := func() int {
		d, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			t.Fatal(err)
		}
		return len(d)
	}
	before := fds()

	// Each flood connection asks for the page on a keep-alive request:
	// one the agent kept gets it and then stays open, idle, as long as
	// the server lets it (a minute); one it refused reads nothing.
	var held []net.Conn
	defer func() {
		for _, conn := range held {
			conn.Close()
		}
	}()
	refused := 0
	ask := func() (net.Conn, bool) {
		var conn net.Conn
		if err := lab.Do(ns, func() (err error) {
			conn, err = net.DialTimeout("tcp", addr, 2*time.Second)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprint(conn, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("neither served nor refused within 5s: %v", err)
			}
			conn.Close()
			return nil, false
		}
		return conn, true
	}
	const flood = 200
	for range flood {
		if conn, ok := ask(); ok {
			held = append(held, conn)
		} else {
			refused++
		}
	}
	if len(held) != 16 || refused != flood-16 {
		t.Errorf("of %d connections the agent kept %d and refused %d, want 16 kept", flood, len(held), refused)
	}
	if len(held) == 0 {
		t.FailNow() // nothing kept: the rest has no slot to free
	}
	// The agent's descriptors: the kept connections and nothing of the
	// refused ones (a few more for whatever else it opened meanwhile).
	if n := fds(); n > before+len(held)+4 {
		t.Errorf("the agent has %d descriptors open, %d before the flood, with %d connections kept", n, before, len(held))
	}
	if conn, ok := ask(); ok {
		conn.Close()
		t.Errorf("a scrape was served with %d connections held", len(held))
	}
	// The log is written behind the agent's back (a queue that never
	// holds it up): read until the line is there, within a deadline.
	for logged := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if b, _ := os.ReadFile(c.LogPath(act)); strings.Contains(string(b), "the most the listener keeps") {
			break
		}
		if time.Now().After(logged) {
			t.Error("the agent did not log the refused connections within 5s")
			break
		}
	}
	// One kept connection goes: its slot is free for a scraper.
	held[0].Close()
	held = held[1:]
	deadline := time.Now().Add(5 * time.Second)
	for {
		conn, ok := ask()
		if ok {
			conn.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no scrape served within 5s of a kept connection closing")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if s, err := c.Status(act); err != nil || s.Role != "ACTIVE" {
		t.Errorf("after the flood %s is %v (%v), want still ACTIVE", act, s, err)
	}
}
