package metrics_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	"github.com/launcherd/launcher/metrics"
)

// family builds a metric family of one unlabelled series of type typ.
func family(name string, typ dto.MetricType, v float64) *dto.MetricFamily {
	m := &dto.Metric{}
	switch typ {
	case dto.MetricType_COUNTER:
		m.Counter = &dto.Counter{Value: proto.Float64(v)}
	case dto.MetricType_GAUGE:
		m.Gauge = &dto.Gauge{Value: proto.Float64(v)}
	case dto.MetricType_UNTYPED:
		m.Untyped = &dto.Untyped{Value: proto.Float64(v)}
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		m.Histogram = &dto.Histogram{SampleCount: proto.Uint64(uint64(v)), SampleSum: proto.Float64(v)}
	case dto.MetricType_SUMMARY:
		m.Summary = &dto.Summary{SampleCount: proto.Uint64(uint64(v)), SampleSum: proto.Float64(v)}
	}
	return &dto.MetricFamily{Name: proto.String(name), Help: proto.String("h"), Type: typ.Enum(), Metric: []*dto.Metric{m}}
}

// TestFreeze: counters, histograms and summaries outlive a worker with
// their values; gauges, gauge histograms, untyped and empty families do
// not; the input is left as it was and shares nothing with the result.
func TestFreeze(t *testing.T) {
	tests := []struct {
		name string
		in   []*dto.MetricFamily
		want []string // names kept
	}{
		{"nothing", nil, nil},
		{"counter", []*dto.MetricFamily{family("a_total", dto.MetricType_COUNTER, 3)}, []string{"a_total"}},
		{"histogram and summary", []*dto.MetricFamily{
			family("h_seconds", dto.MetricType_HISTOGRAM, 4), family("s_seconds", dto.MetricType_SUMMARY, 5),
		}, []string{"h_seconds", "s_seconds"}},
		{"gauges go", []*dto.MetricFamily{
			family("launcher_inflight_requests", dto.MetricType_GAUGE, 2), family("launcher_open_connections", dto.MetricType_GAUGE, 9),
			family("launcher_requests_total", dto.MetricType_COUNTER, 7),
		}, []string{"launcher_requests_total"}},
		{"untyped and gauge histogram go", []*dto.MetricFamily{
			family("u", dto.MetricType_UNTYPED, 1), family("gh", dto.MetricType_GAUGE_HISTOGRAM, 1),
		}, nil},
		{"empty family goes", []*dto.MetricFamily{{Name: proto.String("e_total"), Type: dto.MetricType_COUNTER.Enum()}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := map[string]*dto.MetricFamily{}
			for _, mf := range tt.in {
				in[mf.GetName()] = mf
			}
			before := map[string]*dto.MetricFamily{}
			for n, mf := range in {
				before[n] = proto.Clone(mf).(*dto.MetricFamily)
			}
			got := metrics.Freeze(in)
			if got == nil {
				t.Fatalf("Freeze = nil; want an empty map at least")
			}
			if len(got) != len(tt.want) {
				t.Errorf("Freeze kept %d families; want %v", len(got), tt.want)
			}
			for _, n := range tt.want {
				if !proto.Equal(got[n], in[n]) {
					t.Errorf("Freeze()[%s] = %v; want %v", n, got[n], in[n])
				}
				if got[n] == in[n] || (len(got[n].Metric) > 0 && got[n].Metric[0] == in[n].Metric[0]) {
					t.Errorf("Freeze()[%s] shares its input", n)
				}
				got[n].Metric = nil // must not reach the input
			}
			for n := range in {
				if !proto.Equal(in[n], before[n]) {
					t.Errorf("Freeze changed its input %s: %v; was %v", n, in[n], before[n])
				}
			}
		})
	}
}

// TestWorkerGathererFinal: a drained worker's frozen series are served
// with the labels its live ones had and their values, without a scrape,
// beside live workers; its gauges are gone; a frozen copy serves
// concurrent gathers and is never changed.
func TestWorkerGathererFinal(t *testing.T) {
	dir := shortDir(t)
	app := prometheus.NewRegistry()
	greetings := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hello_greetings_total", Help: "Greetings."}, []string{"version"})
	app.MustRegister(greetings)
	greetings.WithLabelValues("app-says-dev").Add(3) // a clash: the app's label is kept as exported_version
	heap := prometheus.NewGauge(prometheus.GaugeOpts{Name: "hello_heap_bytes", Help: "Heap."})
	heap.Set(1 << 20)
	app.MustRegister(heap)
	g1w0 := metrics.Target{Socket: fakeWorker(t, dir, "g1w0", workerHandler(t, []observation{{200, time.Millisecond}, {200, time.Millisecond}, {503, time.Second}}, app)),
		Generation: 1, Version: "v1", Worker: 0}
	g1w1 := metrics.Target{Socket: fakeWorker(t, dir, "g1w1", workerHandler(t, []observation{{200, time.Millisecond}}, nil)),
		Generation: 1, Version: "v1", Worker: 1}
	g2w0 := metrics.Target{Socket: fakeWorker(t, dir, "g2w0", workerHandler(t, []observation{{200, time.Millisecond}}, nil)),
		Generation: 2, Version: "v2", Worker: 0}
	// frozen is t's copy with its series read now and frozen, its socket
	// gone: a scrape of it would fail.
	frozen := func(tg metrics.Target) metrics.Target {
		mfs, err := metrics.Scrape(context.Background(), tg.Socket)
		if err != nil {
			t.Fatal(err)
		}
		tg.Final, tg.Socket = metrics.Freeze(mfs), dir+"/gone.sock"
		return tg
	}
	onlyGauges := g1w1
	onlyGauges.Final, onlyGauges.Socket = map[string]*dto.MetricFamily{}, dir+"/gone.sock"
	live := gather(t, metrics.WorkerGatherer{Targets: func() []metrics.Target { return []metrics.Target{g1w0, g1w1, g2w0} }})

	const (
		l1w0 = `generation="1",version="v1",worker="0"`
		l1w1 = `generation="1",version="v1",worker="1"`
		l2w0 = `generation="2",version="v2",worker="0"`
	)
	tests := []struct {
		name    string
		targets []metrics.Target
		want    map[string]map[string]float64 // family → series → value (histograms: count); absent families: none
	}{
		{"frozen only", []metrics.Target{frozen(g1w0)}, map[string]map[string]float64{
			"launcher_requests_total":           {`code="200",` + l1w0: 2, `code="503",` + l1w0: 1},
			"launcher_request_duration_seconds": {l1w0: 3},
			"hello_greetings_total":             {`exported_version="app-says-dev",` + l1w0: 3},
		}},
		{"frozen beside live", []metrics.Target{frozen(g1w0), frozen(g1w1), g2w0}, map[string]map[string]float64{
			"launcher_requests_total":           {`code="200",` + l1w0: 2, `code="503",` + l1w0: 1, `code="200",` + l1w1: 1, `code="200",` + l2w0: 1},
			"launcher_request_duration_seconds": {l1w0: 3, l1w1: 1, l2w0: 1},
			"hello_greetings_total":             {`exported_version="app-says-dev",` + l1w0: 3},
			"launcher_inflight_requests":        {l2w0: 0},
			"launcher_open_connections":         {l2w0: 0},
		}},
		{"frozen with nothing left", []metrics.Target{onlyGauges, g2w0}, map[string]map[string]float64{
			"launcher_requests_total":           {`code="200",` + l2w0: 1},
			"launcher_request_duration_seconds": {l2w0: 1},
			"launcher_inflight_requests":        {l2w0: 0},
			"launcher_open_connections":         {l2w0: 0},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kept := map[int]map[string]*dto.MetricFamily{}
			for i, tg := range tt.targets {
				if tg.Final != nil {
					kept[i] = map[string]*dto.MetricFamily{}
					for n, mf := range tg.Final {
						kept[i][n] = proto.Clone(mf).(*dto.MetricFamily)
					}
				}
			}
			errs := prometheus.NewCounter(prometheus.CounterOpts{Name: "errs_total", Help: "x"})
			g := metrics.WorkerGatherer{Targets: func() []metrics.Target { return tt.targets }, Errors: errs}
			// Concurrent scrapes share the frozen copies (run with -race).
			var wg sync.WaitGroup
			for range 4 {
				wg.Go(func() { g.Gather() })
			}
			got := gather(t, g)
			wg.Wait()
			if n := testValue(errs); n != 0 {
				t.Errorf("scrape errors = %v; want 0: a frozen worker is not scraped", n)
			}
			if len(got) != len(tt.want) {
				names := []string{}
				for n := range got {
					names = append(names, n)
				}
				t.Errorf("families %v; want those of %v", names, tt.want)
			}
			for name, want := range tt.want {
				if s := series(got[name]); !eqMaps(s, want) {
					t.Errorf("%s = %v; want %v", name, s, want)
				}
				if got[name].GetType() != live[name].GetType() || got[name].GetHelp() != live[name].GetHelp() {
					t.Errorf("%s: type %v help %q; want the live %v %q", name, got[name].GetType(), got[name].GetHelp(), live[name].GetType(), live[name].GetHelp())
				}
			}
			// A frozen series is the live one, to the label and the value.
			for name, mf := range got {
				lv := map[string]*dto.Metric{}
				for _, m := range live[name].GetMetric() {
					lv[key(labels(m))] = m
				}
				for _, m := range mf.Metric {
					if !proto.Equal(m, lv[key(labels(m))]) {
						t.Errorf("%s: %v; the live series was %v", name, m, lv[key(labels(m))])
					}
				}
			}
			for i, want := range kept {
				for n, mf := range tt.targets[i].Final {
					if !proto.Equal(mf, want[n]) {
						t.Errorf("gather changed the frozen %s of target %d: %v; was %v", n, i, mf, want[n])
					}
				}
			}
		})
	}
}
