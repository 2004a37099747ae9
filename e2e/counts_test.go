package e2e

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/launcherd/launcher/internal/loadgen"
	"github.com/launcherd/launcher/internal/promtest"
)

// sumRequests reads the supervisor's /metrics and sums
// launcher_requests_total over every series.
func sumRequests(t *testing.T, maddr string) float64 {
	t.Helper()
	text := scrape(t, maddr)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	var sum float64
	for _, m := range mfs["launcher_requests_total"].GetMetric() {
		sum += m.GetCounter().GetValue()
	}
	return sum
}

// queryAt is one sample of promql at time at, or fails t.
func queryAt(t *testing.T, prom *promtest.Server, promql string, at time.Time) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ss, err := prom.QueryAt(ctx, promql, at)
	if err != nil || len(ss) != 1 {
		t.Fatalf("%s at %s = %v, %v; want one sample", promql, at.Format(time.StampMilli), ss, err)
	}
	return ss[0].Value
}

// TestRequestCountsSurviveUpgrades: across 10 upgrades under keep-alive
// load, the sum of launcher_requests_total on the supervisor's /metrics
// rises by exactly the number of requests the clients had answered — the
// series of each exited generation stay with their final values — and,
// seen by a real Prometheus scraping every second, that sum never goes
// down (resets() is 0) and rises by the same number between two instant
// queries.
func TestRequestCountsSurviveUpgrades(t *testing.T) {
	const (
		upgrades = 10
		every    = 1200 * time.Millisecond // an upgrade --wait takes about half of it
		loadFor  = 20 * time.Second        // a bound: the load stops once the upgrades are done (about 12 s)
	)
	maddr := freeAddr(t)
	// A short probation: each old generation stands by, then drains, within
	// the load.
	s := startSup(t, "--metrics", maddr, "--workers", "2", "--probation", "300ms")
	prom := promtest.Start(t, []string{maddr})
	const sum = `(sum(launcher_requests_total) or vector(0))`

	// Nothing has been asked yet: the baseline is what /metrics says, and
	// Prometheus has scraped it once that is what it reads too.
	before := sumRequests(t, maddr)
	waitQuery(t, prom, 15*time.Second, sum, one(func(v float64) bool { return v == before }))
	t0 := time.Now()
	// The load starts more than a scrape interval after t0, so that the
	// subqueries below read the baseline at their first step.
	time.Sleep(1200 * time.Millisecond)

	var (
		wg      sync.WaitGroup
		res     *loadgen.Result
		loadErr error
	)
	// Stopped, not cancelled, once the upgrades are done: the requests in
	// flight then end in full, as the counts below need (a cancelled
	// request may have been counted by a worker without its answer).
	stopLoad := make(chan struct{})
	wg.Add(1)
	go func() { // ends with the load, bounded by loadFor and its timeouts
		defer wg.Done()
		res, loadErr = loadgen.Run(context.Background(), loadgen.Config{
			Addr: s.addr, Mode: loadgen.KeepAlive, Workers: 8, Duration: loadFor, MaxRequests: loadgen.MaxRequestsLimit, Stop: stopLoad,
		})
	}()
	loadStart := time.Now()
	version := "v1"
	for i := range upgrades {
		next := loadStart.Add(500*time.Millisecond + time.Duration(i)*every)
		time.Sleep(time.Until(next))
		version = map[string]string{"v1": "v2", "v2": "v1"}[version]
		if _, errOut, code := s.cli("upgrade", "--wait", version); code != 0 {
			t.Fatalf("upgrade %d to %s: exit %d: %s", i+1, version, code, errOut)
		}
	}
	upgradesDone := time.Since(loadStart)
	// The load runs on a little past the last upgrade's end, as it did
	// before into the rest of loadFor.
	time.Sleep(300 * time.Millisecond)
	close(stopLoad)
	wg.Wait()
	if res == nil {
		t.Fatalf("load: %v", loadErr)
	}
	if upgradesDone > res.Elapsed {
		t.Errorf("the upgrades took %s, the load %s: some ran without load", upgradesDone, res.Elapsed)
	}
	if res.Failures() > 0 || res.Aborted > 0 {
		// A failed request may have been counted by a worker without its
		// answer reaching the client: the counts below could not agree.
		t.Fatalf("%d of %d requests failed, %d aborted: %v", res.Failures(), res.Requests, res.Aborted, res.Samples)
	}
	answered := float64(res.Requests)
	t.Logf("load: %d requests answered in %s, versions %v; %d upgrades in %s",
		res.Requests, res.Elapsed.Round(time.Millisecond), res.Versions, upgrades, upgradesDone.Round(time.Millisecond))

	// Every generation but the last has exited by now.
	after := sumRequests(t, maddr)
	t.Logf("supervisor /metrics: sum(launcher_requests_total) %v → %v: +%v; the clients had %v answered", before, after, after-before, answered)
	if after-before != answered {
		t.Errorf("sum(launcher_requests_total) on /metrics rose by %v; want %v, the requests answered (%+v)", after-before, answered, after-before-answered)
	}

	// Prometheus: once it has scraped the final sum, and one more interval
	// so that the subqueries' last step reads it.
	waitQuery(t, prom, 15*time.Second, sum, func(ss []promtest.Sample) bool { return len(ss) == 1 && ss[0].Value == after })
	time.Sleep(1200 * time.Millisecond)
	t1 := time.Now()
	window := t1.Sub(t0).Truncate(time.Millisecond)
	t1 = t0.Add(window)
	w := fmt.Sprintf("%dms", window.Milliseconds())

	atT0 := queryAt(t, prom, sum, t0)
	atT1 := queryAt(t, prom, sum, t1)
	t.Logf("Prometheus: %s at t0 %v, at t1 = t0+%s %v: +%v", sum, atT0, w, atT1, atT1-atT0)
	if atT1-atT0 != answered {
		t.Errorf("Prometheus: %s rose by %v from t0 to t1; want %v (%+v)", sum, atT1-atT0, answered, atT1-atT0-answered)
	}
	resets := queryAt(t, prom, `resets(`+sum+`[`+w+`:1s])`, t1)
	if resets != 0 {
		t.Errorf("Prometheus: resets(%s[%s:1s]) = %v; want 0: the sum went down", sum, w, resets)
	}
	// increase() extrapolates from the first and last steps of the window to
	// its ends, each at most one step (1s) away: between the count and
	// count × window/(window−2s).
	inc := queryAt(t, prom, `increase(`+sum+`[`+w+`:1s])`, t1)
	hi := answered * window.Seconds() / (window.Seconds() - 2)
	t.Logf("Prometheus: increase(%s[%s:1s]) = %.0f (answered %v, at most %.0f by extrapolation); resets %v", sum, w, inc, answered, hi, resets)
	if inc < answered || inc > hi+1e-6 {
		t.Errorf("Prometheus: increase(%s[%s:1s]) = %.0f; want %v to %.0f", sum, w, inc, answered, hi)
	}
	// For comparison: per-series increase() then sum misses what each new
	// generation counted before its first scrape.
	if perSeries, err := prom.QueryAt(context.Background(), `sum(increase(launcher_requests_total[`+w+`]))`, t1); err == nil && len(perSeries) == 1 {
		t.Logf("Prometheus: sum(increase(launcher_requests_total[%s])) = %.0f", w, perSeries[0].Value)
	}
}
