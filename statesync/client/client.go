// Package client is the Go client of hapair's application API on the
// daemon's unix socket: sessions over HTTP/JSON, the event stream, and a
// pipelined binary stream for high write rates (package statesync
// describes the formats; docs/api.md the HTTP calls).
package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/hapair/hapair/statesync"
	"github.com/hapair/hapair/statesync/store"
)

// Client talks to one daemon.
type Client struct {
	socket string
	http   *http.Client
}

// New returns a client for the daemon listening on socket. A Client keeps
// its connection open between requests: make one and use it for as long
// as the application talks to the daemon, and Close it then. One made per
// request leaves its connection open in the daemon until the idle timeout.
func New(socket string) *Client {
	return &Client{socket: socket, http: HTTPClient(socket)}
}

// Close closes the connection the client keeps between requests. Streams
// and subscriptions it opened have their own, closed by their Close.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// idleConn is how long a connection waits for the client's next request.
// It is below the daemon's idle timeout (a minute) so that the client, not
// the daemon, closes it: a request sent as the daemon closes its end fails
// and is not sent again when it is a write (POST, PUT, DELETE).
const idleConn = 30 * time.Second

// HTTPClient is an HTTP client whose every request goes to the daemon's
// unix socket, whatever the URL's host.
func HTTPClient(socket string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		IdleConnTimeout: idleConn,
	}}
}

// Error is an error the daemon returned, with its HTTP status.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string { return e.Message }

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	return Call(ctx, c.http, method, path, body, out)
}

// Call sends one JSON request to the daemon over hc (an HTTPClient) and
// decodes the answer into out, unless out is nil. An answer other than a
// success is an *Error with the daemon's message.
func Call(ctx context.Context, hc *http.Client, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://hapaird"+path, rd)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return answerError(resp)
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	return nil
}

// answerError is the daemon's failed answer resp as an *Error: its message
// (a JSON body's "error"), else the HTTP status.
func answerError(resp *http.Response) *Error {
	var e struct{ Error string }
	json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&e)
	if e.Error == "" {
		e.Error = resp.Status
	}
	return &Error{Status: resp.StatusCode, Message: e.Error}
}

func text(b []byte) *string {
	s := string(b)
	return &s
}

// Create creates a session.
func (c *Client) Create(ctx context.Context, id string, data []byte) (*statesync.SessionJSON, error) {
	var out statesync.SessionJSON
	err := c.do(ctx, http.MethodPost, "/v1/sessions", statesync.SessionJSON{ID: id, Data: text(data)}, &out)
	return &out, err
}

// Update replaces a session's data.
func (c *Client) Update(ctx context.Context, id string, data []byte) (*statesync.SessionJSON, error) {
	var out statesync.SessionJSON
	err := c.do(ctx, http.MethodPut, "/v1/sessions/"+url.PathEscape(id), statesync.SessionJSON{Data: text(data)}, &out)
	return &out, err
}

// Delete removes a session.
func (c *Client) Delete(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/v1/sessions/"+url.PathEscape(id), nil, nil)
}

// Get reads a session.
func (c *Client) Get(ctx context.Context, id string) (*statesync.SessionJSON, error) {
	var out statesync.SessionJSON
	err := c.do(ctx, http.MethodGet, "/v1/sessions/"+url.PathEscape(id), nil, &out)
	return &out, err
}

// List reads every session.
func (c *Client) List(ctx context.Context) ([]statesync.SessionJSON, error) {
	var out []statesync.SessionJSON
	err := c.do(ctx, http.MethodGet, "/v1/sessions", nil, &out)
	return out, err
}

// Events follows the event stream until ctx ends or the daemon closes it;
// f is called for each event.
func (c *Client) Events(ctx context.Context, f func(statesync.Event)) error {
	sub, err := c.Subscribe(ctx)
	if err != nil {
		return err
	}
	defer sub.Close()
	for {
		ev, err := sub.Next()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		f(ev)
	}
}

// Subscribe subscribes to the event stream and returns once the daemon
// has: no event published after it returns is missed.
func (c *Client) Subscribe(ctx context.Context) (*Subscription, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://hapaird/v1/events", nil)
	if err != nil {
		return nil, err
	}
	// The daemon answers once it has subscribed this request.
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, fmt.Errorf("events: %w", answerError(resp))
	}
	return &Subscription{body: resp.Body, dec: json.NewDecoder(resp.Body)}, nil
}

// Subscription is a subscription to the event stream.
type Subscription struct {
	body io.Closer
	dec  *json.Decoder
}

// Next waits for the next event; it fails once the subscription's context
// ends or the daemon closes the stream (a reader that fell behind is cut
// off).
func (s *Subscription) Next() (statesync.Event, error) {
	var ev statesync.Event
	err := s.dec.Decode(&ev)
	return ev, err
}

// Close ends the subscription.
func (s *Subscription) Close() error { return s.body.Close() }

// Stream is a pipelined binary connection: Send queues writes, Flush sends
// them, Recv reads the answers in order. Answers are read on the caller's
// goroutine (no hand-off per write); a caller that pipelines many writes
// sends from one goroutine and receives on another. Send and Recv may run
// concurrently with each other, but not with themselves.
type Stream struct {
	c  net.Conn
	br *bufio.Reader
	bw *bufio.Writer
	in []byte // for answers larger than br's buffer
}

// Result is the answer to one Send, in order.
type Result struct {
	Seq uint64
	Err error
}

// Stream opens the binary stream.
func (c *Client) Stream(ctx context.Context) (*Stream, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.socket)
	if err != nil {
		return nil, err
	}
	fmt.Fprint(conn, "POST /v1/stream HTTP/1.1\r\nHost: hapaird\r\nConnection: Upgrade\r\nUpgrade: hapair-stream\r\nContent-Length: 0\r\n\r\n")
	br := bufio.NewReaderSize(conn, 64<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer conn.Close()
		return nil, fmt.Errorf("stream: %w", answerError(resp))
	}
	return &Stream{c: conn, br: br, bw: bufio.NewWriterSize(conn, 64<<10), in: make([]byte, 256)}, nil
}

// Recv reads the next answer. A transport error ends the stream.
func (s *Stream) Recv() (Result, error) {
	hdr, err := s.br.Peek(4)
	if err != nil {
		return Result{}, err
	}
	n := int(binary.BigEndian.Uint32(hdr))
	if n < 9 || n > 1<<20 {
		return Result{}, fmt.Errorf("stream: bad answer length %d", n)
	}
	var b []byte
	if 4+n <= s.br.Size() {
		// Read in place: an answer is 13 bytes unless it carries an error.
		if b, err = s.br.Peek(4 + n); err != nil {
			return Result{}, err
		}
		defer s.br.Discard(4 + n)
		b = b[4:]
	} else {
		if cap(s.in) < 4+n {
			s.in = make([]byte, 4+n)
		}
		b = s.in[:4+n]
		if _, err := io.ReadFull(s.br, b); err != nil {
			return Result{}, err
		}
		b = b[4:]
	}
	r := Result{Seq: binary.BigEndian.Uint64(b[1:9])}
	if b[0] != 0 {
		r.Err = errors.New(string(b[9:]))
	}
	return r, nil
}

// Send queues one write; Flush sends what is queued.
func (s *Stream) Send(kind store.OpKind, id string, data []byte) error {
	n := 4 + 1 + 2 + len(id) + len(data)
	if s.bw.Available() < n && s.bw.Buffered() > 0 {
		if err := s.bw.Flush(); err != nil {
			return err
		}
	}
	// Encoded straight into the writer's buffer when it fits.
	b := s.bw.AvailableBuffer()
	b = binary.BigEndian.AppendUint32(b, uint32(1+2+len(id)+len(data)))
	b = append(b, byte(kind))
	b = binary.BigEndian.AppendUint16(b, uint16(len(id)))
	b = append(b, id...)
	b = append(b, data...)
	_, err := s.bw.Write(b)
	return err
}

// Flush sends the queued writes.
func (s *Stream) Flush() error { return s.bw.Flush() }

// Do sends one write and waits for its answer; use it only when no other
// Send is outstanding.
func (s *Stream) Do(kind store.OpKind, id string, data []byte) (uint64, error) {
	if err := s.Send(kind, id, data); err != nil {
		return 0, err
	}
	if err := s.Flush(); err != nil {
		return 0, err
	}
	r, err := s.Recv()
	if err != nil {
		return 0, err
	}
	return r.Seq, r.Err
}

// Close ends the stream.
func (s *Stream) Close() error { return s.c.Close() }
