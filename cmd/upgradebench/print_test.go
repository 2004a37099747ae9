package main

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/launcherd/launcher/internal/loadgen"
	"github.com/launcherd/launcher/internal/rig"
)

// TestNoFloor: with --floor 0 the idle upgrades still get their table,
// and the multiples of the floor are "-", not 0.0.
func TestNoFloor(t *testing.T) {
	ms := time.Millisecond
	idle := []idleRun{{label: "this", workers: 1, timings: []rig.Timing{{Serving: 10 * ms, OldGone: 20 * ms}}}}
	var b strings.Builder
	printFloor(&b, 0, 0, idle)
	out := b.String()
	if !strings.Contains(out, "upgrades with nothing in flight") || !strings.Contains(out, "10.0 ms  -") {
		t.Errorf("no idle table, or a multiple of no floor:\n%s", out)
	}
	if strings.Contains(out, "exec floor:") {
		t.Errorf("a floor line without a floor:\n%s", out)
	}
	b.Reset()
	cfg := config{modes: []loadgen.Mode{loadgen.KeepAlive}, clients: 1, duration: time.Second, upgrades: 1}
	printTables(&b, cfg, 0, []runResult{{mode: loadgen.KeepAlive, handover: "steer", workers: 1, timings: idle[0].timings}})
	if out := b.String(); !regexp.MustCompile(`10 ms +- +10 ms +20 ms +- +20 ms`).MatchString(out) || !strings.Contains(out, "no exec floor") {
		t.Errorf("load table without a floor:\n%s", out)
	}
}

func TestPluralAndCPU(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{plural(1, "upgrade"), "1 upgrade"},
		{plural(0, "upgrade"), "0 upgrades"},
		{plural(20, "start"), "20 starts"},
		// /proc/PID/stat counts 10 ms ticks: none in 1 upgrade is < 10 ms.
		{cpuPer(0, 1), "< 10.0 ms"},
		{cpuPer(0, 20), "< 0.5 ms"},
		{cpuPer(140*time.Millisecond, 20), "7.0 ms"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q; want %q", tc.got, tc.want)
		}
	}
}

// TestPrintPeersWithoutAFloor: with --floor 0 the multiples of the floor
// read "-", as the other tables' do (they read 0.0).
func TestPrintPeersWithoutAFloor(t *testing.T) {
	p := peerRun{firstAnswer: make([][]time.Duration, len(peerTriggers))}
	for i := range p.firstAnswer {
		p.firstAnswer[i] = []time.Duration{time.Duration(i+5) * time.Millisecond}
	}
	var b strings.Builder
	printPeers(&b, 0, p)
	if !regexp.MustCompile(`\nlauncher upgrade, the command +5\.0 ms +- +0\.50 `).MatchString(b.String()) {
		t.Errorf("--peers table without a floor:\n%s\nwant its × floor column to read -", b.String())
	}
	b.Reset()
	printPeers(&b, 5*time.Millisecond, p)
	if !regexp.MustCompile(`\nlauncher upgrade, the command +5\.0 ms +1\.0 +0\.50 `).MatchString(b.String()) {
		t.Errorf("--peers table with a 5 ms floor:\n%s\nwant 1.0 × the floor", b.String())
	}
}

// TestCapacityUndefinedWithoutASteadyMedian: a run whose steady state
// answers less than once a window (the long mode, ~8 requests a second)
// has no capacity to speak of: the table reads "-" and the JSON null,
// not a minimum of 100 % beside a steady minimum of 0 % (a new user's
// recheck); p99 ratios without requests read "-", not 0.00.
func TestCapacityUndefinedWithoutASteadyMedian(t *testing.T) {
	res := runResult{mode: loadgen.Long, handover: "steer", workers: 1,
		capacity: loadgen.Capacity{MinRatio: 1, WindowBuckets: 35, SteadyBuckets: 23}}
	var b strings.Builder
	printTables(&b, config{clients: 32, duration: time.Second, upgrades: 3}, 0, []runResult{res})
	line := ""
	for _, l := range strings.Split(b.String(), "\n") {
		if strings.HasPrefix(l, "long ") && strings.Contains(l, "steer  ") && !strings.Contains(l, "requests") {
			line = l
		}
	}
	if line == "" || strings.ContainsAny(line, "%/") || strings.Contains(line, "0.00") {
		t.Errorf("capacity row %q; want - for every capacity and p99 ratio column (no percentage, count or ratio)", line)
	}
	blob, err := json.Marshal(newReport(config{}, 0, nil, []runResult{res}))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"min_window_capacity":null`, `"steady_min_capacity":null`, `"windows_below_95":null`, `"steady_windows_below_95":null`,
		`"p99_cold_start_ms":null`, `"serving_x_floor":null`, `"exec_floor_ms":null`} {
		if !strings.Contains(string(blob), want) {
			t.Errorf("JSON %s; want %s: the table's -", blob, want)
		}
	}
}

// TestUpgradesNotBegunAreSaid: upgrades whose turn came after the load
// had ended (the ones before drained long requests) are said under the
// table, and counted in the JSON, not left out without a word (a new
// user's recheck: 3 upgrades reported for a 6 s load, 2 of them after it).
func TestUpgradesNotBegunAreSaid(t *testing.T) {
	res := runResult{mode: loadgen.Long, handover: "steer", workers: 1, skipped: 2, timings: []rig.Timing{{Serving: time.Millisecond, OldGone: 4 * time.Second}}, starts: []time.Time{time.Now()}}
	var b strings.Builder
	printTables(&b, config{clients: 32, duration: 6 * time.Second, upgrades: 3}, 0, []runResult{res})
	if want := "(mode long, handover steer, workers 1: 2 of 3 upgrades not begun: the load's 6s had ended"; !strings.Contains(b.String(), want) {
		t.Errorf("tables:\n%s\nwant %q", b.String(), want)
	}
	blob, _ := json.Marshal(newReport(config{}, 0, nil, []runResult{res}))
	if !strings.Contains(string(blob), `"skipped_upgrades":2`) {
		t.Errorf("JSON %s; want skipped_upgrades 2", blob)
	}
}
