package drain

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"
)

// GoAwayAckTimeout bounds how long a drain waits for a client to answer
// the PINGs of the first GOAWAY before it sends the final one anyway: a
// client further away than a round trip of this much can see the
// streams it opens meanwhile refused, as with a one-phase GOAWAY.
const GoAwayAckTimeout = 2 * time.Second

// HTTP/2 frame layout and types (RFC 9113, sections 4.1, 6.7, 6.8).
const (
	frameHeaderLen = 9
	framePing      = 0x6
	frameGoAway    = 0x7
	flagAck        = 0x1
	maxStreamID    = 1<<31 - 1
	// The opaque data of the drain's two PINGs, which the client's ACKs
	// echo (RFC 9113, section 6.7): the one before the first GOAWAY and
	// the one after it.
	quietPing  = "drain q0"
	goAwayPing = "drain h2"
)

// configureHTTP2 serves HTTP/2 (over TLS, and cleartext with prior
// knowledge when s.HTTP.Protocols allows it) through golang.org/x/net's
// server on a frame-aware connection (h2Conn), so that a drain can send
// the first GOAWAY of a two-phase shutdown, which Go's servers do not
// (see h2Conn). It leaves alone a server whose TLSNextProto is set (the
// app then serves HTTP/2 itself, or disabled it) and one whose HTTP/2 is
// off through Protocols or GODEBUG=http2server=0.
//
// x/net's Server.ServeConn is deprecated in favour of net/http's own
// HTTP/2, but it is the one API that serves HTTP/2 on a net.Conn of the
// caller's making: net/http hands TLS connections to its bundled server
// only as a *tls.Conn, below which no frame can be seen.
func (s *Server) configureHTTP2() error {
	hs := s.HTTP
	if hs.TLSNextProto != nil {
		return nil
	}
	if p := hs.Protocols; p != nil && !p.HTTP2() && !p.UnencryptedHTTP2() {
		return nil
	}
	if strings.Contains(os.Getenv("GODEBUG"), "http2server=0") {
		return nil // net/http's switch to turn its HTTP/2 server off
	}
	if hs.TLSConfig != nil {
		// ConfigureServer adds "h2" to its NextProtos: not to the
		// caller's copy, which may be shared.
		hs.TLSConfig = hs.TLSConfig.Clone()
	}
	h2s := &http2.Server{}
	if err := http2.ConfigureServer(hs, h2s); err != nil {
		return err
	}
	hs.TLSNextProto["h2"] = func(hs *http.Server, c *tls.Conn, h http.Handler) {
		s.serveHTTP2(h2s, hs, c, c.NetConn(), h, false)
	}
	// net/http serves h2c with prior knowledge (Protocols.UnencryptedHTTP2)
	// through this key, after reading the client preface, with the
	// connection in a *tls.Conn that is none: its NetConn has an
	// UnencryptedNetConn method giving the real one, as x/net's own
	// handler for the key unwraps it.
	hs.TLSNextProto["unencrypted_http2"] = func(hs *http.Server, c *tls.Conn, h http.Handler) {
		u, ok := c.NetConn().(interface{ UnencryptedNetConn() net.Conn })
		if !ok {
			return // not from net/http, which closes its connection on return
		}
		nc := u.UnencryptedNetConn()
		s.serveHTTP2(h2s, hs, nil, nc, h, true)
	}
	return nil
}

// serveHTTP2 serves one HTTP/2 connection: tlsConn over raw, or raw alone
// for h2c, whose preface net/http has read.
func (s *Server) serveHTTP2(h2s *http2.Server, hs *http.Server, tlsConn *tls.Conn, raw net.Conn, h http.Handler, sawPreface bool) {
	c := newH2Conn(raw)
	var served net.Conn = c
	if tlsConn != nil {
		c.Conn = tlsConn
		c.in.skip = len(http2.ClientPreface)
		served = &h2TLSConn{c}
	}
	if tc, ok := raw.(*Conn); ok {
		tc.h2.Store(true) // drained by GOAWAY, never idle-closed
		tc.tlsFirst.Store(false)
		tc.tlsNew.Store(false)
	}
	s.mu.Lock()
	if s.h2 == nil {
		s.h2 = make(map[*h2Conn]struct{})
	}
	s.h2[c] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.h2, c)
		s.mu.Unlock()
		c.settle()
	}()
	// A connection accepted just before the drain, or while this
	// generation hands its clients over (on standby).
	if s.Tracker.IsDraining() || s.Tracker.handingOver() {
		go c.goAway() // ends once the GOAWAY is written (see goAway) or the connection fails
	}
	// net/http passes its per-connection context by this method of h, as
	// to its bundled HTTP/2 server; h also sets Request.TLS.
	var ctx context.Context
	if bc, ok := h.(interface{ BaseContext() context.Context }); ok {
		ctx = bc.BaseContext()
	}
	h2s.ServeConn(served, &http2.ServeConnOpts{Context: ctx, BaseConfig: hs, Handler: h, SawClientPreface: sawPreface})
}

// goAwayHTTP2 sends the first GOAWAY to every HTTP/2 connection.
func (s *Server) goAwayHTTP2() {
	s.mu.Lock()
	for c := range s.h2 {
		go c.goAway() // ends once the GOAWAY is written (see goAway) or the connection fails
	}
	s.mu.Unlock()
}

// http2Settled reports whether every HTTP/2 connection has answered the
// first GOAWAY's PING, or closed, or had GoAwayAckTimeout to answer.
func (s *Server) http2Settled() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.h2 {
		select {
		case <-c.settled:
		default:
			return false
		}
	}
	return true
}

// The phases of an h2Conn's first GOAWAY.
const (
	h2Serving   = iota // no drain yet
	h2Pending          // to be sent at the next frame boundary
	h2Quiescing        // the first PING is sent; the server's writes wait for its ACK
	h2Sent             // the GOAWAY is sent, with the second PING
	h2Skipped          // the server sent a GOAWAY of its own first
)

// h2Conn is the connection an HTTP/2 server serves, seen frame by frame,
// so that a drain can do what Go's HTTP/2 servers do not: a two-phase
// GOAWAY, as Envoy and grpc-go do. Go's graceful shutdown sends one
// GOAWAY with the highest stream ID it has seen and then ignores frames of
// any later stream (RFC 9113, section 6.8, allows that), so a stream the
// client opens while the GOAWAY travels is never answered: the client
// sees it refused. Here the drain first sends GOAWAY with the highest
// possible stream ID (2^31-1), which tells the client to open no new
// stream but refuses none, and a PING. The client's ACK comes after every
// stream it opened before it saw the GOAWAY; once the server has taken
// the ACK, it has taken those streams too, and the final GOAWAY, from
// http.Server.Shutdown, names the last of them.
//
// The server reads a frame, waits until it is processed, and only then
// reads the next (x/net's readFrames): the Read after the one that
// returned the ACK's last byte comes after those streams are registered,
// which is when the ACK counts (settle).
//
// One more round trip goes first. A client may queue a request in
// answer to a response (h2load, nghttp2, does) and send it only after it
// has processed all it read at once: when a GOAWAY follows responses in
// one read, the requests queued for them are never sent, and the client
// fails them itself (nghttp2 refuses a new stream once it has a GOAWAY).
// So the first GOAWAY is preceded by a PING of its own, and the server's
// writes wait for that PING's ACK (a round trip, at most
// GoAwayAckTimeout): the client has then sent what it queued, and the
// GOAWAY is the first frame it reads next.
type h2Conn struct {
	net.Conn // the *tls.Conn, or the tracked connection for h2c

	// wmu serialises the injected frames with the server's writes, so
	// they go in at a frame boundary, and holds the server's writes for
	// the round trip of the first PING. The server writes one frame batch
	// at a time itself, so it contends only with the drain's injection;
	// it is held across the write for that reason.
	wmu   sync.Mutex
	out   frameCursor // the frames the server writes
	phase int         // h2Serving...; guarded by wmu

	in    frameCursor // the frames the server reads; owned by its reader
	acked bool        // the second PING's ACK has been read; owned by the reader

	quietOnce  sync.Once
	quiet      chan struct{} // closed when the first PING's ACK is read
	settleOnce sync.Once
	settled    chan struct{} // closed once the ACK counts, or it will not come
}

func newH2Conn(c net.Conn) *h2Conn {
	return &h2Conn{Conn: c, quiet: make(chan struct{}), settled: make(chan struct{})}
}

// h2TLSConn is an h2Conn over TLS: x/net's server checks the TLS state
// through ConnectionState.
type h2TLSConn struct{ *h2Conn }

// ConnectionState returns the TLS connection's state.
func (c *h2TLSConn) ConnectionState() tls.ConnectionState {
	return c.Conn.(*tls.Conn).ConnectionState()
}

// Read reads for the server, following the frames to find the ACKs of
// the drain's PINGs.
func (c *h2Conn) Read(b []byte) (int, error) {
	if c.acked {
		c.settle()
	}
	n, err := c.Conn.Read(b)
	for k := 0; k < n; {
		m, end := c.in.step(b[k:n])
		k += m
		if end && c.in.hdr[3] == framePing && c.in.hdr[4]&flagAck != 0 && c.in.npay == 8 {
			switch string(c.in.pay[:]) {
			case quietPing:
				c.quietOnce.Do(func() { close(c.quiet) })
			case goAwayPing:
				c.acked = true
			}
		}
	}
	return n, err
}

// Write writes for the server, with the drain's frames at the first frame
// boundary once they are pending.
func (c *h2Conn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	n := c.scanOut(b)
	if !c.canInject() {
		return c.Conn.Write(b)
	}
	if n > 0 {
		if m, err := c.Conn.Write(b[:n]); err != nil {
			return m, err
		}
	}
	if err := c.inject(); err != nil {
		return n, err
	}
	if n == len(b) {
		return n, nil
	}
	c.scanOut(b[n:])
	m, err := c.Conn.Write(b[n:])
	return n + m, err
}

// Close closes the connection; no ACK is awaited any more.
func (c *h2Conn) Close() error {
	c.settle()
	return c.Conn.Close()
}

// scanOut follows b, bytes the server writes, and returns how many come
// before the point where the pending frames go, or len(b). Called with
// wmu held.
func (c *h2Conn) scanOut(b []byte) int {
	n := 0
	for n < len(b) {
		if c.canInject() {
			return n
		}
		m, end := c.out.step(b[n:])
		n += m
		if end && c.out.hdr[3] == frameGoAway && c.phase < h2Sent {
			// Its last stream ID cannot be raised (RFC 9113, section
			// 6.8): this connection ends the server's way.
			c.phase = h2Skipped
			c.settle()
		}
	}
	return n
}

// canInject reports whether the drain's frames are pending and may go
// now: at a frame boundary after the server's first frame, its SETTINGS
// (the server's connection preface, RFC 9113, section 3.4). Called with
// wmu held.
func (c *h2Conn) canInject() bool {
	return c.phase == h2Pending && c.out.atBoundary() && c.out.frames > 0
}

// goAway starts the first phase: the frames go now, if the server is
// between frames (goAway then returns after the first PING's round trip,
// at most GoAwayAckTimeout later, and the GOAWAY's write), else at its
// next frame boundary. The wait for the ACKs is bounded by
// GoAwayAckTimeout in all.
func (c *h2Conn) goAway() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.phase != h2Serving {
		return
	}
	c.phase = h2Pending
	time.AfterFunc(GoAwayAckTimeout, c.settle) // fires once; settling twice is harmless
	if c.canInject() {
		if err := c.inject(); err != nil {
			c.settle()
		}
	}
}

// inject writes the first PING, waits for its ACK, and writes
// GOAWAY(2^31-1, NO_ERROR) and the second PING. Called with wmu held, so
// the server's writes wait meanwhile.
func (c *h2Conn) inject() error {
	c.phase = h2Quiescing
	var f [2 * (frameHeaderLen + 8)]byte
	ping := func(p []byte, data string) {
		p[2], p[3] = 8, framePing // length 8, type PING, no flags, stream 0
		copy(p[frameHeaderLen:], data)
	}
	ping(f[:], quietPing)
	if _, err := c.Conn.Write(f[:frameHeaderLen+8]); err != nil {
		return fmt.Errorf("drain: PING before the first GOAWAY: %w", err)
	}
	select {
	case <-c.quiet:
	case <-c.settled: // closed, or out of time
	}
	c.phase = h2Sent
	f = [len(f)]byte{}
	// GOAWAY: length 8, type GOAWAY, no flags, stream 0; last stream ID,
	// error code 0 (NO_ERROR).
	f[2], f[3] = 8, frameGoAway
	f[9], f[10], f[11], f[12] = maxStreamID>>24, 0xff, 0xff, 0xff
	ping(f[frameHeaderLen+8:], goAwayPing)
	if _, err := c.Conn.Write(f[:]); err != nil {
		return fmt.Errorf("drain: first GOAWAY: %w", err)
	}
	return nil
}

// settle ends the wait for the ACKs.
func (c *h2Conn) settle() {
	c.settleOnce.Do(func() { close(c.settled) })
}

// frameCursor follows a stream of HTTP/2 frames (RFC 9113, section 4.1:
// a 9-byte header whose first 3 bytes are the payload's length) through
// reads or writes that split them anywhere.
type frameCursor struct {
	skip   int // bytes before the first frame: the client preface
	hdr    [frameHeaderLen]byte
	nhdr   int     // header bytes seen of the current frame
	left   int     // payload bytes left of the current frame
	pay    [8]byte // the first payload bytes of the current frame
	npay   int
	frames int // frames complete
}

// step consumes b up to the end of the current frame at most and returns
// how many bytes it took and whether the frame ended: its header and the
// first bytes of its payload are then in hdr and pay.
func (f *frameCursor) step(b []byte) (n int, end bool) {
	if f.skip > 0 {
		n = min(f.skip, len(b))
		f.skip -= n
		return n, false
	}
	if f.nhdr < frameHeaderLen {
		n = copy(f.hdr[f.nhdr:], b)
		f.nhdr += n
		if f.nhdr < frameHeaderLen {
			return n, false
		}
		f.left = int(f.hdr[0])<<16 | int(f.hdr[1])<<8 | int(f.hdr[2])
		f.npay = 0
	}
	k := min(f.left, len(b)-n)
	f.npay += copy(f.pay[f.npay:], b[n:n+k])
	f.left -= k
	n += k
	if f.left > 0 {
		return n, false
	}
	f.nhdr = 0
	f.frames++
	return n, true
}

// atBoundary reports whether the next byte starts a frame.
func (f *frameCursor) atBoundary() bool { return f.skip == 0 && f.nhdr == 0 }
