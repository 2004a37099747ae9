package e2e

import (
	"bufio"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/launcherd/launcher/internal/loadgen"
	"github.com/launcherd/launcher/internal/testcert"
)

// TestUpgradeTLSSlowFirstRequest: HTTPS clients (TLS 1.3 and 1.2) finish
// their handshakes with v1, stay idle past the drain's grace (1 s), then
// send their first request's header one line every 0.5 s; an upgrade to
// v2 starts v1's drain right after their first line. Each request has
// begun when the drain starts: v1 answers it, with Connection: close, and
// the drain cuts nothing. Before, v1's drain closed both connections at
// once (a TLS connection counted as busy only once net/http had read its
// first request's whole header), and the clients got an EOF.
func TestUpgradeTLSSlowFirstRequest(t *testing.T) {
	const every = 500 * time.Millisecond
	tc := testcert.New(t)
	certFile, keyFile := tc.Write(t, shortTempDir(t))
	maddr := freeAddr(t)
	s := startTLSSup(t, certFile, keyFile, "--workers", "2", "--drain-timeout", "10s", "--metrics", maddr)
	type answer struct {
		name  string
		body  string
		close bool
		err   error
	}
	versions := []uint16{tls.VersionTLS13, tls.VersionTLS12}
	conns := make([]*tls.Conn, len(versions))
	for i, v := range versions {
		cfg := tc.ClientConfig()
		cfg.ServerName, cfg.MinVersion, cfg.MaxVersion = "localhost", v, v
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", s.addr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns[i] = c
	}
	time.Sleep(1300 * time.Millisecond) // past the grace: idle since the handshake
	answers := make(chan answer, len(conns))
	for i, c := range conns {
		go func() { // ends with the answer or the connection's deadline (SlowRequest's)
			// 7 lines over 3 s.
			resp, body, err := loadgen.SlowRequest(c, bufio.NewReader(c), "test", "/", 5, every)
			a := answer{name: tls.VersionName(versions[i]), body: string(body), err: err}
			if err == nil {
				a.close = resp.Close
			}
			answers <- a
		}()
	}
	time.Sleep(every / 2) // the first lines are sent
	if out, errOut, code := s.cli("upgrade", "--wait", "v2"); code != 0 {
		t.Fatalf("upgrade --wait v2: exit %d: %s%s", code, out, errOut)
	}
	for range conns {
		a := <-answers
		switch {
		case a.err != nil:
			t.Errorf("%s: slow first request: %v; want it answered by v1", a.name, a.err)
		case a.body != "hello from v1\n":
			t.Errorf("%s: slow first request answered %q; want hello from v1", a.name, a.body)
		case !a.close:
			t.Errorf("%s: slow first request answered without Connection: close during v1's drain", a.name)
		}
	}
	for _, m := range []string{"launcher_drain_cut_requests_total", "launcher_drain_timeouts_total"} {
		if got := metricValue(t, maddr, m); got != 0 {
			t.Errorf("%s = %v; want 0", m, got)
		}
	}
}
