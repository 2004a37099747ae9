package promtest_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/launcherd/launcher/internal/promtest"
)

// exposition is what the test target serves, in the text format.
const exposition = `# TYPE promtest_answer gauge
promtest_answer{kind="a"} 42
promtest_answer{kind="b"} 7
# TYPE promtest_events_total counter
promtest_events_total 3
`

// startTarget serves exposition at /metrics on 127.0.0.1 and returns its
// host:port.
func startTarget(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprint(w, exposition)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func TestServerQueries(t *testing.T) {
	t.Parallel()
	target := startTarget(t)
	prom := promtest.Start(t, []string{target})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if _, err := prom.WaitFor(ctx, `up{job="launcher"} == 1`, promtest.AtLeast(1)); err != nil {
		t.Fatalf("target never scraped: %v", err)
	}

	tests := []struct {
		promql     string
		wantLabels map[string]string // subset of the labels of the only sample
		wantValue  float64
		wantErr    string // substring of the error; empty for success
	}{
		{
			promql:     `promtest_answer{kind="a"}`,
			wantLabels: map[string]string{"__name__": "promtest_answer", "job": promtest.Job, "instance": target, "kind": "a"},
			wantValue:  42,
		},
		{promql: `sum(promtest_answer)`, wantLabels: map[string]string{}, wantValue: 49},
		{promql: `scalar(promtest_answer{kind="b"})`, wantLabels: map[string]string{}, wantValue: 7},
		{promql: `sum(`, wantErr: "bad_data"},
		{promql: `promtest_answer[1m]`, wantErr: `result type "matrix"`},
	}
	for _, tt := range tests {
		t.Run(tt.promql, func(t *testing.T) {
			got, err := prom.Query(ctx, tt.promql)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Query(%q) error = %v; want one containing %q", tt.promql, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Query(%q): %v", tt.promql, err)
			}
			if len(got) != 1 {
				t.Fatalf("Query(%q) = %v; want 1 sample", tt.promql, got)
			}
			if got[0].Value != tt.wantValue {
				t.Errorf("Query(%q) value = %v; want %v", tt.promql, got[0].Value, tt.wantValue)
			}
			for k, v := range tt.wantLabels {
				if got[0].Labels[k] != v {
					t.Errorf("Query(%q) label %s = %q; want %q", tt.promql, k, got[0].Labels[k], v)
				}
			}
		})
	}

	t.Run("APIError", func(t *testing.T) {
		_, err := prom.Query(ctx, `rate(promtest_answer)`)
		var apiErr *promtest.APIError
		if !errors.As(err, &apiErr) || apiErr.Type != "bad_data" || apiErr.StatusCode != http.StatusBadRequest {
			t.Fatalf("Query error = %#v; want *APIError of type bad_data, HTTP 400", err)
		}
	})

	t.Run("QueryRange", func(t *testing.T) {
		end := time.Now()
		got, err := prom.QueryRange(ctx, `promtest_events_total`, end.Add(-5*time.Second), end, time.Second)
		if err != nil {
			t.Fatalf("QueryRange: %v", err)
		}
		if len(got) != 1 || len(got[0].Points) == 0 || got[0].Points[len(got[0].Points)-1].Value != 3 {
			t.Fatalf("QueryRange = %+v; want one series ending at 3", got)
		}
	})

	t.Run("QueryAt", func(t *testing.T) {
		// Before the first scrape there is no sample; now there is one.
		got, err := prom.QueryAt(ctx, `promtest_events_total`, time.Now().Add(-time.Hour))
		if err != nil || len(got) != 0 {
			t.Fatalf("QueryAt(an hour ago) = %v, %v; want no sample", got, err)
		}
		at := time.Now()
		got, err = prom.QueryAt(ctx, `promtest_events_total`, at)
		if err != nil || len(got) != 1 || got[0].Value != 3 || !got[0].Time.Equal(at.Truncate(time.Millisecond)) {
			t.Fatalf("QueryAt(%v) = %v, %v; want 3 at that time", at, got, err)
		}
	})

	t.Run("WaitForInvalidQueryFailsFast", func(t *testing.T) {
		start := time.Now()
		_, err := prom.WaitFor(ctx, `sum(`, promtest.AtLeast(1))
		if err == nil || time.Since(start) > 5*time.Second {
			t.Fatalf("WaitFor(invalid) = %v after %v; want an error at once", err, time.Since(start))
		}
	})

	t.Run("WaitForTimeout", func(t *testing.T) {
		short, cancel := context.WithTimeout(ctx, 700*time.Millisecond)
		defer cancel()
		_, err := prom.WaitFor(short, `promtest_answer > 100`, promtest.AtLeast(1))
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("WaitFor(never true) error = %v; want context.DeadlineExceeded", err)
		}
	})
}

func TestServerStoppedAtCleanup(t *testing.T) {
	t.Parallel()
	var url string
	t.Run("start", func(t *testing.T) {
		url = promtest.Start(t, nil).URL()
	})
	if url == "" {
		t.Skip("prometheus did not start")
	}
	resp, err := http.Get(url + "/-/ready")
	if err == nil {
		resp.Body.Close()
		t.Fatalf("prometheus at %s still answers after its test ended", url)
	}
}

// recordingTB records how a test would have ended, instead of ending it.
type recordingTB struct {
	testing.TB
	ended string // "skip" or "fatal"
	msg   string
}

func (r *recordingTB) Skipf(format string, args ...any) {
	r.ended, r.msg = "skip", fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *recordingTB) Fatalf(format string, args ...any) {
	r.ended, r.msg = "fatal", fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestMissingBinary(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-such-prometheus")
	tests := []struct {
		ci   string
		want string
	}{
		{ci: "", want: "skip"},
		{ci: "false", want: "skip"},
		{ci: "true", want: "fatal"},
	}
	for _, tt := range tests {
		t.Run("CI="+tt.ci, func(t *testing.T) {
			t.Setenv("CI", tt.ci)
			rec := &recordingTB{TB: t}
			done := make(chan struct{})
			go func() {
				defer close(done)
				promtest.Start(rec, nil, promtest.WithBinary(missing))
			}()
			<-done
			if rec.ended != tt.want || !strings.Contains(rec.msg, "no-such-prometheus") {
				t.Fatalf("Start with a missing binary ended the test with %q (%s); want %q naming the binary", rec.ended, rec.msg, tt.want)
			}
		})
	}
}

func TestPromtool(t *testing.T) {
	path := promtest.Promtool(t)
	if filepath.Base(path) != "promtool" {
		t.Fatalf("Promtool = %q; want a path to promtool", path)
	}
}
