package main

import (
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
