package drain_test

import (
	"bufio"
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/launcherd/launcher/drain"
	"github.com/launcherd/launcher/internal/testcert"
)

// tlsGrace is the IdleGrace of the TLS tests: short, so that a
// connection's handshake is long past it when its first request begins.
const tlsGrace = 100 * time.Millisecond

// tlsVersions are the versions a client of the TLS tests caps itself at.
var tlsVersions = []struct {
	name string
	max  uint16
}{{"TLS1.2", tls.VersionTLS12}, {"TLS1.3", tls.VersionTLS13}}

// startTLSServer serves s with TLS (certificate c) on a fresh 127.0.0.1
// listener and returns its address; Cleanup closes the server.
func startTLSServer(t *testing.T, s *drain.Server, c testcert.Cert) string {
	t.Helper()
	if s.HTTP.TLSConfig == nil {
		s.HTTP.TLSConfig = c.ServerConfig()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.ServeTLS(ln, "", "") }()
	t.Cleanup(func() {
		s.HTTP.Close()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("ServeTLS = %v; want nil", err)
			}
		case <-time.After(safety):
			t.Errorf("ServeTLS did not return within %s of Close", safety)
		}
	})
	return ln.Addr().String()
}

// dialTLS opens an HTTP/1.1 TLS connection to addr, at most TLS version
// max, and finishes its handshake.
func dialTLS(t *testing.T, addr string, c testcert.Cert, max uint16) *tls.Conn {
	t.Helper()
	cfg := c.ClientConfig()
	cfg.MaxVersion = max
	cfg.NextProtos = []string{"http/1.1"}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: safety}, "tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(safety))
	if v := conn.ConnectionState().Version; v != max {
		t.Fatalf("negotiated TLS version %#x; want %#x", v, max)
	}
	return conn
}

// TestDrainTLSSlowFirstRequest: a TLS connection whose handshake ended
// long before (3 x IdleGrace) sends its first request's first line; the
// drain starts; the rest of the header follows after another pause longer
// than IdleGrace. The request has begun when the drain starts: it must be
// answered, with Connection: close, and the drain end after it. Before,
// a TLS connection's reads counted only from its first request's whole
// header on, so the drain closed this one as idle at once.
func TestDrainTLSSlowFirstRequest(t *testing.T) {
	cert := testcert.New(t)
	for _, v := range tlsVersions {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			s := &drain.Server{HTTP: &http.Server{Handler: helloHandler}, Tracker: drain.NewTracker(), IdleGrace: tlsGrace}
			addr := startTLSServer(t, s, cert)
			conn := dialTLS(t, addr, cert, v.max)
			time.Sleep(3 * tlsGrace)
			if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\n"); err != nil {
				t.Fatal(err)
			}
			time.Sleep(tlsGrace / 2) // read by the server
			start, drained := startDrain(s, safety)
			time.Sleep(3 * tlsGrace)
			if _, err := io.WriteString(conn, "Host: test\r\n\r\n"); err != nil {
				t.Fatalf("rest of the header, %s into the drain: %v", time.Since(start).Round(time.Millisecond), err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("slow first request cut %s into the drain: %v; want it answered", time.Since(start).Round(time.Millisecond), err)
			}
			b, err := io.ReadAll(resp.Body)
			if err != nil || resp.StatusCode != http.StatusOK || string(b) != body {
				t.Fatalf("answer %d %q (%v); want 200 %q", resp.StatusCode, b, err, body)
			}
			if !resp.Close {
				t.Errorf("answer during the drain: resp.Close = false; want Connection: close")
			}
			if err := waitErr(t, drained, safety); err != nil {
				t.Errorf("Drain = %v; want nil", err)
			}
		})
	}
}

// TestDrainTLSIdleClosed: TLS connections on which no request begins are
// still closed by the drain once idle for IdleGrace, and the drain ends:
// one that finished its handshake, with and without a client certificate
// asked for, and one that never finished it (a ClientHello's first bytes).
func TestDrainTLSIdleClosed(t *testing.T) {
	cert := testcert.New(t)
	type opened struct {
		name string
		conn net.Conn
	}
	quiet := log.New(io.Discard, "", 0) // the handshake cut short is logged
	s := &drain.Server{HTTP: &http.Server{Handler: helloHandler, ErrorLog: quiet}, Tracker: drain.NewTracker(), IdleGrace: tlsGrace}
	addr := startTLSServer(t, s, cert)
	sa := &drain.Server{HTTP: &http.Server{Handler: helloHandler, ErrorLog: quiet, TLSConfig: cert.ServerConfig()}, Tracker: drain.NewTracker(), IdleGrace: tlsGrace}
	sa.HTTP.TLSConfig.ClientAuth = tls.RequestClientCert
	addrAuth := startTLSServer(t, sa, cert)
	var conns []opened
	for _, v := range tlsVersions {
		conns = append(conns, opened{v.name, dialTLS(t, addr, cert, v.max)})
		conns = append(conns, opened{v.name + ", client certificate asked for", dialTLS(t, addrAuth, cert, v.max)})
	}
	raw, err := net.DialTimeout("tcp", addr, safety)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	if _, err := raw.Write([]byte{22, 3, 1, 0, 200, 1}); err != nil { // a ClientHello begins
		t.Fatal(err)
	}
	conns = append(conns, opened{"handshake not finished", raw})
	time.Sleep(3 * tlsGrace)
	start, drained := startDrain(s, safety)
	startAuth, drainedAuth := startDrain(sa, safety)
	for _, c := range conns {
		c.conn.SetReadDeadline(time.Now().Add(safety))
		n, err := c.conn.Read(make([]byte, 1))
		if n > 0 || err == nil {
			t.Errorf("%s: read %d bytes (%v); want the connection closed", c.name, n, err)
		}
	}
	for _, d := range []struct {
		start time.Time
		errc  <-chan error
	}{{start, drained}, {startAuth, drainedAuth}} {
		if err := waitErr(t, d.errc, safety); err != nil {
			t.Errorf("Drain = %v; want nil", err)
		}
		// The grace is past at the drain's start: the connections go at
		// its first look. Wide margin for a loaded machine.
		if took := time.Since(d.start); took > 2*time.Second {
			t.Errorf("drain took %s; want the idle connections closed at once", took.Round(time.Millisecond))
		}
	}
}
