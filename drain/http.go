package drain

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// DefaultIdleGrace is how long a connection must stay idle during a drain
// before it is closed. A client that sends steadily gets a response with
// "Connection: close" well within it and reconnects when it chooses, which
// no request can race; only a connection silent for this long is closed
// by the drain, and then only if nothing has arrived on it (see the
// package documentation), so that a request racing that close is one sent
// in the instant between the drain's last look and its FIN.
const DefaultIdleGrace = time.Second

// Observer is told of each finished request, for metrics. It must be cheap
// and safe for concurrent use.
type Observer interface {
	ObserveRequest(code int, d time.Duration)
}

// Server runs an http.Server on tracked listeners and drains it without
// client-visible errors. Set the fields before calling Serve.
type Server struct {
	// HTTP is the server to run. Its Handler and ConnState are wrapped by
	// Serve; set them before.
	HTTP *http.Server
	// Tracker counts requests and connections; nil means a new one.
	Tracker *Tracker
	// IdleGrace is how long a connection must be idle before a drain closes
	// it; zero means DefaultIdleGrace.
	IdleGrace time.Duration
	// Observer, if set, is told of every finished request.
	Observer Observer

	once sync.Once
	pool sync.Pool // *recorder, so the request path does not allocate

	initErr error // of configureHTTP2

	// tlsOnce gives ServeTLS a TLS config when init found none; noCert:
	// the app's config has no certificate (see ServeTLS).
	tlsOnce sync.Once
	noCert  bool

	mu        sync.Mutex
	listeners []*Listener
	h2        map[*h2Conn]struct{} // HTTP/2 connections being served
}

func (s *Server) init() {
	s.once.Do(func() {
		if s.Tracker == nil {
			s.Tracker = NewTracker()
		}
		if s.IdleGrace <= 0 {
			s.IdleGrace = DefaultIdleGrace
		}
		s.HTTP.Handler = s.wrap(s.HTTP.Handler)
		s.initErr = s.configureHTTP2()
		if s.HTTP.TLSConfig != nil {
			// Here, not in ServeTLS: Serve reads TLSConfig too, and a
			// server may run both at once.
			s.noCert = !hasCertificate(s.HTTP.TLSConfig)
			s.HTTP.TLSConfig = watchHandshakes(s.HTTP.TLSConfig)
		}
		s.Tracker.onHandOver(s.goAwayHTTP2) // on standby, HTTP/2 clients move too
		prev := s.HTTP.ConnState
		s.HTTP.ConnState = func(c net.Conn, st http.ConnState) {
			// HTTP/2 connections are reported as net/http would report
			// them, not as the frame-aware connection that wraps them.
			switch h2 := c.(type) {
			case *h2Conn:
				c = h2.Conn
			case *h2TLSConn:
				c = h2.Conn
			}
			raw := c
			if tlsConn, ok := c.(*tls.Conn); ok {
				raw = tlsConn.NetConn()
			}
			if tc, ok := raw.(*Conn); ok {
				switch st {
				case http.StateNew: // waits for its first request
					_, isTLS := c.(*tls.Conn)
					tc.tlsFirst.Store(isTLS)
					tc.tlsNew.Store(isTLS)
					tc.wait()
				case http.StateActive: // a request's header is read
					if tc.tlsNew.Load() {
						// A TLS connection's first request: its handshake,
						// and with it the protocol, is settled. Looked at
						// once, not at every request: ConnectionState takes
						// the handshake's lock and copies its state.
						tc.tlsNew.Store(false)
						tc.tlsFirst.Store(false)
						if tlsConn, ok := c.(*tls.Conn); ok && tlsConn.ConnectionState().NegotiatedProtocol == "h2" {
							tc.h2.Store(true) // drained by GOAWAY, not by the idle grace
						}
					}
					tc.busy()
				case http.StateIdle: // its response is written
					tc.wait()
				case http.StateHijacked:
					tc.t.hijack(tc)
				case http.StateClosed:
					tc.closeOnce.Do(func() { tc.t.remove(tc) })
				}
			}
			if prev != nil {
				prev(c, st)
			}
		}
	})
}

// Serve accepts connections on ln and serves them until ln closes. A
// listener closed by a handover or drain is not an error: Serve then
// returns nil.
func (s *Server) Serve(ln net.Listener) error {
	s.init()
	if s.initErr != nil {
		return fmt.Errorf("drain: serve: %w", s.initErr)
	}
	err := s.HTTP.Serve(s.track(ln))
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// ServeTLS is Serve with TLS (and HTTP/2, when the TLS config allows it)
// on top of the tracked listener, as http.Server.ServeTLS: certFile and
// keyFile may be empty when HTTP.TLSConfig has the certificates. The
// server's TLSConfig is replaced by a copy whose GetConfigForClient (which
// calls the app's, if set) lets each connection tell its first request
// from its handshake (see the package documentation).
func (s *Server) ServeTLS(ln net.Listener, certFile, keyFile string) error {
	s.init()
	if s.initErr != nil {
		return fmt.Errorf("drain: serve: %w", s.initErr)
	}
	s.tlsOnce.Do(func() {
		if s.HTTP.TLSConfig == nil { // and HTTP/2 off: ServeTLS makes one
			s.noCert = true
			s.HTTP.TLSConfig = watchHandshakes(nil)
		}
	})
	if s.noCert && certFile == "" && keyFile == "" {
		// What net/http's ServeTLS does without a certificate, which the
		// GetConfigForClient of watchHandshakes would hide from it.
		if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
			return fmt.Errorf("drain: serve TLS without a certificate: %w", err)
		}
	}
	tl := s.track(ln)
	err := s.HTTP.ServeTLS(tl, certFile, keyFile)
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// track wraps ln for tracking and remembers it for Drain.
func (s *Server) track(ln net.Listener) *Listener {
	tl := NewListener(ln, s.Tracker)
	s.mu.Lock()
	s.listeners = append(s.listeners, tl)
	draining := s.Tracker.IsDraining()
	s.mu.Unlock()
	if draining {
		tl.Close()
	}
	return tl
}

// Drain stops the server gracefully. Listeners should already be closed
// (the launcher closes them after emptying their accept queues); Drain
// closes any left. Responses from now on carry "Connection: close", idle
// HTTP/1 connections are closed once idle for IdleGrace, and HTTP/2
// connections get the first GOAWAY of two at once (see the package
// documentation). When no HTTP/1 connection is left and every HTTP/2
// client has answered the first GOAWAY's PING (or had [GoAwayAckTimeout]
// to), http.Server.Shutdown sends the final GOAWAY and waits for the
// streams. When ctx ends first, what is left is closed and the error wraps
// [ErrCut] with the counts.
func (s *Server) Drain(ctx context.Context) error {
	s.init()
	s.Tracker.StartDrain()
	s.mu.Lock()
	for _, l := range s.listeners {
		l.Close()
	}
	s.mu.Unlock()
	s.goAwayHTTP2()
	// Once the HTTP/1 connections are closed and the HTTP/2 clients have
	// acked the first GOAWAY's PING: the final GOAWAY then goes out while
	// long streams still run, not after them, so that a client stops
	// opening streams on the old connection (RFC 9113, section 6.8).
	if err := waitConns(ctx, s.Tracker, s.IdleGrace, s.http2Settled); err != nil {
		s.HTTP.Close()
		return err
	}
	// The first Shutdown sends the final GOAWAYs and waits, but looks at
	// its connections with a back-off that reaches 500 ms: the tracker
	// sees the last stream end at once (and what else it counts, an
	// app's Begin/End), and a second Shutdown then closes the connections
	// at its first looks.
	sctx, stop := context.WithCancel(ctx)
	first := make(chan error, 1)
	go func() { first <- s.HTTP.Shutdown(sctx) }() // owned by Drain: ends when stop is called, if not before
	defer func() { stop(); <-first }()
	if err := waitConns(ctx, s.Tracker, s.IdleGrace, nil); err != nil {
		s.HTTP.Close()
		return err
	}
	if err := s.HTTP.Shutdown(ctx); err != nil && !errors.Is(err, net.ErrClosed) {
		if ctx.Err() != nil {
			conns, reqs := s.Tracker.closeAll()
			s.HTTP.Close()
			return &CutError{Connections: conns, Requests: reqs, Err: ctx.Err()}
		}
		return fmt.Errorf("drain: shutdown: %w", err)
	}
	return nil
}

// wrap counts in-flight requests, asks clients to reconnect during a
// drain, and reports each request to the Observer.
func (s *Server) wrap(next http.Handler) http.Handler {
	if next == nil {
		next = http.DefaultServeMux
	}
	t := s.Tracker
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.inflight.Add(1)
		// The tracker's monotonic clock: one clock read at each end,
		// where time.Now and time.Since took three (time.Now reads the
		// wall clock too).
		var start int64
		if s.Observer != nil {
			start = t.clock()
		}
		rw := s.getRecorder(w, t, r.ProtoMajor == 1)
		returned := false
		// One deferred call for every way out: a handler that panics
		// (net/http recovers it and closes the connection: the client
		// gets no answer) is counted too, as a 500, so that the judge
		// sees a release whose handlers panic; before, it counted
		// nothing and passed its probation unjudged (a new user's
		// trial). The panic goes on as it was: no recover here, so
		// net/http logs its own stack.
		defer func() {
			if s.Observer != nil {
				code := rw.code
				switch {
				case !returned && r.Context().Err() != nil:
					code = unanswered(r, t) // the client, or a drain's cut, ended it first
				case !returned:
					code = http.StatusInternalServerError
				case code == 0:
					code = unanswered(r, t)
				}
				s.Observer.ObserveRequest(code, time.Duration(t.clock()-start))
			}
			s.putRecorder(rw)
			t.requestDone()
		}()
		next.ServeHTTP(rw, r)
		returned = true
	})
}

// Codes counted for a request whose handler returned without a word of
// answer because its connection was gone: not 200, which net/http would
// have sent, since the client got nothing.
const (
	// StatusCut: the drain's deadline cut the connection (see
	// [Server.Drain]); a 5xx, as the service failed to answer.
	StatusCut = http.StatusServiceUnavailable
	// StatusClientClosed: the client closed the connection (or reset
	// its HTTP/2 stream) first; nginx's 499 "client closed request".
	StatusClientClosed = 499
)

// unanswered is the code of r, whose handler wrote nothing: 200 (what
// net/http then sends) unless r's context ended (its connection closed,
// its HTTP/2 stream reset), when the client got no answer: [StatusCut]
// if the drain's deadline cut it, else [StatusClientClosed].
func unanswered(r *http.Request, t *Tracker) int {
	switch {
	case r.Context().Err() == nil:
		return http.StatusOK
	case t.cut.Load():
		return StatusCut
	default:
		return StatusClientClosed
	}
}

// recorder captures the status code and, when the response starts during
// a drain, adds "Connection: close" (a request in flight when the drain
// begins must close its connection too). It is pooled so the request path
// does not allocate.
type recorder struct {
	http.ResponseWriter
	t     *Tracker
	http1 bool
	code  int
}

func (s *Server) getRecorder(w http.ResponseWriter, t *Tracker, http1 bool) *recorder {
	r, _ := s.pool.Get().(*recorder)
	if r == nil {
		r = new(recorder)
	}
	r.ResponseWriter, r.t, r.http1, r.code = w, t, http1, 0
	return r
}

func (s *Server) putRecorder(r *recorder) {
	r.ResponseWriter, r.t = nil, nil
	s.pool.Put(r)
}

// start runs once, before the header is written. A 101 Switching
// Protocols is left alone: it hands the connection to another protocol (a
// WebSocket), whose "Connection: Upgrade" a "close" would replace, and the
// client would then fail the handshake (RFC 6455, section 4.1); the app
// ends such a connection itself (see [Tracker.Draining]).
func (r *recorder) start(code int) {
	r.code = code
	if r.http1 && code != http.StatusSwitchingProtocols && (r.t.draining.Load() || r.t.noKeepAlive.Load()) {
		r.ResponseWriter.Header().Set("Connection", "close")
	}
}

func (r *recorder) WriteHeader(code int) {
	if r.code == 0 {
		r.start(code)
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.start(http.StatusOK)
	}
	return r.ResponseWriter.Write(b)
}

// ReadFrom keeps net/http's sendfile path for io.Copy and ServeContent.
func (r *recorder) ReadFrom(src io.Reader) (int64, error) {
	if r.code == 0 {
		r.start(http.StatusOK)
	}
	if rf, ok := r.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(src)
	}
	return io.Copy(struct{ io.Writer }{r.ResponseWriter}, src)
}

// Flush implements http.Flusher when the underlying writer does.
func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Hijack implements http.Hijacker when the underlying writer does.
func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := r.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("drain: response writer cannot hijack")
	}
	return h.Hijack()
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
