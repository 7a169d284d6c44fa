package statesync

import (
	"sync"
	"time"
)

// Event is one message on the application event stream.
type Event struct {
	Type string    `json:"type"` // role, failover, sessions-dropped, sync-degraded, sync-restored
	At   time.Time `json:"at"`

	Role     string `json:"role,omitempty"`
	Previous string `json:"previous,omitempty"`
	Reason   string `json:"reason,omitempty"`
	Node     string `json:"node,omitempty"`

	// Failover: the old active, and whether this node had everything it
	// had advertised as written.
	PreviousActive string          `json:"previous_active,omitempty"`
	Sync           string          `json:"sync,omitempty"` // complete or incomplete
	Missing        uint64          `json:"missing,omitempty"`
	Sessions       []SessionReport `json:"sessions,omitempty"`

	IDs []string `json:"ids,omitempty"` // sessions-dropped
}

// SessionReport is one session's state in a failover event.
type SessionReport struct {
	ID    string  `json:"id"`
	AgeMs float64 `json:"age_ms"` // since its last update reached this node
	Whole bool    `json:"whole"`  // every update arrived in one piece (operations are atomic)
}

// Hub fans events out to subscribers. A subscriber that does not keep up
// is cut off (its channel closed) rather than allowed to stall the daemon.
type Hub struct {
	mu           sync.Mutex
	subs         map[chan Event]struct{}
	lastFailover *Event
	cutOff       uint64
}

// NewHub makes an empty hub.
func NewHub() *Hub { return &Hub{subs: map[chan Event]struct{}{}} }

// Subscribe returns a channel of events; an application that connects
// after a failover gets that failover event first.
func (h *Hub) Subscribe() chan Event {
	ch := make(chan Event, 256)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.lastFailover != nil {
		ch <- *h.lastFailover
	}
	h.subs[ch] = struct{}{}
	return ch
}

// Unsubscribe ends a subscription.
func (h *Hub) Unsubscribe(ch chan Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[ch]; ok {
		delete(h.subs, ch)
		close(ch)
	}
}

// Publish sends ev to every subscriber without blocking.
func (h *Hub) Publish(ev Event) {
	if ev.At.IsZero() {
		ev.At = time.Now()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if ev.Type == "failover" {
		e := ev
		h.lastFailover = &e
	}
	for ch := range h.subs {
		select {
		case ch <- ev:
		default:
			delete(h.subs, ch)
			close(ch)
			h.cutOff++
		}
	}
}

// CutOff counts subscribers dropped for not reading.
func (h *Hub) CutOff() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cutOff
}

// Failover builds the failover notification for a node that just became
// active by failover: mine is the position it held when it took over,
// peerWritten the last write position the old active advertised in its
// heartbeats.
func (s *Service) Failover(reason, previousActive string, mine, peerWritten uint64, now time.Time) Event {
	ev := Event{Type: "failover", Reason: reason, PreviousActive: previousActive, Sync: "complete", At: time.Now()}
	if peerWritten > mine {
		ev.Sync, ev.Missing = "incomplete", peerWritten-mine
	}
	for _, v := range s.store.List() {
		ev.Sessions = append(ev.Sessions, SessionReport{ID: v.ID, AgeMs: float64(v.Age(now).Microseconds()) / 1000, Whole: true})
	}
	return ev
}
