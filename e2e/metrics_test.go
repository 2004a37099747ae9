package e2e

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"sort"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/launcherd/launcher/internal/promtest"
)

// byGeneration indexes samples of a `sum by (generation)` query.
func byGeneration(ss []promtest.Sample) map[string]float64 {
	out := map[string]float64{}
	for _, s := range ss {
		out[s.Labels["generation"]] = s.Value
	}
	return out
}

// waitQuery waits until cond holds for promql's result, or fails t.
func waitQuery(t *testing.T, prom *promtest.Server, within time.Duration, promql string, cond func([]promtest.Sample) bool) []promtest.Sample {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	ss, err := prom.WaitFor(ctx, promql, cond)
	if err != nil {
		t.Fatalf("Prometheus: %v", err)
	}
	return ss
}

// one is a WaitFor condition: exactly one sample, for which f holds.
func one(f func(v float64) bool) func([]promtest.Sample) bool {
	return func(ss []promtest.Sample) bool { return len(ss) == 1 && f(ss[0].Value) }
}

// TestMetricsPerGeneration watches an upgrade through a real Prometheus
// scraping the supervisor's --metrics every second: in-flight requests
// show per generation, both generations at once during the drain, then
// generation 2 alone; the upgrade counts as exactly one success.
func TestMetricsPerGeneration(t *testing.T) {
	// Parallel with the delayed-link tests: it mostly waits on
	// Prometheus's scrapes, on a port and state dir of its own.
	t.Parallel()
	start := time.Now()
	maddr := freeAddr(t)
	s := startSup(t, "--metrics", maddr)
	prom := promtest.Start(t, []string{maddr})

	waitQuery(t, prom, 15*time.Second, `up{job="launcher"} == 1`, promtest.AtLeast(1))
	waitQuery(t, prom, 10*time.Second, `launcher_inflight_requests{generation="1",version="v1",worker="0"}`, promtest.AtLeast(1))
	// The first start counts as an upgrade: read the counter as it is.
	ss := waitQuery(t, prom, 10*time.Second, `launcher_upgrades_total{result="success"}`, promtest.AtLeast(1))
	if len(ss) != 1 {
		t.Fatalf("launcher_upgrades_total{result=\"success\"} = %v; want one series", ss)
	}
	before := ss[0].Value

	const n = 3
	var gen1, gen2 []<-chan result
	for range n {
		gen1 = append(gen1, longRequest(s.addr, 6*time.Second))
	}
	s.waitForInflight(1, n)
	if _, errOut, code := s.cli("upgrade", "v2"); code != 0 {
		t.Fatalf("upgrade v2: exit %d: %s", code, errOut)
	}
	// Longer, so that they are still in flight once generation 1 is gone.
	for range n {
		gen2 = append(gen2, longRequest(s.addr, 9*time.Second))
	}
	s.waitForInflight(2, n)

	const inflight = `sum by (generation) (launcher_inflight_requests)`
	both := waitQuery(t, prom, 5*time.Second, inflight, func(ss []promtest.Sample) bool {
		g := byGeneration(ss)
		return g["1"] > 0 && g["2"] > 0
	})
	t.Logf("during the drain: %v", both)
	// Only the launcher's series carry the generation: the sum has no other.
	if g := byGeneration(both); len(g) != 2 {
		t.Errorf("%s = %v; want generations 1 and 2 only", inflight, both)
	}
	ss = waitQuery(t, prom, 5*time.Second, `sum by (generation, version) (launcher_inflight_requests)`, promtest.AtLeast(2))
	for _, smp := range ss {
		if want := map[string]string{"1": "v1", "2": "v2"}[smp.Labels["generation"]]; smp.Labels["version"] != want {
			t.Errorf("series %v: version = %q; want %q", smp, smp.Labels["version"], want)
		}
	}

	for i, ch := range gen1 {
		if r := <-ch; r.err != nil || r.body != "hello from v1" {
			t.Errorf("long request %d on generation 1 = %q, %v; want hello from v1", i, r.body, r.err)
		}
	}
	// Generation 1 has drained and exited: its series go stale (or read 0)
	// while generation 2's requests are still counted.
	after := waitQuery(t, prom, 5*time.Second, inflight, func(ss []promtest.Sample) bool {
		g := byGeneration(ss)
		return g["1"] == 0 && g["2"] > 0
	})
	t.Logf("after the drain: %v", after)
	waitQuery(t, prom, 5*time.Second, `launcher_generation_info{generation="2",state="active",version="v2"} == 1`, promtest.AtLeast(1))
	waitQuery(t, prom, 5*time.Second, `count(launcher_generation_info)`, one(func(v float64) bool { return v == 1 }))
	waitQuery(t, prom, 5*time.Second, `launcher_generations{state="exited"}`, one(func(v float64) bool { return v == 1 }))
	waitQuery(t, prom, 5*time.Second, `launcher_drain_duration_seconds_count`, one(func(v float64) bool { return v == 1 }))

	ss = waitQuery(t, prom, 5*time.Second, `launcher_upgrades_total{result="success"}`, one(func(v float64) bool { return v != before }))
	if got, want := ss[0].Value, before+1; got != want {
		t.Errorf("launcher_upgrades_total{result=\"success\"} = %v; want %v (one more than before the upgrade)", got, want)
	}
	ss = waitQuery(t, prom, 5*time.Second, `sum(launcher_upgrades_total{result!="success"})`, promtest.AtLeast(1))
	if got := ss[0].Value; got != 0 {
		t.Errorf("upgrades not successful = %v; want 0", got)
	}

	for i, ch := range gen2 {
		if r := <-ch; r.err != nil || r.body != "hello from v2" {
			t.Errorf("long request %d on generation 2 = %q, %v; want hello from v2", i, r.body, r.err)
		}
	}
	t.Logf("took %s", time.Since(start).Round(time.Millisecond))
}

// scrape returns the supervisor's /metrics in the text format.
func scrape(t *testing.T, addr string) []byte {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	defer c.CloseIdleConnections()
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s, %v\n%s", resp.Status, err, b)
	}
	return b
}

// TestSupervisorMetricsContract checks the supervisor's real /metrics,
// with two workers of each of two generations gathered: promtool check
// metrics finds no problem, and every metric of the contract in DESIGN.md
// is there with its type and labels, and no unbounded label.
func TestSupervisorMetricsContract(t *testing.T) {
	// Parallel (see TestMetricsPerGeneration): it mostly waits on its 3 s
	// request, on ports and a state dir of its own.
	t.Parallel()
	maddr := freeAddr(t)
	s := startSup(t, "--metrics", maddr, "--workers", "2")
	mustGet(t, s.addr, "/")
	long := longRequest(s.addr, 3*time.Second)
	s.waitForInflight(1, 1)
	if _, errOut, code := s.cli("upgrade", "v2"); code != 0 {
		t.Fatalf("upgrade v2: exit %d: %s", code, errOut)
	}
	mustGet(t, s.addr, "/")
	// After the upgrade, so that its worker still runs at the scrape.
	if _, err := get(s.addr, "/sleep?d=bad"); err == nil {
		t.Fatalf("GET /sleep?d=bad succeeded; want 400")
	}

	text := scrape(t, maddr)
	// Generation 1's worker with the long request is still draining (the
	// other may have exited already); both of generation 2 serve.
	for _, want := range []string{`generation="1",version="v1",worker="`, `generation="2",version="v2",worker="0"`, `generation="2",version="v2",worker="1"`} {
		if !bytes.Contains(text, []byte(want)) {
			t.Fatalf("scrape during the drain lacks series with %s:\n%s", want, text)
		}
	}
	if r := <-long; r.err != nil {
		t.Errorf("long request: %v", r.err)
	}

	t.Run("promtool check metrics", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, promtest.Promtool(t), "check", "metrics")
		cmd.Stdin = bytes.NewReader(text)
		out, err := cmd.CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) != 0 {
			t.Fatalf("promtool check metrics: %v; want no problem:\n%s\n--- input:\n%s", err, out, text)
		}
	})

	t.Run("contract", func(t *testing.T) {
		parser := expfmt.NewTextParser(model.UTF8Validation)
		mfs, err := parser.TextToMetricFamilies(bytes.NewReader(text))
		if err != nil {
			t.Fatalf("parse /metrics: %v", err)
		}
		gen := []string{"generation", "version", "worker"}
		tests := []struct {
			name   string
			typ    dto.MetricType
			labels []string // exactly, sorted
		}{
			{"launcher_inflight_requests", dto.MetricType_GAUGE, gen},
			{"launcher_open_connections", dto.MetricType_GAUGE, gen},
			{"launcher_requests_total", dto.MetricType_COUNTER, append([]string{"code"}, gen...)},
			{"launcher_request_duration_seconds", dto.MetricType_HISTOGRAM, gen},
			{"launcher_generation_info", dto.MetricType_GAUGE, []string{"generation", "state", "version"}},
			{"launcher_upgrades_total", dto.MetricType_COUNTER, []string{"result"}},
			{"launcher_upgrade_duration_seconds", dto.MetricType_HISTOGRAM, nil},
			{"launcher_drain_duration_seconds", dto.MetricType_HISTOGRAM, nil},
		}
		for _, tt := range tests {
			mf := mfs[tt.name]
			if mf == nil {
				t.Errorf("%s missing", tt.name)
				continue
			}
			if mf.GetType() != tt.typ {
				t.Errorf("%s type = %v; want %v", tt.name, mf.GetType(), tt.typ)
			}
			for _, m := range mf.Metric {
				var got []string
				for _, l := range m.Label {
					got = append(got, l.GetName())
				}
				sort.Strings(got)
				if !slices.Equal(got, tt.labels) {
					t.Errorf("%s labels = %v; want %v", tt.name, got, tt.labels)
					break
				}
			}
		}
		codes := map[string]bool{}
		for _, m := range mfs["launcher_requests_total"].GetMetric() {
			for _, l := range m.Label {
				if l.GetName() == "code" {
					codes[l.GetValue()] = true
				}
			}
		}
		if !codes["200"] || !codes["400"] {
			t.Errorf("launcher_requests_total codes = %v; want 200 and 400", codes)
		}
		for name, mf := range mfs {
			for _, m := range mf.Metric {
				for _, l := range m.Label {
					switch l.GetName() {
					case "pid", "path", "addr", "address", "client", "remote_addr", "socket":
						t.Errorf("%s has unbounded label %s=%q", name, l.GetName(), l.GetValue())
					}
				}
			}
		}
		if t.Failed() {
			t.Logf("/metrics:\n%s", text)
		}
	})
}

// TestScrapeErrorCountedInItsScrape: a scrape that misses a stopped
// worker says so in its own launcher_scrape_errors_total, not only in the
// next scrape's (a new user's trial found it one scrape late).
func TestScrapeErrorCountedInItsScrape(t *testing.T) {
	maddr := freeAddr(t)
	s := startSup(t, "--metrics", maddr)
	if v := metricValue(t, maddr, "launcher_scrape_errors_total"); v != 0 {
		t.Fatalf("launcher_scrape_errors_total = %g before any failure; want 0", v)
	}
	pid := activeGen(s.status()).PIDs[0]
	stopProc(t, pid) // stopped before the scrape, not maybe during it
	defer syscall.Kill(pid, syscall.SIGCONT)
	if v := metricValue(t, maddr, "launcher_scrape_errors_total"); v != 1 {
		t.Errorf("launcher_scrape_errors_total = %g in the scrape that missed the stopped worker; want 1", v)
	}
}
