package leaktest

import (
	"testing"
	"time"
)

// The check must see a goroutine a test leaves behind, and nothing when
// the test ends what it started.
func TestCheckSeesALeak(t *testing.T) {
	stop := make(chan struct{})
	ft := &fakeT{TB: t}
	Check(ft)
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-stop
	}()
	defer func(g time.Duration) { grace = g }(grace)
	grace = 100 * time.Millisecond
	ft.cleanup()
	if len(ft.errs) != 1 {
		t.Errorf("a leaked goroutine: %d errors, want 1", len(ft.errs))
	}
	close(stop)
	<-done

	ft = &fakeT{TB: t}
	Check(ft)
	ft.cleanup()
	if len(ft.errs) != 0 {
		t.Errorf("nothing leaked: %d errors: %v", len(ft.errs), ft.errs)
	}
}

type fakeT struct {
	testing.TB
	fns  []func()
	errs []string
}

func (f *fakeT) Helper()                           {}
func (f *fakeT) Cleanup(fn func())                 { f.fns = append(f.fns, fn) }
func (f *fakeT) Errorf(format string, args ...any) { f.errs = append(f.errs, format) }
func (f *fakeT) cleanup() {
	for _, fn := range f.fns {
		fn()
	}
}
