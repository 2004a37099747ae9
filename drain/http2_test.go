package drain_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/launcherd/launcher/drain"
)

// selfSigned returns a TLS config with a fresh certificate for 127.0.0.1.
func selfSigned(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:   time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// TestDrainHTTP2 serves HTTP/2 over TLS on a tracked listener: a stream in
// flight when the drain begins completes, the connection is counted and is
// left to Shutdown's GOAWAY rather than cut by the (short) idle grace, and
// Drain returns nil once it is gone.
func TestDrainHTTP2(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{}, 1)
	srv := &drain.Server{
		HTTP: &http.Server{TLSConfig: selfSigned(t), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				started <- struct{}{}
				time.Sleep(600 * time.Millisecond)
			}
			io.WriteString(w, r.Proto)
		})},
		IdleGrace: 20 * time.Millisecond,
	}
	served := make(chan error, 1)
	go func() { served <- srv.ServeTLS(ln, "", "") }()
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
		ForceAttemptHTTP2: true,
	}}
	defer client.CloseIdleConnections()
	url := "https://" + ln.Addr().String()
	resp, err := client.Get(url + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || string(body) != "HTTP/2.0" {
		t.Fatalf("proto = %s, body %q; want HTTP/2.0", resp.Proto, body)
	}
	if got := srv.Tracker.Stats().OpenConnections; got != 1 {
		t.Fatalf("open connections = %d; want 1", got)
	}

	slow := make(chan error, 1)
	go func() {
		resp, err := client.Get(url + "/slow")
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		slow <- err
	}()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := srv.Drain(ctx); err != nil {
		t.Fatalf("Drain = %v; want nil", err)
	}
	if err := <-slow; err != nil {
		t.Fatalf("stream in flight during the drain: %v", err)
	}
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Errorf("Drain returned after %s, before the stream in flight ended", d)
	}
	if got := srv.Tracker.Stats().OpenConnections; got != 0 {
		t.Errorf("open connections after Drain = %d; want 0", got)
	}
	if err := <-served; err != nil {
		t.Errorf("ServeTLS = %v; want nil after a drain", err)
	}
}
