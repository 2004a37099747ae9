package drain_test

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/launcherd/launcher/drain"
	"github.com/launcherd/launcher/internal/loadgen"
)

// TestDrainRacingRequestsOnIdleConns: 5,000 idle keep-alive connections,
// each sending one request at a time spread over the 3 s around the start
// of a drain (with the default IdleGrace of 1 s, all of them are past it
// when the drain starts). A request sent on a connection the server has
// not closed must be answered: the drain must not close a connection on
// which a request is arriving, nor one whose request it has already read.
func TestDrainRacingRequestsOnIdleConns(t *testing.T) {
	const (
		conns  = 5000
		spread = 3 * time.Second
	)
	if err := loadgen.RaiseNoFile(2*conns + 200); err != nil {
		t.Skip(err)
	}
	s := &drain.Server{HTTP: &http.Server{Handler: helloHandler}, Tracker: drain.NewTracker()}
	addr := startServer(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool, err := loadgen.OpenIdle(ctx, addr, conns, 64)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()

	// All idle for more than the grace when the drain starts.
	from := time.Now().Add(drain.DefaultIdleGrace + 100*time.Millisecond)
	drainAt := from.Add(spread / 2)
	sent := make(chan loadgen.IdleResult, 1)
	go func() { sent <- pool.SendSpread(ctx, from, spread, 256) }()
	time.Sleep(time.Until(drainAt))
	start, drained := startDrain(s, 30*time.Second)
	err = waitErr(t, drained, 30*time.Second)
	took := time.Since(start)
	res := <-sent
	t.Logf("%d answered, %d not sent (closed by the drain first), %d sent and not answered; drain took %s",
		res.Answered, res.NotSent, len(res.Failed), took.Round(time.Millisecond))
	// The keep-alive race (see loadgen.RaceBound) may take a request or
	// two; anything else is the server's.
	for i, f := range res.Failed {
		t.Logf("request sent %+.3fs from the drain's start not answered (empty: %v): %s: %v", f.Sent.Sub(start).Seconds(), f.Empty, f.Class, f.Err)
		if i == 10 {
			break
		}
	}
	if bad := res.Unexplained(conns); len(bad) > 0 {
		t.Errorf("%d request(s) sent on an open connection not answered; the keep-alive race explains at most %d, ended with nothing of an answer read", len(res.Failed), loadgen.RaceBound(conns))
	}
	if err != nil {
		t.Errorf("Drain = %v; want nil", err)
	}
	if got := res.Answered + res.NotSent + len(res.Failed); got != conns {
		t.Errorf("%d outcomes; want one per connection, %d", got, conns)
	}
	// Half the requests are sent before the drain starts and are always
	// answered; after it, each goes out either before its connection is
	// closed (answered) or after (not sent).
	if res.Answered < conns/2 {
		t.Errorf("%d answered; want at least the %d sent before the drain", res.Answered, conns/2)
	}
}

// TestDrainSlowHeader: a client sends its request header one line every
// 0.5 s, on a new connection or on an idle keep-alive one, and the drain
// starts while it does (more than IdleGrace after its connection was last
// idle). The connection has received bytes it has not answered: the drain
// must not close it as idle. The request is answered, or, when the drain's
// deadline comes first, cut there and counted.
func TestDrainSlowHeader(t *testing.T) {
	const every = 500 * time.Millisecond
	tests := []struct {
		name      string
		keepAlive bool          // one request answered on the connection first
		deadline  time.Duration // of the drain
		wantCut   bool
	}{
		{"new connection", false, 10 * time.Second, false},
		{"keep-alive connection", true, 10 * time.Second, false},
		{"cut at the deadline", false, 2 * time.Second, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := &drain.Server{HTTP: &http.Server{Handler: helloHandler}, Tracker: drain.NewTracker()}
			addr := startServer(t, s)
			c, err := net.DialTimeout("tcp", addr, safety)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			br := bufio.NewReader(c)
			if tt.keepAlive {
				(&client{t: t, c: c, br: br}).mustGet("/")
			}
			type answer struct {
				resp *http.Response
				err  error
				at   time.Time
			}
			answers := make(chan answer, 1)
			go func() { // 9 lines, 4 s
				resp, _, err := loadgen.SlowRequest(c, br, "test", "/", 7, every)
				answers <- answer{resp, err, time.Now()}
			}()
			time.Sleep(drain.DefaultIdleGrace + every) // 3 lines sent
			start, drained := startDrain(s, tt.deadline)
			a := <-answers
			err = waitErr(t, drained, safety)
			took := a.at.Sub(start)
			if !tt.wantCut {
				if a.err != nil {
					t.Fatalf("slow request cut %s into the drain: %v; want it answered", took.Round(time.Millisecond), a.err)
				}
				if !a.resp.Close {
					t.Errorf("answer during the drain: resp.Close = false; want Connection: close")
				}
				if err != nil {
					t.Errorf("Drain = %v; want nil", err)
				}
				return
			}
			if a.err == nil {
				t.Fatalf("slow request answered %s into the drain; want it cut at the deadline %s", took, tt.deadline)
			}
			if took < tt.deadline-50*time.Millisecond {
				t.Errorf("slow request cut %s into the drain (%v); want not before the deadline %s", took.Round(time.Millisecond), a.err, tt.deadline)
			}
			var cut *drain.CutError
			if !errors.As(err, &cut) || cut.Connections != 1 || cut.Requests != 1 {
				t.Errorf("Drain = %v; want a CutError counting 1 connection and 1 request", err)
			}
			if err != nil && !strings.Contains(err.Error(), "1 requests in flight") {
				t.Errorf("Drain = %v; want the request counted", err)
			}
		})
	}
}
