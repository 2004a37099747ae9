package drain

import (
	"sync"
	"sync/atomic"
	"time"
)

// Stats is a snapshot of a [Tracker]'s counters.
type Stats struct {
	InflightRequests int64 // requests between handler start and return
	OpenConnections  int64 // accepted connections not yet closed
	Hijacked         int64 // open connections taken over by the app
}

// Tracker counts connections and requests and knows whether a drain has
// begun. The zero value is not usable; call [NewTracker].
type Tracker struct {
	inflight atomic.Int64
	open     atomic.Int64
	draining atomic.Bool
	// noKeepAlive asks HTTP/1 responses to close their connection without
	// a drain: a generation on standby hands its clients to the new one
	// but keeps its listeners, so it can take traffic back.
	noKeepAlive atomic.Bool

	drainOnce sync.Once
	drainCh   chan struct{}

	mu    sync.Mutex
	conns map[*Conn]struct{}
}

// NewTracker returns an empty tracker.
func NewTracker() *Tracker {
	return &Tracker{drainCh: make(chan struct{}), conns: make(map[*Conn]struct{})}
}

// Stats returns the current counters.
func (t *Tracker) Stats() Stats {
	s := Stats{InflightRequests: t.inflight.Load(), OpenConnections: t.open.Load()}
	t.mu.Lock()
	for c := range t.conns {
		if c.hijacked.Load() {
			s.Hijacked++
		}
	}
	t.mu.Unlock()
	return s
}

// Draining returns a channel closed when the drain begins. Handlers of
// long-lived or hijacked connections select on it to finish their work.
func (t *Tracker) Draining() <-chan struct{} { return t.drainCh }

// IsDraining reports whether the drain has begun.
func (t *Tracker) IsDraining() bool { return t.draining.Load() }

// StartDrain marks the drain as begun. It is idempotent.
func (t *Tracker) StartDrain() {
	t.drainOnce.Do(func() {
		t.draining.Store(true)
		close(t.drainCh)
	})
}

// SetKeepAlivesEnabled controls whether HTTP/1 responses may keep their
// connection open (the default). Disabled, every response carries
// Connection: close, as during a drain, but nothing else changes: the
// listeners stay open and it can be enabled again. Like net/http's method
// of the same name, minus the closing of idle connections, which would
// race with a client sending on them.
func (t *Tracker) SetKeepAlivesEnabled(v bool) { t.noKeepAlive.Store(!v) }

func (t *Tracker) add(c *Conn) {
	t.open.Add(1)
	t.mu.Lock()
	t.conns[c] = struct{}{}
	t.mu.Unlock()
}

func (t *Tracker) remove(c *Conn) {
	t.mu.Lock()
	_, ok := t.conns[c]
	delete(t.conns, c)
	t.mu.Unlock()
	if ok {
		t.open.Add(-1)
	}
}

// closeIdle closes connections idle for at least grace (never hijacked
// ones) and reports how many connections remain open, not counting
// HTTP/2 ones, which http.Server.Shutdown drains with GOAWAY.
func (t *Tracker) closeIdle(now time.Time, grace time.Duration) (open int) {
	var idle []*Conn
	t.mu.Lock()
	for c := range t.conns {
		if c.idleFor(now) >= grace {
			idle = append(idle, c)
		} else if !c.h2.Load() {
			open++
		}
	}
	t.mu.Unlock()
	for _, c := range idle {
		c.Close()
	}
	return open
}

// closeAll force-closes every open connection and returns how many there
// were and how many requests were in flight on them.
func (t *Tracker) closeAll() (conns int, requests int64) {
	t.mu.Lock()
	all := make([]*Conn, 0, len(t.conns))
	for c := range t.conns {
		all = append(all, c)
	}
	t.mu.Unlock()
	requests = t.inflight.Load()
	for _, c := range all {
		c.Close()
	}
	return len(all), requests
}
