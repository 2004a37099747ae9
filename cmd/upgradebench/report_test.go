package main

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/launcherd/launcher/internal/loadgen"
)

// TestReportWindowCapacity: the capacity of the cold starts' and the
// switches' windows, which the table prints, are in the JSON; a run
// without such windows has an empty list, not null.
func TestReportWindowCapacity(t *testing.T) {
	cfg := config{duration: time.Second, clients: 1}
	res := runResult{mode: loadgen.KeepAlive, handover: "steer", workers: 1, coldRatios: []float64{0.9, 0.75}}
	b, err := json.Marshal(newReport(cfg, 0, nil, []runResult{res}))
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Runs []struct {
			Cold   *[]float64 `json:"cold_start_window_capacity"`
			Switch *[]float64 `json:"switch_window_capacity"`
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
}
