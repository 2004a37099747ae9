package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/launcherd/launcher/internal/delaylink"
	"github.com/launcherd/launcher/internal/testcert"
)

// TestHTTP2UpgradesFailNoStream drives h2load (nghttp2), 8 connections of
// 16 concurrent streams each, through 10 upgrades (a run of h2load per
// upgrade) of a service with 2
// workers per generation, over TLS and over h2c (HTTP/2 over cleartext
// with prior knowledge): not one stream may fail or be refused, and every
// response is a 2xx. Each old generation drains its HTTP/2 connections
// with a two-phase GOAWAY (see the drain package): a one-phase GOAWAY
// refuses the streams a client opens while it travels, which h2load
// counts as errored.
func TestHTTP2UpgradesFailNoStream(t *testing.T) {
	for _, mode := range []string{"tls", "h2c"} {
		t.Run(mode, func(t *testing.T) {
			h2loadUpgrades(t, mode, nil, freeAddr(t), 10, time.Second, 400*time.Millisecond)
		})
	}
}

// TestHTTP2UpgradesFailNoStreamOnASlowLink is TestHTTP2UpgradesFailNoStream
// with the client 50 ms away (one way) in a network namespace of its own:
// the first GOAWAY, and the streams the client opens meanwhile, are then
// a round trip of 100 ms on the wire.
func TestHTTP2UpgradesFailNoStreamOnASlowLink(t *testing.T) {
	needNetns(t)
	t.Parallel() // as TestHandshakesInFlightOnASlowLink
	for _, mode := range []string{"tls", "h2c"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			pair, err := delaylink.NewPair(ctx, delaylink.PairConfig{
				Name:  fmt.Sprintf("lh2-%d-%s", os.Getpid(), mode),
				AddrA: slowServerAddr, AddrB: slowClientAddr, Delay: 50 * time.Millisecond,
			})
			if err != nil {
				t.Fatalf("network namespaces with a delayed link: %v", err)
			}
			t.Cleanup(func() {
				if err := pair.Close(); err != nil {
					t.Errorf("remove the namespaces: %v", err)
				}
			})
			addr := slowServerAddr.Addr().String() + ":8080"
			h2loadUpgrades(t, mode, pair, addr, 4, 1500*time.Millisecond, 700*time.Millisecond)
		})
	}
}

// h2loadUpgrades serves hello in mode ("tls" or "h2c") on addr, in
// pair's namespace A when pair is set (h2load then runs in B), and n
// times runs h2load for run and upgrades upgradeAt into it; it checks
// every summary.
func h2loadUpgrades(t *testing.T, mode string, pair *delaylink.Pair, addr string, n int, run, upgradeAt time.Duration) {
	h2load := needH2load(t)
	dir := shortTempDir(t)
	args := []string{"--workers", "2", "--probation", "0", "--", filepath.Join(bins.releases, "v1", "hello")}
	scheme := "http"
	switch mode {
	case "tls":
		cert, key := testcert.New(t, net.ParseIP(hostOf(t, addr))).Write(t, dir)
		args = append(args, "-tls-cert", cert, "-tls-key", key)
		scheme = "https"
	case "h2c":
		args = append(args, "-h2c")
	}
	var wrap, clientWrap []string
	if pair != nil {
		wrap = []string{"ip", "netns", "exec", pair.NetnsA}
		clientWrap = []string{"ip", "netns", "exec", pair.NetnsB}
	}
	s := startSupWrapped(t, wrap, addr, filepath.Join(dir, "s"), args...)

	// h2load (nghttp2 1.52) does not reconnect after a GOAWAY: a client
	// that received one stops. So each upgrade gets an h2load run of its
	// own, begun on the generation that the upgrade then drains.
	var sum h2loadSummary
	start := time.Now()
	version := "v1"
	for i := range n {
		version = map[string]string{"v1": "v2", "v2": "v1"}[version]
		argv := append(clientWrap[:len(clientWrap):len(clientWrap)], h2load,
			"-c", "8", "-m", "16", "-t", "2", "-D", fmt.Sprintf("%dms", run.Milliseconds()),
			scheme+"://"+addr+"/")
		var upgradeErr string
		out := runDuring(t, argv, run+10*time.Second, func() {
			time.Sleep(upgradeAt)
			if _, errOut, code := s.cli("upgrade", version); code != 0 {
				upgradeErr = fmt.Sprintf("exit %d: %s", code, errOut)
			}
		})
		if upgradeErr != "" {
			t.Fatalf("upgrade %d to %s: %s", i+1, version, upgradeErr)
		}
		r, err := parseH2load(out)
		if err != nil {
			t.Fatalf("run %d: %v\n%s", i+1, err, out)
		}
		if r.failed != 0 || r.errored != 0 || r.timeout != 0 || r.status[1]+r.status[2]+r.status[3] != 0 {
			t.Errorf("run %d, upgrade to %s: not every request got a 2xx\n%s", i+1, version, out)
		}
		sum.add(r)
	}
	t.Logf("%s, %d upgrades in %v: %d requests, %d succeeded, %d failed, %d errored, %d timeout; status 2xx %d, 3xx %d, 4xx %d, 5xx %d",
		mode, n, time.Since(start).Round(time.Millisecond), sum.total, sum.succeeded, sum.failed, sum.errored, sum.timeout, sum.status[0], sum.status[1], sum.status[2], sum.status[3])
	if sum.succeeded < int64(n)*128 {
		t.Errorf("only %d requests succeeded; want at least %d", sum.succeeded, n*128)
	}
}

// runDuring runs argv and, meanwhile, during; it returns argv's output
// (with its error, if any) once it exits, and kills it after timeout.
func runDuring(t *testing.T, argv []string, timeout time.Duration, during func()) []byte {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", argv[0], err)
	}
	timer := time.AfterFunc(timeout, func() { cmd.Process.Kill() })
	defer timer.Stop()
	defer cmd.Process.Kill() // if during fails the test
	during()
	if err := cmd.Wait(); err != nil {
		fmt.Fprintf(&out, "\n%s: %v", argv[0], err)
	}
	return out.Bytes()
}

// h2loadSummary is what h2load prints at its end.
type h2loadSummary struct {
	total, succeeded, failed, errored, timeout int64
	status                                     [4]int64 // 2xx, 3xx, 4xx, 5xx
}

func (s *h2loadSummary) add(r h2loadSummary) {
	s.total += r.total
	s.succeeded += r.succeeded
	s.failed += r.failed
	s.errored += r.errored
	s.timeout += r.timeout
	for i := range s.status {
		s.status[i] += r.status[i]
	}
}

var (
	h2loadRequests = regexp.MustCompile(`requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout`)
	h2loadStatus   = regexp.MustCompile(`status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx`)
)

// parseH2load reads h2load's summary lines:
//
//	requests: 124719 total, 124719 started, 124719 done, 124603 succeeded, 116 failed, 116 errored, 0 timeout
//	status codes: 124603 2xx, 0 3xx, 0 4xx, 0 5xx
func parseH2load(out []byte) (h2loadSummary, error) {
	var r h2loadSummary
	m := h2loadRequests.FindSubmatch(out)
	st := h2loadStatus.FindSubmatch(out)
	if m == nil || st == nil {
		return r, fmt.Errorf("no summary in h2load's output")
	}
	for i, p := range []*int64{&r.total, &r.succeeded, &r.failed, &r.errored, &r.timeout} {
		*p, _ = strconv.ParseInt(string(m[i+1]), 10, 64)
	}
	for i := range r.status {
		r.status[i], _ = strconv.ParseInt(string(st[i+1]), 10, 64)
	}
	return r, nil
}

// needH2load returns h2load's path; without it the test skips, or fails
// in CI (scripts/test installs it: Debian's nghttp2-client).
func needH2load(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("h2load")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("h2load (nghttp2-client) is needed: %v", err)
		}
		t.Skipf("h2load (nghttp2-client) not installed: %v", err)
	}
	return p
}

func hostOf(t *testing.T, addr string) string {
	t.Helper()
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return h
}
