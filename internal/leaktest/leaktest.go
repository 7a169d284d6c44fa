// Package leaktest checks that a test ends every goroutine it started, as
// wireguard-go's tests do: an edge whose Run or Close leaves a goroutine
// behind leaks it once per restart in a long-lived daemon.
package leaktest

import (
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// Check notes the goroutines running now and, when t ends, fails it if
// others are still running after a grace period (goroutines take a moment
// to end once told to).
func Check(t testing.TB) {
	t.Helper()
	before := goroutines()
	t.Cleanup(func() {
		var left []string
		for deadline := time.Now().Add(grace); ; time.Sleep(10 * time.Millisecond) {
			left = left[:0]
			for id, stack := range goroutines() {
				if _, ok := before[id]; !ok && !ignored(stack) {
					left = append(left, stack)
				}
			}
			if len(left) == 0 || time.Now().After(deadline) {
				break
			}
		}
		slices.Sort(left)
		for _, s := range left {
			t.Errorf("goroutine left running:\n%s", s)
		}
	})
}

// grace is how long goroutines have to end after the test.
var grace = 5 * time.Second

// goroutines maps each running goroutine's header ("goroutine 12") to its
// stack.
func goroutines() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := map[string]string{}
	for _, g := range strings.Split(string(buf), "\n\n") {
		head, _, _ := strings.Cut(g, " [")
		out[head] = g
	}
	return out
}

// ignored are goroutines that are not the test's to end: the testing
// package's own, and the runtime's.
func ignored(stack string) bool {
	for _, s := range []string{"testing.(*T).Run", "testing.tRunner", "testing.runTests", "runtime.goexit0", "leaktest.goroutines", "os/signal.signal_recv", "created by runtime.gc"} {
		if strings.Contains(stack, s) {
			return true
		}
	}
	return false
}
