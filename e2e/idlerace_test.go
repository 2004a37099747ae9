package e2e

import (
	"bufio"
	"context"
	"net"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/launcherd/launcher/drain"
	"github.com/launcherd/launcher/internal/loadgen"
)

// TestUpgradeRacingIdleKeepAlive: 5,000 idle keep-alive connections to v1,
// each sending one request at a time spread over the 3 s around the start
// of v1's drain (an upgrade to v2 with no probation), and a client sending
// its request header to v1 one line every 0.5 s across the drain's start.
// Every request sent on a connection v1 has not closed is answered; the
// slow request is answered by v1, not cut; the drain cuts nothing.
func TestUpgradeRacingIdleKeepAlive(t *testing.T) {
	const (
		conns  = 5000
		spread = 3 * time.Second
		every  = 500 * time.Millisecond
	)
	if err := loadgen.RaiseNoFile(conns + 200); err != nil {
		t.Skip(err)
	}
	maddr := freeAddr(t)
	s := startSup(t, "--metrics", maddr, "--probation", "0")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool, err := loadgen.OpenIdle(ctx, s.addr, conns, 64)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()

	slow, err := net.DialTimeout("tcp", s.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	br := bufio.NewReader(slow)
	// A keep-alive connection to v1: its first request answered at once.
	if resp, body, err := loadgen.SlowRequest(slow, br, "test", "/", 1, 0); err != nil || resp.Close || string(body) != "hello from v1\n" {
		t.Fatalf("first request on the slow connection: %v, %q; want a keep-alive hello from v1", err, body)
	}
	type answer struct {
		body  string
		close bool
		err   error
	}
	slowAnswer := make(chan answer, 1)

	// Every connection idle for more than the grace when the drain starts.
	from := time.Now().Add(drain.DefaultIdleGrace + 100*time.Millisecond)
	sent := make(chan loadgen.IdleResult, 1)
	go func() { sent <- pool.SendSpread(ctx, from, spread, 256) }()
	// 11 lines over 5 s, the drain starting about 2 s in.
	time.Sleep(time.Until(from.Add(spread/2 - 4*every)))
	go func() {
		resp, body, err := loadgen.SlowRequest(slow, br, "test", "/", 9, every)
		a := answer{body: string(body), err: err}
		if err == nil {
			a.close = resp.Close
		}
		slowAnswer <- a
	}()
	// The drain starts about 20 ms after the command (the new worker's
	// start and the handover).
	time.Sleep(time.Until(from.Add(spread/2 - 20*time.Millisecond)))
	cmdAt := time.Now()
	out, errOut, code := s.cli("upgrade", "--wait", "v2")
	if code != 0 {
		t.Fatalf("upgrade --wait v2: exit %d: %s", code, errOut)
	}
	drainAt := cmdAt.Add(progressAt(t, out, "generation 1 (v1) draining"))
	res := <-sent
	t.Logf("%d answered, %d not sent (closed by the drain first), %d sent and not answered\n%s",
		res.Answered, res.NotSent, len(res.Failed), out)
	// The keep-alive race (see loadgen.RaceBound) may take a request or
	// two; anything else is the server's.
	for i, f := range res.Failed {
		t.Logf("request sent %+.3fs from v1's drain not answered (empty: %v): %s: %v", f.Sent.Sub(drainAt).Seconds(), f.Empty, f.Class, f.Err)
		if i == 10 {
			break
		}
	}
	if bad := res.Unexplained(conns); len(bad) > 0 {
		t.Errorf("%d request(s) sent on an open connection not answered; the keep-alive race explains at most %d, ended with nothing of an answer read", len(res.Failed), loadgen.RaceBound(conns))
	}
	if got := res.Answered + res.NotSent + len(res.Failed); got != conns {
		t.Errorf("%d outcomes; want %d", got, conns)
	}
	a := <-slowAnswer
	switch {
	case a.err != nil:
		t.Errorf("slow request: %v; want it answered by v1", a.err)
	case a.body != "hello from v1\n":
		t.Errorf("slow request answered %q; want hello from v1", a.body)
	case !a.close:
		t.Errorf("slow request answered without Connection: close during v1's drain")
	}
	for _, m := range []string{"launcher_drain_cut_requests_total", "launcher_drain_timeouts_total"} {
		if got := metricValue(t, maddr, m); got != 0 {
			t.Errorf("%s = %v; want 0", m, got)
		}
	}
}

// progressAt returns the offset of the progress line containing step in
// the output of upgrade --wait (" 0.075s  generation 1 (v1) draining…").
func progressAt(t *testing.T, out, step string) time.Duration {
	t.Helper()
	m := regexp.MustCompile(`(?m)^\s*([0-9.]+)s\s+` + regexp.QuoteMeta(step)).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no %q line in the upgrade's output:\n%s", step, out)
	}
	f, _ := strconv.ParseFloat(m[1], 64)
	return time.Duration(f * float64(time.Second))
}
