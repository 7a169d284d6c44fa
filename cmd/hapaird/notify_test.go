package main

import (
	"testing"
	"time"
)

// TestNotifierNeverWaitsForPID1 holds the first message in a send that
// PID 1 does not take, as a full notify socket does: the loop's calls
// return at once, and what they asked for meanwhile is sent in one
// message once PID 1 reads again, with the latest status only.
func TestNotifierNeverWaitsForPID1(t *testing.T) {
	entered, release := make(chan string), make(chan struct{})
	n := newNotifier(func(msg string) {
		entered <- msg
		<-release
	})
	go n.Run()

	n.Ready("STANDBY")
	if got := <-entered; got != "READY=1\nSTATUS=role STANDBY" {
		t.Fatalf("first message %q", got)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.Status("role ACTIVE: peer lost")
		n.Ping()
		n.Status("role ACTIVE: peer back")
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the loop waited for PID 1")
	}
	release <- struct{}{}
	if got := <-entered; got != "STATUS=role ACTIVE: peer back\nWATCHDOG=1" {
		t.Errorf("second message %q", got)
	}
	release <- struct{}{}
	n.Stopping(21500 * time.Millisecond)
	if got := <-entered; got != "STOPPING=1\nEXTEND_TIMEOUT_USEC=21500000" {
		t.Errorf("stopping message %q", got)
	}
	release <- struct{}{}
}
