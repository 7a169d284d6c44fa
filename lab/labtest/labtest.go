// Package labtest gives tests a lab world that is removed when the test
// ends. It is apart from package lab so that the testing package stays out
// of the binaries that use the lab (hapairctl lab, the bench).
package labtest

import (
	"os"
	"testing"
	"time"

	"github.com/hapair/hapair/lab"
)

// NewPair builds a pair for a test and removes it when the test ends,
// failed or not. It skips only where namespaces really cannot be made: not
// root.
func NewPair(t testing.TB, opt lab.Options) *lab.Pair {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("lab: network namespaces need root")
	}
	// A missing tool fails the test, with what to install: skipping would
	// hide what the suite did not run.
	if err := lab.CheckTools(); err != nil {
		t.Fatal(err)
	}
	p, err := lab.New(opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	})
	return p
}

// PollUntil asks cond every 20 ms until it holds or within passes, and
// says whether it held: a wait for what the test cannot be told of.
func PollUntil(within time.Duration, cond func() bool) bool {
	for end := time.Now().Add(within); ; time.Sleep(20 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(end) {
			return false
		}
	}
}
