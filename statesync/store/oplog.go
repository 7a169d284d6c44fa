package store

import "encoding/binary"

// opLog keeps the most recent operations as encoded op messages, back to
// back in a ring of bytes: bounded by bytes rather than by count, so large
// sessions cannot make it pin gigabytes of old data, and a leader sends it
// to the standby as it is, without encoding anything. Positions are
// absolute byte offsets into the stream of all operations logged.
type opLog struct {
	ring       []byte
	start, end int64  // the oldest position kept, and the position after the newest
	first      uint64 // the sequence of the op at start (of the next op when empty)
}

// reset empties the log after seq (after a snapshot, or on a follower,
// which keeps no log).
func (l *opLog) reset(seq uint64) {
	l.start, l.first = l.end, seq+1
}

// copyAt copies the bytes at pos into b, across the ring's end if need be.
func (l *opLog) copyAt(b []byte, pos int64) {
	i := int(pos % int64(len(l.ring)))
	n := copy(b, l.ring[i:])
	copy(b[n:], l.ring)
}

// sizeAt is the encoded size of the op at pos, length prefix included.
func (l *opLog) sizeAt(pos int64) int64 {
	var hdr [4]byte
	l.copyAt(hdr[:], pos)
	return 4 + int64(binary.BigEndian.Uint32(hdr[:]))
}

// append logs one encoded op, the next in sequence, dropping the oldest
// ones to make room. The ring is at least twice the largest op.
func (l *opLog) append(frame []byte) {
	n := int64(len(frame))
	for l.end+n-l.start > int64(len(l.ring)) {
		l.start += l.sizeAt(l.start)
		l.first++
	}
	i := int(l.end % int64(len(l.ring)))
	k := copy(l.ring[i:], frame)
	copy(l.ring, frame[k:])
	l.end += n
}

// find returns the position of the op with sequence seq, or of the next
// op to come when seq is the next; ok is false when that op is no longer
// kept.
func (l *opLog) find(seq uint64) (pos int64, ok bool) {
	if seq < l.first {
		return 0, false
	}
	pos = l.start
	for s := l.first; s < seq && pos < l.end; s++ {
		pos += l.sizeAt(pos)
	}
	return pos, true
}

// read appends to dst the logged ops from pos, whole ones: as few as make
// max bytes or more, or all there are. It returns the position after
// them; ok is false when pos was overwritten. pos is where an op starts
// (find's, or the end of a read): a reader that stopped inside an op and
// then found the rest overwritten could follow it only with a snapshot in
// the middle of a message, which the standby would take for the rest of
// the op's data and apply. max or more, not at most max: a leader's
// buffered writer sends a chunk of its own size or more straight to the
// socket, where a smaller one is copied into the buffer first (measured:
// writes/s end to end as before this way, fewer in that).
func (l *opLog) read(dst []byte, pos int64, max int) ([]byte, int64, bool) {
	if pos < l.start || pos > l.end {
		return dst, pos, false
	}
	end := l.end
	if end-pos > int64(max) {
		// Walked only when a reader is behind by more than max: one
		// that keeps up reads up to the end, where an op ends. By
		// index into the ring, without a division per op: an op is
		// shorter than the ring.
		end = pos
		for i := int(pos % int64(len(l.ring))); end-pos < int64(max); {
			var n int64
			if i+4 <= len(l.ring) {
				n = 4 + int64(binary.BigEndian.Uint32(l.ring[i:]))
			} else {
				n = l.sizeAt(end)
			}
			end += n
			if i += int(n); i >= len(l.ring) {
				i -= len(l.ring)
			}
		}
	}
	n := int(end - pos)
	k := len(dst)
	dst = append(dst, make([]byte, n)...)
	l.copyAt(dst[k:], pos)
	return dst, pos + int64(n), true
}
