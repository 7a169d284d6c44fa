// Package control is the daemon's local control API: the status and
// command types, served as HTTP/JSON on the daemon's unix socket, and the
// client hapairctl, the lab and the tests use. Any language can use the
// same socket with curl --unix-socket.
package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/hapair/hapair/health"
	"github.com/hapair/hapair/statesync/client"
	"github.com/hapair/hapair/statesync/repl"
)

// Status is one node's view of the pair.
type Status struct {
	Version  string `json:"version"`
	Cluster  string `json:"cluster"`
	Node     string `json:"node"`
	PeerName string `json:"peer_name"`
	Role     string `json:"role"`
	Locked   bool   `json:"locked"`
	Lock     string `json:"lock,omitempty"` // who, when, why
	Profile  string `json:"profile"`

	// Durations and ages are milliseconds, as numbers, their keys ending
	// in _ms; times are RFC 3339; lists are [] when empty, never null.
	IntervalMs float64 `json:"interval_ms"`
	DeadMs     float64 `json:"dead_interval_ms"`

	Peer       PeerStatus `json:"peer"`
	Paths      []Path     `json:"paths"`
	Core       Core       `json:"heartbeat_core"`
	Degraded   bool       `json:"degraded"`
	SplitBrain bool       `json:"split_brain"`
	HoldDown   HoldDown   `json:"hold_down"`
	Faults     []string   `json:"faults"`

	VIPs    []string `json:"vips"`
	Holding []string `json:"holding"` // VIPs present on this node now
	// VIPConflicts are the other hosts that answered for a held VIP
	// when this node last asked (every 30s while it holds them).
	VIPConflicts []VIPConflict `json:"vip_conflicts"`
	// VIPProbes counts the probes whose answers were read (this run).
	VIPProbes uint64 `json:"vip_probes"`

	LastTransition *Transition `json:"last_transition,omitempty"`
	Redundancy     string      `json:"redundancy"` // "available" or "unavailable: why"

	Frames Frames  `json:"frames"`
	Sync   Sync    `json:"sync"`
	Checks []Check `json:"checks"`
	// Announcements counts gratuitous ARP / NA rounds sent, and failed.
	Announcements, AnnounceErrors uint64
	// LogDropped counts log lines dropped because stderr (the journal)
	// did not take them.
	LogDropped uint64 `json:"log_lines_dropped"`
	// API is the application socket's connections.
	API Conns `json:"api_connections"`
	// Failovers counts transitions to ACTIVE by the reason's first words.
	Failovers map[string]uint64 `json:"transitions_to_active"`
	// TLS is when the replication link's certificates (this node's and
	// the CA's, as read at start) are valid; empty without TLS.
	TLS []Cert `json:"tls"`
	// ConfigFileDiffers names the top-level keys of this node's
	// configuration file ("vip", "profile") that differ from what the
	// daemon read at its start: a restart applies them, as SIGHUP
	// reloads nothing. ConfigFileError says why the file could not be
	// read to compare.
	ConfigFileDiffers []string `json:"config_file_differs,omitempty"`
	ConfigFileError   string   `json:"config_file_error,omitempty"`
}

// VIPConflict is another host that answers for a VIP this node holds.
type VIPConflict struct {
	VIP       string    `json:"vip"`
	Interface string    `json:"interface"`
	MAC       string    `json:"mac"`
	Since     time.Time `json:"since"` // first seen, by this run of hapaird
}

// Cert is one certificate's dates, as the replication package reads them.
type Cert = repl.CertDate

// Conns are a socket's open connections, the most it keeps, and how many
// it refused for having them all open.
type Conns struct {
	Open    int    `json:"open"`
	Max     int    `json:"max"`
	Refused uint64 `json:"refused"`
}

// Check is one critical component check, as the health package reports
// it (one owner for its fields and their JSON names).
type Check = health.State

// Sync is the session replication state.
type Sync struct {
	Mode      string `json:"mode"`
	Sessions  int    `json:"sessions"`
	Written   uint64 `json:"written"` // last sequence written or applied here
	Acked     uint64 `json:"acked"`   // active: last sequence the standby applied
	Connected bool   `json:"connected"`
	TLS       bool   `json:"tls"`                 // connected over TLS
	Degraded  bool   `json:"degraded,omitempty"`  // sync mode running as async
	Snapshots uint64 `json:"snapshots"`           // full resyncs served (active)
	Resumes   uint64 `json:"resumes"`             // reconnects resumed from the log (active)
	Writes    uint64 `json:"writes"`              // session writes accepted here
	CutOff    uint64 `json:"subscribers_cut_off"` // event subscribers dropped for not reading
	// DegradedReason is why, and StandbyPace the writes a second the
	// standby acknowledged lately (absent: not measured yet; 0: it
	// applied nothing), while Degraded: sync comes back once it can
	// apply what it lacks within half the sync timeout at that pace.
	DegradedReason string   `json:"degraded_reason,omitempty"`
	StandbyPace    *float64 `json:"standby_writes_per_second,omitempty"`
}

// HoldDown is the damping of a flapping link (hapair.toml's hold_down).
type HoldDown struct {
	// Ms is the configured hold-down (0: off).
	Ms float64 `json:"hold_down_ms"`
	// Flaps counts the peer's returns after being lost, from the same
	// boot (a restart is no flap of the link).
	Flaps uint64 `json:"flaps"`
	// TakeoverInMs, while a takeover is held down, is how long until it
	// happens if the peer stays silent (0: none held down).
	TakeoverInMs float64 `json:"takeover_in_ms"`
}

// PeerStatus is what the peer's last frame said.
type PeerStatus struct {
	Seen         bool    `json:"seen"`
	Role         string  `json:"role"`
	Locked       bool    `json:"locked"`
	Fault        bool    `json:"fault"`
	LastFrameAge float64 `json:"last_frame_age_ms"`
	// Written is the session store position the peer's frames say it
	// holds: its own writes on an active, the active's it applied on a
	// standby. A restarting node compares it with its own before it
	// takes over, and a switchover waits for it.
	Written uint64 `json:"written"`
	// Unverified, when set, says the peer's node sends heartbeats that
	// no key of this node verifies, and with which key, or that name
	// another cluster, or that say it is active and echo an earlier boot
	// of this node's (it does not hear this one).
	Unverified string `json:"unverified,omitempty"`
	// UnverifiedCause is "keys", "cluster" (the peer's frames name
	// another cluster) or "unanswered", when Unverified is set.
	UnverifiedCause string `json:"unverified_cause,omitempty"`
	// ConfigDiffers names the parts of the peer's configuration file
	// that differ from this node's (its keys, as "[[vip]]"), as the
	// peer said when replication last connected.
	ConfigDiffers []string `json:"config_differs,omitempty"`
	// Version is the peer's hapaird version, as it said when replication
	// last connected (empty: not connected yet).
	Version string `json:"version,omitempty"`
}

// Core is the isolation the heartbeat core runs with: without real-time
// scheduling and locked memory a loaded node may miss heartbeats.
type Core struct {
	RealTime     bool     `json:"realtime"`
	MemoryLocked bool     `json:"memory_locked"`
	Problems     []string `json:"problems"`
}

// Path is one heartbeat path, each direction: Up, this node hears the
// peer on it; PeerHears, the peer hears this node (its frames there echo
// ours).
type Path struct {
	Name      string `json:"name"`
	Up        bool   `json:"up"`
	PeerHears bool   `json:"peer_hears"`
	// Unsteady: the path went down or one-way three times within 10 s
	// and has not been still for 10 s since (a lossy link); the log sums
	// its changes up every 10 s meanwhile.
	Unsteady bool `json:"unsteady"`
	// WentDown counts the times the path went down since this node
	// started (not when its peer stopped).
	WentDown uint64 `json:"went_down"`
	// FramesHeard and FramesLost count the peer's frames on the path
	// since this node started: heard, and sent but never come.
	FramesHeard uint64 `json:"frames_heard"`
	FramesLost  uint64 `json:"frames_lost"`
}

// Transition is a role change.
type Transition struct {
	From   string    `json:"from"`
	To     string    `json:"to"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// Frames counts heartbeat frames.
type Frames struct {
	Sent     uint64            `json:"sent"`
	Received uint64            `json:"received"`
	Dropped  map[string]uint64 `json:"dropped"`
	// CorePauses counts the heartbeat core finding it had not run for
	// half a dead interval (it restarted the dead interval instead of
	// declaring the peer lost); QueuedAtExpiry a path due to go down with
	// frames still unread in its socket; NotReported peer frames not
	// passed to an agent that was behind. None should grow on a healthy
	// node; each says the node is too loaded for its profile.
	CorePauses     uint64 `json:"core_pauses"`
	QueuedAtExpiry uint64 `json:"queued_at_expiry"`
	NotReported    uint64 `json:"not_reported"`
	// CoreStalls counts the times no frame left this node for a whole
	// dead interval, as long as the peer waits: a peer that took it for
	// lost then was right to. LongestSendGapMs is the longest time
	// between two frames sent. A false failover with a stall on the node
	// that lost its role was the host's doing (it kept the heartbeat core
	// off its CPU), not the daemon's.
	CoreStalls       uint64  `json:"core_stalls"`
	LongestSendGapMs float64 `json:"longest_send_gap_ms"`
	// Polled counts the peer's frames the heartbeat core read at its own
	// wake-ups rather than when they came: an active node with a standby
	// peer does (a wake-up less per frame); a standby never does.
	Polled uint64 `json:"polled"`
	// Relieved counts the frames sent by the heartbeat core's relief
	// senders (at the turbo profile) because one CPU kept its
	// loop from sending on time: each would otherwise have been a stall.
	Relieved uint64 `json:"relieved"`
}

// Error is the body of every failed request.
type Error struct {
	Error string `json:"error"`
}

// Client talks to one daemon's socket.
type Client struct {
	Socket string
	http   *http.Client
}

// NewClient returns a client for the daemon listening on socket.
func NewClient(socket string) *Client {
	hc := client.HTTPClient(socket)
	hc.Timeout = 5 * time.Second
	// A connection per request, closed once answered. The control API is
	// a request per operator action or poll, and a client kept open for
	// a connection's reuse is a client someone forgets to close: the lab
	// made one per status poll, and each left a connection, a goroutine
	// and its buffers in the daemon until the daemon's one-minute idle
	// timeout: 156 of them 20 s into the demo.
	hc.Transport.(*http.Transport).DisableKeepAlives = true
	return &Client{Socket: socket, http: hc}
}

// ErrDown means nothing answers on the socket: the daemon is not running.
var ErrDown = errors.New("hapaird is not running")

// ErrDenied means the socket is there but not ours to use.
var ErrDenied = errors.New("permission denied")

// Denied says who may use socket, for a caller refused there.
func Denied(socket string) error {
	return fmt.Errorf("%w on %s: add yourself to group hapair (status, sessions, events), or run as root (switchover, lock, unlock)", ErrDenied, socket)
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	err := client.Call(ctx, c.http, method, path, body, out)
	var op *net.OpError
	var answer *client.Error
	switch {
	case errors.As(err, &op) && op.Op == "dial" && errors.Is(err, syscall.EACCES):
		return Denied(c.Socket)
	case errors.As(err, &op) && op.Op == "dial":
		return fmt.Errorf("%w (no answer on %s)", ErrDown, c.Socket)
	case errors.As(err, &answer):
		return errors.New(answer.Message)
	}
	return err
}

// Status fetches the daemon's status.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var s Status
	if err := c.do(ctx, http.MethodGet, "/v1/status", nil, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// SwitchoverRequest asks the active node to hand over.
type SwitchoverRequest struct {
	Force bool `json:"force"`
}

// Switchover asks the daemon (which must be active) to hand over to its
// peer and returns once the peer has taken over. It is bounded by ctx
// alone, not by the 5 s of other requests: the daemon answers within
// bounds of its own, which custom timers make longer, and a client that
// gave up before it would say the switchover failed while it went on.
func (c *Client) Switchover(ctx context.Context, force bool) error {
	long := *c.http
	long.Timeout = 0
	return (&Client{Socket: c.Socket, http: &long}).do(ctx, http.MethodPost, "/v1/switchover", SwitchoverRequest{Force: force}, nil)
}

// LockRequest sets or clears this node's HA lock; Text says who, when and
// why.
type LockRequest struct {
	Locked bool   `json:"locked"`
	Text   string `json:"text,omitempty"`
}

// Lock sets (locked) or clears the daemon's lock and returns once it is in
// force: written to the lock file and applied.
func (c *Client) Lock(ctx context.Context, locked bool, text string) error {
	return c.do(ctx, http.MethodPost, "/v1/lock", LockRequest{Locked: locked, Text: text}, nil)
}

// Handler is what a daemon implements to serve the API.
type Handler interface {
	Status() Status
	Switchover(ctx context.Context, force bool) error
	SetLock(ctx context.Context, locked bool, text string) error
}

type connKey struct{}

// WithConn is an http.Server's ConnContext: it keeps the connection a
// request came on in the request's context, for ClientGone.
func WithConn(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// ClientGone says whether the client of the request ctx belongs to has
// closed its connection (or the request's context ended): an operator's
// command that waited unread while the daemon did not run (stopped, or
// starved) past the client's timeout. The client told its operator that
// the command failed; applying it then, seconds or minutes later, would
// lock or unlock a node, or hand it over, behind the operator's back.
// Connections that WithConn did not keep (and a wrapper without NetConn)
// are never gone. A peek that does not wait: a client that waits for the
// answer has nothing more to send, and one that closed reads as the end.
func ClientGone(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	c, _ := ctx.Value(connKey{}).(net.Conn)
	for {
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = u.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	gone := false
	// Control, not Read: the server's own background read may be
	// waiting on the connection, and Read would wait behind it.
	raw.Control(func(fd uintptr) {
		var b [1]byte
		n, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1, syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
		gone = errno == 0 && n == 0
	})
	return gone
}

// NewServeMux routes the read-only part of the API to h: status, for the
// application socket.
func NewServeMux(h Handler) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, h.Status())
	})
	return mux
}

// NewAdminMux routes the whole API to h, operator commands included, for
// the admin socket (config.AdminSocket).
func NewAdminMux(h Handler) *http.ServeMux {
	mux := NewServeMux(h)
	mux.HandleFunc("POST /v1/switchover", func(w http.ResponseWriter, r *http.Request) {
		var req SwitchoverRequest
		if r.ContentLength != 0 {
			if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
				writeJSON(w, http.StatusBadRequest, Error{"bad request body: " + err.Error()})
				return
			}
		}
		if err := h.Switchover(r.Context(), req.Force); err != nil {
			writeJSON(w, http.StatusConflict, Error{err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, struct{}{})
	})
	mux.HandleFunc("POST /v1/lock", func(w http.ResponseWriter, r *http.Request) {
		var req LockRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, Error{"bad request body: " + err.Error()})
			return
		}
		if err := h.SetLock(r.Context(), req.Locked, req.Text); err != nil {
			writeJSON(w, http.StatusInternalServerError, Error{err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, struct{}{})
	})
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// JSONErrors serves mux, but answers what mux has no handler for (a path
// it does not know, 404; a method its path does not take, 405, with the
// Allow header mux sets) in JSON, as every other error of the API is
// (docs/api.md): mux's own answers are plain text. Requests mux has a
// handler for go to it untouched, streams included.
func JSONErrors(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, pattern := mux.Handler(r)
		if pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		rec := &statusOnly{header: http.Header{}}
		h.ServeHTTP(rec, r)
		if allow := rec.header.Get("Allow"); allow != "" {
			w.Header().Set("Allow", allow)
		}
		writeJSON(w, rec.code, Error{fmt.Sprintf("%s %s: %s", r.Method, r.URL.Path, strings.ToLower(http.StatusText(rec.code)))})
	})
}

// statusOnly keeps what mux's own error handler sets, and drops its text.
type statusOnly struct {
	header http.Header
	code   int
}

func (s *statusOnly) Header() http.Header         { return s.header }
func (s *statusOnly) Write(b []byte) (int, error) { return len(b), nil }
func (s *statusOnly) WriteHeader(code int)        { s.code = code }
