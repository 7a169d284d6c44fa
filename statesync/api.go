package statesync

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/hapair/hapair/statesync/store"
	"github.com/hapair/hapair/statesync/wire"
)

// SessionJSON is a session as the HTTP API shows it. Data is UTF-8 text in
// "data", or any bytes in "data_base64".
type SessionJSON struct {
	ID         string  `json:"id"`
	Data       *string `json:"data,omitempty"`
	DataBase64 *string `json:"data_base64,omitempty"`
	Version    uint64  `json:"version,omitempty"`
	AgeMs      float64 `json:"age_ms,omitempty"`
	Seq        uint64  `json:"seq,omitempty"`
}

func (j *SessionJSON) bytes() ([]byte, error) {
	switch {
	case j.Data != nil && j.DataBase64 != nil:
		return nil, errors.New(`give "data" or "data_base64", not both`)
	case j.DataBase64 != nil:
		b, err := base64.StdEncoding.DecodeString(*j.DataBase64)
		if err != nil {
			return nil, fmt.Errorf("data_base64: %w", err)
		}
		return b, nil
	case j.Data != nil:
		return []byte(*j.Data), nil
	}
	return []byte{}, nil
}

func toJSON(v store.Session, now time.Time) SessionJSON {
	d := base64.StdEncoding.EncodeToString(v.Data)
	j := SessionJSON{ID: v.ID, Version: v.Version, DataBase64: &d, AgeMs: float64(v.Age(now).Microseconds()) / 1000}
	if utf8.Valid(v.Data) && isText(v.Data) {
		s := string(v.Data)
		j.Data = &s
	}
	return j
}

func isText(b []byte) bool {
	for _, c := range b {
		if c < 0x20 && c != '\t' && c != '\n' && c != '\r' {
			return false
		}
	}
	return true
}

type apiError struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func errCode(err error) int {
	switch {
	case errors.Is(err, ErrNotActive):
		return http.StatusConflict
	case errors.Is(err, ErrNotReplicated):
		return http.StatusServiceUnavailable
	case errors.Is(err, store.ErrExists):
		return http.StatusConflict
	case errors.Is(err, store.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, store.ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, store.ErrFull):
		return http.StatusInsufficientStorage
	}
	return http.StatusBadRequest
}

// Register mounts the application API on mux:
//
//	POST   /v1/sessions        {"id": ..., "data": ...}   create
//	PUT    /v1/sessions/{id}   {"data": ...}              update
//	DELETE /v1/sessions/{id}                              delete
//	GET    /v1/sessions/{id}                              read
//	GET    /v1/sessions                                   list
//	GET    /v1/events                                     NDJSON event stream
//	POST   /v1/stream                                     upgrade to the binary stream
func (s *Service) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/sessions", func(w http.ResponseWriter, r *http.Request) {
		var j SessionJSON
		if b, ok := s.decode(w, r, &j); ok {
			s.writeAnswer(w, store.OpCreate, j.ID, b, http.StatusCreated)
		}
	})
	mux.HandleFunc("PUT /v1/sessions/{id}", func(w http.ResponseWriter, r *http.Request) {
		var j SessionJSON
		if b, ok := s.decode(w, r, &j); ok {
			if j.ID != "" && j.ID != r.PathValue("id") {
				writeJSON(w, http.StatusBadRequest, apiError{"id in the body differs from the path"})
				return
			}
			s.writeAnswer(w, store.OpUpdate, r.PathValue("id"), b, http.StatusOK)
		}
	})
	mux.HandleFunc("DELETE /v1/sessions/{id}", func(w http.ResponseWriter, r *http.Request) {
		s.writeAnswer(w, store.OpDelete, r.PathValue("id"), nil, http.StatusOK)
	})
	mux.HandleFunc("GET /v1/sessions/{id}", func(w http.ResponseWriter, r *http.Request) {
		v, ok := s.store.Get(r.PathValue("id"))
		if !ok {
			writeJSON(w, http.StatusNotFound, apiError{fmt.Sprintf("%v: %s", store.ErrNotFound, r.PathValue("id"))})
			return
		}
		writeJSON(w, http.StatusOK, toJSON(v, time.Now()))
	})
	mux.HandleFunc("GET /v1/sessions", s.serveList)
	mux.HandleFunc("GET /v1/events", s.serveEvents)
	mux.HandleFunc("POST /v1/stream", s.upgradeStream)
}

// serveList answers with every session, as a JSON array written session by
// session. Reason: encoded whole, 300,000 sessions made some 300 MB of
// garbage per listing; listed over and over on a loaded node, the garbage
// collector's assists held the agent's loop (same process) past its lease
// in the load campaign, a false failover.
func (s *Service) serveList(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	list := s.store.List()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	bw.WriteByte('[')
	for i, v := range list {
		if i > 0 {
			bw.WriteByte(',')
		}
		if err := enc.Encode(toJSON(v, now)); err != nil {
			return
		}
	}
	bw.WriteString("]\n")
	bw.Flush()
}

// decode reads a session's JSON body into j and returns its data; on a
// bad body it has answered and returns false.
func (s *Service) decode(w http.ResponseWriter, r *http.Request, j *SessionJSON) ([]byte, bool) {
	maxBody := int64(s.store.Limits().MaxData*4/3 + s.store.Limits().MaxIDLen + 1024)
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(j); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeJSON(w, http.StatusRequestEntityTooLarge, apiError{fmt.Sprintf("body over %d bytes: session data is limited to %d bytes", maxBody, s.store.Limits().MaxData)})
			return nil, false
		}
		writeJSON(w, http.StatusBadRequest, apiError{"malformed JSON: " + err.Error()})
		return nil, false
	}
	b, err := j.bytes()
	if err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{err.Error()})
		return nil, false
	}
	return b, true
}

// writeAnswer makes one write and answers with the session as it now is
// (with the write's sequence), or why it failed.
func (s *Service) writeAnswer(w http.ResponseWriter, kind store.OpKind, id string, data []byte, code int) {
	seq, err := s.Write(kind, id, data)
	if err != nil {
		writeJSON(w, errCode(err), apiError{err.Error()})
		return
	}
	if kind == store.OpDelete {
		writeJSON(w, code, SessionJSON{ID: id, Seq: seq})
		return
	}
	v, _ := s.store.Get(id)
	j := toJSON(v, time.Now())
	j.Seq = seq
	writeJSON(w, code, j)
}

// serveEvents streams the event hub as NDJSON until the client goes or
// falls behind.
func (s *Service) serveEvents(w http.ResponseWriter, r *http.Request) {
	ch := s.hub.Subscribe()
	defer s.hub.Unsubscribe(ch)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	fl, _ := w.(http.Flusher)
	if fl != nil {
		fl.Flush()
	}
	enc := json.NewEncoder(w)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				return // cut off: the reader fell behind
			}
			if err := enc.Encode(ev); err != nil {
				return
			}
			if fl != nil {
				fl.Flush()
			}
		case <-r.Context().Done():
			return
		}
	}
}

// upgradeStream turns the HTTP connection into the binary stream.
func (s *Service) upgradeStream(w http.ResponseWriter, r *http.Request) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		writeJSON(w, http.StatusInternalServerError, apiError{"stream needs HTTP/1.1"})
		return
	}
	c, brw, err := hj.Hijack()
	if err != nil {
		return
	}
	brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: hapair-stream\r\nConnection: Upgrade\r\n\r\n")
	brw.Flush()
	// The server's reader is 4 KiB: a 64 KiB one takes a whole pipelined
	// batch per read. It starts with what the old one already holds.
	c.SetDeadline(time.Time{})
	pre, _ := brw.Reader.Peek(brw.Reader.Buffered())
	br := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(pre)), c), 64<<10)
	s.serveStream(c, br)
}

// The binary stream, for applications writing at high rates: requests
// are pipelined and answered in order.
//
//	request:  length u32 | kind u8 | id length u16 | id | data
//	response: length u32 | status u8 (0 ok) | seq u64 | error text
const maxStreamMsg = 1 << 20

// maxBatch bounds how many pipelined requests are applied together.
const maxBatch = 256

// serveStream reads every whole request buffered, applies them as one
// batch straight from the read buffer, and answers them. Async answers
// (and a lone sync write) are written by this goroutine; a pipelined sync
// batch is handed to a second one that waits for the standby while this
// one reads on.
func (s *Service) serveStream(c net.Conn, br *bufio.Reader) {
	defer c.Close()
	st := &stream{s: s, bw: bufio.NewWriterSize(c, 64<<10), queue: make(chan answers, 64), done: make(chan struct{})}
	go st.answerQueued()
	defer func() {
		close(st.queue)
		<-st.done
	}()
	batch := make([]store.Write, 0, maxBatch)
	var big []byte
	var res []result
	for {
		b, buffered, err := wire.AwaitFrames(br, &big, 3, maxStreamMsg, nil)
		if err != nil {
			return
		}
		var used int
		batch, used = parseBatch(batch[:0], b)
		term := s.applyBatch(batch) // copies what the store keeps
		if buffered {
			br.Discard(used)
		}
		a := answers{term: term}
		res = res[:0]
		for _, w := range batch {
			res = append(res, result{seq: w.Seq, err: w.Err})
			if w.Err == nil {
				a.last = w.Seq
			}
		}
		a.res = res
		if st.answer(a, wholeRequestBuffered(br)) != nil {
			return
		}
	}
}

// stream is the answering side of one binary stream: answers go out in
// the order of the requests, either from the reading goroutine or, while
// sync writes wait for the standby, from answerQueued's.
type stream struct {
	s        *Service
	bw       *bufio.Writer
	wmu      sync.Mutex   // bw's owner: either goroutine
	inflight atomic.Int64 // batches handed over and not yet answered
	queue    chan answers
	done     chan struct{}
	out      []byte // the reading goroutine's encoded answers
}

// answers are a batch's outcomes, the last sequence written in it (0:
// none) for sync mode to wait for, and the active term it was written in.
type answers struct {
	res  []result
	last uint64
	term <-chan struct{}
}

type result struct {
	seq uint64
	err error
}

// parseBatch appends the whole requests at the start of b (at most
// maxBatch) and says how many bytes they took. A bad length further on
// ends the stream at the next AwaitFrames, once the requests before it
// are answered.
func parseBatch(batch []store.Write, b []byte) ([]store.Write, int) {
	used := 0
	for len(batch) < maxBatch && len(b)-used >= 4 {
		n := 4 + int(binary.BigEndian.Uint32(b[used:]))
		if n < 4+3 || len(b)-used < n {
			break
		}
		batch = append(batch, parseRequest(b[used+4:used+n]))
		used += n
	}
	return batch, used
}

// settle waits as sync mode says and encodes a's answers after dst: the
// writes the standby did not apply before this node stopped being active
// fail with ErrNotReplicated.
func (st *stream) settle(dst []byte, a answers) []byte {
	var failed error
	var acked uint64
	if a.last > 0 {
		if failed = st.s.settle(a.last, a.term); failed != nil {
			acked = st.s.repl.Acked()
		}
	}
	for _, r := range a.res {
		err := r.err
		if err == nil && failed != nil && r.seq > acked {
			err = failed
		}
		dst = appendAnswer(dst, r.seq, err)
	}
	return dst
}

// answer answers a. It is answered here when nothing needs waiting for,
// or when a lone sync write has nothing queued behind or ahead of it (a
// hand-off to the other goroutine would add to its latency); otherwise
// queued. more says another request is already buffered.
func (st *stream) answer(a answers, more bool) error {
	if st.inflight.Load() != 0 || (a.last != 0 && st.s.cfg.Mode == Sync && more) {
		st.inflight.Add(1)
		a.res = slices.Clone(a.res)
		st.queue <- a
		return nil
	}
	st.out = st.settle(st.out[:0], a)
	st.wmu.Lock()
	defer st.wmu.Unlock()
	_, err := st.bw.Write(st.out)
	if err == nil && !more {
		err = st.bw.Flush()
	}
	return err
}

// answerQueued answers queued batches in order until the queue closes;
// after a write fails it only drains.
func (st *stream) answerQueued() {
	defer close(st.done)
	broken := false
	var out []byte
	for a := range st.queue {
		if !broken {
			out = st.settle(out[:0], a)
		}
		st.wmu.Lock()
		if !broken {
			_, err := st.bw.Write(out)
			if err == nil && len(st.queue) == 0 {
				err = st.bw.Flush()
			}
			broken = err != nil
		}
		st.wmu.Unlock()
		st.inflight.Add(-1)
	}
}

func appendAnswer(dst []byte, seq uint64, err error) []byte {
	status, text := byte(0), ""
	if err != nil {
		status, text = 1, err.Error()
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(1+8+len(text)))
	dst = append(dst, status)
	dst = binary.BigEndian.AppendUint64(dst, seq)
	return append(dst, text...)
}

// parseRequest parses one request body; ID and Data alias b.
func parseRequest(b []byte) store.Write {
	kind := store.OpKind(b[0])
	idLen := int(binary.BigEndian.Uint16(b[1:3]))
	if 3+idLen > len(b) || kind < store.OpCreate || kind > store.OpDelete {
		return store.Write{Kind: kind, Err: errors.New("malformed request")}
	}
	w := store.Write{Kind: kind, ID: b[3 : 3+idLen]}
	if kind != store.OpDelete {
		w.Data = b[3+idLen:]
	}
	return w
}

// wholeRequestBuffered says whether the next request can be read without
// waiting.
func wholeRequestBuffered(br *bufio.Reader) bool {
	if br.Buffered() < 4 {
		return false
	}
	hdr, _ := br.Peek(4)
	return br.Buffered() >= 4+int(binary.BigEndian.Uint32(hdr))
}
