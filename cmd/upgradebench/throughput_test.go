package main

import (
	"math"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestABBAOrder(t *testing.T) {
	P, L := false, true
	for _, tc := range []struct {
		rounds int
		want   []bool
	}{
		{0, nil},
		{1, []bool{P, L, L, P}},
		{3, []bool{P, L, L, P, P, L, L, P, P, L, L, P}},
	} {
		if got := abbaOrder(tc.rounds); !slices.Equal(got, tc.want) {
			t.Errorf("abbaOrder(%d) = %v; want %v", tc.rounds, got, tc.want)
		}
	}
}

// TestRoundRatiosDrift: a machine that slows down steadily, run after
// run, gives the ABBA rounds the true ratio; the A/B pairs would not.
func TestRoundRatiosDrift(t *testing.T) {
	const truth = 0.97
	var xs []float64
	for i, launcher := range abbaOrder(5) {
		speed := 1000 - 10*float64(i) // a linear drift of 1 % of the start a run
		if launcher {
			speed *= truth
		}
		xs = append(xs, speed)
	}
	got := roundRatios(xs)
	if len(got) != 5 {
		t.Fatalf("%d ratios; want 5", len(got))
	}
	for i, r := range got {
		if math.Abs(r-truth) > 1e-12 {
			t.Errorf("round %d: ratio %v; want %v", i, r, truth)
		}
	}
	if ab := xs[1] / xs[0]; math.Abs(ab-truth) < 1e-3 {
		t.Errorf("the first A/B pair gives %v, as good as ABBA: the drift is too small to test", ab)
	}
	// A partial round at the end has no ratio.
	if got := roundRatios(xs[:7]); len(got) != 1 {
		t.Errorf("7 runs: %d ratios; want 1", len(got))
	}
}

// TestMedianCI: the sign-test interval's ranks and coverage as the
// tables give them (Conover, table A3: n = 10 → ranks 2 and 9, 97.9 %;
// n = 20 → 6 and 15, 95.9 %), and the whole range below n = 6.
func TestMedianCI(t *testing.T) {
	seq := func(n int) []float64 { // n..1, unsorted on purpose
		var xs []float64
		for i := n; i >= 1; i-- {
			xs = append(xs, float64(i))
		}
		return xs
	}
	for _, tc := range []struct {
		n              int
		median, lo, hi float64
		k              int
		coverage       float64
	}{
		{1, 1, 1, 1, 1, 0},
		{5, 3, 1, 5, 1, 0.9375},
		{6, 3.5, 1, 6, 1, 0.96875},
		{10, 5.5, 2, 9, 2, 0.97852},
		{20, 10.5, 6, 15, 6, 0.95861},
		{40, 20.5, 14, 27, 14, 0.96157},
	} {
		ci := newMedianCI(seq(tc.n), 0.95)
		if ci.Median != tc.median || ci.Lo != tc.lo || ci.Hi != tc.hi || ci.K != tc.k || ci.N != tc.n || math.Abs(ci.Coverage-tc.coverage) > 1e-4 {
			t.Errorf("n=%d: %+v; want median %v, [%v, %v], k %d, coverage %v", tc.n, ci, tc.median, tc.lo, tc.hi, tc.k, tc.coverage)
		}
	}
}

func TestVerdict(t *testing.T) {
	for _, tc := range []struct {
		lo, hi float64
		want   string
	}{
		{0.99, 1.02, "met"},
		{0.95, 0.989, "not met"},
		{0.97, 0.99, "undecided"},
		{0.98, 1.01, "undecided"},
	} {
		if got := verdict(medianCI{Lo: tc.lo, Hi: tc.hi}, 0.99); !strings.HasPrefix(got, tc.want) {
			t.Errorf("[%v, %v]: %q; want %q", tc.lo, tc.hi, got, tc.want)
		}
	}
}

// TestPrintThroughput: the table names the method, the interval's
// coverage and the figures of rounds made of known runs.
func TestPrintThroughput(t *testing.T) {
	var runs []round
	for i, launcher := range abbaOrder(10) {
		r := round{rate: 1000, requests: 1000, cpu: time.Second}
		if launcher {
			r.rate, r.requests = 980, 980
			r.cpu = time.Duration(float64(time.Second) * 980 / (1000 * (0.95 + 0.01*float64(i/4)))) // per CPU-s: 95..104 %
		}
		runs = append(runs, r)
	}
	var b strings.Builder
	printThroughput(&b, "wrk; test", time.Second, runs)
	out := b.String()
	for _, want := range []string{
		"10 rounds in ABBA order", `97\.9% confidence interval from order statistics`, "ranked 2 and 9 of 10",
		`\nreq/s +1000 +980 +98\.0% +98\.0–98\.0% +98–98% +not met \(interval below\)\n`,
		`\nreq/CPU-s +1000 +995 +99\.5% +96\.0–103\.0% +95–104% +undecided \(inside the interval\)\n`,
		"per round, req/CPU-s: 95% 96% 97%",
	} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
}

// TestAttribute: each sample goes to its first frame from the leaf that
// is not shared machinery; it is the launcher's when that frame is in
// drain, metrics or launcher.
func TestAttribute(t *testing.T) {
	const script = `
	ffffffff813a4413 finish_task_switch.isra.0 ([kernel.kallsyms])
	           23eb1 runtime.newobject (/r/hello)
	          17d614 net.(*conn).Read (/r/hello)
	          3f6ee5 github.com/launcherd/launcher/drain.(*Conn).Read (/r/hello)
	           8faa1 runtime.goexit.abi0 (/r/hello)

	            7fe1 __vdso_clock_gettime ([vdso])
	           bc49a time.Now (/r/hello)
	          3f0001 github.com/launcherd/launcher/drain.(*Tracker).clock (/r/hello)
	          3f0002 github.com/launcherd/launcher/drain.(*Conn).Read (/r/hello)

	           11111 memeqbody (/r/hello)
	           22222 sync/atomic.(*Int64).Add (/r/hello)
	           33333 github.com/prometheus/client_golang/prometheus.(*histogram).Observe (/r/hello)
	          444444 github.com/launcherd/launcher/metrics.(*Worker).ObserveRequest (/r/hello)

	          555555 github.com/launcherd/launcher/drain.(*Tracker).clock (/r/hello)

	          285b5e net/http.(*response).finishRequest (/r/hello)
	          2868b5 net/http.(*conn).serve (/r/hello)
`
	a := attribute(parsePerfScript(strings.NewReader(script)))
	if a.total != 5 || a.own != 3 {
		t.Errorf("total %d, own %d; want 5, 3", a.total, a.own)
	}
	want := []funcSamples{{"github.com/launcherd/launcher/drain.(*Tracker).clock", 2}, {"github.com/launcherd/launcher/metrics.(*Worker).ObserveRequest", 1}}
	if got := a.top(10); !slices.Equal(got, want) {
		t.Errorf("top = %v; want %v", got, want)
	}
}
