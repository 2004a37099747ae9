package main

import (
	"encoding/json"
	"slices"
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
