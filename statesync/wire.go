package statesync

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// Message types of the replication protocol (see doc.go).
const (
	msgHello    = 1
	msgSnapshot = 2
	msgEntry    = 3
	msgResume   = 4
	msgOp       = 5
	msgAck      = 6
	msgPing     = 7
)

// keepalive is how often an idle leader pings, and deadAfter how long
// either end waits for traffic before it takes the connection for dead: a
// cut link must break the connection so the standby reconnects (and
// resumes) instead of waiting out TCP's own timers.
//
// setupAllow replaces deadAfter while a connection sets up, when each end
// is silent by design for as long as the store takes: the standby waits
// for the active to copy every session into a snapshot, and the active
// for the standby to load it (its first acknowledgement). With deadAfter
// there, a loaded node with 300,000 sessions never finished a snapshot:
// each attempt timed out in the copy, the standby dialled again, and the
// next copy queued behind the last on the store lock. A peer that dies
// meanwhile closes its socket; only a link cut during set-up is noticed
// this late, and a node that fails meanwhile is the heartbeats' business.
const (
	keepalive  = 200 * time.Millisecond
	deadAfter  = time.Second
	setupAllow = 30 * time.Second
)

// maxMsg bounds one message: the largest entry plus headers. A peer that
// announces more is broken or hostile.
const maxMsg = 16 << 20

var errMsg = errors.New("statesync: malformed message")

// msg is one decoded message. Fields are used per type.
type msg struct {
	typ     uint8
	epoch   uint64
	seq     uint64
	count   uint64
	version uint64
	kind    OpKind
	id      []byte // aliases the decoded buffer, like data
	data    []byte
}

// opSize is the encoded size of an op message, length prefix included.
func opSize(idLen, dataLen int) int { return 4 + 1 + 8 + 1 + 2 + idLen + 4 + dataLen }

// appendMsg encodes m after dst.
func appendMsg(dst []byte, m *msg) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, m.typ)
	switch m.typ {
	case msgHello:
		dst = binary.BigEndian.AppendUint64(dst, m.epoch)
		dst = binary.BigEndian.AppendUint64(dst, m.seq)
	case msgSnapshot:
		dst = binary.BigEndian.AppendUint64(dst, m.epoch)
		dst = binary.BigEndian.AppendUint64(dst, m.seq)
		dst = binary.BigEndian.AppendUint64(dst, m.count)
	case msgEntry:
		dst = binary.BigEndian.AppendUint64(dst, m.version)
		dst = appendIDData(dst, m.id, m.data)
	case msgResume:
		dst = binary.BigEndian.AppendUint64(dst, m.epoch)
	case msgOp:
		dst = binary.BigEndian.AppendUint64(dst, m.seq)
		dst = append(dst, byte(m.kind))
		dst = appendIDData(dst, m.id, m.data)
	case msgAck:
		dst = binary.BigEndian.AppendUint64(dst, m.seq)
	}
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-4))
	return dst
}

func appendIDData(dst []byte, id, data []byte) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(id)))
	dst = append(dst, id...)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(data)))
	return append(dst, data...)
}

// decodeMsg parses one message body (after the length). m.id and m.data
// alias b; callers that keep them must copy.
func decodeMsg(b []byte, m *msg) error {
	if len(b) < 1 {
		return errMsg
	}
	m.typ, b = b[0], b[1:]
	u64 := func() (uint64, bool) {
		if len(b) < 8 {
			return 0, false
		}
		v := binary.BigEndian.Uint64(b)
		b = b[8:]
		return v, true
	}
	var ok bool
	switch m.typ {
	case msgHello:
		if m.epoch, ok = u64(); !ok {
			return errMsg
		}
		if m.seq, ok = u64(); !ok {
			return errMsg
		}
	case msgSnapshot:
		if m.epoch, ok = u64(); !ok {
			return errMsg
		}
		if m.seq, ok = u64(); !ok {
			return errMsg
		}
		if m.count, ok = u64(); !ok {
			return errMsg
		}
	case msgEntry:
		if m.version, ok = u64(); !ok {
			return errMsg
		}
		var err error
		if m.id, m.data, b, err = idData(b); err != nil {
			return err
		}
	case msgResume:
		if m.epoch, ok = u64(); !ok {
			return errMsg
		}
	case msgOp:
		if m.seq, ok = u64(); !ok {
			return errMsg
		}
		if len(b) < 1 {
			return errMsg
		}
		m.kind, b = OpKind(b[0]), b[1:]
		if m.kind < OpCreate || m.kind > OpDelete {
			return errMsg
		}
		var err error
		if m.id, m.data, b, err = idData(b); err != nil {
			return err
		}
	case msgAck:
		if m.seq, ok = u64(); !ok {
			return errMsg
		}
	case msgPing:
	default:
		return fmt.Errorf("%w: type %d", errMsg, m.typ)
	}
	if len(b) != 0 {
		return errMsg
	}
	return nil
}

func idData(b []byte) (id, data, rest []byte, err error) {
	if len(b) < 2 {
		return nil, nil, nil, errMsg
	}
	n := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	if len(b) < n+4 {
		return nil, nil, nil, errMsg
	}
	id = b[:n:n]
	b = b[n:]
	d := int(binary.BigEndian.Uint32(b))
	b = b[4:]
	if len(b) < d {
		return nil, nil, nil, errMsg
	}
	return id, b[:d:d], b[d:], nil
}

// readMsg reads one message into m using buf, which it may grow; m.data
// aliases the returned buffer.
func readMsg(r *bufio.Reader, buf []byte, m *msg) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return buf, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > maxMsg {
		return buf, fmt.Errorf("%w: %d bytes", errMsg, n)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		return buf, err
	}
	return buf, decodeMsg(buf, m)
}

// awaitFrames waits until at least one whole length-prefixed frame, its
// body minBody to maxBody bytes, is buffered in br, and returns everything
// buffered (buffered true: the caller parses the frames in place and
// discards what it used). A frame larger than br's buffer is read into
// *big instead and returned alone. beforeWait, if set, is called before a
// read that may block, with the frame's whole size once known (0 before).
func awaitFrames(br *bufio.Reader, big *[]byte, minBody, maxBody int, beforeWait func(n int)) (b []byte, buffered bool, err error) {
	wait := func(n int) {
		if beforeWait != nil {
			beforeWait(n)
		}
	}
	if br.Buffered() < 4 {
		wait(0)
	}
	hdr, err := br.Peek(4)
	if err != nil {
		return nil, false, err
	}
	n := 4 + int(binary.BigEndian.Uint32(hdr))
	if n-4 < minBody || n-4 > maxBody {
		return nil, false, fmt.Errorf("%w: %d bytes", errMsg, n-4)
	}
	if n > br.Size() {
		wait(n)
		if cap(*big) < n {
			*big = make([]byte, n)
		}
		*big = (*big)[:n]
		if _, err := io.ReadFull(br, *big); err != nil {
			return nil, false, err
		}
		return *big, false, nil
	}
	if br.Buffered() < n {
		wait(n)
		if _, err := br.Peek(n); err != nil {
			return nil, false, err
		}
	}
	b, _ = br.Peek(br.Buffered())
	return b, true, nil
}
