package agent

import "sync"

// queue runs work off the agent loop, one item at a time in the order it
// was put. The loop must never wait on the session store (a snapshot load
// or a listing of every session holds its lock for long) or on an
// application, yet what the store and the applications are told must keep
// the order of the transitions that caused it.
type queue struct {
	mu    sync.Mutex
	items []func()
	wake  chan struct{}
}

func newQueue() *queue { return &queue{wake: make(chan struct{}, 1)} }

// put adds f and returns at once.
func (q *queue) put(f func()) {
	q.mu.Lock()
	q.items = append(q.items, f)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// run works until stop is closed, then finishes what was put before.
func (q *queue) run(stop <-chan struct{}) {
	for {
		select {
		case <-q.wake:
		case <-stop:
			q.drain()
			return
		}
		q.drain()
	}
}

func (q *queue) drain() {
	for {
		q.mu.Lock()
		items := q.items
		q.items = nil
		q.mu.Unlock()
		if len(items) == 0 {
			return
		}
		for _, f := range items {
			f()
		}
	}
}
