package metrics_test

import (
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/launcherd/launcher/drain"
	"github.com/launcherd/launcher/internal/race"
	"github.com/launcherd/launcher/metrics"
)

// The benchmarks measure what the launcher adds on a request's path: the
// drain.Server wrapper (in-flight count, drain check) and, with a
// metrics.Worker as Observer, the pooled status recorder, a clock read,
// a code counter and a histogram observation. The handler and the
// ResponseWriter do as little as possible so that the difference is the
// wrapper's cost.

var benchBody = []byte("hello from v1\n")

// bareHandler writes a status and a short body, and allocates nothing.
var bareHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.WriteHeader(http.StatusOK)
	w.Write(benchBody)
})

// nopWriter is a minimal http.ResponseWriter with a fixed header map that
// keeps nothing, unlike httptest.ResponseRecorder, which allocates.
type nopWriter struct {
	h    http.Header
	code int
}

func newNopWriter() *nopWriter                       { return &nopWriter{h: make(http.Header)} }
func (w *nopWriter) Header() http.Header             { return w.h }
func (w *nopWriter) WriteHeader(code int)            { w.code = code }
func (w *nopWriter) Write(b []byte) (n int, e error) { return len(b), nil }

// closedListener makes drain.Server.Serve return at once, after it has
// installed its wrapper as the http.Server's Handler.
type closedListener struct{}

func (closedListener) Accept() (net.Conn, error) { return nil, net.ErrClosed }
func (closedListener) Close() error              { return nil }
func (closedListener) Addr() net.Addr            { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// benchCase is a handler as the launcher runs it.
type benchCase struct {
	name    string
	handler func(testing.TB) http.Handler
}

var benchCases = []benchCase{
	{"bare", func(testing.TB) http.Handler { return bareHandler }},
	{"drain", func(tb testing.TB) http.Handler { return wrapped(tb, false) }},
	{"drain+metrics", func(tb testing.TB) http.Handler { return wrapped(tb, true) }},
}

// wrapped returns bareHandler wrapped by a drain.Server, with a
// metrics.Worker as Observer if withMetrics, as launcher.App.Run does.
func wrapped(tb testing.TB, withMetrics bool) http.Handler {
	tb.Helper()
	tr := drain.NewTracker()
	srv := &drain.Server{HTTP: &http.Server{Handler: bareHandler}, Tracker: tr}
	if withMetrics {
		srv.Observer = metrics.NewWorker(tr)
	}
	if err := srv.Serve(closedListener{}); err != nil {
		tb.Fatalf("Serve = %v; want nil", err)
	}
	return srv.HTTP.Handler
}

func BenchmarkRequestPath(b *testing.B) {
	for _, bc := range benchCases {
		b.Run(bc.name, func(b *testing.B) {
			h := bc.handler(b)
			w, r := newNopWriter(), httptest.NewRequest(http.MethodGet, "/", nil)
			b.ReportAllocs()
			for b.Loop() {
				h.ServeHTTP(w, r)
			}
		})
	}
}

func BenchmarkRequestPathParallel(b *testing.B) {
	for _, bc := range benchCases {
		b.Run(bc.name, func(b *testing.B) {
			h := bc.handler(b)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				w, r := newNopWriter(), httptest.NewRequest(http.MethodGet, "/", nil)
				for pb.Next() {
					h.ServeHTTP(w, r)
				}
			})
		})
	}
}

// TestRequestPathDoesNotAllocate: the wrapper, with metrics, adds no
// allocation per request (the status recorder is pooled).
func TestRequestPathDoesNotAllocate(t *testing.T) {
	if race.Enabled {
		t.Skip("allocation counts are meaningless under -race (sync.Pool drops items); scripts/test runs this test without it")
	}
	for _, bc := range benchCases {
		t.Run(bc.name, func(t *testing.T) {
			h := bc.handler(t)
			w, r := newNopWriter(), httptest.NewRequest(http.MethodGet, "/", nil)
			h.ServeHTTP(w, r) // fill the pool
			if got := testing.AllocsPerRun(1000, func() { h.ServeHTTP(w, r) }); got != 0 {
				t.Errorf("allocations per request = %v; want 0", got)
			}
			if w.code != http.StatusOK {
				t.Errorf("status = %d; want %d", w.code, http.StatusOK)
			}
		})
	}
}
