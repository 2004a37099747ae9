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
// is done, as net/http holds it; its Conn's tracker counts it. Its ALPN
// protocol is the first of protos, if any.
func tlsPair(tb testing.TB, protos ...string) *tls.Conn {
	tb.Helper()
	cert := testcert.New(tb)
	a, b := tcpPair(tb)
	// Bounded, so that a failed handshake fails the test, not hangs it.
	a.SetDeadline(time.Now().Add(10 * time.Second))
	b.SetDeadline(time.Now().Add(10 * time.Second))
	scfg := cert.ServerConfig()
	scfg.NextProtos = protos
	srv := tls.Server(a, scfg)
	cfg := cert.ClientConfig()
	cfg.ServerName = "localhost"
	cfg.NextProtos = protos
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
	if !tc.tlsFirst.Load() || !tc.tlsNew.Load() {
		t.Fatal("a new TLS connection is not marked before its first request")
	}
	for i := 0; i < 3; i++ {
		hook(c, http.StateActive)
		if tc.tlsFirst.Load() || tc.tlsNew.Load() || tc.h2.Load() {
			t.Fatalf("request %d: tlsFirst=%v tlsNew=%v h2=%v; want all false", i+1, tc.tlsFirst.Load(), tc.tlsNew.Load(), tc.h2.Load())
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

// TestConnStateTLSProtocolAfterRequestBegun: a TLS connection whose
// records showed its first request beginning before net/http read the
// header (tlsFirst cleared by a Read) still has its protocol looked at
// then: an app's own HTTP/2 server (TLSNextProto) reports its streams
// with this hook, and such a connection must be drained by GOAWAY, not
// closed as idle.
func TestConnStateTLSProtocolAfterRequestBegun(t *testing.T) {
	c := tlsPair(t, "h2")
	tc := c.NetConn().(*Conn)
	hook := connStateHook(tc.t)
	hook(c, http.StateNew)
	tc.tlsFirst.Store(false) // as Read does when a request begins
	hook(c, http.StateActive)
	if !tc.h2.Load() {
		t.Error("h2 = false after the first request of a connection that negotiated h2; want true")
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
