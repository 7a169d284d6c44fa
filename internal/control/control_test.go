package control

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
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
