package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/launcherd/launcher/internal/loadgen"
)

// report is what --json writes: every figure of the run, for machines,
// and what tools/upgradeplot draws. Times are in milliseconds.
type report struct {
	ExecFloorMS     *float64   `json:"exec_floor_ms"` // null with --floor 0: the "-" of the tables
	ExecFloorStarts int        `json:"exec_floor_starts"`
	Idle            []idleJSON `json:"idle_upgrades"`
	// SIGHUPFirstAnswerMS is the median of --sighup's standalone
	// handovers, SIGHUP -> first answer from the new version.
	SIGHUPFirstAnswerMS float64 `json:"sighup_first_answer_ms_p50,omitempty"`
	// Peers are the medians of --peers, trigger -> first answer from the
	// new version, per trigger.
	Peers map[string]float64 `json:"peers_first_answer_ms_p50,omitempty"`
	// PeersAll: every upgrade's time of each --peers trigger, in turn
	// order (min, max and spread are there).
	PeersAll map[string][]float64 `json:"peers_first_answer_ms,omitempty"`
	// Throughput is the comparison with plain net/http; absent when it
	// did not run.
	Throughput *throughputJSON `json:"throughput,omitempty"`
	Runs       []runJSON       `json:"runs"`
	Bucket     float64         `json:"bucket_ms"`
	Flags      []string        `json:"start_flags,omitempty"`
	Clients    int             `json:"clients"`
	Duration   float64         `json:"duration_s"`
	Time       time.Time       `json:"time"`
	Steps      []string        `json:"trace_steps"`
	Phases     []string        `json:"trace_phases"`
}

// idleJSON is the upgrades of one --workers value with nothing in flight.
type idleJSON struct {
	Binaries       string             `json:"binaries"`
	Workers        int                `json:"workers"`
	IdleConns      int                `json:"idle_conns"`
	SupCPUMS       float64            `json:"supervisor_cpu_ms_per_upgrade"`
	SupRSS         int64              `json:"supervisor_rss_bytes"`
	SupHWM         int64              `json:"supervisor_rss_peak_bytes"`
	Upgrades       int                `json:"upgrades"`
	FirstAnswerP50 float64            `json:"first_answer_ms_p50,omitempty"`
	ServingP50     float64            `json:"serving_ms_p50"`
	OldGoneP50     float64            `json:"old_gone_ms_p50"`
	ServingFloor   *float64           `json:"serving_x_floor"` // null without a floor
	OldGoneFloor   *float64           `json:"old_gone_x_floor"`
	StepMedianMS   map[string]float64 `json:"step_ms_p50"`
	ServingMS      []float64          `json:"serving_ms"`
	OldGoneMS      []float64          `json:"old_gone_ms"`
	// TracePhaseMS are the medians of the --trace phases, in order.
	TracePhaseMS []float64 `json:"trace_phase_ms_p50,omitempty"`
}

// runJSON is one (mode, handover, workers) run under load.
type runJSON struct {
	Mode     string `json:"mode"`
	Handover string `json:"handover"`
	ABFlags  string `json:"ab_start_flags,omitempty"`
	Workers  int    `json:"workers"`
	Requests int64  `json:"requests"`
	Failed   int64  `json:"failed"`
	// FailedBy counts the failures by class (refused, reset, eof,
	// timeout, non2xx, other), all of them, zeros too.
	FailedBy map[string]int64 `json:"failed_by_class"`
	// Latencies of the OK requests begun in steady state and in upgrade
	// windows, ms (nearest rank).
	P50Steady      float64 `json:"p50_steady_ms"`
	P50Upgrade     float64 `json:"p50_upgrade_ms"`
	MaxSteady      float64 `json:"max_steady_ms"`
	MaxUpgrade     float64 `json:"max_upgrade_ms"`
	FailedUpgrades int     `json:"failed_upgrades"`
	// SkippedUpgrades were not begun: the load had ended before their
	// turn.
	SkippedUpgrades int      `json:"skipped_upgrades,omitempty"`
	ServingP50      float64  `json:"serving_ms_p50"`
	OldGoneP50      float64  `json:"old_gone_ms_p50"`
	ServingFloor    *float64 `json:"serving_x_floor"` // null without a floor
	OldGoneFloor    *float64 `json:"old_gone_x_floor"`
	// MinWindowCapacity and SteadyMinCapacity are null where undefined:
	// no steady median (fewer than one response a window), or no window
	// with an upgrade.
	MinWindowCapacity *float64 `json:"min_window_capacity"`
	WindowsBelow95    *int     `json:"windows_below_95"` // null where capacity is
	WindowBuckets     int      `json:"window_buckets"`
	SteadyPerBucket   float64  `json:"steady_ok_per_bucket_p50"`
	// The capacity of the windows of the cold starts alone and of the
	// switches alone (the table's "cold start" and "switch" columns): OK
	// responses over the steady median window, one per window.
	ColdStartCapacity []float64 `json:"cold_start_window_capacity"`
	SwitchCapacity    []float64 `json:"switch_window_capacity"`
	// The steady state's own spread: the machine's noise.
	SteadyMinCapacity *float64 `json:"steady_min_capacity"`
	SteadyBelow95     *int     `json:"steady_windows_below_95"`
	SteadyBuckets     int      `json:"steady_buckets"`
	P99Steady         float64  `json:"p99_steady_ms"`
	P99Upgrade        float64  `json:"p99_upgrade_ms"`
	// The upgrade windows' p99 split by phase: requests begun during the
	// cold starts (command -> serving) and during the switches (serving ->
	// old gone).
	P99ColdStart *float64 `json:"p99_cold_start_ms"` // null: no request begun in that phase
	P99Switch    *float64 `json:"p99_switch_ms"`
	// Upgrades are the windows, from the load's start.
	Upgrades []upgradeJSON `json:"upgrades"`
	Series   seriesJSON    `json:"series"`
}

type upgradeJSON struct {
	StartMS   float64 `json:"start_ms"`
	ServingMS float64 `json:"serving_ms"`
	OldGoneMS float64 `json:"old_gone_ms"`
}

// seriesJSON is the run per bucket: OK responses and mean requests in
// flight per version, failures.
type seriesJSON struct {
	OK       map[string][]int64   `json:"ok"`
	Inflight map[string][]float64 `json:"inflight"`
	Failed   []int64              `json:"failed"`
}

func newReport(cfg config, floor time.Duration, idle []idleRun, results []runResult) report {
	rep := report{ExecFloorMS: optMS(floor), ExecFloorStarts: cfg.floorRuns, Bucket: ms64(bucket), Flags: cfg.supervisorFlags(),
		Clients: cfg.clients, Duration: cfg.duration.Seconds(), Time: time.Now().UTC(), Idle: []idleJSON{}, Runs: []runJSON{}}
	for _, s := range traceSteps {
		rep.Steps = append(rep.Steps, string(s))
	}
	for _, p := range phases {
		rep.Phases = append(rep.Phases, p.name)
	}
	for _, r := range idle {
		serve, gone := servingAndGone(r.timings)
		j := idleJSON{Binaries: r.label, Workers: r.workers, IdleConns: r.conns, Upgrades: len(r.timings), StepMedianMS: map[string]float64{},
			SupCPUMS: ms64(r.cpu) / float64(max(len(r.timings), 1)), SupRSS: r.rss, SupHWM: r.hwm}
		for _, t := range r.timings {
			j.ServingMS = append(j.ServingMS, ms64(t.Serving))
			j.OldGoneMS = append(j.OldGoneMS, ms64(t.OldGone))
		}
		j.ServingP50, j.OldGoneP50 = ms64(median(serve)), ms64(median(gone))
		j.ServingFloor, j.OldGoneFloor = xFloorOf(median(serve), floor), xFloorOf(median(gone), floor)
		j.FirstAnswerP50 = ms64(median(r.firstAnswer))
		for _, ds := range r.trace {
			j.TracePhaseMS = append(j.TracePhaseMS, ms64(median(ds)))
		}
		for s, d := range stepMedians(r.timings) {
			j.StepMedianMS[string(s)] = ms64(d)
		}
		rep.Idle = append(rep.Idle, j)
	}
	for _, r := range results {
		serve, gone := servingAndGone(r.timings)
		j := runJSON{Mode: string(r.mode), Handover: r.handover, ABFlags: r.variant, Workers: r.workers, Requests: r.summary.Requests, Failed: r.summary.Failures,
			FailedUpgrades: r.failed, SkippedUpgrades: r.skipped, WindowBuckets: r.capacity.WindowBuckets,
			SteadyPerBucket: r.capacity.SteadyMedian,
			// Never null: a run without such windows has none.
			ColdStartCapacity: append([]float64{}, r.coldRatios...), SwitchCapacity: append([]float64{}, r.switchRatios...),
			SteadyBuckets: r.capacity.SteadyBuckets, P99Steady: ms64(r.summary.Steady.P99), P99Upgrade: ms64(r.summary.Upgrade.P99),
			P99ColdStart: optMS(r.p99Cold), P99Switch: optMS(r.p99Switch),
			Series: seriesJSON{OK: map[string][]int64{}, Inflight: map[string][]float64{}, Failed: r.series.Failed}}
		cf := capacityOf(r.capacity)
		j.MinWindowCapacity, j.WindowsBelow95, j.SteadyMinCapacity, j.SteadyBelow95 = cf.minRatio, cf.below, cf.steadyMin, cf.steadyBelow
		j.FailedBy = map[string]int64{}
		for c := loadgen.Class(0); c < loadgen.NumClasses; c++ {
			if c != loadgen.OK {
				j.FailedBy[c.String()] = r.summary.Count[c]
			}
		}
		j.P50Steady, j.P50Upgrade = ms64(r.summary.Steady.P50), ms64(r.summary.Upgrade.P50)
		j.MaxSteady, j.MaxUpgrade = ms64(r.summary.Steady.Max), ms64(r.summary.Upgrade.Max)
		for i, t := range r.timings {
			u := upgradeJSON{ServingMS: ms64(t.Serving), OldGoneMS: ms64(t.OldGone)}
			u.StartMS = ms64(r.starts[i].Sub(r.start))
			j.Upgrades = append(j.Upgrades, u)
		}
		j.ServingP50, j.OldGoneP50 = ms64(median(serve)), ms64(median(gone))
		j.ServingFloor, j.OldGoneFloor = xFloorOf(median(serve), floor), xFloorOf(median(gone), floor)
		for i, v := range r.series.Versions {
			name := v
			if name == "" {
				name = "?"
			}
			j.Series.OK[name] = r.series.OK[i]
			j.Series.Inflight[name] = r.series.Inflight[i]
		}
		rep.Runs = append(rep.Runs, j)
	}
	return rep
}

// capacityFigures are a run's capacity figures, nil where undefined: all
// of them without a steady median (the steady state answers less than
// once a window, as the long mode does), the minimum without a window
// with an upgrade. The table prints nil as "-", the JSON as null.
type capacityFigures struct {
	minRatio, steadyMin *float64
	below, steadyBelow  *int
}

func capacityOf(c loadgen.Capacity) capacityFigures {
	var f capacityFigures
	if c.SteadyMedian <= 0 {
		return f
	}
	below, steadyBelow, steadyMin := c.Below, c.SteadyBelow, c.SteadyMin
	f.below, f.steadyBelow, f.steadyMin = &below, &steadyBelow, &steadyMin
	if c.WindowBuckets > 0 {
		minRatio := c.MinRatio
		f.minRatio = &minRatio
	}
	return f
}

// optMS is d in ms, nil (null) when d is 0: not measured.
func optMS(d time.Duration) *float64 {
	if d <= 0 {
		return nil
	}
	v := ms64(d)
	return &v
}

// xFloorOf is d as a multiple of floor, nil (null) without a floor.
func xFloorOf(d, floor time.Duration) *float64 {
	if floor <= 0 {
		return nil
	}
	v := ratio(d, floor)
	return &v
}

// throughputJSON is the comparison with plain net/http: each measure's
// medians, the ratio's median with its confidence interval, the verdict
// against the target, and every round's ratio; with --profile, the
// launcher's own share of the worker's CPU.
type throughputJSON struct {
	Client  string        `json:"client"` // "wrk; servers on CPU 0, wrk on CPU 1", or the fallback
	RoundS  float64       `json:"round_s"`
	Rounds  int           `json:"rounds"`
	Target  float64       `json:"target"` // 0.99
	ReqS    throughputRow `json:"req_s"`
	ReqCPUS throughputRow `json:"req_per_cpu_s"`
	Profile *profileJSON  `json:"profile,omitempty"`
}

type throughputRow struct {
	PlainMedian    float64   `json:"plain_median"`
	LauncherMedian float64   `json:"launcher_median"`
	RatioMedian    float64   `json:"ratio_median"`
	CILow          float64   `json:"ci_low"`
	CIHigh         float64   `json:"ci_high"`
	CICoverage     float64   `json:"ci_coverage"`
	Verdict        string    `json:"verdict"` // "met", "not met" or "undecided"
	RoundRatios    []float64 `json:"round_ratios"`
}

// profileJSON is --profile's result: samples of the worker in the
// launcher's own packages, of all its samples.
type profileJSON struct {
	OwnShare float64            `json:"own_share"`
	Own      int                `json:"own_samples"`
	Total    int                `json:"samples"`
	Top      map[string]float64 `json:"top_shares"`
}

func (r report) write(file string) error {
	b, err := json.MarshalIndent(r, "", " ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(file, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("--json: %w", err)
	}
	return nil
}
