package logq

import (
	"bufio"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

// TestWriteNeverWaitsForTheReader writes to a pipe nobody reads, as a
// stalled journal is: every Write returns at once, the lines beyond the
// limit are dropped and counted, and once the reader reads, the queued
// lines come out in order, followed by the report of how many were lost.
func TestWriteNeverWaitsForTheReader(t *testing.T) {
	r, pw := io.Pipe()
	w := New(pw, 100)
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		w.Run(func(n uint64) { fmt.Fprintf(w, "dropped %d\n", n) })
	}()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 30 {
			fmt.Fprintf(w, "line %03d\n", i)
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Write waited for the reader")
	}
	// 9 bytes a line: what the writer took before it blocked in the
	// pipe, then 11 lines queued; the rest dropped.
	if d := w.Dropped(); d == 0 || d > 30-11 {
		t.Errorf("dropped %d of 30 lines, want some, at most 19", d)
	}
	sc := bufio.NewScanner(r)
	var got []string
	for sc.Scan() {
		got = append(got, sc.Text())
		if strings.HasPrefix(sc.Text(), "dropped") {
			break
		}
	}
	// In order, without repeats; which lines were dropped depends on
	// when Run took its first batch (a line can be dropped while the
	// queue is full and a later one taken once Run has emptied it).
	written := len(got) - 1
	prev := -1
	for _, l := range got[:written] {
		var n int
		if _, err := fmt.Sscanf(l, "line %d", &n); err != nil || n <= prev {
			t.Fatalf("%q out of order in %q", l, got)
		}
		prev = n
	}
	if last := got[len(got)-1]; last != fmt.Sprintf("dropped %d", 30-written) {
		t.Errorf("report %q after %d lines", last, written)
	}
	// Closing writes what is queued, then Run ends.
	fmt.Fprintf(w, "last\n")
	go io.Copy(io.Discard, r)
	if !w.Close(5 * time.Second) {
		t.Fatal("Close timed out with a reader")
	}
	<-ran
	if d := w.Dropped(); d != uint64(30-written) {
		t.Errorf("dropped %d after the report, want %d", d, 30-written)
	}
}

// TestCloseDoesNotWaitForAStalledReader: a daemon that stops while its
// journal does not read still exits.
func TestCloseDoesNotWaitForAStalledReader(t *testing.T) {
	_, pw := io.Pipe()
	w := New(pw, 1<<10)
	go w.Run(nil)
	fmt.Fprintln(w, "stuck in the pipe")
	start := time.Now()
	if w.Close(50 * time.Millisecond) {
		t.Fatal("Close says the line was written; nothing read it")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Close took %v", d)
	}
	pw.CloseWithError(io.ErrClosedPipe) // ends Run's write
	fmt.Fprintln(w, "after close")
	if w.Dropped() != 1 {
		t.Errorf("a line written after Close: dropped %d, want 1", w.Dropped())
	}
}

// heldWriter hands each Write's bytes to the test and holds the Write
// until released, then checks that nobody changed them meanwhile.
type heldWriter struct {
	entered chan string
	release chan struct{}
	changed chan string
}

func (h *heldWriter) Write(p []byte) (int, error) {
	before := string(p)
	h.entered <- before
	<-h.release
	if string(p) != before {
		h.changed <- fmt.Sprintf("%q became %q", before, p)
	}
	return len(p), nil
}

// TestQueuedLinesDoNotOverwriteTheBatchBeingWritten logs while a batch is
// in the journal's write, after the queue has drained in between, which
// is how a daemon logs. Each line written must be the line queued.
func TestQueuedLinesDoNotOverwriteTheBatchBeingWritten(t *testing.T) {
	h := &heldWriter{entered: make(chan string), release: make(chan struct{}), changed: make(chan string, 1000)}
	w := New(h, 1<<10)
	// Run may go idle twice in a row (a wake-up left by a Write it
	// had already served): a token, not a rendezvous.
	idle := make(chan struct{}, 1)
	w.idle = func() {
		select {
		case idle <- struct{}{}:
		default:
		}
	}
	go w.Run(nil)
	<-idle
	var got strings.Builder
	for i := range 500 {
		fmt.Fprintf(w, "a%03d\n", i)
		got.WriteString(<-h.entered)
		fmt.Fprintf(w, "b%03d\n", i) // while a's batch is being written
		h.release <- struct{}{}
		got.WriteString(<-h.entered)
		select { // an old token: Run is in the Write now
		case <-idle:
		default:
		}
		h.release <- struct{}{}
		<-idle // empty after b's batch: the buffers have swapped back
	}
	select {
	case c := <-h.changed:
		t.Fatalf("a batch changed while it was written: %s", c)
	default:
	}
	var want strings.Builder
	for i := range 500 {
		fmt.Fprintf(&want, "a%03d\nb%03d\n", i, i)
	}
	if got.String() != want.String() {
		t.Errorf("lines written out of order or lost")
	}
	w.Close(time.Second)
}
