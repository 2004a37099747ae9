package deploy_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
)

// sampleGeneration is one generation of the sample supervisor.
type sampleGeneration struct {
	generation, version, state string
	inflight, connections      float64
}

// sampleGenerations returns one generation in each state; only the live
// ones (starting, active, draining) export worker series.
func sampleGenerations() []sampleGeneration {
	return []sampleGeneration{
		{generation: "1", version: "v1", state: "exited"},
		{generation: "2", version: "v2", state: "failed"},
		{generation: "3", version: "v3", state: "draining", inflight: 2, connections: 5},
		{generation: "4", version: "v4", state: "active", inflight: 7, connections: 12},
		{generation: "5", version: "v5", state: "starting"},
	}
}

// sampleSupervisor exports every metric of the metrics contract
// (DESIGN.md), as a supervisor in the middle of an upgrade would, on an
// explicit registry. Each scrape advances its counters and histograms, so
// rate(), increase() and changes() over them are not empty.
type sampleSupervisor struct {
	reg              *prometheus.Registry
	gens             []sampleGeneration
	requests         *prometheus.CounterVec
	requestDuration  *prometheus.HistogramVec
	upgrades         *prometheus.CounterVec
	upgradeDuration  prometheus.Histogram
	drainDuration    prometheus.Histogram
	drainTimeouts    prometheus.Counter
	drainCutRequests prometheus.Counter
	scrapeErrors     prometheus.Counter
	stateWriteErrors prometheus.Counter
	stateFileStale   prometheus.Gauge
	rollbacks        *prometheus.CounterVec
	workerCrashes    *prometheus.CounterVec
	cpuSeconds       *prometheus.CounterVec
}

// newSampleSupervisor returns a sample with generations 1 to 5, one in each
// state, and a steering handover.
func newSampleSupervisor(t testing.TB) *sampleSupervisor {
	t.Helper()
	genLabels := []string{"generation", "version"}
	s := &sampleSupervisor{
		reg:  prometheus.NewRegistry(),
		gens: sampleGenerations(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "launcher_requests_total", Help: "Requests served, by generation and status code.",
		}, []string{"generation", "version", "code"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "launcher_request_duration_seconds", Help: "Request duration, by generation.",
			Buckets: prometheus.DefBuckets,
		}, genLabels),
		upgrades: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "launcher_upgrades_total", Help: "Upgrades, by result.",
		}, []string{"result"}),
		upgradeDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "launcher_upgrade_duration_seconds", Help: "Time from the start of a new generation to its handover.",
			Buckets: prometheus.ExponentialBuckets(0.25, 2, 10),
		}),
		drainDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "launcher_drain_duration_seconds", Help: "Time a generation took to drain.",
			Buckets: prometheus.ExponentialBuckets(0.25, 2, 10),
		}),
		drainTimeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "launcher_drain_timeouts_total", Help: "Drains cut at --drain-timeout.",
		}),
		drainCutRequests: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "launcher_drain_cut_requests_total", Help: "Requests cut by drains killed at --drain-timeout.",
		}),
		scrapeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "launcher_scrape_errors_total", Help: "Worker admin scrapes that failed or timed out.",
		}),
		stateWriteErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "launcher_state_write_errors_total", Help: "Writes of the state file that failed.",
		}),
		stateFileStale: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "launcher_state_file_stale", Help: "1 while the state file's last write failed.",
		}),
		cpuSeconds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "launcher_generation_cpu_seconds_total", Help: "CPU time of a generation's processes.",
		}, genLabels),
	}
	inflight := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "launcher_inflight_requests", Help: "Requests being served, by generation.",
	}, genLabels)
	connections := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "launcher_open_connections", Help: "Open client connections, by generation.",
	}, genLabels)
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "launcher_generation_info", Help: "Always 1: the version and state of each generation.",
	}, []string{"generation", "version", "state"})
	generations := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "launcher_generations", Help: "Number of generations in each state.",
	}, []string{"state"})
	handover := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "launcher_handover_info", Help: "Always 1: how generations hand traffic over.",
	}, []string{"strategy"})
	memory := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "launcher_generation_memory_bytes", Help: "Memory of a generation's processes.",
	}, genLabels)
	weight := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "launcher_generation_weight", Help: "Percent of new connections steered to a generation.",
	}, genLabels)
	firstConn := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "launcher_first_connection_timestamp_seconds", Help: "Unix time of a worker's first connection.",
	}, genLabels)
	s.rollbacks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "launcher_rollbacks_total", Help: "Upgrades rolled back, by reason.",
	}, []string{"reason"})
	s.workerCrashes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "launcher_worker_crashes_total", Help: "Workers that exited unasked, by their generation's state.",
	}, []string{"state"})
	s.reg.MustRegister(inflight, connections, s.requests, s.requestDuration, info, s.upgrades,
		s.upgradeDuration, s.drainDuration, s.drainTimeouts, s.drainCutRequests, s.scrapeErrors, s.stateWriteErrors, s.stateFileStale,
		generations, handover, s.cpuSeconds, memory, weight, firstConn, s.rollbacks, s.workerCrashes)
	// No canary in the sample: the active generation gets every new
	// connection.
	weight.WithLabelValues("4", "v4").Set(100)

	for _, g := range s.gens {
		if g.state != "exited" && g.state != "failed" { // as metrics.Supervisor exports it
			info.WithLabelValues(g.generation, g.version, g.state).Set(1)
		}
		generations.WithLabelValues(g.state).Inc()
		if live(g) {
			inflight.WithLabelValues(g.generation, g.version).Set(g.inflight)
			connections.WithLabelValues(g.generation, g.version).Set(g.connections)
			memory.WithLabelValues(g.generation, g.version).Set(20e6 + 1e6*g.connections)
			firstConn.WithLabelValues(g.generation, g.version).Set(1.8e9)
			// An idle generation (the starting one) has its counter at 0:
			// a rate of 0 to divide by.
			s.requests.WithLabelValues(g.generation, g.version, "200")
		}
	}
	for _, result := range []string{"success", "failed", "aborted", "rolled_back"} {
		s.upgrades.WithLabelValues(result) // exported at 0, as increase() needs
	}
	for _, reason := range []string{"crashed", "errors", "latency", "requested"} {
		s.rollbacks.WithLabelValues(reason)
	}
	for _, state := range []string{"active", "standby", "draining"} {
		s.workerCrashes.WithLabelValues(state)
	}
	handover.WithLabelValues("steer").Set(1)
	s.tick() // so that every series exists from the first gathering on
	return s
}

func live(g sampleGeneration) bool {
	return g.state == "starting" || g.state == "active" || g.state == "draining"
}

// tick simulates the activity between two scrapes.
func (s *sampleSupervisor) tick() {
	for _, g := range s.gens {
		if live(g) {
			s.cpuSeconds.WithLabelValues(g.generation, g.version).Add(0.05 + 0.01*g.inflight)
		}
		if g.inflight == 0 {
			continue
		}
		s.requests.WithLabelValues(g.generation, g.version, "200").Add(10 * g.inflight)
		s.requests.WithLabelValues(g.generation, g.version, "503").Inc()
		s.requestDuration.WithLabelValues(g.generation, g.version).Observe(0.02 * g.inflight)
	}
	s.upgrades.WithLabelValues("success").Inc()
	s.rollbacks.WithLabelValues("errors").Inc()
	s.upgradeDuration.Observe(3.2)
	s.drainDuration.Observe(1.4)
	s.drainTimeouts.Inc()
	s.drainCutRequests.Add(2)
	s.scrapeErrors.Inc()
	s.workerCrashes.WithLabelValues("active").Inc()
}

// handler serves the registry in the Prometheus formats, advancing the
// sample activity first.
func (s *sampleSupervisor) handler() http.Handler {
	h := promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.tick()
		h.ServeHTTP(w, r)
	})
}

// serve starts an HTTP server for s on 127.0.0.1 and returns its host:port.
func (s *sampleSupervisor) serve(t testing.TB) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/metrics", s.handler())
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// contractNames returns every series name the sample exports: the metric
// family names, plus _bucket, _sum and _count for histograms.
func (s *sampleSupervisor) contractNames(t testing.TB) map[string]bool {
	t.Helper()
	families, err := s.reg.Gather()
	if err != nil {
		t.Fatalf("gathering sample metrics: %v", err)
	}
	names := make(map[string]bool)
	for _, f := range families {
		names[f.GetName()] = true
		if f.GetType() == dto.MetricType_HISTOGRAM {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				names[f.GetName()+suffix] = true
			}
		}
	}
	return names
}
