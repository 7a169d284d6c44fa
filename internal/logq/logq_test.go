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
	want := len(got) - 1
	for i := range want {
		if got[i] != fmt.Sprintf("line %03d", i) {
			t.Fatalf("line %d is %q: %q", i, got[i], got)
		}
	}
	if last := got[len(got)-1]; last != fmt.Sprintf("dropped %d", 30-want) {
		t.Errorf("report %q after %d lines", last, want)
	}
	// Closing writes what is queued, then Run ends.
	fmt.Fprintf(w, "last\n")
	go io.Copy(io.Discard, r)
	if !w.Close(5 * time.Second) {
		t.Fatal("Close timed out with a reader")
	}
	<-ran
	if d := w.Dropped(); d != uint64(30-want) {
		t.Errorf("dropped %d after the report, want %d", d, 30-want)
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
