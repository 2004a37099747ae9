package loadgen

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// short is a run bounded tightly in time and count, for tests.
func short(addr string, mode Mode) Config {
	return Config{
		Addr:        addr,
		Mode:        mode,
		Workers:     4,
		Duration:    300 * time.Millisecond,
		MaxRequests: 3000,
		Timeout:     5 * time.Second,
		SleepMin:    5 * time.Millisecond,
		SleepMax:    20 * time.Millisecond,
	}
}

func mustRun(t *testing.T, cfg Config) *Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return res
}

func TestRunNoFailures(t *testing.T) {
	for _, tc := range []struct {
		mode   Mode
		method string
	}{
		{NewConn, "GET"}, {KeepAlive, "GET"}, {Long, "GET"},
		{NewConn, "POST"}, {KeepAlive, "POST"}, {Long, "POST"},
	} {
		t.Run(string(tc.mode)+"/"+tc.method, func(t *testing.T) {
			srv := newHelloServer(t, 0, "v1", "v2")
			cfg := short(srv.addr(), tc.mode)
			cfg.Method = tc.method
			res := mustRun(t, cfg)
			if res.Requests < 4 {
				t.Fatalf("only %d requests", res.Requests)
			}
			if f := res.Failures(); f != 0 {
				t.Fatalf("%d failures: %v %v", f, res.Count, res.Samples)
			}
			if got := res.Versions["v1"] + res.Versions["v2"]; got != res.Requests || res.Versions["v1"] == 0 || res.Versions["v2"] == 0 {
				t.Errorf("versions %v, want v1+v2 = %d, both > 0", res.Versions, res.Requests)
			}
			if got := srv.reqs.Load(); got != res.Requests {
				t.Errorf("server answered %d requests, client recorded %d", got, res.Requests)
			}
			n := int64(0)
			for r := range res.Records() {
				n++
				if r.Class != OK || (r.Version != "v1" && r.Version != "v2") || r.Latency <= 0 {
					t.Fatalf("bad record %+v", r)
				}
				if tc.mode == Long && r.Latency < 5*time.Millisecond {
					t.Fatalf("long request faster than its sleep: %+v", r)
				}
			}
			if n != res.Requests {
				t.Errorf("Records yielded %d, Requests = %d", n, res.Requests)
			}
		})
	}
}

func TestKeepAliveReusesConnections(t *testing.T) {
	for _, tc := range []struct {
		mode Mode
		want func(reqs int64) int64 // connections the server should see
	}{
		{KeepAlive, func(int64) int64 { return 4 }},
		{NewConn, func(reqs int64) int64 { return reqs }},
	} {
		t.Run(string(tc.mode), func(t *testing.T) {
			srv := newHelloServer(t, 0, "v1")
			cfg := short(srv.addr(), tc.mode)
			cfg.MaxRequests = 400
			cfg.Duration = 10 * time.Second
			res := mustRun(t, cfg)
			if res.Requests != 400 || res.Failures() != 0 {
				t.Fatalf("requests %d, failures %v", res.Requests, res.Count)
			}
			srv.Close() // wait for the server to see every connection
			if got, want := srv.conns.Load(), tc.want(res.Requests); got != want {
				t.Errorf("server accepted %d connections, want %d", got, want)
			}
		})
	}
}

// TestKeepAliveHonorsConnectionClose: a server that closes right after a
// "Connection: close" answer must cause no failure, only redials.
func TestKeepAliveHonorsConnectionClose(t *testing.T) {
	answers := map[string]string{
		"connection-close": "HTTP/1.1 200 OK\r\nContent-Length: 14\r\nConnection: close\r\n\r\nhello from v7\n",
		"http1.0":          "HTTP/1.0 200 OK\r\nContent-Length: 14\r\n\r\nhello from v7\n",
		"no-length":        "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello from v7\n",
	}
	for name, answer := range answers {
		t.Run(name, func(t *testing.T) {
			srv := newRawServer(t, func(c *net.TCPConn, br *bufio.Reader) {
				if readRequest(br) == nil {
					io.WriteString(c, answer)
				}
				c.Close()
			})
			cfg := short(srv.addr(), KeepAlive)
			cfg.MaxRequests = 200
			cfg.Duration = 10 * time.Second
			res := mustRun(t, cfg)
			if res.Requests != 200 || res.Failures() != 0 || res.Versions["v7"] != 200 {
				t.Fatalf("requests %d, counts %v, versions %v, samples %v", res.Requests, res.Count, res.Versions, res.Samples)
			}
			if got := srv.conns.Load(); got != 200 {
				t.Errorf("server accepted %d connections, want one per request", got)
			}
		})
	}

	t.Run("net/http-every-3rd", func(t *testing.T) {
		srv := newHelloServer(t, 3, "v1")
		cfg := short(srv.addr(), KeepAlive)
		cfg.MaxRequests = 300
		cfg.Duration = 10 * time.Second
		res := mustRun(t, cfg)
		if res.Requests != 300 || res.Failures() != 0 {
			t.Fatalf("requests %d, counts %v, samples %v", res.Requests, res.Count, res.Samples)
		}
		srv.Close()
		if got := srv.conns.Load(); got < 100 || got > 104 {
			t.Errorf("server accepted %d connections, want 100..104", got)
		}
	})
}

// TestNoSilentRetry: a server that closes a keep-alive connection after
// one answer, without "Connection: close", makes the next request on that
// connection fail; it must be counted, not retried.
func TestNoSilentRetry(t *testing.T) {
	srv := newRawServer(t, func(c *net.TCPConn, br *bufio.Reader) {
		if readRequest(br) == nil {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\nhello from v1\n")
		}
		c.Close()
	})
	cfg := short(srv.addr(), KeepAlive)
	cfg.Workers, cfg.MaxRequests, cfg.Duration = 1, 10, 10*time.Second
	res := mustRun(t, cfg)
	if res.Requests != 10 || res.Count[OK] != 5 || res.Count[EOF]+res.Count[Reset] != 5 {
		t.Fatalf("counts %v, want 5 ok and 5 eof or reset; samples %q", res.Count, res.Samples)
	}
	if got := srv.conns.Load(); got != 5 {
		t.Errorf("server accepted %d connections, want 5", got)
	}
	t.Logf("failures: %v", res.Samples)
}

func TestRunStops(t *testing.T) {
	srv := newHelloServer(t, 0, "v1")

	t.Run("MaxRequests", func(t *testing.T) {
		cfg := short(srv.addr(), KeepAlive)
		cfg.MaxRequests, cfg.Duration = 123, 10*time.Second
		if res := mustRun(t, cfg); res.Requests != 123 {
			t.Errorf("Requests = %d, want 123", res.Requests)
		}
	})

	t.Run("Duration", func(t *testing.T) {
		cfg := short(srv.addr(), KeepAlive)
		cfg.MaxRequests, cfg.Duration = 0, 200*time.Millisecond
		t0 := time.Now()
		res := mustRun(t, cfg)
		if took := time.Since(t0); took < 200*time.Millisecond || took > 3*time.Second {
			t.Errorf("run took %v for a Duration of 200ms", took)
		}
		if res.Elapsed < 200*time.Millisecond || res.Requests == 0 {
			t.Errorf("Elapsed %v, Requests %d", res.Elapsed, res.Requests)
		}
	})

	t.Run("Stop", func(t *testing.T) {
		cfg := short(srv.addr(), Long)
		cfg.MaxRequests, cfg.Duration = 0, 10*time.Second
		cfg.SleepMin, cfg.SleepMax = 300*time.Millisecond, 300*time.Millisecond
		stop := make(chan struct{})
		cfg.Stop = stop
		time.AfterFunc(100*time.Millisecond, func() { close(stop) })
		t0 := time.Now()
		res := mustRun(t, cfg)
		// The requests in flight at the stop end in full: none aborted.
		if took := time.Since(t0); took < 300*time.Millisecond || took > 3*time.Second {
			t.Errorf("run took %v, stopped at 100ms with 300ms requests in flight", took)
		}
		if res.Requests != int64(cfg.Workers) || res.Count[OK] != res.Requests || res.Aborted != 0 {
			t.Errorf("Requests %d, OK %d, Aborted %d; want %d, all OK, none aborted (%v)", res.Requests, res.Count[OK], res.Aborted, cfg.Workers, res.Samples)
		}
	})

	t.Run("cancel", func(t *testing.T) {
		cfg := short(srv.addr(), Long)
		cfg.SleepMin, cfg.SleepMax = 20*time.Second, 20*time.Second
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		t0 := time.Now()
		res, err := Run(ctx, cfg)
		if took := time.Since(t0); took > 3*time.Second {
			t.Errorf("cancelled run took %v", took)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err = %v, want one wrapping context.DeadlineExceeded", err)
		}
		if res == nil || res.Requests != 0 || res.Aborted != 4 {
			t.Fatalf("result %+v, want 0 requests and 4 aborted", res)
		}
	})
}

func TestConfigErrors(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no addr":       {},
		"bad addr":      {Addr: "localhost"},
		"bad mode":      {Addr: "127.0.0.1:1", Mode: "burst"},
		"bad method":    {Addr: "127.0.0.1:1", Method: "PUT"},
		"workers":       {Addr: "127.0.0.1:1", Workers: -1},
		"duration":      {Addr: "127.0.0.1:1", Duration: 2 * time.Hour},
		"max requests":  {Addr: "127.0.0.1:1", MaxRequests: MaxRequestsLimit + 1},
		"timeout":       {Addr: "127.0.0.1:1", Timeout: -time.Second},
		"sleep range":   {Addr: "127.0.0.1:1", SleepMin: 3 * time.Second, SleepMax: time.Second},
		"negative runs": {Addr: "127.0.0.1:1", MaxRequests: -5},
	} {
		t.Run(name, func(t *testing.T) {
			if res, err := Run(context.Background(), cfg); err == nil || res != nil {
				t.Errorf("Run(%+v) = %v, %v; want an error", cfg, res, err)
			}
		})
	}
}
