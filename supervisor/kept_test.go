package supervisor

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/launcherd/launcher/internal/control"
)

// workerSeries gathers the workers' series as /metrics serves them, as
// `name{label="value",…}` → value.
func (r *rig) workerSeries() map[string]float64 {
	r.t.Helper()
	mfs, err := r.s.workerGatherer(time.Second).Gather()
	if err != nil {
		r.t.Fatalf("gather: %v", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.Metric {
			var ls []string
			for _, l := range m.Label {
				ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			sort.Strings(ls)
			v := m.GetGauge().GetValue()
			if m.Counter != nil {
				v = m.GetCounter().GetValue()
			}
			out[mf.GetName()+"{"+strings.Join(ls, ",")+"}"] = v
		}
	}
	return out
}

// ofGeneration returns the series of generation n.
func ofGeneration(series map[string]float64, n int) map[string]float64 {
	out := map[string]float64{}
	for k, v := range series {
		if strings.Contains(k, fmt.Sprintf("generation=%q", fmt.Sprint(n))) {
			out[k] = v
		}
	}
	return out
}

// TestFinalMetricsOutliveTheWorker: a drained worker of this library is
// scraped once more after it reports Drained and before it exits (it
// waits for Collected); its counters are served with its labels, frozen,
// for --keep-exited after its exit, without its gauges, then dropped.
// Without the capability on either side, or when its admin socket does
// not answer, nothing is kept and no worker waits out CollectWait.
func TestFinalMetricsOutliveTheWorker(t *testing.T) {
	const keep = 700 * time.Millisecond
	on := Config{Workers: 2, Probation: NoProbation, MetricsAddr: "127.0.0.1:0", KeepExited: keep}
	off, noMetrics := on, on
	off.KeepExited = NoKeepExited
	noMetrics.MetricsAddr = ""
	tests := []struct {
		name      string
		cfg       Config
		b         behaviour
		wantTrace []string // of each old worker
		wantKept  bool
		wantErrs  float64 // scrape errors
	}{
		{"kept", on, behaviour{finalMetrics: true}, []string{"drained", "scraped", "collected", "exited"}, true, 0},
		{"older library", on, behaviour{}, []string{"exited"}, false, 0},
		{"--keep-exited 0", off, behaviour{finalMetrics: true}, []string{"drained", "exited"}, false, 0},
		{"no --metrics", noMetrics, behaviour{finalMetrics: true}, []string{"drained", "exited"}, false, 0},
		{"admin socket silent", on, behaviour{finalMetrics: true, scrapeFails: true}, []string{"drained", "collected", "exited"}, false, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := newFakeEffects(t)
			fx.behave["v1"] = tt.b
			fx.behave["v2"] = behaviour{finalMetrics: true}
			r := startRig(t, tt.cfg, fx, nil)
			r.waitStarted()
			old := r.gen(1).PIDs
			start := time.Now()
			if _, err := r.upgrade("v2", true); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d >= control.CollectWait {
				t.Errorf("upgrade --wait took %s: a worker waited out CollectWait", d)
			}
			if n := testutil.ToFloat64(r.s.metrics.ScrapeErrors); n != tt.wantErrs {
				t.Errorf("scrape errors = %v; want %v", n, tt.wantErrs)
			}
			exited := time.Now()
			gen1 := ofGeneration(r.workerSeries(), 1)
			want := map[string]float64{}
			if tt.wantKept {
				for i, pid := range old {
					want[fmt.Sprintf(`launcher_requests_total{code="200",generation="1",version="v1",worker="%d"}`, i)] = float64(pid)
				}
			}
			if fmt.Sprint(gen1) != fmt.Sprint(want) {
				t.Errorf("generation 1 after its exit: %v; want %v", gen1, want)
			}
			for _, pid := range old {
				if got := fx.traced(pid); !slices.Equal(got, tt.wantTrace) {
					t.Errorf("worker %d: %v; want %v", pid, got, tt.wantTrace)
				}
			}
			// The live generation: scraped, gauges and all.
			if gen2 := ofGeneration(r.workerSeries(), 2); len(gen2) != 4 {
				t.Errorf("generation 2: %v; want 2 workers' requests and in-flight", gen2)
			}
			if !tt.wantKept {
				return
			}
			eventually(t, "frozen series dropped after --keep-exited", func() error {
				if gen1 := ofGeneration(r.workerSeries(), 1); len(gen1) > 0 {
					return fmt.Errorf("generation 1: %v", gen1)
				}
				return nil
			})
			if d := time.Since(exited); d < keep-100*time.Millisecond {
				t.Errorf("dropped %s after the exit; want --keep-exited %s", d, keep)
			}
		})
	}
}

// TestKeptSeriesBounded: however fast upgrades come, at most maxKept
// exited workers' series are kept, the newest.
func TestKeptSeriesBounded(t *testing.T) {
	fx := newFakeEffects(t)
	for _, v := range []string{"v1", "v2", "v3"} {
		fx.behave[v] = behaviour{finalMetrics: true}
	}
	cfg := Config{Probation: NoProbation, MetricsAddr: "127.0.0.1:0", KeepExited: time.Hour}
	r := startRig(t, cfg, fx, func(r *rig) { r.s.loop.maxKept = 2 })
	r.waitStarted()
	for _, v := range []string{"v2", "v3", "v1"} {
		if _, err := r.upgrade(v, true); err != nil {
			t.Fatal(err)
		}
	}
	series := r.workerSeries()
	for gen, want := range map[int]int{1: 0, 2: 1, 3: 1, 4: 2} {
		if got := ofGeneration(series, gen); len(got) != want {
			t.Errorf("generation %d: %v; want %d series", gen, got, want)
		}
	}
}
