package labnet

import (
	"os"
	"testing"
)

// NewT builds a pair for a test and removes it when the test ends, failed
// or not. It skips only where namespaces really cannot be made: not root.
func NewT(t testing.TB, opt Options) *Pair {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("labnet: network namespaces need root")
	}
	p, err := New(opt)
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
