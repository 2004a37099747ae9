package drain

import (
	"crypto/tls"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/launcherd/launcher/internal/testcert"
)

// tlsPair returns a tracked TLS connection over loopback whose handshake
// is done, as net/http holds it; its Conn's tracker counts it.
func tlsPair(tb testing.TB) *tls.Conn {
	tb.Helper()
	cert := testcert.New(tb)
	a, b := tcpPair(tb)
	// Bounded, so that a failed handshake fails the test, not hangs it.
	a.SetDeadline(time.Now().Add(10 * time.Second))
	b.SetDeadline(time.Now().Add(10 * time.Second))
	srv := tls.Server(a, cert.ServerConfig())
	cfg := cert.ClientConfig()
	cfg.ServerName = "localhost"
	cli := tls.Client(b, cfg)
	done := make(chan error, 1)
	go func() { done <- cli.Handshake() }() // ends with the handshake
	if err := srv.Handshake(); err != nil {
		tb.Fatal(err)
	}
	if err := <-done; err != nil {
		tb.Fatal(err)
	}
	a.SetDeadline(time.Time{})
	return srv
}

// connStateHook returns the ConnState hook a Server installs.
func connStateHook(tr *Tracker) func(net.Conn, http.ConnState) {
	s := &Server{HTTP: &http.Server{}, Tracker: tr}
	s.init()
	return s.HTTP.ConnState
}

// TestConnStateTLSFirstRequestOnly: a TLS connection's first request
// settles what it is (not HTTP/2 here) and leaves it busy, and its idle
// clock starts after it, as at every later request.
func TestConnStateTLSFirstRequestOnly(t *testing.T) {
	c := tlsPair(t)
	tc := c.NetConn().(*Conn)
	hook := connStateHook(tc.t)
	hook(c, http.StateNew)
	if !tc.tlsFirst.Load() {
		t.Fatal("a new TLS connection is not marked before its first request")
	}
	for i := 0; i < 3; i++ {
		hook(c, http.StateActive)
		if tc.tlsFirst.Load() || tc.h2.Load() {
			t.Fatalf("request %d: tlsFirst=%v h2=%v; want both false", i+1, tc.tlsFirst.Load(), tc.h2.Load())
		}
		if p := tc.state.Load() & phaseMask; p != phaseBusy {
			t.Fatalf("request %d: phase %d during the request; want busy", i+1, p)
		}
		hook(c, http.StateIdle)
		if p := tc.state.Load() & phaseMask; p != phaseWaiting {
			t.Fatalf("request %d: phase %d after it; want waiting", i+1, p)
		}
	}
}

// BenchmarkConnStatePerRequest is what the Server's ConnState hook adds to
// each request of a keep-alive connection (StateActive, then StateIdle).
func BenchmarkConnStatePerRequest(b *testing.B) {
	for _, proto := range []string{"tcp", "tls"} {
		b.Run(proto, func(b *testing.B) {
			tc := &Conn{Conn: nopConn{}, t: NewTracker()}
			var c net.Conn = tc
			if proto == "tls" {
				tlsConn := tlsPair(b)
				c, tc = tlsConn, tlsConn.NetConn().(*Conn)
			}
			hook := connStateHook(tc.t)
			hook(c, http.StateNew)
			b.ReportAllocs()
			for b.Loop() {
				hook(c, http.StateActive)
				hook(c, http.StateIdle)
			}
		})
	}
}
