package loadgen

import (
	"bufio"
	"context"
	"net"
	"testing"
	"time"
)

// TestIdlePool: idle keep-alive connections each send one request at
// spread times and count it answered; once the server has closed them,
// nothing is sent on them and nothing counts as failed.
func TestIdlePool(t *testing.T) {
	const n = 20
	srv := newHelloServer(t, 0, "v1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := OpenIdle(ctx, srv.addr(), n, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if got := srv.conns.Load(); got != n {
		t.Fatalf("%d connections opened; want %d", got, n)
	}

	start := time.Now()
	res := pool.SendSpread(ctx, start, 100*time.Millisecond, 4)
	if res.Answered != n || res.NotSent != 0 || len(res.Failed) != 0 {
		t.Fatalf("first round: %+v; want %d answered", res, n)
	}
	if d := time.Since(start); d < 95*time.Millisecond {
		t.Errorf("first round took %s; want the sends spread over 100ms", d)
	}

	srv.CloseClientConnections()
	time.Sleep(50 * time.Millisecond) // the FINs arrive
	res = pool.SendSpread(ctx, time.Now(), 0, 4)
	if res.Answered != 0 || res.NotSent != n || len(res.Failed) != 0 {
		t.Errorf("after the server closed them: %+v; want %d not sent, none failed", res, n)
	}
}

// TestSlowRequest: a header sent a line at a time is answered.
func TestSlowRequest(t *testing.T) {
	srv := newHelloServer(t, 0, "v1")
	c, err := net.Dial("tcp", srv.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	resp, body, err := SlowRequest(c, bufio.NewReader(c), srv.addr(), "/", 3, 20*time.Millisecond)
	if err != nil || resp.StatusCode != 200 || string(body) != "hello from v1\n" {
		t.Fatalf("SlowRequest = %v, %q, %v; want 200 hello from v1", resp, body, err)
	}
	// The request line, 3 header lines and the empty line: 4 waits.
	if d := time.Since(start); d < 80*time.Millisecond {
		t.Errorf("took %s; want at least 4 waits of 20ms", d)
	}
}

// TestUnexplained: up to one in 1,000 requests that met the connection's
// end with nothing read are the keep-alive race; more, or one that read
// part of an answer or timed out, are not.
func TestUnexplained(t *testing.T) {
	raced := IdleFailure{Class: EOF, Empty: true}
	reset := IdleFailure{Class: Reset, Empty: true}
	partial := IdleFailure{Class: EOF}
	timeout := IdleFailure{Class: Timeout, Empty: true}
	tests := []struct {
		name   string
		n      int
		failed []IdleFailure
		want   int
	}{
		{"none", 5000, nil, 0},
		{"within the bound", 5000, []IdleFailure{raced, reset, raced, raced, raced}, 0},
		{"over the bound", 5000, []IdleFailure{raced, raced, raced, raced, raced, raced}, 1},
		{"too few connections for any", 999, []IdleFailure{raced}, 1},
		{"part of an answer", 5000, []IdleFailure{partial}, 1},
		{"timed out", 5000, []IdleFailure{timeout}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := len(IdleResult{Failed: tt.failed}.Unexplained(tt.n)); got != tt.want {
				t.Errorf("Unexplained(%d) of %d failures = %d; want %d", tt.n, len(tt.failed), got, tt.want)
			}
		})
	}
}
