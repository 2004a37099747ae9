package drain_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
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
// max, finishes its handshake and checks that it negotiated version want
// (max when not given).
func dialTLS(t *testing.T, addr string, c testcert.Cert, max uint16, want ...uint16) *tls.Conn {
	t.Helper()
	if len(want) == 0 {
		want = []uint16{max}
	}
	cfg := c.ClientConfig()
	cfg.MaxVersion = max
	cfg.NextProtos = []string{"http/1.1"}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: safety}, "tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(safety))
	if v := conn.ConnectionState().Version; v != want[0] {
		t.Fatalf("negotiated TLS version %#x; want %#x", v, want[0])
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
//
// In the last case the app's own GetConfigForClient picks a config that
// allows TLS 1.2 at most, for a client that offers 1.3 too: what the
// drain expects of the client's records must follow that config.
func TestDrainTLSSlowFirstRequest(t *testing.T) {
	cert := testcert.New(t)
	tests := []struct {
		name            string
		client          uint16 // the client's highest version
		negotiated      uint16
		appConfigPicker bool
	}{
		{"TLS1.2", tls.VersionTLS12, tls.VersionTLS12, false},
		{"TLS1.3", tls.VersionTLS13, tls.VersionTLS13, false},
		{"TLS1.2 by the app's GetConfigForClient", tls.VersionTLS13, tls.VersionTLS12, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := &drain.Server{HTTP: &http.Server{Handler: helloHandler}, Tracker: drain.NewTracker(), IdleGrace: tlsGrace}
			if tt.appConfigPicker {
				picked := cert.ServerConfig()
				picked.MaxVersion = tls.VersionTLS12
				s.HTTP.TLSConfig = &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return picked, nil }}
			}
			addr := startTLSServer(t, s, cert)
			conn := dialTLS(t, addr, cert, tt.client, tt.negotiated)
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

// TestServeTLSCertificate: ServeTLS needs a certificate as net/http's
// does (the drain's GetConfigForClient must not hide its absence), and
// takes one from files when the server has no TLSConfig.
func TestServeTLSCertificate(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := &drain.Server{HTTP: &http.Server{Handler: helloHandler}}
	if err := s.ServeTLS(ln, "", ""); err == nil {
		t.Error("ServeTLS without a certificate = nil; want an error")
	}

	cert := testcert.New(t)
	certFile, keyFile := cert.Write(t, t.TempDir())
	s = &drain.Server{HTTP: &http.Server{Handler: helloHandler}, Tracker: drain.NewTracker(), IdleGrace: tlsGrace}
	if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.ServeTLS(ln, certFile, keyFile) }()
	defer func() {
		s.HTTP.Close()
		if err := <-errc; err != nil {
			t.Errorf("ServeTLS = %v; want nil", err)
		}
	}()
	conn := dialTLS(t, ln.Addr().String(), cert, tls.VersionTLS13)
	time.Sleep(3 * tlsGrace)
	io.WriteString(conn, "GET / HTTP/1.1\r\n")
	time.Sleep(tlsGrace / 2)
	_, drained := startDrain(s, safety)
	time.Sleep(3 * tlsGrace)
	io.WriteString(conn, "Host: test\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(conn), nil); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("slow first request over ServeTLS(certFile, keyFile): %v; want 200", err)
	}
	if err := waitErr(t, drained, safety); err != nil {
		t.Errorf("Drain = %v; want nil", err)
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

// TestDrainTLSSlowFirstRequestOpenSSL is TestDrainTLSSlowFirstRequest with
// openssl s_client as the client (a TLS stack other than Go's: its own
// records and their coalescing), one line of the header at a time, with
// TLS 1.3 and 1.2; and, without a request, its connection is closed at the
// drain's first look.
func TestDrainTLSSlowFirstRequestOpenSSL(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("openssl is needed (Debian package openssl; scripts/test installs it)")
		}
		t.Skip("no openssl")
	}
	cert := testcert.New(t)
	for _, v := range []string{"tls1_3", "tls1_2"} {
		for _, request := range []bool{true, false} {
			name := v + map[bool]string{true: ", slow request", false: ", idle"}[request]
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				s := &drain.Server{HTTP: &http.Server{Handler: helloHandler}, Tracker: drain.NewTracker(), IdleGrace: tlsGrace}
				addr := startTLSServer(t, s, cert)
				ctx, cancel := context.WithTimeout(context.Background(), safety)
				defer cancel()
				// -ign_eof: stdin's lines go out as they come, each its
				// own record; the answer is read until the server closes.
				cmd := exec.CommandContext(ctx, openssl, "s_client", "-"+v, "-connect", addr, "-quiet", "-crlf", "-ign_eof")
				in, err := cmd.StdinPipe()
				if err != nil {
					t.Fatal(err)
				}
				out, err := cmd.StdoutPipe()
				if err != nil {
					t.Fatal(err)
				}
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				defer cmd.Wait()
				defer in.Close()
				answer := make(chan string, 1)
				go func() { // ends when openssl exits (the server closed, or ctx)
					b, _ := io.ReadAll(out)
					answer <- string(b)
				}()
				// The handshake (and TLS 1.3's tickets) done, idle past the grace.
				eventually(t, safety, "handshake", func() bool { return s.Tracker.Stats().OpenConnections == 1 })
				time.Sleep(5 * tlsGrace)
				var start time.Time
				var drained <-chan error
				if request {
					io.WriteString(in, "GET / HTTP/1.1\n")
					time.Sleep(tlsGrace / 2)
					start, drained = startDrain(s, safety)
					time.Sleep(3 * tlsGrace)
					io.WriteString(in, "Host: test\n\n")
				} else {
					start, drained = startDrain(s, safety)
				}
				if err := waitErr(t, drained, safety); err != nil {
					t.Errorf("Drain = %v; want nil", err)
				}
				took := time.Since(start)
				got := <-answer
				switch {
				case request && (!strings.HasPrefix(got, "HTTP/1.1 200 OK\r\n") || !strings.Contains(got, "\r\nConnection: close\r\n") || !strings.HasSuffix(got, body)):
					t.Errorf("answer %q, %s into the drain; want 200 with Connection: close and %q", got, took.Round(time.Millisecond), body)
				case !request && got != "":
					t.Errorf("answer %q; want the idle connection closed", got)
				case !request && took > 2*time.Second:
					t.Errorf("drain took %s; want the idle connection closed at once", took.Round(time.Millisecond))
				}
			})
		}
	}
}
