package drain

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
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

// Accept waits for and returns the next connection, tracked.
func (l *Listener) Accept() (net.Conn, error) {
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

// Conn is a tracked connection. For a plain TCP server every connection
// counts as busy unless the server marks it idle with [Conn.SetIdle].
type Conn struct {
	net.Conn
	t         *Tracker
	idleSince atomic.Int64 // unix nanos; 0 while busy
	hijacked  atomic.Bool
	h2        atomic.Bool // HTTP/2: drained by GOAWAY, never idle-closed
	closeOnce sync.Once
}

// SetIdle marks the connection idle (true) or busy (false). A drain closes
// a connection only after it has stayed idle for the grace period.
func (c *Conn) SetIdle(idle bool) {
	if idle {
		c.setIdle(time.Now())
	} else {
		c.idleSince.Store(0)
	}
}

func (c *Conn) setIdle(now time.Time) { c.idleSince.Store(now.UnixNano()) }

func (c *Conn) idleFor(now time.Time) time.Duration {
	since := c.idleSince.Load()
	if since == 0 || c.hijacked.Load() || c.h2.Load() {
		return -1
	}
	return now.Sub(time.Unix(0, since))
}

// Close closes the connection and stops tracking it.
func (c *Conn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() { c.t.remove(c) })
	return err
}

// ReadFrom keeps the sendfile/splice fast path of *net.TCPConn.
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
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

// pollInterval is how often a drain looks for idle connections; like
// net/http's Shutdown it polls rather than waking on every state change.
const pollInterval = 10 * time.Millisecond

// ErrCut is wrapped by a drain that hit its deadline and closed connections
// that were still in use; errors.As with a *CutError gives the counts.
var ErrCut = errors.New("drain deadline: connections cut")

// CutError is the error of a drain cut at its deadline.
type CutError struct {
	Connections int   // connections closed
	Requests    int64 // requests in flight on them
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
// none is open (and done, if given, reports true).
func waitConns(ctx context.Context, t *Tracker, grace time.Duration, done func() bool) error {
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		open := t.closeIdle(time.Now(), grace)
		if open == 0 && t.inflight.Load() == 0 && (done == nil || done()) {
			return nil
		}
		select {
		case <-ctx.Done():
			conns, reqs := t.closeAll()
			return &CutError{Connections: conns, Requests: reqs, Err: ctx.Err()}
		case <-tick.C:
		}
	}
}
