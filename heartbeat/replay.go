package heartbeat

// Window is a sliding replay filter over sequence numbers, after
// wireguard-go's replay package: a ring of 64-bit blocks, so a check is a
// few word operations and reordering within the window is tolerated (the
// UDP path may reorder). Its zero value is ready; sequence 0 is never valid.
type Window struct {
	last uint64
	ring [ringBlocks]uint64
}

const (
	ringBlocks = 16
	// WindowSize is how far behind the newest accepted sequence a frame may
	// arrive and still be accepted once.
	WindowSize = (ringBlocks - 1) * 64
)

// Accept reports whether seq is new and inside the window, and records it.
func (w *Window) Accept(seq uint64) bool {
	if seq == 0 {
		return false
	}
	block := seq >> 6
	if seq > w.last {
		cur := w.last >> 6
		diff := block - cur
		if diff > ringBlocks {
			diff = ringBlocks
		}
		for i := cur + 1; i <= cur+diff; i++ {
			w.ring[i%ringBlocks] = 0
		}
		w.last = seq
	} else if w.last-seq > WindowSize {
		return false
	}
	i := block % ringBlocks
	bit := uint64(1) << (seq & 63)
	old := w.ring[i]
	w.ring[i] = old | bit
	return old&bit == 0
}

// Reset forgets everything, for a new boot generation of the sender.
func (w *Window) Reset() { *w = Window{} }
