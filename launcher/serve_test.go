package launcher

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/launcherd/launcher/drain"
	"github.com/launcherd/launcher/internal/control"
	"github.com/launcherd/launcher/internal/testcert"
)

// TestServeKeepsTheServersSettings: Serve runs the caller's http.Server as
// configured: TLS (and HTTP/2) from its TLSConfig, its ErrorLog, and its
// timeouts (a silent connection is closed at its 200 ms
// ReadHeaderTimeout, which bounds the TLS handshake, not at Run's 30 s);
// ending ctx drains it and Serve returns nil.
func TestServeKeepsTheServersSettings(t *testing.T) {
	f := startFakeSupervisor(t, 1, 2, "")
	supervisedEnv(t, f.path, false)
	app, err := New(quietOptions())
	if err != nil {
		t.Fatal(err)
	}
	c := f.conn(t)
	errLog := &syncBuffer{}
	tlsConfig := testcert.New(t).ServerConfig()
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, r.Proto)
		}),
		TLSConfig:         tlsConfig,
		ErrorLog:          log.New(errLog, "", 0),
		ReadHeaderTimeout: 200 * time.Millisecond,
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- app.Serve(ctx, srv) }() // ends when ctx does
	read(t, c, control.TypeListen)
	c.Write(control.Message{Type: control.TypeGrant})
	read(t, c, control.TypeListening)
	read(t, c, control.TypeReady)
	addr := app.listeners()[0].Addr().String()

	pool := x509.NewCertPool()
	pool.AddCert(tlsConfig.Certificates[0].Leaf) // not srv's: Serve owns srv now
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2: true,
	}}
	defer client.CloseIdleConnections()
	resp, err := client.Get("https://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "HTTP/2.0" {
		t.Errorf("served %q; want HTTP/2.0 over TLS", body)
	}

	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	start := time.Now()
	silent.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); err == nil {
		t.Error("a silent connection got bytes")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("a silent connection was closed after %s; want about the 200ms ReadHeaderTimeout", took.Round(time.Millisecond))
	}

	plain, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(plain, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	io.ReadAll(plain)
	plain.Close()
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(errLog.String(), "TLS handshake error") && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(errLog.String(), "TLS handshake error") {
		t.Errorf("the server's ErrorLog got %q; want its TLS handshake error", errLog.String())
	}

	client.CloseIdleConnections()
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Serve did not return after ctx ended")
	}
}

// TestDrainedReportsCut: a server that is not Run's gets its drain
// deadline from DrainContext (the supervisor's drain timeout, counted from
// the release) and reports what it cut with Drained, which the supervisor
// receives as Drained with Cut.
func TestDrainedReportsCut(t *testing.T) {
	drainedCase(t, func(app *App) { app.Drained(3) }, func(m control.Message) error {
		if m.Cut != 3 || m.Error == "" {
			return fmt.Errorf("drained message %+v; want Cut 3 and the reason", m)
		}
		return nil
	})
}

// TestReportDrainReportsCutConnections: ReportDrain takes a Drain's
// error as it is: the connections it cut reach the supervisor, as Run's
// do, though no request was cut; Drained(0) reported such a drain as
// clean (a new user's trial). A nil error is a clean drain.
func TestReportDrainReportsCutConnections(t *testing.T) {
	drainedCase(t, func(app *App) {
		app.ReportDrain(fmt.Errorf("drain: %w", &drain.CutError{Connections: 4, Err: context.DeadlineExceeded}))
	}, func(m control.Message) error {
		if m.Cut != 0 || m.CutConns != 4 || m.Error == "" {
			return fmt.Errorf("drained message %+v; want 4 connections cut and the reason", m)
		}
		return nil
	})
	drainedCase(t, func(app *App) { app.ReportDrain(nil) }, func(m control.Message) error {
		if m.Cut != 0 || m.CutConns != 0 || m.Error != "" {
			return fmt.Errorf("drained message %+v; want a clean drain", m)
		}
		return nil
	})
}

// drainedCase runs an App under a fake supervisor to its release and
// drain deadline, reports the drain's end with report, and checks what
// the supervisor read.
func drainedCase(t *testing.T, report func(*App), check func(control.Message) error) {
	t.Helper()
	f := startFakeSupervisor(t, 1, 2, "")
	supervisedEnv(t, f.path, false)
	app, err := New(quietOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	c := f.conn(t)
	listened := make(chan error, 1)
	go func() { // ends once the grant below is read
		lns, err := app.Listen(context.Background())
		if err == nil {
			for _, ln := range lns {
				go func() { // accepts until the release closes ln
					for {
						c, err := ln.Accept()
						if err != nil {
							return
						}
						c.Close()
					}
				}()
			}
		}
		listened <- err
	}()
	read(t, c, control.TypeListen)
	c.Write(control.Message{Type: control.TypeGrant})
	read(t, c, control.TypeListening)
	if err := <-listened; err != nil {
		t.Fatal(err)
	}
	if err := app.Ready(); err != nil {
		t.Fatal(err)
	}
	read(t, c, control.TypeReady)

	released := time.Now()
	c.Write(control.Message{Type: control.TypeRelease, ID: 1, SettleMS: 10, DrainMS: 1500})
	read(t, c, control.TypeReleased)
	app.Wait(context.Background()) // Stopping is closed
	ctx, cancel := app.DrainContext(context.Background())
	defer cancel()
	deadline, ok := ctx.Deadline()
	if want := released.Add(1500 * time.Millisecond); !ok || deadline.Before(want.Add(-100*time.Millisecond)) || deadline.After(want.Add(time.Second)) {
		t.Errorf("drain deadline %s after the release; want about 1.5s", deadline.Sub(released))
	}
	report(app)
	if err := check(read(t, c, control.TypeDrained)); err != nil {
		t.Error(err)
	}
}

// TestBeginEnd: a request between Begin and End is in flight, then
// counted with its code; neither call allocates.
func TestBeginEnd(t *testing.T) {
	app, err := New(quietOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	r := app.Begin()
	if n := app.tracker.Stats().InflightRequests; n != 1 {
		t.Errorf("in flight after Begin = %d; want 1", n)
	}
	r.End(http.StatusServiceUnavailable)
	if n := app.tracker.Stats().InflightRequests; n != 0 {
		t.Errorf("in flight after End = %d; want 0", n)
	}
	if n := requestsWithCode(t, app, "503"); n != 1 {
		t.Errorf("launcher_requests_total{code=\"503\"} = %v; want 1", n)
	}
	if got := testing.AllocsPerRun(1000, func() { app.Begin().End(http.StatusOK) }); got != 0 {
		t.Errorf("allocations per Begin and End = %v; want 0", got)
	}
}

// requestsWithCode returns launcher_requests_total{code} of app.
func requestsWithCode(t *testing.T, app *App, code string) float64 {
	t.Helper()
	mfs, err := app.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "launcher_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "code" && l.GetValue() == code {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestVersion: standalone, the App is labelled with Options.Version, in
// its log lines too; under a supervisor, the supervisor's label wins.
func TestVersion(t *testing.T) {
	for _, tt := range []struct{ env, want string }{
		{"", "v9"},
		{"v3", "v3"}, // as a supervisor sets it (no control socket: New stays standalone otherwise)
	} {
		t.Run("env="+tt.env, func(t *testing.T) {
			t.Setenv(control.EnvVersion, tt.env)
			var logs bytes.Buffer
			opts := quietOptions()
			opts.Version = "v9"
			opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			app, err := New(opts)
			if err != nil {
				t.Fatal(err)
			}
			defer app.Close()
			if got := app.Version(); got != tt.want {
				t.Errorf("Version() = %q; want %s", got, tt.want)
			}
			app.Logger().Info("hi")
			if !strings.Contains(logs.String(), "version="+tt.want) {
				t.Errorf("log line %q lacks version=%s", logs.String(), tt.want)
			}
		})
	}
}

// TestServeTwiceSaysSo: a second Run or Serve on one App is refused,
// naming what was called twice, and leaves the first serving; it said
// "Listen called twice", a call the app never made (a new user's trial).
func TestServeTwiceSaysSo(t *testing.T) {
	opts := quietOptions()
	opts.Addr = "127.0.0.1:0"
	app, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- app.Serve(ctx, &http.Server{Handler: http.NotFoundHandler()}) }() // ends with ctx
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		app.mu.Lock()
		began := app.serving
		app.mu.Unlock()
		if began {
			break
		}
	}
	err = app.Serve(context.Background(), &http.Server{Handler: http.NotFoundHandler()})
	if err == nil || !strings.Contains(err.Error(), "Run or Serve called twice") {
		t.Errorf("second Serve: %v; want it refused as a second call", err)
	}
	select {
	case err := <-served:
		t.Fatalf("the first Serve returned at the second call: %v", err)
	default:
	}
	cancel()
	select {
	case <-served:
	case <-time.After(15 * time.Second):
		t.Fatal("the first Serve did not return after ctx ended")
	}
}
