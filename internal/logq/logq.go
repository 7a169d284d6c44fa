// Package logq puts a queue between the daemon's logger and its stderr, so
// that a log line never waits for the journal.
//
// Under systemd, stderr is a stream to journald. While journald is stalled
// (a busy disk, a vacuum, journald restarting) the stream's buffer fills
// and a write to it blocks until journald reads again. A logger writing
// there directly blocked the agent's loop on its next line: a standby whose
// active was lost logged its transition and never took the VIP, and an
// active stopped renewing its core's lease and was fenced. Here a line is
// queued and written by a goroutine of its own; when the queue is full the
// newest lines are dropped and counted (the first lines of an incident are
// the ones worth keeping, and status shows the present), and once the
// journal has read what was queued the count is reported.
package logq

import (
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// Writer is an io.Writer whose Write never blocks. Each Write is one line
// (log/slog's handlers write a record in one call), queued whole or
// dropped whole.
type Writer struct {
	dst   io.Writer
	limit int

	mu      sync.Mutex
	queued  []byte
	closed  bool
	pending uint64 // drops not yet reported

	wake    chan struct{}
	done    chan struct{}
	idle    func() // a test's hook: Run has written all and waits
	dropped atomic.Uint64
}

// New returns a Writer that queues up to limit bytes for dst. Run writes
// them.
func New(dst io.Writer, limit int) *Writer {
	return &Writer{dst: dst, limit: limit, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// Write queues p, or drops it if the queue would exceed its limit or the
// Writer is closed. It always reports success: a logger has nothing better
// to do with an error than to drop the line.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	if w.closed || len(w.queued)+len(p) > w.limit {
		w.pending++
		w.mu.Unlock()
		w.dropped.Add(1)
		return len(p), nil
	}
	w.queued = append(w.queued, p...)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

// Dropped counts the lines dropped so far.
func (w *Writer) Dropped() uint64 { return w.dropped.Load() }

// Run writes what is queued to dst until Close, in the order it was
// queued. When it has written everything queued after some lines were
// dropped, it calls report with how many (report may write to w: it is
// queued like any line).
func (w *Writer) Run(report func(dropped uint64)) {
	defer close(w.done)
	// Two buffers change hands: Write appends to queued while this
	// writes batch, then they swap. spare is the one not in use, and it
	// is never the buffer Write appends to.
	var spare []byte
	for {
		w.mu.Lock()
		batch, closed := w.queued, w.closed
		w.queued, spare = spare[:0], nil
		var drops uint64
		if len(batch) == 0 {
			drops, w.pending = w.pending, 0
		}
		w.mu.Unlock()
		if len(batch) > 0 {
			// A failed write (stderr closed) loses the batch, as
			// a direct write would have: nothing better to do.
			w.dst.Write(batch)
			spare = batch
			if cap(spare) > 64<<10 {
				// Not kept after a burst: the limit's worth
				// of memory, twice, for good.
				spare = nil
			}
			continue
		}
		// Nothing queued: the empty buffer is the spare again. (Kept
		// as spare while queued had become the spare too, the next
		// batch would have been the buffer Write appends to.)
		spare = batch
		if drops > 0 && report != nil && !closed {
			report(drops)
			continue
		}
		if closed {
			return
		}
		if w.idle != nil {
			w.idle()
		}
		<-w.wake
	}
}

// Close stops queueing and waits up to within for what is queued to be
// written; it says whether it was. A process about to exit calls it so
// that its last lines reach the journal, and does not wait for a journal
// that does not read.
func (w *Writer) Close(within time.Duration) bool {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	t := time.NewTimer(within)
	defer t.Stop()
	select {
	case <-w.done:
		return true
	case <-t.C:
		return false
	}
}
