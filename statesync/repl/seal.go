package repl

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
)

// Sealing: after the challenge-response (auth.go) every byte of a
// replication connection, both ways, travels in AES-256-GCM records under
// keys derived for that connection alone (from the shared key and both
// nonces, one key per direction). A record is a 4-byte length, then the
// sealed bytes; its nonce is its number in the direction, so a record that
// is altered, dropped, reordered, replayed or injected fails to open, and
// the connection ends. Without it, anyone on the path who relayed the
// challenge could inject operations or snapshots into the standby, read
// sessions, and forge acknowledgements, so sync-mode writes would report
// "replicated" when they were not.

// ErrSealed means a record failed to open: the connection was tampered
// with (or is not speaking this protocol).
var ErrSealed = errors.New("statesync: replication record rejected")

const (
	recordMax = 1 << 20 // plaintext bytes per record
	tagLen    = 16
)

func newAEAD(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

func recordNonce(n uint64) []byte {
	var b [12]byte
	binary.BigEndian.PutUint64(b[4:], n)
	return b[:]
}

// sealedConn is a replication connection after authentication: writes are
// sealed, reads opened. Conn is the transport (TCP, or TLS over it); the
// pollers of the latency path read the transport's socket themselves and
// hand what they read to open.
type sealedConn struct {
	net.Conn
	wmu  sync.Mutex
	seal cipher.AEAD
	sent uint64
	wbuf []byte
	open *opener
	rd   *openReader // for Read, over the transport
	// tcp is the connection under it when the kernel keeps it alive
	// (keepAlive), else nil.
	tcp *net.TCPConn
}

func newSealedConn(c net.Conn, send, recv []byte, onReject func()) (*sealedConn, error) {
	s, err := newAEAD(send)
	if err != nil {
		return nil, err
	}
	o, err := newAEAD(recv)
	if err != nil {
		return nil, err
	}
	sc := &sealedConn{Conn: c, seal: s, open: &opener{aead: o, onReject: onReject}}
	sc.rd = &openReader{src: c, o: sc.open}
	return sc, nil
}

// Write seals p in records of at most recordMax bytes.
func (c *sealedConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	done := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), recordMax)]
		var hdr [4]byte
		binary.BigEndian.PutUint32(hdr[:], uint32(len(chunk)+tagLen))
		c.wbuf = append(c.wbuf[:0], hdr[:]...)
		c.wbuf = c.seal.Seal(c.wbuf, recordNonce(c.sent), chunk, hdr[:])
		c.sent++
		if _, err := c.Conn.Write(c.wbuf); err != nil {
			return done, err
		}
		done += len(chunk)
		p = p[len(chunk):]
	}
	return done, nil
}

// Read opens what the transport delivers.
func (c *sealedConn) Read(p []byte) (int, error) { return c.rd.Read(p) }

// reader opens what src delivers, src being this connection's transport
// or a poller of its socket.
func (c *sealedConn) reader(src io.Reader) io.Reader { return &openReader{src: src, o: c.open} }

// opener opens one direction's records. Not safe for concurrent use: its
// callers hold the lock of whatever reads the socket.
type opener struct {
	aead     cipher.AEAD
	n        uint64
	raw      []byte // received, not yet a whole record
	out      []byte // opened, not yet taken
	onReject func()
}

// feed takes bytes from the transport and opens every whole record.
func (o *opener) feed(b []byte) error {
	o.raw = append(o.raw, b...)
	used := 0
	for len(o.raw)-used >= 4 {
		l := int(binary.BigEndian.Uint32(o.raw[used:]))
		if l < tagLen || l > recordMax+tagLen {
			return o.reject()
		}
		if len(o.raw)-used < 4+l {
			break
		}
		hdr := o.raw[used : used+4]
		var err error
		if o.out, err = o.aead.Open(o.out, recordNonce(o.n), o.raw[used+4:used+4+l], hdr); err != nil {
			return o.reject()
		}
		o.n++
		used += 4 + l
	}
	o.raw = o.raw[:copy(o.raw, o.raw[used:])]
	return nil
}

func (o *opener) reject() error {
	if o.onReject != nil {
		o.onReject()
	}
	o.raw, o.out = nil, nil
	return ErrSealed
}

// take appends the opened bytes to dst.
func (o *opener) take(dst []byte) []byte {
	dst = append(dst, o.out...)
	o.out = o.out[:0]
	return dst
}

type openReader struct {
	src io.Reader
	o   *opener
	tmp []byte
	err error
}

func (r *openReader) Read(p []byte) (int, error) {
	for len(r.o.out) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if r.tmp == nil {
			r.tmp = make([]byte, 64<<10)
		}
		n, err := r.src.Read(r.tmp)
		if n > 0 {
			if ferr := r.o.feed(r.tmp[:n]); ferr != nil {
				r.err = ferr
				return 0, ferr
			}
		}
		if err != nil {
			r.err = err
		}
	}
	n := copy(p, r.o.out)
	r.o.out = r.o.out[:copy(r.o.out, r.o.out[n:])]
	return n, nil
}
