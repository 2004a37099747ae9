package drain

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Listener wraps a net.Listener so that every accepted connection is
// tracked by a [Tracker]. A plain TCP server uses it directly; [Server]
// uses it under net/http.
type Listener struct {
	net.Listener
	t         *Tracker
	closeOnce sync.Once
	closeErr  error
}

// NewListener wraps ln; connections it accepts are counted by t.
func NewListener(ln net.Listener, t *Tracker) *Listener { return &Listener{Listener: ln, t: t} }

// Accept waits for and returns the next connection, tracked. While it
// waits, a drain does not end: a connection the kernel hands it as the
// listener closes is tracked before the call returns (after the close,
// the call returns at once, with net.ErrClosed).
func (l *Listener) Accept() (net.Conn, error) {
	l.t.accepting.Add(1)
	defer l.t.acceptDone()
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &Conn{Conn: c, t: l.t}
	l.t.add(tc)
	return tc, nil
}

// Close closes the listener. A second Close returns nil: a drain and a
// handover may both close it.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() { l.closeErr = l.Listener.Close() })
	return l.closeErr
}

// Drain closes the listener, marks the tracker draining, closes each
// connection once it has been idle for grace, and waits until none is
// left. When ctx ends first, the remaining connections are closed and the
// error says how many were cut.
func (l *Listener) Drain(ctx context.Context, grace time.Duration) error {
	l.t.StartDrain()
	l.Close()
	return waitConns(ctx, l.t, grace, nil)
}

// pollInterval is how often a drain looks for connections that have been
// idle for the grace. Unlike net/http's Shutdown, which polls for the end
// too (backing off to 500 ms), the drain's end is not polled for: the
// tracker wakes it when a connection closes or a request ends, so it
// returns as soon as the counts reach zero.
const pollInterval = 10 * time.Millisecond

// ErrCut is wrapped by a drain that hit its deadline and closed connections
// that were still in use; errors.As with a *CutError gives the counts.
var ErrCut = errors.New("drain deadline: connections cut")

// CutError is the error of a drain cut at its deadline.
type CutError struct {
	Connections int   // connections closed
	Requests    int64 // requests in flight on them, in a handler or still arriving
	Err         error // the context's error
}

func (e *CutError) Error() string {
	return fmt.Sprintf("%v: %d connections, %d requests in flight: %v", ErrCut, e.Connections, e.Requests, e.Err)
}

// Is makes errors.Is(err, ErrCut) true.
func (e *CutError) Is(target error) bool { return target == ErrCut }

// Unwrap returns the context's error.
func (e *CutError) Unwrap() error { return e.Err }

// waitConns closes idle connections as they pass grace and returns when
// none is open and no Accept is under way on a Listener (the caller has
// closed them: see Listener.Accept), and done, if given, reports true;
// without done, no request may be in flight either. (A Server passes
// done: its HTTP/2 streams are http.Server.Shutdown's to wait for, after
// its final GOAWAY; an HTTP/1 request in flight holds its connection
// open.)
// It looks for idle connections every pollInterval; between two looks, a
// wake-up from the tracker checks only the counts, so that thousands of
// connections closing cost no walk of them each.
func waitConns(ctx context.Context, t *Tracker, grace time.Duration, done func() bool) error {
	return waitConnsEvery(ctx, t, grace, done, pollInterval)
}

// waitConnsEvery is waitConns looking for idle connections every poll.
func waitConnsEvery(ctx context.Context, t *Tracker, grace time.Duration, done func() bool, poll time.Duration) error {
	tick := time.NewTicker(poll)
	defer tick.Stop()
	over := func(open int64) bool {
		if open != 0 || t.accepting.Load() != 0 {
			return false
		}
		if done != nil {
			return done()
		}
		return t.inflight.Load() == 0
	}
	for {
		if over(int64(t.closeIdle(grace, idleClosesPerPoll))) {
			return nil
		}
	wait:
		for {
			select {
			case <-ctx.Done():
				conns, reqs := t.closeAll()
				return &CutError{Connections: conns, Requests: reqs, Err: ctx.Err()}
			case <-tick.C:
				break wait
			case <-t.wake:
				// HTTP/2 connections count here, unlike in closeIdle: with
				// one open, the next look decides.
				if over(t.open.Load()) {
					return nil
				}
			}
		}
	}
}
