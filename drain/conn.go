package drain

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// Conn is a tracked connection. For a plain TCP server every connection
// counts as busy unless the server marks it idle with [Conn.SetIdle]; a
// byte it then receives makes it busy again until the server marks it
// idle once more (see the package documentation for the rule).
type Conn struct {
	net.Conn
	t *Tracker
	// state is a phase in its low phaseBits and, while the phase is
	// waiting, the tracker's clock when the wait began above them. One
	// word, so that the drain claims a connection with one
	// compare-and-swap of exactly what it looked at.
	state atomic.Int64
	rx    atomic.Uint64 // bytes read, counted after the read is accounted for in state
	// tlsFirst: TLS, and what it reads may still be its handshake (see
	// received), until its records show a request beginning (rec) or
	// net/http has read its first request's header.
	tlsFirst atomic.Bool
	// tlsNew: TLS, its first request's header not read yet; its
	// protocol is looked at then (see Server).
	tlsNew   atomic.Bool
	rec      tlsRecords // the records its client sends while tlsFirst
	hijacked atomic.Bool
	h2       atomic.Bool // HTTP/2: drained by GOAWAY, never idle-closed

	closeOnce sync.Once
}

// The phases of a connection. A drain closes only a waiting one, and only
// through closing (claimed, the socket being looked at) and closed (the
// FIN is sent): a byte read or found queued while it is closing takes it
// back to receiving.
const (
	phaseBusy      = iota // the server works on it: a handler runs, or a plain TCP server said so
	phaseWaiting          // the server waits for a request and nothing has arrived
	phaseReceiving        // a byte has arrived while waiting: a request has begun, unanswered
	phaseClosing          // claimed by the drain
	phaseClosed           // the drain shut it down: nothing changes it any more

	phaseBits = 3
	phaseMask = 1<<phaseBits - 1
)

// SetIdle marks the connection idle (true): the server waits for the next
// request and has answered every byte received so far; or busy (false).
// A drain closes a connection only after it has stayed idle, with nothing
// received, for the grace period.
func (c *Conn) SetIdle(idle bool) {
	if idle {
		c.wait()
	} else {
		c.busy()
	}
}

// wait starts the idle clock. A drain's claim stands: the connection is
// idle either way.
func (c *Conn) wait() {
	next := c.t.clock()<<phaseBits | phaseWaiting
	for {
		old := c.state.Load()
		if p := old & phaseMask; p == phaseClosing || p == phaseClosed {
			return
		}
		if c.state.CompareAndSwap(old, next) {
			return
		}
	}
}

// busy marks the connection worked on, taking it back from a drain that
// has claimed it but not shut it down yet.
func (c *Conn) busy() {
	for {
		old := c.state.Load()
		if p := old & phaseMask; p == phaseBusy || p == phaseClosed {
			return
		}
		if c.state.CompareAndSwap(old, phaseBusy) {
			return
		}
	}
}

// received records that a byte arrived: read by the server, or found in
// the socket's receive queue by a drain about to close the connection. A
// waiting connection is then receiving a request; one a drain has claimed
// is taken back from it. The exception is a TLS connection whose bytes may
// still be its handshake (tlsFirst), which net/http does not report the
// end of: they leave it waiting, or take it back from a drain to wait
// afresh (a drain still looks at its receive queue before closing it).
// Its Reads clear tlsFirst at the first byte of its first request, if its
// records show it (see tlsRecords).
func (c *Conn) received() {
	for {
		old := c.state.Load()
		var next int64
		switch old & phaseMask {
		case phaseWaiting:
			if c.tlsFirst.Load() {
				return
			}
			next = phaseReceiving
		case phaseClosing:
			next = phaseReceiving
			if c.tlsFirst.Load() {
				next = c.t.clock()<<phaseBits | phaseWaiting
			}
		default:
			return
		}
		if c.state.CompareAndSwap(old, next) {
			return
		}
	}
}

// Read reads from the connection; data read marks it busy (see received),
// and then counts in rx: a drain that finds the kernel's count of bytes
// received above rx knows that a read has not been accounted for yet. The
// cost on the request path is an atomic load and an atomic add per read;
// a TLS connection's reads before its first request follow its records
// too (see tlsRecords).
func (c *Conn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		if c.state.Load()&phaseMask != phaseBusy {
			c.arrived(b[:n])
		}
		c.rx.Add(uint64(n))
	}
	return n, err
}

// arrived records that b was read while the connection was not busy. Out
// of Read, so that Read's busy path (every read of a request being
// served) stays close to what it was before TLS records were followed.
func (c *Conn) arrived(b []byte) {
	if c.tlsFirst.Load() && c.rec.read(b) {
		c.tlsFirst.Store(false) // a request has begun: no handshake byte follows
	}
	c.received()
}

// ReadFrom keeps the sendfile/splice fast path of *net.TCPConn.
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

// Close closes the connection and stops tracking it.
func (c *Conn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() { c.t.remove(c) })
	return err
}

// idleSince returns when the connection began waiting, on the tracker's
// clock, and whether w (a state word) is a waiting one a drain may close:
// not hijacked, not HTTP/2.
func (c *Conn) idleSince(w int64) (since int64, ok bool) {
	if w&phaseMask != phaseWaiting || c.hijacked.Load() || c.h2.Load() {
		return 0, false
	}
	return w >> phaseBits, true
}

// receiving reports whether an HTTP/1 request or a plain TCP one has begun
// on the connection that no handler runs yet: it is cut with the
// connection. (HTTP/2 streams are counted by their handlers.)
func (c *Conn) receiving() bool {
	return c.state.Load()&phaseMask == phaseReceiving && !c.h2.Load()
}

// shut reports whether a drain has shut the connection down as idle.
func (c *Conn) shut() bool { return c.state.Load()&phaseMask == phaseClosed }

// closeIfQuiet closes the connection if its state is still w (waiting,
// as the caller saw it) and nothing has arrived on it, and reports whether
// it did. The last check and the shutdown of the sending side are two
// system calls back to back (see shutQuiet): a request that arrives
// before the check is served, one that arrives after the shutdown finds
// the connection closed (the client sees the FIN before sending, or
// raced it on the wire). Closing the descriptor itself waits for the
// goroutine blocked reading it to be scheduled, which under load can take
// milliseconds: it is not the moment of decision, and it is left to a
// goroutine of its own so that a drain closing thousands of connections
// does not wait for each.
func (c *Conn) closeIfQuiet(w int64) bool {
	if !c.state.CompareAndSwap(w, phaseClosing) {
		return false
	}
	if !c.shutQuiet() {
		return false
	}
	go c.Close() // ends once the reader lets go of the descriptor
	return true
}

// commit ends a claim: from now on the connection is being closed. It
// fails when a read or the server took the connection back.
func (c *Conn) commit() bool { return c.state.CompareAndSwap(phaseClosing, phaseClosed) }
