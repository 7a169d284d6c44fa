package control

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
)

// What the mux has no handler for is answered in JSON, as every other
// error of the API; what it has a handler for reaches it as it was.
func TestJSONErrors(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/things/{id}", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(r.PathValue("id")))
	})
	h := JSONErrors(mux)
	for _, tc := range []struct {
		method, path string
		code         int
		allow, body  string
	}{
		{"GET", "/v1/things/7", http.StatusOK, "", "7"},
		{"PATCH", "/v1/things/7", http.StatusMethodNotAllowed, "GET, HEAD", `{"error":"PATCH /v1/things/7: method not allowed"}`},
		{"GET", "/v1/nothing", http.StatusNotFound, "", `{"error":"GET /v1/nothing: not found"}`},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
		body := strings.TrimSpace(rec.Body.String())
		if rec.Code != tc.code || rec.Header().Get("Allow") != tc.allow || body != tc.body {
			t.Errorf("%s %s: %d, Allow %q, %q; want %d, %q, %q", tc.method, tc.path, rec.Code, rec.Header().Get("Allow"), body, tc.code, tc.allow, tc.body)
		}
		if tc.code != http.StatusOK && (rec.Header().Get("Content-Type") != "application/json" || !json.Valid(rec.Body.Bytes())) {
			t.Errorf("%s %s: %q is not JSON", tc.method, tc.path, rec.Body)
		}
	}
}

// A peer in fault that keeps its role (locked, or its hapaird dead and
// its heartbeat core saying so) is said to be in fault where its role is:
// the peer's line read "STANDBY" beside "redundancy: unavailable: peer is
// in fault".
func TestPeerInFaultIsSaidBesideItsRole(t *testing.T) {
	for _, tc := range []struct {
		peer PeerStatus
		want string
	}{
		{PeerStatus{Seen: true, Role: "STANDBY", Fault: true}, "peer b: STANDBY, last frame 1.0ms ago (IN FAULT)\n"},
		{PeerStatus{Seen: true, Role: "ACTIVE", Locked: true, Fault: true}, "peer b: ACTIVE, last frame 1.0ms ago (LOCKED) (IN FAULT)\n"},
		{PeerStatus{Seen: true, Role: "FAULT", Fault: true}, "peer b: FAULT, last frame 1.0ms ago\n"},
		{PeerStatus{Seen: true, Role: "STANDBY"}, "peer b: STANDBY, last frame 1.0ms ago\n"},
	} {
		tc.peer.LastFrameAge = 1
		s := Status{Node: "a", PeerName: "b", Role: "ACTIVE", Peer: tc.peer}
		var b strings.Builder
		s.writeRoles(&b)
		if !strings.Contains(b.String(), tc.want) {
			t.Errorf("%+v: %q, want it to contain %q", tc.peer, b.String(), tc.want)
		}
	}
}

// Degraded sync mode says why, and how fast the standby applies: what an
// operator asks first when it stays degraded under a steady stream.
func TestDegradedSyncSaysWhyAndThePace(t *testing.T) {
	why := "standby did not apply a write within 1s; writes now return without waiting for it"
	for _, tc := range []struct {
		sync Sync
		want string
	}{
		{Sync{Mode: "sync", Degraded: true, DegradedReason: why, StandbyPace: new(4312.4)}, "sync degraded: " + why + "; the standby applied 4312 writes/s lately; sync comes back once"},
		{Sync{Mode: "sync", Degraded: true, DegradedReason: why, StandbyPace: new(0.0)}, "sync degraded: " + why + "; the standby applied no writes lately; sync comes back once"},
		{Sync{Mode: "sync", Degraded: true, DegradedReason: why}, "sync degraded: " + why + "; sync comes back once"},
		{Sync{Mode: "sync"}, ""},
	} {
		s := Status{Node: "a", Role: "ACTIVE", Sync: tc.sync}
		text := s.Text()
		if tc.want == "" && strings.Contains(text, "sync degraded") || !strings.Contains(text, tc.want) {
			t.Errorf("%+v:\n%s\nwant %q", tc.sync, text, tc.want)
		}
	}
}

// ClientGone tells a client that waits for its answer from one that
// closed its connection, on a real unix socket served by net/http with
// WithConn, as the daemon's admin socket is.
func TestClientGoneSeesAClosedConnection(t *testing.T) {
	path := filepath.Join(t.TempDir(), "admin.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	seen := make(chan bool)
	proceed := make(chan struct{})
	srv := &http.Server{ConnContext: WithConn, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		seen <- ClientGone(r.Context())
		<-proceed
		seen <- ClientGone(r.Context())
	})}
	go srv.Serve(l)
	defer srv.Close()
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, "POST /v1/lock HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"); err != nil {
		t.Fatal(err)
	}
	if <-seen {
		t.Error("a client waiting for its answer counts as gone")
	}
	conn.Close()
	close(proceed)
	if !<-seen {
		t.Error("a client that closed its connection does not count as gone")
	}
	if ClientGone(context.Background()) {
		t.Error("a context with no connection counts as gone")
	}
}
