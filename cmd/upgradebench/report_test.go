package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/launcherd/launcher/internal/loadgen"
)

// TestReportWindowCapacity: the capacity of the cold starts' and the
// switches' windows, and their p99s, which the table prints, are in the
// JSON; a run without such windows has an empty list, not null.
func TestReportWindowCapacity(t *testing.T) {
	cfg := config{duration: time.Second, clients: 1}
	res := runResult{mode: loadgen.KeepAlive, handover: "steer", workers: 1, coldRatios: []float64{0.9, 0.75},
		p99Cold: 1500 * time.Microsecond, p99Switch: 2250 * time.Microsecond}
	b, err := json.Marshal(newReport(cfg, 0, nil, []runResult{res}))
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Runs []struct {
			Cold      *[]float64 `json:"cold_start_window_capacity"`
			Switch    *[]float64 `json:"switch_window_capacity"`
			P99Cold   float64    `json:"p99_cold_start_ms"`
			P99Switch float64    `json:"p99_switch_ms"`
		} `json:"runs"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Runs) != 1 || got.Runs[0].Cold == nil || got.Runs[0].Switch == nil {
		t.Fatalf("runs = %s; want one with both window capacities", b)
	}
	if r := got.Runs[0]; !slices.Equal(*r.Cold, res.coldRatios) || len(*r.Switch) != 0 {
		t.Errorf("cold start %v, switch %v; want %v and []", *r.Cold, *r.Switch, res.coldRatios)
	}
	if r := got.Runs[0]; r.P99Cold != 1.5 || r.P99Switch != 2.25 {
		t.Errorf("p99 cold start %v ms, switch %v ms; want 1.5 and 2.25", r.P99Cold, r.P99Switch)
	}
}

// TestReportHasEveryPrintedFigure: what the tables print is in the
// JSON too (a new user's trial found it short of them): a run's failures
// by class, its p50 and max latencies, and the throughput comparison's
// medians, interval, verdict and rounds.
func TestReportHasEveryPrintedFigure(t *testing.T) {
	cfg := config{duration: time.Second, clients: 1}
	res := runResult{mode: loadgen.NewConn, handover: "close", workers: 1}
	res.summary.Count[loadgen.Reset] = 7
	res.summary.Count[loadgen.EOF] = 2
	res.summary.Failures = 9
	res.summary.Steady.P50, res.summary.Upgrade.Max = 2*time.Millisecond, 30*time.Millisecond
	rep := newReport(cfg, 0, nil, []runResult{res})

	var runs []round
	for _, launcher := range abbaOrder(6) {
		r := round{rate: 1000, requests: 1000, cpu: time.Second}
		if launcher {
			r.rate, r.requests = 970, 970
		}
		runs = append(runs, r)
	}
	var out strings.Builder
	rep.Throughput = printThroughput(&out, "wrk; test", time.Second, runs)
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Runs []struct {
			FailedBy   map[string]int64 `json:"failed_by_class"`
			P50Steady  float64          `json:"p50_steady_ms"`
			MaxUpgrade float64          `json:"max_upgrade_ms"`
		} `json:"runs"`
		Throughput *struct {
			Rounds int `json:"rounds"`
			ReqS   struct {
				Ratio   float64   `json:"ratio_median"`
				Lo      float64   `json:"ci_low"`
				Hi      float64   `json:"ci_high"`
				Verdict string    `json:"verdict"`
				Rounds  []float64 `json:"round_ratios"`
			} `json:"req_s"`
		} `json:"throughput"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	r := got.Runs[0]
	if r.FailedBy["reset"] != 7 || r.FailedBy["eof"] != 2 || r.FailedBy["timeout"] != 0 || len(r.FailedBy) != int(loadgen.NumClasses)-1 {
		t.Errorf("failed_by_class = %v; want reset 7, eof 2, every other class 0", r.FailedBy)
	}
	if r.P50Steady != 2 || r.MaxUpgrade != 30 {
		t.Errorf("p50 steady %v ms, max upgrade %v ms; want 2 and 30", r.P50Steady, r.MaxUpgrade)
	}
	tp := got.Throughput
	if tp == nil || tp.Rounds != 6 || tp.ReqS.Ratio != 0.97 || tp.ReqS.Lo != 0.97 || tp.ReqS.Hi != 0.97 || tp.ReqS.Verdict != "not met" || len(tp.ReqS.Rounds) != 6 {
		t.Errorf("throughput = %+v; want 6 rounds at 97%%, not met", tp)
	}
}
