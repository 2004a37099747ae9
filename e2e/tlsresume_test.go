package e2e

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/launcherd/launcher/internal/testcert"
)

// startTLSSup starts a supervisor of hello v1 serving HTTPS, without a
// probation, with extra flags.
func startTLSSup(t *testing.T, certFile, keyFile string, flags ...string) *sup {
	t.Helper()
	args := append(append([]string{"--probation", "0"}, flags...),
		"--", filepath.Join(bins.releases, "v1", "hello"), "-tls-cert", certFile, "-tls-key", keyFile)
	return startSup(t, args...)
}

// resumer is a Go HTTPS client with a session cache, one TLS version, and
// a new connection per request: the client of a returning visitor.
type resumer struct {
	name   string
	client *http.Client
}

func newResumer(pool *x509.CertPool, version uint16) *resumer {
	cfg := &tls.Config{
		RootCAs:            pool,
		ServerName:         "localhost",
		MinVersion:         version,
		MaxVersion:         version,
		ClientSessionCache: tls.NewLRUClientSessionCache(4),
	}
	return &resumer{
		name: tls.VersionName(version),
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: cfg, DisableKeepAlives: true,
		}},
	}
}

// get sends GET / on a new connection and reports the body and whether
// the TLS session was resumed. The body is read whole: a TLS 1.3 ticket
// comes after the handshake, and is taken in with the response.
func (r *resumer) get(addr string) (body string, resumed bool, err error) {
	resp, err := r.client.Get("https://" + addr + "/")
	if err != nil {
		return "", false, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", false, err
	}
	if resp.TLS == nil {
		return "", false, fmt.Errorf("not TLS")
	}
	return strings.TrimSpace(string(b)), resp.TLS.DidResume, nil
}

// TestTLSResumptionAcrossUpgrades: a client with a session cache that
// connects, lets an upgrade happen and connects again resumes its TLS
// session on the new generation, over 20 upgrades, with TLS 1.3 and 1.2.
// The rule: every reconnection resumes (≥ 99 % of 20 is 20). Before the
// supervisor owned the keys, each process had crypto/tls's own, and none
// resumed.
func TestTLSResumptionAcrossUpgrades(t *testing.T) {
	tc := testcert.New(t)
	certFile, keyFile := tc.Write(t, shortTempDir(t))
	pool := tc.Pool
	s := startTLSSup(t, certFile, keyFile)
	clients := []*resumer{newResumer(pool, tls.VersionTLS13), newResumer(pool, tls.VersionTLS12)}
	for _, c := range clients {
		if body, _, err := c.get(s.addr); err != nil || body != "hello from v1" {
			t.Fatalf("%s: first GET: %q, %v", c.name, body, err)
		}
		// The control: without an upgrade in between, the client resumes
		// (it did before the supervisor owned the keys too).
		if _, resumed, err := c.get(s.addr); err != nil || !resumed {
			t.Fatalf("%s: a reconnection without an upgrade: resumed %v, %v; want resumed", c.name, resumed, err)
		}
	}
	const upgrades = 20
	resumed := make([]int, len(clients))
	start := time.Now()
	for i := 1; i <= upgrades; i++ {
		v := []string{"v1", "v2"}[i%2]
		if out, errOut, code := s.cli("upgrade", v); code != 0 {
			t.Fatalf("upgrade %d to %s: exit %d\n%s%s", i, v, code, out, errOut)
		}
		for ci, c := range clients {
			body, ok, err := c.get(s.addr)
			if err != nil || body != "hello from "+v {
				t.Fatalf("%s after upgrade %d to %s: %q, %v", c.name, i, v, body, err)
			}
			if ok {
				resumed[ci]++
			}
		}
	}
	for ci, c := range clients {
		t.Logf("%s: %d of %d reconnections after an upgrade resumed (%s)", c.name, resumed[ci], upgrades, time.Since(start).Round(time.Millisecond))
		if resumed[ci] < upgrades {
			t.Errorf("%s: %d of %d reconnections after an upgrade resumed; want all", c.name, resumed[ci], upgrades)
		}
	}
}

// TestTLSResumptionWithOpenSSL: the same with openssl s_client, its
// session kept in a file (-sess_out, then -sess_in), over a few upgrades,
// with TLS 1.3 and 1.2.
func TestTLSResumptionWithOpenSSL(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("openssl is needed (Debian package openssl; scripts/test installs it)")
		}
		t.Skip("no openssl")
	}
	dir := shortTempDir(t)
	certFile, keyFile := testcert.New(t).Write(t, dir)
	s := startTLSSup(t, certFile, keyFile)
	// sClient connects once, sends a request and reads the answer (a TLS
	// 1.3 ticket comes after the handshake), and saves the session.
	sClient := func(version, sess string, resume bool) (reused bool) {
		t.Helper()
		args := []string{"s_client", "-connect", s.addr, "-servername", "localhost", "-CAfile", certFile,
			"-" + version, "-ign_eof", "-sess_out", sess}
		if resume {
			args = append(args, "-sess_in", sess)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, openssl, args...)
		cmd.Stdin = strings.NewReader("GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "hello from") {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		switch {
		case strings.Contains(string(out), "\nReused, "):
			return true
		case strings.Contains(string(out), "\nNew, "):
			return false
		}
		t.Fatalf("openssl %s: neither New nor Reused:\n%s", strings.Join(args, " "), out)
		return false
	}
	versions := []string{"tls1_3", "tls1_2"}
	for _, v := range versions {
		if sClient(v, filepath.Join(dir, v+".sess"), false) {
			t.Fatalf("%s: the first connection reused a session", v)
		}
	}
	const upgrades = 5
	resumed := map[string]int{}
	for i := 1; i <= upgrades; i++ {
		rel := []string{"v1", "v2"}[i%2]
		if out, errOut, code := s.cli("upgrade", rel); code != 0 {
			t.Fatalf("upgrade %d to %s: exit %d\n%s%s", i, rel, code, out, errOut)
		}
		for _, v := range versions {
			if sClient(v, filepath.Join(dir, v+".sess"), true) {
				resumed[v]++
			}
		}
	}
	for _, v := range versions {
		t.Logf("openssl -%s: %d of %d reconnections after an upgrade reused the session", v, resumed[v], upgrades)
		if resumed[v] < upgrades {
			t.Errorf("openssl -%s: %d of %d reconnections after an upgrade reused the session; want all", v, resumed[v], upgrades)
		}
	}
}

// TestTLSResumptionAcrossAdoption: the supervisor is SIGKILLed; the one
// that adopts its workers takes the ticket keys back from them (nothing
// was written to disk), so a session from before resumes on the
// generation it starts next.
func TestTLSResumptionAcrossAdoption(t *testing.T) {
	tc := testcert.New(t)
	certFile, keyFile := tc.Write(t, shortTempDir(t))
	pool := tc.Pool
	s := startTLSSup(t, certFile, keyFile)
	c := newResumer(pool, tls.VersionTLS13)
	if body, _, err := c.get(s.addr); err != nil || body != "hello from v1" {
		t.Fatalf("first GET: %q, %v", body, err)
	}
	s.Kill()
	if b, err := os.ReadFile(filepath.Join(s.stateDir, "state.json")); err != nil || strings.Contains(string(b), "ticket") {
		t.Errorf("state file: %v; ticket keys in it: %v", err, strings.Contains(string(b), "ticket"))
	}
	s2 := startSupAt(t, s.addr, s.stateDir, "--probation", "0",
		"--", filepath.Join(bins.releases, "v1", "hello"), "-tls-cert", certFile, "-tls-key", keyFile)
	if out, errOut, code := s2.cli("upgrade", "v2"); code != 0 {
		t.Fatalf("upgrade after adoption: exit %d\n%s%s", code, out, errOut)
	}
	body, resumed, err := c.get(s.addr)
	if err != nil || body != "hello from v2" {
		t.Fatalf("GET after the adoption and upgrade: %q, %v", body, err)
	}
	if !resumed {
		t.Errorf("the session from before the supervisor's death did not resume on the generation its successor started")
	}
	if !strings.Contains(s2.log.String(), "TLS session-ticket keys taken over from the adopted workers") {
		t.Errorf("the new supervisor's log does not say it took the keys over")
	}
}

// TestTLSResumptionStandaloneSIGHUP: without a supervisor, a hello that
// hands over on kill -HUP passes its ticket keys to the new process over
// the handoff's control connection: sessions resume there too.
func TestTLSResumptionStandaloneSIGHUP(t *testing.T) {
	tc := testcert.New(t)
	certFile, keyFile := tc.Write(t, shortTempDir(t))
	pool := tc.Pool
	c := newResumer(pool, tls.VersionTLS13)
	getter := func(addr, _ string) (string, error) { b, _, err := c.get(addr); return b, err }
	sa := startStandaloneWith(t, "v1", getter, "-tls-cert", certFile, "-tls-key", keyFile)
	resumed := 0
	const handovers = 3
	for i := 1; i <= handovers; i++ {
		v := []string{"v1", "v2"}[i%2]
		sa.point(filepath.Join(bins.releases, v))
		old := sa.hup()
		eventually(t, 10*time.Second, "the new process wrote the pid file", func() error {
			if p := readPID(sa.pidFile); p == old || p == 0 {
				return fmt.Errorf("pid file still %d", p)
			}
			return nil
		})
		sa.onPID(readPID(sa.pidFile))
		body, ok, err := c.get(sa.addr)
		if err != nil || body != "hello from "+v {
			t.Fatalf("after handover %d: %q, %v", i, body, err)
		}
		if ok {
			resumed++
		}
	}
	t.Logf("%d of %d reconnections after a standalone handover resumed", resumed, handovers)
	if resumed < handovers {
		t.Errorf("%d of %d reconnections after a standalone handover resumed; want all", resumed, handovers)
	}
}

// TestTicketKeyFileRefused: a key file group or others may read, or a
// malformed one, refuses the start: exit 2, one line, nothing started,
// and the line does not quote the file.
func TestTicketKeyFileRefused(t *testing.T) {
	dir := shortTempDir(t)
	key := "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3I=\n" // 32 bytes
	tests := []struct {
		name, text string
		mode       os.FileMode
		want       string
	}{
		{"readable by others", key, 0o644, "mode 0644"},
		{"malformed", key + "not-a-key\n", 0o600, "line 2: want the base64 of 32 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(dir, "keys")
			os.Remove(file)
			if err := os.WriteFile(file, []byte(tt.text), tt.mode); err != nil {
				t.Fatal(err)
			}
			stateDir := filepath.Join(dir, "s")
			_, errOut, code := runCLI(t, "start", "--listen", freeAddr(t), "--state-dir", stateDir, "--tls-ticket-key-file", file,
				"--", filepath.Join(bins.releases, "v1", "hello"))
			if code != 2 || !strings.HasPrefix(errOut, "launcher: start: --tls-ticket-key-file: ") || !strings.Contains(errOut, tt.want) ||
				strings.Count(errOut, "\n") != 1 {
				t.Errorf("exit %d, stderr %q; want 2 and one line with %q", code, errOut, tt.want)
			}
			if strings.Contains(errOut, "c2VjcmV0") || strings.Contains(errOut, "not-a-key") {
				t.Errorf("the refusal quotes the key file: %q", errOut)
			}
			if _, err := os.Stat(filepath.Join(stateDir, "launcher.pid")); err == nil {
				t.Errorf("a refused start wrote a pid file")
			}
		})
	}
}

// TestTicketKeyFileSharedBetweenSupervisors: two supervisors (two hosts
// behind one name, say) given the same --tls-ticket-key-file resume each
// other's sessions; without it they would not.
func TestTicketKeyFileSharedBetweenSupervisors(t *testing.T) {
	dir := shortTempDir(t)
	tc := testcert.New(t)
	certFile, keyFile := tc.Write(t, dir)
	pool := tc.Pool
	file := filepath.Join(dir, "ticket-keys")
	key := make([]byte, 32)
	rand.Read(key)
	if err := os.WriteFile(file, []byte("# current first\n"+base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := startTLSSup(t, certFile, keyFile, "--tls-ticket-key-file", file)
	b := startTLSSup(t, certFile, keyFile, "--tls-ticket-key-file", file)
	c := newResumer(pool, tls.VersionTLS13)
	if _, _, err := c.get(a.addr); err != nil {
		t.Fatal(err)
	}
	if _, resumed, err := c.get(b.addr); err != nil || !resumed {
		t.Errorf("a session of one supervisor's worker on the other's: resumed %v, %v; want resumed", resumed, err)
	}
	if strings.Contains(a.log.String(), base64.StdEncoding.EncodeToString(key)) {
		t.Errorf("the supervisor's log holds the key")
	}
}
