package statesync

import (
	"bufio"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
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

func toJSON(v Session, now time.Time) SessionJSON {
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
	case errors.Is(err, ErrExists):
		return http.StatusConflict
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrFull):
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
	maxBody := int64(s.store.lim.MaxData*4/3 + s.store.lim.MaxIDLen + 1024)
	decode := func(w http.ResponseWriter, r *http.Request, j *SessionJSON) ([]byte, bool) {
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
		dec.DisallowUnknownFields()
		if err := dec.Decode(j); err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				writeJSON(w, http.StatusRequestEntityTooLarge, apiError{fmt.Sprintf("body over %d bytes: session data is limited to %d bytes", maxBody, s.store.lim.MaxData)})
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
	write := func(w http.ResponseWriter, kind OpKind, id string, data []byte, code int) {
		seq, err := s.Write(kind, id, data)
		if err != nil {
			writeJSON(w, errCode(err), apiError{err.Error()})
			return
		}
		if kind == OpDelete {
			writeJSON(w, code, SessionJSON{ID: id, Seq: seq})
			return
		}
		v, _ := s.store.Get(id)
		j := toJSON(v, time.Now())
		j.Seq = seq
		writeJSON(w, code, j)
	}
	mux.HandleFunc("POST /v1/sessions", func(w http.ResponseWriter, r *http.Request) {
		var j SessionJSON
		if b, ok := decode(w, r, &j); ok {
			write(w, OpCreate, j.ID, b, http.StatusCreated)
		}
	})
	mux.HandleFunc("PUT /v1/sessions/{id}", func(w http.ResponseWriter, r *http.Request) {
		var j SessionJSON
		if b, ok := decode(w, r, &j); ok {
			if j.ID != "" && j.ID != r.PathValue("id") {
				writeJSON(w, http.StatusBadRequest, apiError{"id in the body differs from the path"})
				return
			}
			write(w, OpUpdate, r.PathValue("id"), b, http.StatusOK)
		}
	})
	mux.HandleFunc("DELETE /v1/sessions/{id}", func(w http.ResponseWriter, r *http.Request) {
		write(w, OpDelete, r.PathValue("id"), nil, http.StatusOK)
	})
	mux.HandleFunc("GET /v1/sessions/{id}", func(w http.ResponseWriter, r *http.Request) {
		v, ok := s.store.Get(r.PathValue("id"))
		if !ok {
			writeJSON(w, http.StatusNotFound, apiError{fmt.Sprintf("%v: %s", ErrNotFound, r.PathValue("id"))})
			return
		}
		writeJSON(w, http.StatusOK, toJSON(v, time.Now()))
	})
	mux.HandleFunc("GET /v1/sessions", func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		list := s.store.List()
		out := make([]SessionJSON, 0, len(list))
		for _, v := range list {
			out = append(out, toJSON(v, now))
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET /v1/events", func(w http.ResponseWriter, r *http.Request) {
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
	})
	mux.HandleFunc("POST /v1/stream", func(w http.ResponseWriter, r *http.Request) {
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
		s.serveStream(c, brw.Reader)
	})
}

// The binary stream, for applications writing at high rates: requests
// are pipelined and answered in order.
//
//	request:  length u32 | kind u8 | id length u16 | id | data
//	response: length u32 | status u8 (0 ok) | seq u64 | error text
const maxStreamMsg = 1 << 20

type pending struct {
	seq uint64
	err error
}

func (s *Service) serveStream(c net.Conn, br *bufio.Reader) {
	defer c.Close()
	bw := bufio.NewWriterSize(c, 64<<10)
	var wmu sync.Mutex // bw's owner: the writer goroutine or the inline path
	var inflight atomic.Int64
	var out []byte
	answer := func(p pending, flush bool) error {
		status, msg := byte(0), ""
		if p.err != nil {
			status, msg = 1, p.err.Error()
		}
		out = binary.BigEndian.AppendUint32(out[:0], uint32(1+8+len(msg)))
		out = append(out, status)
		out = binary.BigEndian.AppendUint64(out, p.seq)
		out = append(out, msg...)
		if _, err := bw.Write(out); err != nil {
			return err
		}
		if flush {
			return bw.Flush()
		}
		return nil
	}
	queue := make(chan pending, 4096)
	done := make(chan struct{})
	go func() {
		defer close(done)
		broken := false
		for p := range queue {
			if p.err == nil && !broken {
				s.settle(p.seq)
			}
			wmu.Lock()
			if !broken && answer(p, len(queue) == 0) != nil {
				broken = true
			}
			wmu.Unlock()
			inflight.Add(-1)
		}
	}()
	defer func() {
		close(queue)
		<-done
	}()
	batch := make([]Write, 0, maxBatch)
	var scratch []byte
	for {
		// One request, blocking; then every complete request already
		// buffered behind it, applied together.
		batch = batch[:0]
		w, err := readRequest(br, true, &scratch)
		if err != nil {
			return
		}
		batch = append(batch, w)
		for len(batch) < maxBatch {
			w, err := readRequest(br, false, &scratch)
			if err != nil {
				return
			}
			if w.Kind == 0 && w.Err == nil {
				break // nothing complete buffered
			}
			batch = append(batch, w)
		}
		malformed := false
		for _, w := range batch {
			malformed = malformed || w.Err != nil
		}
		if !malformed {
			s.applyBatch(batch)
		} else {
			for k := range batch {
				if batch[k].Err == nil {
					batch[k].Seq, batch[k].Err = s.apply(batch[k].Kind, batch[k].ID, batch[k].Data)
				}
			}
		}
		// One request and nothing queued behind or ahead of it: answer
		// here, saving the hand-off to the writer (a sync write's
		// latency is mostly such hand-offs).
		if len(batch) == 1 && inflight.Load() == 0 && br.Buffered() == 0 {
			p := pending{seq: batch[0].Seq, err: batch[0].Err}
			if p.err == nil {
				s.settle(p.seq)
			}
			wmu.Lock()
			err := answer(p, true)
			wmu.Unlock()
			if err != nil {
				return
			}
			continue
		}
		for _, w := range batch {
			inflight.Add(1)
			queue <- pending{seq: w.Seq, err: w.Err}
		}
	}
}

// maxBatch bounds how many pipelined requests are applied together.
const maxBatch = 256

// readRequest reads one stream request. With block false it returns a zero
// Write, and no error, when no complete request is buffered.
func readRequest(br *bufio.Reader, block bool, scratch *[]byte) (Write, error) {
	if !block {
		if br.Buffered() < 4 {
			return Write{}, nil
		}
		hdr, _ := br.Peek(4)
		if n := binary.BigEndian.Uint32(hdr); br.Buffered() < 4+int(min(n, maxStreamMsg)) {
			return Write{}, nil
		}
	}
	var hdr [4]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return Write{}, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n < 3 || n > maxStreamMsg {
		return Write{}, errors.New("stream: bad request length")
	}
	if cap(*scratch) < int(n) {
		*scratch = make([]byte, n)
	}
	buf := (*scratch)[:n]
	if _, err := io.ReadFull(br, buf); err != nil {
		return Write{}, err
	}
	kind := OpKind(buf[0])
	idLen := int(binary.BigEndian.Uint16(buf[1:3]))
	if 3+idLen > len(buf) || kind < OpCreate || kind > OpDelete {
		return Write{Kind: kind, Err: errors.New("malformed request")}, nil
	}
	w := Write{Kind: kind, ID: string(buf[3 : 3+idLen])}
	if kind != OpDelete {
		// An exact-size copy: the store keeps it for the session's life.
		w.Data = append([]byte(nil), buf[3+idLen:]...)
	}
	return w, nil
}
