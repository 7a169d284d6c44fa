package repl

import (
	"sync"
	"sync/atomic"
	"time"
)

// acks is the highest sequence the attached standby acknowledged in this
// epoch: read without a lock on every write (backpressure, sync mode),
// waited for by sync writers.
type acks struct {
	v   atomic.Uint64
	mu  sync.Mutex
	sig chan struct{} // closed and replaced on every change
}

func (a *acks) load() uint64 { return a.v.Load() }

func (a *acks) set(seq uint64) {
	a.mu.Lock()
	a.v.Store(seq)
	close(a.sig)
	a.sig = make(chan struct{})
	a.mu.Unlock()
}

// wait waits until seq is acknowledged, until timeout, or until stop or
// gone closes (nil: never).
func (a *acks) wait(seq uint64, timeout time.Duration, stop, gone <-chan struct{}) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		a.mu.Lock()
		acked, sig := a.v.Load(), a.sig
		a.mu.Unlock()
		if acked >= seq {
			return true
		}
		select {
		case <-sig:
		case <-deadline.C:
			return false
		case <-stop:
			return a.v.Load() >= seq
		case <-gone:
			return a.v.Load() >= seq
		}
	}
}
