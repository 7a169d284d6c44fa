// Package wire is the replication protocol's message format: what the
// active and the standby send each other (package repl), and what the
// store's log holds (package store keeps ops encoded as they travel, so the
// active sends its log as it is). Pure encoding: no sockets, no clocks.
//
// Messages are length-prefixed, big-endian:
//
//	0  length of what follows      4
//	4  type                        1
//	5  body                        length-1
//
//	hello     standby->active  epoch u64, applied seq u64
//	snapshot  active->standby  epoch u64, seq u64, count u64
//	entry     active->standby  version u64, id (u16 length + bytes), data (u32 length + bytes)
//	resume    active->standby  epoch u64
//	op        active->standby  seq u64, kind u8, id (u16 + bytes), data (u32 + bytes)
//	ack       standby->active  seq u64, cumulative
//	ping      active->standby  (empty) when idle; answered with an ack
//	ping      standby->active  (empty) after the hello: the standby's kernel
//	                           keeps the connection alive, so it needs no
//	                           pings (an older active reads it and ignores it)
//	config    both ways        count u8, then count times: id (u8 length +
//	                           bytes), sum u64; then release (u8 length +
//	                           bytes; left out when empty). Each end's sum
//	                           of each part of its file the pair must
//	                           agree on (config.PairSums), and the version
//	                           of hapaird it runs, for people: sent once
//	                           per connection, the standby's after its
//	                           hello, the active's before the snapshot or
//	                           resume
//
// A reader skips a message of a type it does not know, and the bytes of a
// message after the fields it knows (ErrUnknown): a later version's.
package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

// Message types.
const (
	Hello    = 1
	Snapshot = 2
	Entry    = 3
	Resume   = 4
	Op       = 5
	Ack      = 6
	Ping     = 7
	Config   = 8
)

// Operation kinds, as an op message carries them: the values of
// store.OpKind (the store keeps its log in this encoding, so its kinds
// are the wire's; a test in package store holds them together).
const (
	KindCreate = 1
	KindUpdate = 2
	KindDelete = 3
)

// MaxMsg bounds one message: the largest entry plus headers. A peer that
// announces more is broken or hostile.
const MaxMsg = 16 << 20

// ErrMalformed is the error for a message that does not parse.
var ErrMalformed = errors.New("statesync: malformed message")

// ErrUnknown is the error for a message of a type this version does not
// know. Its length still says where it ends, so a reader skips it and goes
// on: a later version may send one to a node of this version in the middle
// of a rolling upgrade.
//
// Likewise a message may be longer than this version reads: the bytes
// after the fields it knows are fields a later version appended, and are
// skipped. So a later version can extend the protocol without cutting
// replication to a peer of this one, provided an older peer can do without
// what it adds (anything it must understand is sent only once the peer
// said it does, in a field it appends to its hello).
var ErrUnknown = errors.New("statesync: message of an unknown type")

// Msg is one decoded message. Fields are used per type.
type Msg struct {
	Type    uint8
	Epoch   uint64
	Seq     uint64
	Count   uint64
	Version uint64
	Kind    uint8
	ID      []byte // aliases the decoded buffer, like Data
	Data    []byte
	Sums    map[string]uint64 // config: a new map, not aliasing
	Release string            // config: the sender's hapaird version
}

// maxSums bounds a config message's sums (a count is one byte).
const maxSums = 255

// OpSize is the encoded size of an op message, length prefix included.
func OpSize(idLen, dataLen int) int { return 4 + 1 + 8 + 1 + 2 + idLen + 4 + dataLen }

// Append encodes m after dst.
func Append(dst []byte, m *Msg) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, m.Type)
	switch m.Type {
	case Hello:
		dst = binary.BigEndian.AppendUint64(dst, m.Epoch)
		dst = binary.BigEndian.AppendUint64(dst, m.Seq)
	case Snapshot:
		dst = binary.BigEndian.AppendUint64(dst, m.Epoch)
		dst = binary.BigEndian.AppendUint64(dst, m.Seq)
		dst = binary.BigEndian.AppendUint64(dst, m.Count)
	case Entry:
		dst = binary.BigEndian.AppendUint64(dst, m.Version)
		dst = appendIDData(dst, m.ID, m.Data)
	case Resume:
		dst = binary.BigEndian.AppendUint64(dst, m.Epoch)
	case Op:
		dst = binary.BigEndian.AppendUint64(dst, m.Seq)
		dst = append(dst, m.Kind)
		dst = appendIDData(dst, m.ID, m.Data)
	case Ack:
		dst = binary.BigEndian.AppendUint64(dst, m.Seq)
	case Config:
		dst = appendSums(dst, m.Sums)
		if r := m.Release[:min(len(m.Release), 255)]; r != "" {
			dst = append(dst, byte(len(r)))
			dst = append(dst, r...)
		}
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

// Decode parses one message body (after the length). m.ID and m.Data
// alias b; callers that keep them must copy.
func Decode(b []byte, m *Msg) error {
	if len(b) < 1 {
		return ErrMalformed
	}
	m.Type, b = b[0], b[1:]
	u64 := func() (uint64, bool) {
		if len(b) < 8 {
			return 0, false
		}
		v := binary.BigEndian.Uint64(b)
		b = b[8:]
		return v, true
	}
	var ok bool
	switch m.Type {
	case Hello:
		if m.Epoch, ok = u64(); !ok {
			return ErrMalformed
		}
		if m.Seq, ok = u64(); !ok {
			return ErrMalformed
		}
	case Snapshot:
		if m.Epoch, ok = u64(); !ok {
			return ErrMalformed
		}
		if m.Seq, ok = u64(); !ok {
			return ErrMalformed
		}
		if m.Count, ok = u64(); !ok {
			return ErrMalformed
		}
	case Entry:
		if m.Version, ok = u64(); !ok {
			return ErrMalformed
		}
		var err error
		if m.ID, m.Data, b, err = idData(b); err != nil {
			return err
		}
	case Resume:
		if m.Epoch, ok = u64(); !ok {
			return ErrMalformed
		}
	case Op:
		if m.Seq, ok = u64(); !ok {
			return ErrMalformed
		}
		if len(b) < 1 {
			return ErrMalformed
		}
		m.Kind, b = b[0], b[1:]
		if m.Kind < KindCreate || m.Kind > KindDelete {
			return ErrMalformed
		}
		var err error
		if m.ID, m.Data, b, err = idData(b); err != nil {
			return err
		}
	case Ack:
		if m.Seq, ok = u64(); !ok {
			return ErrMalformed
		}
	case Ping:
	case Config:
		var err error
		if m.Sums, b, err = sums(b); err != nil {
			return err
		}
		m.Release = ""
		if len(b) > 0 { // the release, which a sender may leave out
			if len(b) < 1+int(b[0]) {
				return ErrMalformed
			}
			m.Release, b = string(b[1:1+int(b[0])]), b[1+int(b[0]):]
		}
	default:
		return fmt.Errorf("%w: type %d", ErrUnknown, m.Type)
	}
	// What is left are fields of a later version (ErrUnknown says why).
	return nil
}

func idData(b []byte) (id, data, rest []byte, err error) {
	if len(b) < 2 {
		return nil, nil, nil, ErrMalformed
	}
	n := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	if len(b) < n+4 {
		return nil, nil, nil, ErrMalformed
	}
	id = b[:n:n]
	b = b[n:]
	d := int(binary.BigEndian.Uint32(b))
	b = b[4:]
	if len(b) < d {
		return nil, nil, nil, ErrMalformed
	}
	return id, b[:d:d], b[d:], nil
}

// appendSums encodes sums in the order of their ids, so one set of sums
// always encodes alike; ids longer than 255 bytes, and sums past
// maxSums, are left out.
func appendSums(dst []byte, sums map[string]uint64) []byte {
	ids := make([]string, 0, len(sums))
	for id := range sums {
		if len(id) <= 255 {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	ids = ids[:min(len(ids), maxSums)]
	dst = append(dst, byte(len(ids)))
	for _, id := range ids {
		dst = append(dst, byte(len(id)))
		dst = append(dst, id...)
		dst = binary.BigEndian.AppendUint64(dst, sums[id])
	}
	return dst
}

func sums(b []byte) (map[string]uint64, []byte, error) {
	if len(b) < 1 {
		return nil, nil, ErrMalformed
	}
	n := int(b[0])
	b = b[1:]
	out := make(map[string]uint64, n)
	prev := ""
	for i := range n {
		if len(b) < 1 || len(b) < 1+int(b[0])+8 {
			return nil, nil, ErrMalformed
		}
		l := int(b[0])
		id := string(b[1 : 1+l])
		if i > 0 && id <= prev { // in order, each once: as appendSums writes
			return nil, nil, ErrMalformed
		}
		prev = id
		out[id] = binary.BigEndian.Uint64(b[1+l:])
		b = b[1+l+8:]
	}
	return out, b, nil
}

// Read reads one message into m using buf, which it may grow; m.Data
// aliases the returned buffer.
func Read(r *bufio.Reader, buf []byte, m *Msg) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return buf, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > MaxMsg {
		return buf, fmt.Errorf("%w: %d bytes", ErrMalformed, n)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		return buf, err
	}
	return buf, Decode(buf, m)
}

// AwaitFrames waits until at least one whole length-prefixed frame, its
// body minBody to maxBody bytes, is buffered in br, and returns everything
// buffered (buffered true: the caller parses the frames in place and
// discards what it used). A frame larger than br's buffer is read into
// *big instead and returned alone. beforeWait, if set, is called before a
// read that may block, with the frame's whole size once known (0 before).
func AwaitFrames(br *bufio.Reader, big *[]byte, minBody, maxBody int, beforeWait func(n int)) (b []byte, buffered bool, err error) {
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
		return nil, false, fmt.Errorf("%w: %d bytes", ErrMalformed, n-4)
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
