package metrics_test

import (
	"testing"
	"time"

	"github.com/launcherd/launcher/drain"
	"github.com/launcherd/launcher/metrics"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// SampleRequests reads what a Worker exports; a window is a difference of
// samples and its p99 falls in the bucket of the true one.
func TestSampleRequestsWindowQuantile(t *testing.T) {
	w := metrics.NewWorker(drain.NewTracker())
	reg := prometheus.NewRegistry()
	reg.MustRegister(w)
	sample := func() metrics.RequestSample {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		byName := map[string]*dto.MetricFamily{}
		for _, mf := range mfs {
			byName[mf.GetName()] = mf
		}
		return metrics.SampleRequests(byName)
	}
	for range 1000 {
		w.ObserveRequest(200, time.Millisecond)
	}
	before := sample()
	for i := range 1000 {
		code := 200
		if i%10 < 3 {
			code = 503
		}
		w.ObserveRequest(code, 30*time.Millisecond)
	}
	win := sample().Sub(before)
	if win.Requests != 1000 || win.Errors != 300 || win.Count != 1000 {
		t.Errorf("window = %v requests, %v errors, %v observations; want 1000, 300, 1000", win.Requests, win.Errors, win.Count)
	}
	if p := win.Quantile(0.99); p <= 25*time.Millisecond || p > 30*time.Millisecond {
		t.Errorf("window p99 = %s; want in the bucket of 30 ms (25 ms, 30 ms]", p)
	}
	if p := before.Quantile(0.99); p <= 500*time.Microsecond || p > time.Millisecond {
		t.Errorf("first p99 = %s; want in (0.5 ms, 1 ms]", p)
	}
	both := before.Add(win)
	if both.Requests != 2000 || both.Quantile(0.25) > time.Millisecond || both.Quantile(0.75) < 25*time.Millisecond {
		t.Errorf("sum = %+v; want 2000 requests, half fast, half slow", both)
	}
	if (metrics.RequestSample{}).Quantile(0.99) != 0 {
		t.Errorf("empty sample's p99 is not 0")
	}
}
