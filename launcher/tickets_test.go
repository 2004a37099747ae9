package launcher

import (
	"crypto/rand"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/launcherd/launcher/internal/testcert"
	"github.com/launcherd/launcher/internal/ticketkeys"
)

// serveTLS serves cfg with http.Server.ServeTLS, which serves a clone of
// it, as App.Run does; it returns the address.
func serveTLS(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{TLSConfig: cfg, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	})}
	go srv.ServeTLS(ln, "", "") // ends when the cleanup closes it
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func ring(t *testing.T, r ticketkeys.Ring, at time.Time) ticketkeys.Ring {
	t.Helper()
	out, _, err := r.Rotate(at, time.Hour, 2*time.Hour, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestShareTicketKeys: two servers of configs registered with
// shareTicketKeys, each served as a clone (http.Server.ServeTLS), share a
// session once they have the same keys, and a change of keys after they
// started serving reaches the clones: a ticket of keys no longer in the
// ring does not resume, one of a key still in it does.
func TestShareTicketKeys(t *testing.T) {
	tc := testcert.New(t)
	cert, pool := tc.TLS, tc.Pool
	for _, version := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		t.Run(tls.VersionName(version), func(t *testing.T) {
			apps := []*App{{}, {}}
			var addrs []string
			for _, a := range apps {
				cfg := &tls.Config{Certificates: []tls.Certificate{cert}}
				a.shareTicketKeys(cfg)
				addrs = append(addrs, serveTLS(t, cfg))
			}
			client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
				TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: version, MaxVersion: version,
					ClientSessionCache: tls.NewLRUClientSessionCache(1)}}}
			resumed := func(addr string) bool {
				t.Helper()
				resp, err := client.Get("https://" + addr + "/")
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				io.ReadAll(resp.Body) // a TLS 1.3 ticket comes with the response
				return resp.TLS.DidResume
			}
			now := time.Now()
			r1 := ring(t, ticketkeys.Ring{}, now)
			for _, a := range apps {
				a.setTicketKeys(r1) // after the servers cloned their configs
			}
			resumed(addrs[0]) // a ticket of r1's key
			if !resumed(addrs[1]) {
				t.Errorf("the other server, with the same keys, did not resume")
			}
			// A rotation keeps the old key for decryption.
			r2 := ring(t, r1, now.Add(time.Hour))
			for _, a := range apps {
				a.setTicketKeys(r2)
			}
			if !resumed(addrs[0]) {
				t.Errorf("after a rotation, a ticket of the previous key did not resume")
			}
			// Keys the ticket's key is not in: no resumption, so the clone
			// does use the new keys.
			r3 := ring(t, ticketkeys.Ring{}, now)
			apps[1].setTicketKeys(r3)
			if resumed(addrs[1]) {
				t.Errorf("a ticket resumed on a server whose keys no longer hold its key: the served clone kept the old keys")
			}
		})
	}
}
