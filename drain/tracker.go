package drain

import (
	"cmp"
	"slices"
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
	hijacked atomic.Int64 // open connections taken over by the app
	// accepting counts Accept calls under way on its Listeners. A
	// connection the kernel has handed to an accept is counted here until
	// it is tracked (open): a drain that began just then, its listeners
	// closed, must not end with it uncounted and exit under it.
	accepting atomic.Int64
	draining  atomic.Bool
	// cut is set when the drain's deadline cuts what is left (closeAll):
	// a request that ends then without an answer was cut, not given up
	// by its client.
	cut atomic.Bool
	// noKeepAlive asks HTTP/1 responses to close their connection, and
	// HTTP/2 connections to go (a first GOAWAY), without a drain: a
	// generation on standby hands its clients to the new one but keeps
	// its listeners, so it can take traffic back.
	noKeepAlive atomic.Bool
	// first is the wall-clock time of the first connection, in Unix
	// nanoseconds (0: none yet): an upgrade's report says when the new
	// generation took its first connection.
	first atomic.Int64

	drainOnce sync.Once
	drainCh   chan struct{}
	// wake tells a drain's wait that a connection closed or a request
	// ended, so that it sees the count reach zero at once rather than at
	// its next poll. Buffered (1): a wake-up is never lost, never blocks.
	wake  chan struct{}
	epoch time.Time // the clock of connections' idle times starts here

	mu    sync.Mutex
	conns map[*Conn]struct{}
	// handOver are told when keep-alives are disabled: a [Server] sends
	// its HTTP/2 connections the first GOAWAY then.
	handOver []func()
}

// NewTracker returns an empty tracker.
func NewTracker() *Tracker {
	return &Tracker{drainCh: make(chan struct{}), wake: make(chan struct{}, 1), conns: make(map[*Conn]struct{}), epoch: time.Now()}
}

// clock returns the time since the tracker was made, from the monotonic
// clock: a wall-clock step cannot make a connection look idle for long.
func (t *Tracker) clock() int64 { return int64(time.Since(t.epoch)) }

// Stats returns the current counters: three atomic loads, not a walk
// of the connections, so that a scrape or the supervisor's count of a
// worker with 10,000 connections neither costs more nor holds up their
// accepts and closes. During a drain, InflightRequests also counts the
// requests begun on a connection (a byte received) that no handler runs
// yet, such as a header arriving slowly: the drain waits for them and
// cuts them at its deadline as requests, and an operator watching it must
// see them (a new user's trial: "0 request(s) in flight" all through a
// drain that then reported "1 request(s) cut"). That walk costs a drain
// no more than its own poll of the idle connections, every 10 ms.
func (t *Tracker) Stats() Stats {
	s := Stats{InflightRequests: t.inflight.Load(), OpenConnections: t.open.Load(), Hijacked: t.hijacked.Load()}
	if t.draining.Load() {
		s.InflightRequests += t.receiving()
	}
	return s
}

// receiving counts the connections on which a request has begun that no
// handler runs yet (see Conn.receiving).
func (t *Tracker) receiving() (n int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for c := range t.conns {
		if c.receiving() {
			n++
		}
	}
	return n
}

// FirstConnection returns when the tracker saw its first connection
// (wall clock); the zero time before any.
func (t *Tracker) FirstConnection() time.Time {
	if ns := t.first.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
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

// RequestStarted counts a request in flight for a server that is not a
// [Server] (a gRPC server's interceptor, a raw TCP protocol):
// Stats.InflightRequests and launcher_inflight_requests include it until
// the matching RequestDone. Both are one atomic add.
func (t *Tracker) RequestStarted() { t.inflight.Add(1) }

// RequestDone ends a request counted by RequestStarted; the last one
// during a drain wakes the drain's wait at once.
func (t *Tracker) RequestDone() { t.requestDone() }

// SetKeepAlivesEnabled controls whether clients may keep using their
// connections (the default): a generation on standby hands its clients
// over to the new one with false. Disabled, every HTTP/1 response
// carries Connection: close, as during a drain, and every HTTP/2
// connection of a [Server] gets the drain's first GOAWAY, which refuses
// no stream but tells the client to open a new connection for its next
// requests (RFC 9113, section 6.8). Nothing else changes: the listeners
// stay open and it can be enabled again (an HTTP/2 client that got the
// GOAWAY stays on its new connection). Like net/http's method of the same
// name, minus the closing of idle connections, which would race with a
// client sending on them.
func (t *Tracker) SetKeepAlivesEnabled(v bool) {
	if was := t.noKeepAlive.Swap(!v); v || was {
		return
	}
	t.mu.Lock()
	fs := slices.Clone(t.handOver)
	t.mu.Unlock()
	for _, f := range fs {
		f()
	}
}

// KeepAlivesEnabled reports whether connections may stay open for more
// requests: false once SetKeepAlivesEnabled(false) (the launcher's
// worker does so while its generation stands by, or was rolled back
// from: its clients are to reconnect, to the generation that serves). A
// server of a keep-alive protocol of its own ends a connection at a
// request's end while it is false, or IsDraining: the HTTP server's
// "Connection: close", which the launcher cannot add to a protocol it
// does not know; a busy connection is never idle for the drain to close.
func (t *Tracker) KeepAlivesEnabled() bool { return !t.noKeepAlive.Load() }

// handingOver reports whether keep-alives are disabled.
func (t *Tracker) handingOver() bool { return t.noKeepAlive.Load() }

// onHandOver has f called whenever keep-alives are disabled.
func (t *Tracker) onHandOver(f func()) {
	t.mu.Lock()
	t.handOver = append(t.handOver, f)
	t.mu.Unlock()
}

func (t *Tracker) add(c *Conn) {
	t.open.Add(1)
	if t.first.Load() == 0 {
		t.first.CompareAndSwap(0, time.Now().UnixNano())
	}
	t.mu.Lock()
	t.conns[c] = struct{}{}
	t.mu.Unlock()
}

func (t *Tracker) remove(c *Conn) {
	t.mu.Lock()
	_, ok := t.conns[c]
	delete(t.conns, c)
	if ok && c.hijacked.Load() {
		t.hijacked.Add(-1)
	}
	t.mu.Unlock()
	if ok {
		t.open.Add(-1)
		t.poke()
	}
}

// hijack marks c taken over by the app. Under mu, as remove reads the
// mark: a connection cut while it was being hijacked is counted out once
// or not at all.
func (t *Tracker) hijack(c *Conn) {
	t.mu.Lock()
	_, tracked := t.conns[c]
	if !c.hijacked.Swap(true) && tracked {
		t.hijacked.Add(1)
	}
	t.mu.Unlock()
}

// requestDone counts a request out of the handler.
// acceptDone ends an Accept call of a Listener (its connection, if any,
// tracked already).
func (t *Tracker) acceptDone() {
	if t.accepting.Add(-1) == 0 {
		t.poke()
	}
}

func (t *Tracker) requestDone() {
	if t.inflight.Add(-1) == 0 {
		t.poke()
	}
}

// poke wakes a drain waiting for the counts, if one is.
func (t *Tracker) poke() {
	if !t.draining.Load() {
		return
	}
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// idleClosesPerPoll bounds how many idle connections a drain closes per
// poll (5,000 a second): thousands of keep-alive connections idle when a
// drain starts are closed over a second or so rather than in one sweep,
// so that the server keeps up with the requests arriving meanwhile and
// their clients do not all reconnect to the new generation at once.
const idleClosesPerPoll = 50

// closeIdle closes connections that have waited for a request, with
// nothing received, for at least grace (never hijacked or HTTP/2 ones),
// the longest waiting first and at most limit of them, and reports how many
// connections were open before (those it closes are counted until they
// are gone), not counting HTTP/2 ones, which http.Server.Shutdown drains
// with GOAWAY.
func (t *Tracker) closeIdle(grace time.Duration, limit int) (open int) {
	type candidate struct {
		c     *Conn
		state int64
		since int64
	}
	var idle []candidate
	now := t.clock()
	t.mu.Lock()
	for c := range t.conns {
		if c.h2.Load() {
			continue
		}
		open++
		w := c.state.Load()
		if since, ok := c.idleSince(w); ok && now-since >= int64(grace) {
			idle = append(idle, candidate{c, w, since})
		}
	}
	t.mu.Unlock()
	if len(idle) > limit {
		slices.SortFunc(idle, func(a, b candidate) int { return cmp.Compare(a.since, b.since) })
		idle = idle[:limit]
	}
	for _, k := range idle {
		k.c.closeIfQuiet(k.state)
	}
	return open
}

// closeAll force-closes every open connection and returns how many it cut
// (not counting those already shut down as idle, whose close is under
// way) and how many requests were in flight on them: in a handler, or
// begun on a connection (a byte received) and not yet in one.
func (t *Tracker) closeAll() (cut int, requests int64) {
	t.cut.Store(true)
	t.mu.Lock()
	all := make([]*Conn, 0, len(t.conns))
	for c := range t.conns {
		all = append(all, c)
		switch {
		case c.shut():
			continue
		case c.receiving():
			requests++
		}
		cut++
	}
	t.mu.Unlock()
	requests += t.inflight.Load()
	for _, c := range all {
		c.Close()
	}
	return cut, requests
}
