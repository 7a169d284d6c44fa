package main

import (
	"fmt"
	"io"
	"net"
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
		`hapair_replication_connected 1`,
		`hapair_vips_held 1`,
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
