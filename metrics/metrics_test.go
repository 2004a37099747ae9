package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"

	"github.com/launcherd/launcher/drain"
	"github.com/launcherd/launcher/metrics"
)

// gather gathers g and indexes the families by name.
func gather(t *testing.T, g prometheus.Gatherer) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	out := make(map[string]*dto.MetricFamily, len(mfs))
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// labels returns m's labels as a map.
func labels(m *dto.Metric) map[string]string {
	out := make(map[string]string, len(m.GetLabel()))
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// key formats labels as `a="1",b="2"`, sorted, to compare series sets.
func key(ls map[string]string) string {
	parts := make([]string, 0, len(ls))
	for k, v := range ls {
		parts = append(parts, fmt.Sprintf("%s=%q", k, v))
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// value returns the value of a counter, gauge or untyped metric.
func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return math.NaN()
}

// series returns a family's series as label key → value (for histograms,
// the sample count).
func series(mf *dto.MetricFamily) map[string]float64 {
	out := map[string]float64{}
	if mf == nil {
		return out
	}
	for _, m := range mf.Metric {
		v := value(m)
		if h := m.Histogram; h != nil {
			v = float64(h.GetSampleCount())
		}
		out[key(labels(m))] = v
	}
	return out
}

// lint fails t on any problem promlint (promtool check metrics) finds.
func lint(t *testing.T, g prometheus.Gatherer) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatalf("Lint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func eqMaps(a, b map[string]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

type observation struct {
	code int
	d    time.Duration
}

func TestWorkerCountsCodesAndDurations(t *testing.T) {
	tests := []struct {
		name      string
		obs       []observation
		wantCodes map[string]float64 // launcher_requests_total by code
		wantSum   float64            // seconds
		// wantBuckets maps some upper bounds to their cumulative counts.
		wantBuckets map[float64]uint64
	}{
		{
			name:        "no request",
			wantCodes:   map[string]float64{},
			wantBuckets: map[float64]uint64{0.001: 0, 30: 0},
		},
		{
			name:        "one 200",
			obs:         []observation{{200, 30 * time.Millisecond}},
			wantCodes:   map[string]float64{`code="200"`: 1},
			wantSum:     0.03,
			wantBuckets: map[float64]uint64{0.025: 0, 0.05: 1, 30: 1},
		},
		{
			name: "several codes",
			obs: []observation{
				{200, time.Millisecond}, {200, 2 * time.Millisecond}, {404, 3 * time.Millisecond},
				{503, 2 * time.Second}, {101, 0},
			},
			wantCodes:   map[string]float64{`code="200"`: 2, `code="404"`: 1, `code="503"`: 1, `code="101"`: 1},
			wantSum:     2.006,
			wantBuckets: map[float64]uint64{0.001: 2, 0.0025: 3, 0.005: 4, 1: 4, 2.5: 5},
		},
		{
			name: "codes out of range count as 0",
			obs: []observation{
				{-1, time.Millisecond}, {600, time.Millisecond}, {999, time.Millisecond}, {0, time.Millisecond}, {599, time.Millisecond},
			},
			wantCodes:   map[string]float64{`code="0"`: 4, `code="599"`: 1},
			wantSum:     0.005,
			wantBuckets: map[float64]uint64{0.001: 5},
		},
		{
			name:        "beyond the last bucket",
			obs:         []observation{{200, time.Minute}},
			wantCodes:   map[string]float64{`code="200"`: 1},
			wantSum:     60,
			wantBuckets: map[float64]uint64{30: 0},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := metrics.NewWorker(drain.NewTracker())
			reg := prometheus.NewPedanticRegistry() // also checks Collect against Describe
			reg.MustRegister(w)
			for _, o := range tt.obs {
				w.ObserveRequest(o.code, o.d)
			}
			mfs := gather(t, reg)

			if got := series(mfs["launcher_requests_total"]); !eqMaps(got, tt.wantCodes) {
				t.Errorf("launcher_requests_total = %v; want %v", got, tt.wantCodes)
			}
			if mf := mfs["launcher_requests_total"]; mf != nil && mf.GetType() != dto.MetricType_COUNTER {
				t.Errorf("launcher_requests_total type = %v; want COUNTER", mf.GetType())
			}
			for _, name := range []string{"launcher_inflight_requests", "launcher_open_connections"} {
				mf := mfs[name]
				if mf == nil || mf.GetType() != dto.MetricType_GAUGE || len(mf.Metric) != 1 {
					t.Fatalf("%s = %v; want one gauge", name, mf)
				}
				if got := value(mf.Metric[0]); got != 0 {
					t.Errorf("%s = %v; want 0", name, got)
				}
			}
			hf := mfs["launcher_request_duration_seconds"]
			if hf == nil || hf.GetType() != dto.MetricType_HISTOGRAM || len(hf.Metric) != 1 {
				t.Fatalf("launcher_request_duration_seconds = %v; want one histogram", hf)
			}
			h := hf.Metric[0].GetHistogram()
			if got, want := h.GetSampleCount(), uint64(len(tt.obs)); got != want {
				t.Errorf("duration count = %v; want %v", got, want)
			}
			if got := h.GetSampleSum(); math.Abs(got-tt.wantSum) > 1e-9 {
				t.Errorf("duration sum = %v; want %v", got, tt.wantSum)
			}
			for le, want := range tt.wantBuckets {
				i := slices.IndexFunc(h.GetBucket(), func(b *dto.Bucket) bool { return b.GetUpperBound() == le })
				if i < 0 {
					t.Errorf("no bucket le=%v", le)
					continue
				}
				if got := h.GetBucket()[i].GetCumulativeCount(); got != want {
					t.Errorf("bucket le=%v = %v; want %v", le, got, want)
				}
			}
			lint(t, reg)
		})
	}
}

// TestWorkerThroughDrainServer: as Observer of a drain.Server on a real
// socket, a Worker shows the request in flight and the open connection
// from the tracker, then counts the request by code.
func TestWorkerThroughDrainServer(t *testing.T) {
	tr := drain.NewTracker()
	w := metrics.NewWorker(tr)
	reg := prometheus.NewRegistry()
	reg.MustRegister(w)

	started, release := make(chan struct{}), make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/slow", func(rw http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		rw.WriteHeader(http.StatusAccepted)
	})
	mux.HandleFunc("/missing", http.NotFound)
	srv := &drain.Server{HTTP: &http.Server{Handler: mux}, Tracker: tr, Observer: w}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.HTTP.Close()
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	url := "http://" + ln.Addr().String()

	done := make(chan error, 1)
	go func() {
		resp, err := client.Get(url + "/slow")
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	<-started
	mfs := gather(t, reg)
	for name, want := range map[string]float64{"launcher_inflight_requests": 1, "launcher_open_connections": 1} {
		if got := series(mfs[name])[""]; got != want {
			t.Errorf("%s during the request = %v; want %v", name, got, want)
		}
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	resp, err := client.Get(url + "/missing")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	mfs = gather(t, reg)
	want := map[string]float64{`code="202"`: 1, `code="404"`: 1}
	if got := series(mfs["launcher_requests_total"]); !eqMaps(got, want) {
		t.Errorf("launcher_requests_total = %v; want %v", got, want)
	}
	if got := series(mfs["launcher_inflight_requests"])[""]; got != 0 {
		t.Errorf("launcher_inflight_requests after = %v; want 0", got)
	}
}

func TestSupervisorGenerations(t *testing.T) {
	tests := []struct {
		name       string
		gens       []metrics.GenerationInfo
		wantInfo   []string           // label keys of launcher_generation_info
		wantCounts map[string]float64 // launcher_generations by state
	}{
		{
			name:     "none",
			wantInfo: nil,
		},
		{
			name:       "one active",
			gens:       []metrics.GenerationInfo{{Generation: 1, Version: "v1", State: "active"}},
			wantInfo:   []string{`generation="1",state="active",version="v1"`},
			wantCounts: map[string]float64{"active": 1},
		},
		{
			name:       "upgrading",
			gens:       []metrics.GenerationInfo{{Generation: 1, Version: "v1", State: "active"}, {Generation: 2, Version: "v2", State: "starting"}},
			wantInfo:   []string{`generation="1",state="active",version="v1"`, `generation="2",state="starting",version="v2"`},
			wantCounts: map[string]float64{"active": 1, "starting": 1},
		},
		{
			name:       "on probation",
			gens:       []metrics.GenerationInfo{{Generation: 1, Version: "v1", State: "standby"}, {Generation: 2, Version: "v2", State: "active"}},
			wantInfo:   []string{`generation="1",state="standby",version="v1"`, `generation="2",state="active",version="v2"`},
			wantCounts: map[string]float64{"standby": 1, "active": 1},
		},
		{
			name: "draining, exited and failed",
			gens: []metrics.GenerationInfo{
				{Generation: 1, Version: "v1", State: "exited"}, {Generation: 2, Version: "v2", State: "failed"}, {Generation: 3, Version: "v2", State: "exited"}, {Generation: 4, Version: "v3", State: "draining"}, {Generation: 5, Version: "v4", State: "active"},
			},
			wantInfo:   []string{`generation="4",state="draining",version="v3"`, `generation="5",state="active",version="v4"`},
			wantCounts: map[string]float64{"exited": 2, "failed": 1, "draining": 1, "active": 1},
		},
		{
			name:       "stopped",
			gens:       []metrics.GenerationInfo{{Generation: 1, Version: "v1", State: "exited"}, {Generation: 2, Version: "v2", State: "exited"}},
			wantInfo:   nil,
			wantCounts: map[string]float64{"exited": 2},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := metrics.NewSupervisor("steer", func() []metrics.GenerationInfo { return tt.gens })
			reg := prometheus.NewPedanticRegistry()
			reg.MustRegister(s)
			mfs := gather(t, reg)

			var info []string
			for k, v := range series(mfs["launcher_generation_info"]) {
				if v != 1 {
					t.Errorf("launcher_generation_info{%s} = %v; want 1", k, v)
				}
				info = append(info, k)
			}
			sort.Strings(info)
			if !slices.Equal(info, tt.wantInfo) {
				t.Errorf("launcher_generation_info series = %q; want %q", info, tt.wantInfo)
			}
			// Every state is present, at 0 when no generation is in it.
			wantCounts := map[string]float64{}
			for _, st := range []string{"starting", "active", "standby", "draining", "exited", "failed"} {
				wantCounts[fmt.Sprintf("state=%q", st)] = tt.wantCounts[st]
			}
			if got := series(mfs["launcher_generations"]); !eqMaps(got, wantCounts) {
				t.Errorf("launcher_generations = %v; want %v", got, wantCounts)
			}
			want := map[string]float64{`strategy="steer"`: 1}
			if got := series(mfs["launcher_handover_info"]); !eqMaps(got, want) {
				t.Errorf("launcher_handover_info = %v; want %v", got, want)
			}
		})
	}
}

func TestSupervisorUpgradesPreinitialised(t *testing.T) {
	s := metrics.NewSupervisor("close", func() []metrics.GenerationInfo { return nil })
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(s)
	want := map[string]float64{`result="success"`: 0, `result="failed"`: 0, `result="refused"`: 0, `result="aborted"`: 0, `result="rolled_back"`: 0, `result="breached"`: 0}
	if got := series(gather(t, reg)["launcher_upgrades_total"]); !eqMaps(got, want) {
		t.Fatalf("launcher_upgrades_total before any upgrade = %v; want %v", got, want)
	}
	s.Upgrades.WithLabelValues("success").Inc()
	s.Upgrades.WithLabelValues("success").Inc()
	s.Upgrades.WithLabelValues("failed").Inc()
	want[`result="success"`], want[`result="failed"`] = 2, 1
	mfs := gather(t, reg)
	if got := series(mfs["launcher_upgrades_total"]); !eqMaps(got, want) {
		t.Fatalf("launcher_upgrades_total = %v; want %v", got, want)
	}
	// The unlabelled series exist from the start too.
	for _, name := range []string{
		"launcher_upgrade_duration_seconds", "launcher_drain_duration_seconds",
		"launcher_drain_timeouts_total", "launcher_drain_cut_requests_total", "launcher_scrape_errors_total",
	} {
		if got := series(mfs[name]); !eqMaps(got, map[string]float64{"": 0}) {
			t.Errorf("%s = %v; want one series at 0", name, got)
		}
	}
}

// TestLint runs promtool's linter over each registry as it is served.
func TestLint(t *testing.T) {
	w := metrics.NewWorker(drain.NewTracker())
	w.ObserveRequest(200, time.Millisecond)
	w.ObserveRequest(500, time.Second)
	wreg := prometheus.NewRegistry()
	wreg.MustRegister(w)

	s := metrics.NewSupervisor("steer", func() []metrics.GenerationInfo {
		return []metrics.GenerationInfo{{Generation: 1, Version: "v1", State: "draining"}, {Generation: 2, Version: "v2", State: "active"}}
	})
	s.Upgrades.WithLabelValues("success").Inc()
	s.UpgradeDuration.Observe(0.3)
	s.DrainDuration.Observe(2)
	sreg := prometheus.NewRegistry()
	sreg.MustRegister(s)

	dir := shortDir(t)
	targets := []metrics.Target{
		{Socket: fakeWorker(t, dir, "a", workerHandler(t, []observation{{200, time.Millisecond}}, nil)), Generation: 1, Version: "v1"},
		{Socket: fakeWorker(t, dir, "b", workerHandler(t, []observation{{404, time.Millisecond}}, nil)), Generation: 2, Version: "v2"},
	}
	served := prometheus.Gatherers{sreg, metrics.WorkerGatherer{
		Targets: func() []metrics.Target { return targets },
		Errors:  s.ScrapeErrors,
	}}
	for name, g := range map[string]prometheus.Gatherer{"worker": wreg, "supervisor": sreg, "supervisor with workers": served} {
		t.Run(name, func(t *testing.T) { lint(t, g) })
	}
}

// shortDir returns a temporary directory with a short path: a unix
// socket path must fit in 108 bytes, and t.TempDir embeds the test name.
func shortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "mt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// fakeWorker serves h on a unix socket dir/name.sock, as a worker's admin
// socket, and returns the path.
func fakeWorker(t *testing.T, dir, name string, h http.Handler) string {
	t.Helper()
	path := filepath.Join(dir, name+".sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return path
}

// workerHandler is a worker's /metrics: a metrics.Worker that saw obs, and
// the app's own registry if any, as launcher.App serves them.
func workerHandler(t *testing.T, obs []observation, app *prometheus.Registry) http.Handler {
	t.Helper()
	w := metrics.NewWorker(drain.NewTracker())
	for _, o := range obs {
		w.ObserveRequest(o.code, o.d)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(w)
	g := prometheus.Gatherers{reg}
	if app != nil {
		g = append(g, app)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	return mux
}

func TestWorkerGathererMerges(t *testing.T) {
	dir := shortDir(t)
	// The app of generation 2 has its own counter, with a label named like
	// one the gatherer adds: the gatherer's value is "version", the app's
	// is kept as "exported_version", as Prometheus keeps a clashing
	// label. (Replaced, the app's two series below collapsed into one: a
	// new user's trial.)
	app := prometheus.NewRegistry()
	greetings := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hello_greetings_total", Help: "Greetings."}, []string{"version", "lang"})
	app.MustRegister(greetings)
	greetings.WithLabelValues("app-says-dev", "en").Add(3)
	greetings.WithLabelValues("app-says-rc", "en").Add(1)
	// With its own exported_version too: that one stays, and its
	// version goes one exported_ further (twice one name made the family
	// invalid, and the exposition dropped it whole).
	builds := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hello_builds_total", Help: "Builds."}, []string{"version", "exported_version"})
	app.MustRegister(builds)
	builds.WithLabelValues("x", "y").Add(1)

	targets := []metrics.Target{
		{Socket: fakeWorker(t, dir, "g1w0", workerHandler(t, []observation{{200, time.Millisecond}, {200, time.Millisecond}}, nil)), Generation: 1, Version: "v1", Worker: 0},
		{Socket: fakeWorker(t, dir, "g1w1", workerHandler(t, []observation{{200, time.Millisecond}}, nil)), Generation: 1, Version: "v1", Worker: 1},
		{Socket: fakeWorker(t, dir, "g2w0", workerHandler(t, []observation{{200, time.Millisecond}, {500, time.Second}}, app)), Generation: 2, Version: "v2", Worker: 0},
	}
	errs := prometheus.NewCounter(prometheus.CounterOpts{Name: "errs_total", Help: "x"})
	g := metrics.WorkerGatherer{Targets: func() []metrics.Target { return targets }, Errors: errs}
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("Gather = %v; want nil", err)
	}
	if got := testValue(errs); got != 0 {
		t.Errorf("scrape errors = %v; want 0", got)
	}
	names := make([]string, len(mfs))
	byName := map[string]*dto.MetricFamily{}
	for i, mf := range mfs {
		names[i] = mf.GetName()
		byName[mf.GetName()] = mf
		for _, m := range mf.Metric {
			if !slices.IsSortedFunc(m.Label, func(a, b *dto.LabelPair) int { return strings.Compare(a.GetName(), b.GetName()) }) {
				t.Errorf("%s: labels %v not sorted by name", mf.GetName(), m.Label)
			}
		}
	}
	wantNames := []string{"hello_builds_total", "hello_greetings_total", "launcher_inflight_requests", "launcher_open_connections",
		"launcher_request_duration_seconds", "launcher_requests_total"}
	if !slices.Equal(names, wantNames) {
		t.Fatalf("families = %v; want %v (sorted, merged)", names, wantNames)
	}

	const (
		g1w0 = `generation="1",version="v1",worker="0"`
		g1w1 = `generation="1",version="v1",worker="1"`
		g2w0 = `generation="2",version="v2",worker="0"`
	)
	tests := []struct {
		family string
		want   map[string]float64
	}{
		{"launcher_inflight_requests", map[string]float64{g1w0: 0, g1w1: 0, g2w0: 0}},
		{"launcher_open_connections", map[string]float64{g1w0: 0, g1w1: 0, g2w0: 0}},
		{"launcher_requests_total", map[string]float64{
			`code="200",` + g1w0: 2, `code="200",` + g1w1: 1, `code="200",` + g2w0: 1, `code="500",` + g2w0: 1,
		}},
		{"launcher_request_duration_seconds", map[string]float64{g1w0: 2, g1w1: 1, g2w0: 2}},
		{"hello_builds_total", map[string]float64{`exported_exported_version="x",exported_version="y",generation="2",version="v2",worker="0"`: 1}},
		{"hello_greetings_total", map[string]float64{
			`exported_version="app-says-dev",generation="2",lang="en",version="v2",worker="0"`: 3,
			`exported_version="app-says-rc",generation="2",lang="en",version="v2",worker="0"`:  1,
		}},
	}
	for _, tt := range tests {
		if got := series(byName[tt.family]); !eqMaps(got, tt.want) {
			t.Errorf("%s = %v; want %v", tt.family, got, tt.want)
		}
	}
	if h := byName["launcher_requests_total"]; h.GetType() != dto.MetricType_COUNTER || h.GetHelp() == "" {
		t.Errorf("launcher_requests_total type %v help %q; want COUNTER with help", h.GetType(), h.GetHelp())
	}
}

// TestWorkerGathererTypeClash: two releases export one name with different
// types; the gatherer keeps the first target's family and drops the other,
// so the exposition stays valid.
func TestWorkerGathererTypeClash(t *testing.T) {
	dir := shortDir(t)
	counter, gauge := prometheus.NewRegistry(), prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "app_things", Help: "Things."})
	c.Add(2)
	counter.MustRegister(c)
	gv := prometheus.NewGauge(prometheus.GaugeOpts{Name: "app_things", Help: "Things."})
	gv.Set(7)
	gauge.MustRegister(gv)
	targets := []metrics.Target{
		{Socket: fakeWorker(t, dir, "a", workerHandler(t, nil, counter)), Generation: 1, Version: "v1"},
		{Socket: fakeWorker(t, dir, "b", workerHandler(t, nil, gauge)), Generation: 2, Version: "v2"},
	}
	g := metrics.WorkerGatherer{Targets: func() []metrics.Target { return targets }}
	mf := gather(t, g)["app_things"]
	if mf.GetType() != dto.MetricType_COUNTER {
		t.Fatalf("app_things type = %v; want COUNTER (the first target's)", mf.GetType())
	}
	want := map[string]float64{`generation="1",version="v1",worker="0"`: 2}
	if got := series(mf); !eqMaps(got, want) {
		t.Fatalf("app_things = %v; want %v", got, want)
	}
}

// testValue reads a counter's value.
func testValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return math.NaN()
	}
	return m.GetCounter().GetValue()
}

// TestWorkerGathererSkipsBadWorkers: a worker that hangs, is gone, fails
// or answers garbage is skipped and counted; the healthy worker's series
// come through, and a hung worker costs at most the Timeout.
func TestWorkerGathererSkipsBadWorkers(t *testing.T) {
	const timeout = 400 * time.Millisecond
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // runs before the servers close
	tests := []struct {
		name     string
		bad      http.Handler // nil: no socket at all
		minTook  time.Duration
		nilCount bool // Errors left nil: must not panic
	}{
		{name: "hangs past Timeout", minTook: timeout, bad: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-release:
			}
		})},
		{name: "hangs in the body", minTook: timeout, bad: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "# TYPE launcher_inflight_requests gauge\nlauncher_inflight_requests 1\n")
			http.NewResponseController(w).Flush()
			select {
			case <-r.Context().Done():
			case <-release:
			}
		})},
		{name: "socket does not exist"},
		{name: "socket does not exist, no Errors counter", nilCount: true},
		{name: "answers 500", bad: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "boom", http.StatusInternalServerError)
		})},
		{name: "answers garbage", bad: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "this is not the text format\n")
		})},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := shortDir(t)
			good := fakeWorker(t, dir, "good", workerHandler(t, []observation{{200, time.Millisecond}}, nil))
			bad := filepath.Join(dir, "missing.sock")
			if tt.bad != nil {
				bad = fakeWorker(t, dir, fmt.Sprint("bad", i), tt.bad)
			}
			targets := []metrics.Target{
				{Socket: bad, Generation: 1, Version: "bad"},
				{Socket: good, Generation: 2, Version: "good"},
			}
			errs := prometheus.NewCounter(prometheus.CounterOpts{Name: "errs_total", Help: "x"})
			g := metrics.WorkerGatherer{Targets: func() []metrics.Target { return targets }, Errors: errs, Timeout: timeout}
			if tt.nilCount {
				g.Errors = nil
			}
			start := time.Now()
			mfs, err := g.Gather()
			took := time.Since(start)
			if err != nil {
				t.Fatalf("Gather = %v; want nil (a bad worker never fails the scrape)", err)
			}
			if took < tt.minTook || took > timeout+time.Second {
				t.Errorf("Gather took %s; want between %s and the budget %s (+1s slack)", took, tt.minTook, timeout)
			}
			want := 1.0
			if tt.nilCount {
				want = 0
			}
			if got := testValue(errs); got != want {
				t.Errorf("scrape errors = %v; want %v", got, want)
			}
			found := 0
			for _, mf := range mfs {
				for _, m := range mf.Metric {
					switch labels(m)["version"] {
					case "bad":
						t.Errorf("series of the bad worker: %s{%s}", mf.GetName(), key(labels(m)))
					case "good":
						found++
					}
				}
			}
			if found == 0 {
				t.Errorf("no series of the good worker; want them all")
			}
		})
	}
}

// TestWorkerGathererCacheKeepsCounters: with a Cache, a live worker that
// misses a scrape (fails, or hangs past the budget, as a loaded machine
// makes it) keeps its counters and histograms at their last values, so a
// sum over workers never goes down (Prometheus would take that for a
// counter reset); its gauges are left out, as a frozen worker's are. A
// worker that is no longer a target leaves the cache. Without a Cache the
// series are left out, as before.
func TestWorkerGathererCacheKeepsCounters(t *testing.T) {
	dir := shortDir(t)
	var failing atomic.Bool
	good := workerHandler(t, []observation{{200, time.Millisecond}, {200, time.Millisecond}, {503, time.Millisecond}}, nil)
	sock := fakeWorker(t, dir, "w", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		good.ServeHTTP(w, r)
	}))
	targets := []metrics.Target{{Socket: sock, Generation: 3, Version: "v2"}}
	errs := prometheus.NewCounter(prometheus.CounterOpts{Name: "errs_total", Help: "x"})
	g := metrics.WorkerGatherer{Targets: func() []metrics.Target { return targets }, Errors: errs, Cache: new(metrics.ScrapeCache)}
	requests := func(mfs map[string]*dto.MetricFamily) (sum float64, n int) {
		for _, m := range mfs["launcher_requests_total"].GetMetric() {
			if labels(m)["generation"] != "3" {
				t.Errorf("series labelled %v; want generation 3", labels(m))
			}
			sum += m.GetCounter().GetValue()
			n++
		}
		return sum, n
	}

	first := gather(t, g)
	if sum, _ := requests(first); sum != 3 {
		t.Fatalf("first scrape: %v requests; want 3", sum)
	}
	failing.Store(true)
	missed := gather(t, g)
	if sum, n := requests(missed); sum != 3 || n != 2 {
		t.Errorf("a missed scrape serves %v requests in %d series; want the last scrape's 3 in 2 (codes 200 and 503)", sum, n)
	}
	if c := missed["launcher_request_duration_seconds"].GetMetric(); len(c) != 1 || c[0].GetHistogram().GetSampleCount() != 3 {
		t.Errorf("a missed scrape serves the duration histogram %v; want the last one, 3 observations", c)
	}
	if _, ok := missed["launcher_inflight_requests"]; ok {
		t.Error("a missed scrape serves a gauge; want only counters, histograms and summaries")
	}
	if got := testValue(errs); got != 1 {
		t.Errorf("scrape errors = %v; want 1", got)
	}
	again := gather(t, g) // the cache is not used up by serving it
	if sum, _ := requests(again); sum != 3 {
		t.Errorf("a second missed scrape serves %v requests; want 3", sum)
	}

	targets = nil // the worker is gone: it leaves the cache
	gather(t, g)
	targets = []metrics.Target{{Socket: sock, Generation: 3, Version: "v2"}}
	if sum, n := requests(gather(t, g)); n != 0 {
		t.Errorf("a worker back as a target after it left serves %v cached requests; want none", sum)
	}

	g.Cache = nil
	if _, n := requests(gather(t, g)); n != 0 {
		t.Errorf("without a Cache a missed scrape serves %d series; want none", n)
	}
}

// TestWorkerGathererNoTargets: with no worker alive the gather is empty,
// not an error.
func TestWorkerGathererNoTargets(t *testing.T) {
	g := metrics.WorkerGatherer{Targets: func() []metrics.Target { return nil }}
	mfs, err := g.Gather()
	if err != nil || len(mfs) != 0 {
		t.Fatalf("Gather = %v, %v; want no family, nil", mfs, err)
	}
}

// TestReadCounts reads a worker's live counters from its admin socket,
// and reports a worker that does not answer.
func TestReadCounts(t *testing.T) {
	dir := shortDir(t)
	sock := fakeWorker(t, dir, "w", workerHandler(t, nil, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := metrics.ReadCounts(ctx, sock)
	if want := (metrics.Counts{}); err != nil || got != want {
		t.Errorf("ReadCounts = %+v, %v; want %+v, nil", got, err, want)
	}
	if _, err := metrics.ReadCounts(ctx, filepath.Join(dir, "none.sock")); err == nil {
		t.Errorf("ReadCounts of a missing socket = nil error; want one")
	}
	empty := fakeWorker(t, dir, "e", promhttp.HandlerFor(prometheus.NewRegistry(), promhttp.HandlerOpts{}))
	if _, err := metrics.ReadCounts(ctx, empty); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("ReadCounts of a worker without the gauges = %v; want an error naming them", err)
	}

	// A worker of this library answers at CountsPath, and its /metrics is
	// not read: here it would say otherwise (no gauges at all).
	tr := drain.NewTracker()
	tr.RequestStarted()
	tr.RequestStarted()
	mux := http.NewServeMux()
	mux.Handle(metrics.CountsPath, metrics.CountsHandler(tr))
	mux.Handle("/metrics", promhttp.HandlerFor(prometheus.NewRegistry(), promhttp.HandlerOpts{}))
	if got, err := metrics.ReadCounts(ctx, fakeWorker(t, dir, "c", mux)); err != nil || got != (metrics.Counts{InflightRequests: 2}) {
		t.Errorf("ReadCounts of a worker serving %s = %+v, %v; want 2 in flight", metrics.CountsPath, got, err)
	}
	broken := fakeWorker(t, dir, "b", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusInternalServerError)
	}))
	if _, err := metrics.ReadCounts(ctx, broken); err == nil || !strings.Contains(err.Error(), "500") {
		t.Errorf("ReadCounts of a worker answering 500 = %v; want an error saying so", err)
	}
}

// BenchmarkReadCounts: the supervisor's read of a worker's counts, from
// CountsPath and, as before it, from a scrape of /metrics, with an app
// registry of 200 series beside the launcher's own.
func BenchmarkReadCounts(b *testing.B) {
	dir, err := os.MkdirTemp("", "rc")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	tr := drain.NewTracker()
	w := metrics.NewWorker(tr)
	for i := range 1000 {
		w.ObserveRequest(200+i%3, time.Duration(i)*time.Microsecond)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(w)
	app := prometheus.NewRegistry()
	cv := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "app_things_total", Help: "Things."}, []string{"kind"})
	app.MustRegister(cv)
	for i := range 200 {
		cv.WithLabelValues(fmt.Sprint("k", i)).Inc()
	}
	for _, tt := range []struct {
		name   string
		counts bool
	}{{"counts", true}, {"scrape", false}} {
		b.Run(tt.name, func(b *testing.B) {
			mux := http.NewServeMux()
			if tt.counts {
				mux.Handle(metrics.CountsPath, metrics.CountsHandler(tr))
			}
			mux.Handle("/metrics", promhttp.HandlerFor(prometheus.Gatherers{reg, app}, promhttp.HandlerOpts{}))
			path := filepath.Join(dir, tt.name+".sock")
			ln, err := net.Listen("unix", path)
			if err != nil {
				b.Fatal(err)
			}
			srv := &http.Server{Handler: mux}
			go srv.Serve(ln)
			defer srv.Close()
			ctx := context.Background()
			for b.Loop() {
				if _, err := metrics.ReadCounts(ctx, path); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
