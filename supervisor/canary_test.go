package supervisor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/launcherd/launcher/internal/control"
)

func TestWeightedSlots(t *testing.T) {
	tests := []struct {
		newSlots, oldSlots []int
		weight             int
		wantLen            int
	}{
		{[]int{1}, []int{0}, 10, 100},
		{[]int{4, 5, 6, 7}, []int{0, 1, 2, 3}, 10, 200},
		{[]int{4, 5, 6, 7}, []int{0, 1, 2, 3}, 50, 200},
		{[]int{3, 4, 5}, []int{0, 1, 2}, 1, 300},
		{[]int{7}, []int{0, 1, 2, 3, 4, 5, 6}, 33, 700},
		{[]int{2, 3}, nil, 10, 2},
		{nil, []int{0, 1}, 10, 2},
	}
	for _, tt := range tests {
		got := weightedSlots(tt.newSlots, tt.oldSlots, tt.weight)
		if len(got) != tt.wantLen {
			t.Errorf("weightedSlots(%v, %v, %d) has %d slots; want %d", tt.newSlots, tt.oldSlots, tt.weight, len(got), tt.wantLen)
			continue
		}
		if len(tt.newSlots) == 0 || len(tt.oldSlots) == 0 {
			continue
		}
		per := map[int]int{}
		for _, s := range got {
			per[s]++
		}
		newN := 0
		for _, s := range tt.newSlots {
			newN += per[s]
		}
		if share := 100 * newN / len(got); share != tt.weight {
			t.Errorf("weightedSlots(%v, %v, %d): new share %d%%; want %d%%", tt.newSlots, tt.oldSlots, tt.weight, share, tt.weight)
		}
		// Each side's sockets get the same number of entries.
		for _, side := range [][]int{tt.newSlots, tt.oldSlots} {
			for _, s := range side {
				if per[s] != per[side[0]] {
					t.Errorf("weightedSlots(%v, %v, %d): slot %d has %d entries, slot %d %d; want even", tt.newSlots, tt.oldSlots, tt.weight, s, per[s], side[0], per[side[0]])
				}
			}
		}
	}
	// The bound of the kernel program holds with many sockets.
	if got := weightedSlots([]int{0, 1, 2, 3, 4, 5, 6}, []int{7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17}, 13); len(got) > maxWeightedSlots {
		t.Errorf("%d slots; want at most %d", len(got), maxWeightedSlots)
	}
}

func TestCheckCanary(t *testing.T) {
	tests := []struct {
		weights []int
		ok      bool
	}{
		{nil, true}, {[]int{10}, true}, {[]int{1, 50, 99}, true},
		{[]int{0}, false}, {[]int{100}, false}, {[]int{50, 10}, false}, {[]int{10, 10}, false},
	}
	for _, tt := range tests {
		err := checkCanary(tt.weights, 0)
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrBadCanary)) {
			t.Errorf("checkCanary(%v) = %v; want ok %v", tt.weights, err, tt.ok)
		}
	}
}

func TestVerdict(t *testing.T) {
	lim := judgeLimits{maxErrorRatio: 0.05, maxLatencyRatio: 2, minRequests: 100}
	ms := time.Millisecond
	fig := func(gen int, req, errs int64, p99 time.Duration) WindowFigures {
		return WindowFigures{Generation: gen, Version: fmt.Sprint("v", gen), Requests: req, Errors: errs, P99: p99}
	}
	tests := []struct {
		name       string
		nw, ow, ol WindowFigures
		lim        judgeLimits
		breach     string
		judged     bool
	}{
		{"too few", fig(2, 99, 99, ms), fig(1, 1000, 0, ms), fig(1, 1000, 0, ms), lim, "", false},
		{"healthy", fig(2, 1000, 10, ms), fig(1, 9000, 50, ms), fig(1, 9000, 50, ms), lim, "", true},
		{"30% errors", fig(2, 1000, 300, ms), fig(1, 9000, 0, ms), fig(1, 9000, 0, ms), lim, breachErrors, true},
		{"errors like the old", fig(2, 1000, 300, ms), fig(1, 9000, 2700, ms), fig(1, 9000, 2700, ms), lim, "", true},
		{"3x slower", fig(2, 1000, 0, 45*ms), fig(1, 9000, 0, 15*ms), fig(1, 9000, 0, 15*ms), lim, breachLatency, true},
		{"1.5x slower", fig(2, 1000, 0, 22*ms), fig(1, 9000, 0, 15*ms), fig(1, 9000, 0, 15*ms), lim, "", true},
		{"noise under the floor", fig(2, 1000, 0, 3*ms), fig(1, 9000, 0, ms/2), fig(1, 9000, 0, ms/2), lim, "", true},
		{"old idle: its life", fig(2, 1000, 0, 45*ms), fig(1, 3, 0, 0), fig(1, 50000, 0, 15*ms), lim, breachLatency, true},
		{"no baseline: errors alone", fig(2, 1000, 300, 45*ms), fig(1, 0, 0, 0), fig(1, 0, 0, 0), lim, breachErrors, true},
		{"no baseline: no latency", fig(2, 1000, 0, 45*ms), fig(1, 0, 0, 0), fig(1, 0, 0, 0), lim, "", true},
		{"latency off", fig(2, 1000, 0, 450*ms), fig(1, 9000, 0, 15*ms), fig(1, 9000, 0, 15*ms), judgeLimits{maxErrorRatio: 0.05, maxLatencyRatio: NoJudge, minRequests: 100}, "", true},
	}
	for _, tt := range tests {
		breach, reason, _, judged := verdict(tt.nw, tt.ow, tt.ol, tt.lim)
		if breach != tt.breach || judged != tt.judged {
			t.Errorf("%s: verdict = %q, judged %v (%s); want %q, judged %v", tt.name, breach, judged, reason, tt.breach, tt.judged)
		}
	}
}

// canaryResult is how a canary upgrade run with --wait ended.
type canaryResult struct {
	rep *UpgradeReport
	err error
}

// canaryStep starts a canary upgrade to v2 at 10% for interval with
// --wait, returns once generation 2 has that weight, and sends how the
// upgrade ended on the channel.
func (r *rig) canaryStep(t *testing.T, interval time.Duration) <-chan canaryResult {
	t.Helper()
	done := make(chan canaryResult, 1)
	go func() {
		_, rep, err := r.upgradeWith("v2", UpgradeOptions{Wait: true, Canary: []int{10}, CanaryInterval: interval})
		done <- canaryResult{rep, err}
	}()
	eventually(t, "the canary step", func() error {
		if g := r.gen(2); g.Weight != 10 {
			return fmt.Errorf("generation 2 = %+v", g)
		}
		return nil
	})
	return done
}

// probationStep starts an upgrade to v2 with --wait, returns once
// generation 2 serves in its probation with workers workers, and sends
// how the upgrade ended.
func (r *rig) probationStep(t *testing.T, workers int) <-chan canaryResult {
	t.Helper()
	done := make(chan canaryResult, 1)
	go func() {
		_, rep, err := r.upgradeWith("v2", UpgradeOptions{Wait: true})
		done <- canaryResult{rep, err}
	}()
	eventually(t, "generation 2 in its probation", func() error {
		if g := r.gen(2); g.State != StateActive || g.ProbationUntil == nil || len(g.PIDs) != workers {
			return fmt.Errorf("generation 2 = %+v", g)
		}
		return nil
	})
	return done
}

// awaitResult waits at most within for an upgrade's end from done.
func awaitResult(t *testing.T, done <-chan canaryResult, within time.Duration) canaryResult {
	t.Helper()
	select {
	case res := <-done:
		return res
	case <-time.After(within):
		t.Fatalf("upgrade --wait did not end within %s", within)
		return canaryResult{}
	}
}

// upgradeWith runs a canary upgrade and returns its steps and report.
func (r *rig) upgradeWith(version string, opts UpgradeOptions) (*steps, *UpgradeReport, error) {
	st := &steps{}
	var rep *UpgradeReport
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := r.s.UpgradeWith(ctx, version, opts, func(p Progress) {
		st.add(p)
		if p.Report != nil {
			rep = p.Report
		}
	})
	return st, rep, err
}

// share returns the percentage of slots among newSlots.
func share(slots []int, newSlots ...int) int {
	n := 0
	for _, s := range slots {
		for _, ns := range newSlots {
			if s == ns {
				n++
			}
		}
	}
	if len(slots) == 0 {
		return 0
	}
	return 100 * n / len(slots)
}

// lastShare waits for the last program to give want percent to slots.
func lastShare(t *testing.T, fx *fakeEffects, want int, slots ...int) {
	t.Helper()
	eventually(t, fmt.Sprintf("a program with %d%% to %v", want, slots), func() error {
		all := fx.steered()
		if last := all[len(all)-1]; share(last, slots...) != want {
			return fmt.Errorf("last program %v", last)
		}
		return nil
	})
}

func TestCanaryStepsWeights(t *testing.T) {
	fx := newFakeEffects(t)
	r := startRig(t, Config{Workers: 2, Probation: 300 * time.Millisecond}, fx, nil)
	r.waitStarted()
	before := len(fx.steered())
	start := time.Now()
	st, rep, err := r.upgradeWith("v2", UpgradeOptions{Wait: true, Canary: []int{10, 50}, CanaryInterval: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	want := fmt.Sprint([]Step{StepStarting, StepReady, StepServes, StepCanary, StepCanary, StepCanary, StepStandby, StepProbationPassed, StepDrained, StepReport})
	if st.String() != want {
		t.Errorf("steps = %s; want %s", st, want)
	}
	// Generation 1's workers hold slots 0 and 1, generation 2's 2 and 3:
	// the shares of generation 2 in the programs, in order.
	var shares []int
	for _, slots := range fx.steered()[before:] {
		if s := share(slots, 2, 3); len(shares) == 0 || shares[len(shares)-1] != s {
			shares = append(shares, s)
		}
	}
	// Before: generation 1's alone (0); once generation 1 has gone,
	// generation 2's workers move to slots 0 and 1.
	if got := fmt.Sprint(shares); !strings.HasPrefix(got, "[10 50 100") && !strings.HasPrefix(got, "[0 10 50 100") {
		t.Errorf("new generation's shares of the programs = %v; want 0, 10, 50, 100 in turn", shares)
	}
	if took < 900*time.Millisecond || took > 5*time.Second {
		t.Errorf("upgrade took %s; want 2 steps of 300 ms and a 300 ms probation", took)
	}
	if rep == nil || rep.Verdict != VerdictPassed || len(rep.Weights) != 3 || rep.GoneAfter == 0 {
		t.Fatalf("report = %+v; want passed with 3 weights and the old generation gone", rep)
	}
	if at := rep.Weights[1].At - rep.Weights[0].At; at < 250*time.Millisecond || at > 1500*time.Millisecond {
		t.Errorf("50%% came %s after 10%%; want 300 ms", at)
	}
	if h := r.status().History; len(h) != 1 || h[0].Verdict != VerdictPassed {
		t.Errorf("status history = %+v; want one passed upgrade", h)
	}
	if n := histCount(t, r.s.metrics.UpgradeDuration); n != 2 {
		t.Errorf("upgrade_duration_seconds counts %d upgrades; want 2, the first start and the canary", n)
	}
}

func TestCanaryPromote(t *testing.T) {
	fx := newFakeEffects(t)
	r := startRig(t, Config{Workers: 2, Probation: 200 * time.Millisecond}, fx, nil)
	r.waitStarted()
	if _, _, err := r.upgradeWith("v2", UpgradeOptions{Canary: []int{10}, CanaryInterval: 20 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if g1, g2 := r.gen(1), r.gen(2); g2.Weight != 10 || g1.Weight != 90 || g1.State != StateStandby {
		t.Fatalf("during the canary: generation 1 %+v, 2 %+v; want weights 90 and 10", g1, g2)
	}
	p, err := r.s.Promote(context.Background())
	if err != nil || p.Weight != 100 {
		t.Fatalf("promote = %+v, %v; want weight 100", p, err)
	}
	if g := r.gen(2); g.Weight != 100 {
		t.Errorf("generation 2 after promote = %+v; want weight 100", g)
	}
	lastShare(t, fx, 100, 2, 3)
	eventually(t, "generation 1 drained after the probation", func() error {
		if g := r.gen(1); g.State != StateExited {
			return fmt.Errorf("generation 1 = %+v", g)
		}
		return nil
	})
	if _, err := r.s.Promote(context.Background()); err == nil || !strings.Contains(err.Error(), "no canary") {
		t.Errorf("second promote = %v; want no canary under way", err)
	}
	if h := r.status().History; len(h) != 1 || !h[0].Promoted {
		t.Errorf("history = %+v; want one promoted upgrade", h)
	}
}

func TestCanaryRollback(t *testing.T) {
	fx := newFakeEffects(t)
	r := startRig(t, Config{Workers: 2}, fx, nil)
	r.waitStarted()
	old := r.gen(1).PIDs
	if _, _, err := r.upgradeWith("v2", UpgradeOptions{Canary: []int{10}, CanaryInterval: 20 * time.Second}); err != nil {
		t.Fatal(err)
	}
	st := &steps{}
	if _, err := r.s.Rollback(context.Background(), true, st.add); err != nil {
		t.Fatalf("rollback: %v", err)
	}
	// --wait: until the generation rolled back from has exited.
	if g := r.gen(2); len(g.PIDs) > 0 || st.String() != fmt.Sprint([]Step{StepRolledBack, StepDrained}) {
		t.Errorf("after rollback --wait: generation 2 = %+v, steps %s; want it exited and drained", g, st)
	}
	if g := r.gen(1); g.State != StateActive || fmt.Sprint(g.PIDs) != fmt.Sprint(old) || g.Weight != 100 {
		t.Errorf("generation 1 = %+v; want active with the same pids %v", g, old)
	}
	lastShare(t, fx, 100, 0, 1)
	if n := testutil.ToFloat64(r.s.metrics.Rollbacks.WithLabelValues("requested")); n != 1 {
		t.Errorf("rollbacks{requested} = %v; want 1", n)
	}
}

func TestCanaryJudgedBreach(t *testing.T) {
	tests := []struct {
		name   string
		v2     behaviour
		reason string
	}{
		{"errors", behaviour{rps: 2000, errorRatio: 0.3, latency: time.Millisecond}, breachErrors},
		{"latency", behaviour{rps: 2000, latency: 40 * time.Millisecond}, breachLatency},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := newFakeEffects(t)
			fx.behave["v1"] = behaviour{rps: 2000, latency: time.Millisecond} // before its workers start: they take it then
			r := startRig(t, Config{Workers: 2, JudgeEvery: 100 * time.Millisecond}, fx, nil)
			r.behave("v2", tt.v2)
			r.waitStarted()
			old := r.gen(1).PIDs
			start := time.Now()
			_, rep, err := r.upgradeWith("v2", UpgradeOptions{Wait: true, Canary: []int{10}, CanaryInterval: 10 * time.Second})
			if err == nil || !strings.Contains(err.Error(), "rolled back during its canary") {
				t.Fatalf("upgrade: %v; want a judged rollback", err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("rolled back after %s; want within the step", d)
			}
			if rep == nil || rep.Verdict != VerdictRolledBack || !strings.HasPrefix(rep.Reason, tt.reason) || rep.New == nil || rep.New.Requests < 100 {
				t.Errorf("report = %+v; want rolled back for %s with figures", rep, tt.reason)
			}
			// --wait follows the generation rolled back from to its exit.
			if g := r.gen(2); len(g.PIDs) > 0 || rep == nil || rep.GoneAfter == 0 || strings.Contains(rep.String(), "gone ?") {
				t.Errorf("after upgrade --wait: generation 2 = %+v, report %+v; want it gone, and when", g, rep)
			}
			if g := r.gen(1); g.State != StateActive || fmt.Sprint(g.PIDs) != fmt.Sprint(old) {
				t.Errorf("generation 1 = %+v; want active with the same pids %v", g, old)
			}
			if n := testutil.ToFloat64(r.s.metrics.Rollbacks.WithLabelValues(tt.reason)); n != 1 {
				t.Errorf("rollbacks{%s} = %v; want 1", tt.reason, n)
			}
			if !strings.Contains(r.log.String(), "ROLLED BACK") {
				t.Errorf("no ROLLED BACK log line")
			}
			// The first start alone was a successful upgrade.
			if n := histCount(t, r.s.metrics.UpgradeDuration); n != 1 {
				t.Errorf("upgrade_duration_seconds counts %d upgrades; want 1, the first start (not the rolled back)", n)
			}
		})
	}
}

func TestProbationJudgedWithoutCanary(t *testing.T) {
	fx := newFakeEffects(t)
	fx.behave["v1"] = behaviour{rps: 2000, latency: time.Millisecond} // before its workers start: they take it then
	r := startRig(t, Config{Workers: 1, Probation: 5 * time.Second, JudgeEvery: 100 * time.Millisecond}, fx, nil)
	r.behave("v2", behaviour{rps: 2000, errorRatio: 0.5, latency: time.Millisecond})
	r.waitStarted()
	_, rep, err := r.upgradeWith("v2", UpgradeOptions{Wait: true})
	if err == nil || !strings.Contains(err.Error(), "5xx ratio") {
		t.Fatalf("upgrade: %v; want a judged rollback during the probation", err)
	}
	if rep == nil || rep.Verdict != VerdictRolledBack {
		t.Errorf("report = %+v; want rolled back", rep)
	}
}

func TestCanaryHealthyPasses(t *testing.T) {
	fx := newFakeEffects(t)
	fx.behave["v1"] = behaviour{rps: 2000, errorRatio: 0.01, latency: 2 * time.Millisecond} // before its workers start: they take it then
	r := startRig(t, Config{Workers: 2, Probation: 300 * time.Millisecond, JudgeEvery: 100 * time.Millisecond}, fx, nil)
	r.behave("v2", behaviour{rps: 2000, errorRatio: 0.01, latency: 2 * time.Millisecond})
	r.waitStarted()
	_, rep, err := r.upgradeWith("v2", UpgradeOptions{Wait: true, Canary: []int{10, 50}, CanaryInterval: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if rep == nil || rep.Verdict != VerdictPassed || rep.New == nil || rep.New.Requests < 100 || rep.Old == nil {
		t.Fatalf("report = %+v; want passed, with both generations' figures", rep)
	}
	if !strings.Contains(rep.String(), "weights: 10% at") {
		t.Errorf("report text:\n%s\nwant the weights", rep)
	}
}

// A breach rolls back to the standby generation's workers still alive;
// only with none left does the canary go on, and then it does not pass.
func TestCanaryBreachWithStandbyWorkersLost(t *testing.T) {
	tests := []struct {
		name    string
		kill    int // of generation 1's 2 workers
		wantErr string
		verdict string
	}{
		{"one of two lost", 1, "rolled back during its", VerdictRolledBack},
		{"all lost", 2, "no rollback possible", VerdictBreached},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := newFakeEffects(t)
			// 400 requests a second on generation 2: judged after about
			// 0.75 s, once the standby's workers are killed.
			fx.behave["v1"] = behaviour{rps: 2000, latency: time.Millisecond} // before its workers start: they take it then
			r := startRig(t, Config{Workers: 2, Probation: time.Second, JudgeEvery: 100 * time.Millisecond, MinRequests: 300}, fx, nil)
			r.behave("v2", behaviour{rps: 200, errorRatio: 0.3, latency: time.Millisecond})
			r.waitStarted()
			old := r.gen(1).PIDs
			done := r.canaryStep(t, time.Second)
			for _, pid := range old[:tt.kill] {
				fx.proc(pid).die()
			}
			var res canaryResult
			select {
			case res = <-done:
			case <-time.After(15 * time.Second):
				t.Fatal("upgrade --wait did not end")
			}
			if res.err == nil || !strings.Contains(res.err.Error(), tt.wantErr) {
				t.Fatalf("upgrade --wait: %v; want an error with %q", res.err, tt.wantErr)
			}
			if res.rep == nil || res.rep.Verdict != tt.verdict || !strings.Contains(res.rep.Reason, "errors: 5xx ratio") {
				t.Fatalf("report = %+v; want %s for errors", res.rep, tt.verdict)
			}
			if tt.kill == 1 {
				if g := r.gen(1); g.State != StateActive || !slices.Contains(g.PIDs, old[1]) {
					t.Errorf("generation 1 = %+v; want active with pid %d", g, old[1])
				}
				lastShare(t, fx, 100, 0, 1, 2, 3) // generation 1's survivor (its slot moves) and its restart
				eventually(t, "the lost worker restarted", func() error {
					if g := r.gen(1); len(g.PIDs) != 2 || g.State != StateActive {
						return fmt.Errorf("generation 1 = %+v", g)
					}
					return nil
				})
				if n := testutil.ToFloat64(r.s.metrics.Rollbacks.WithLabelValues(breachErrors)); n != 1 {
					t.Errorf("rollbacks{errors} = %v; want 1", n)
				}
				return
			}
			if g := r.gen(2); g.State != StateActive {
				t.Errorf("generation 2 = %+v; want active: nothing to roll back to", g)
			}
			if n := testutil.ToFloat64(r.s.metrics.Upgrades.WithLabelValues("breached")); n != 1 {
				t.Errorf("upgrades{breached} = %v; want 1", n)
			}
			if h := r.status().History; len(h) != 1 || h[0].Verdict != VerdictBreached {
				t.Errorf("history = %+v; want one breached upgrade", h)
			}
		})
	}
}

// A stop during a canary ends `upgrade --wait` with the report, verdict
// stopped, and an error: the upgrade did not complete; current points at
// the release that stood by again (it stayed on the canary's: a restart
// ran a release whose trial was cut short; a new user's trial).
func TestStopDuringCanaryReports(t *testing.T) {
	fx := newFakeEffects(t)
	r := startRig(t, Config{Workers: 2}, fx, nil)
	r.waitStarted()
	done := r.canaryStep(t, 20*time.Second)
	r.stop()
	res := <-done
	if res.err == nil || !strings.Contains(res.err.Error(), "stopped during the canary") {
		t.Errorf("upgrade --wait: %v; want an error: stopped during the canary", res.err)
	}
	// No --current here: nothing to say of it (a new user's trial).
	if res.err != nil && strings.Contains(res.err.Error(), "--current") {
		t.Errorf("upgrade --wait: %v; want no word of --current, which was not given", res.err)
	}
	if res.rep == nil || res.rep.Verdict != VerdictStopped {
		t.Errorf("report = %+v; want verdict stopped", res.rep)
	}
	fx.mu.Lock()
	repointed := slices.Clone(fx.repointed)
	fx.mu.Unlock()
	if n := len(repointed); n == 0 || repointed[n-1] != "v1" {
		t.Errorf("current repointed to %v; want v1 last", repointed)
	}
}

// After a requested rollback during a canary, the next rollback goes to
// the release before the restored one, not to the one just rejected.
func TestRollbackAfterCanaryRollbackSkipsTheRejected(t *testing.T) {
	fx := newFakeEffects(t)
	r := startRig(t, Config{Workers: 1, Probation: 200 * time.Millisecond}, fx, nil)
	r.waitStarted()
	if _, err := r.upgrade("v2", true); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.upgradeWith("v3", UpgradeOptions{Canary: []int{10}, CanaryInterval: 20 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.s.Rollback(context.Background(), true, nil); err != nil {
		t.Fatalf("rollback during the canary: %v", err)
	}
	st := &steps{}
	var to string
	if _, err := r.s.Rollback(context.Background(), true, func(p Progress) {
		st.add(p)
		if p.Step == StepRollingBack {
			to = p.Version
		}
	}); err != nil {
		t.Fatalf("second rollback: %v", err)
	}
	if to != "v1" {
		t.Errorf("second rollback went to %q (steps %s); want v1, not v3 just rolled back from", to, st)
	}
}

// histCount returns the number of observations of h.
func histCount(t *testing.T, h prometheus.Histogram) uint64 {
	t.Helper()
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

// What ends a canary says canary, not probation.
func TestCanaryEndedSaysCanary(t *testing.T) {
	fx := newFakeEffects(t)
	r := startRig(t, Config{Workers: 1, Probation: time.Second}, fx, nil)
	r.waitStarted()
	var mu sync.Mutex
	var lines []string
	collect := func(p Progress) {
		mu.Lock()
		lines = append(lines, p.String())
		mu.Unlock()
	}
	done := make(chan error, 1)
	go func() {
		_, err := r.s.UpgradeWith(context.Background(), "v2", UpgradeOptions{Wait: true, Canary: []int{10}, CanaryInterval: 20 * time.Second}, collect)
		done <- err
	}()
	eventually(t, "the canary step", func() error {
		if g := r.gen(2); g.Weight != 10 {
			return fmt.Errorf("generation 2 = %+v", g)
		}
		return nil
	})
	// A restarted supervisor learns it was a canary, for its log.
	fx.mu.Lock()
	saved := fx.state.Canary
	fx.mu.Unlock()
	if saved != 10 {
		t.Errorf("state file's canary weight = %d; want 10", saved)
	}
	if _, err := r.s.UpgradeWith(context.Background(), "v3", UpgradeOptions{}, collect); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	all := strings.Join(lines, "\n")
	mu.Unlock()
	for _, want := range []string{
		"previous canary ended (at 10% of new connections): its standby generation 1 (v1) drains",
		"generation 2's canary (at 10% of new connections) ended (superseded by a newer upgrade)",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("steps:\n%s\nwant %q", all, want)
		}
	}
	if s := (Progress{Step: StepStandby, Generation: 1, Other: 2, Judged: true}).String(); !strings.Contains(s, "crashes or the judge finds it worse") {
		t.Errorf("standby line %q; want the judge named", s)
	}
}

func TestWindowFiguresWithoutRequests(t *testing.T) {
	if s := (WindowFigures{Generation: 1, Version: "v1"}).String(); s != "generation 1 (v1): no requests" {
		t.Errorf("figures without requests = %q; want no requests (not p99 0s)", s)
	}
}

// TestWindowFiguresSayTheirWindow: a report's figures say how long the
// window they count was (a generation that crashed was last read before
// its crash, so its count covers less than its life), except those of a
// whole life; one request is one request.
func TestWindowFiguresSayTheirWindow(t *testing.T) {
	for _, tt := range []struct {
		f    WindowFigures
		want string
	}{
		{WindowFigures{Generation: 2, Version: "v2", Requests: 12, P99: 500 * time.Microsecond, Window: 4980 * time.Millisecond},
			"generation 2 (v2): 12 requests in 5.0 s, 0 5xx (0.0%), p99 500µs"},
		{WindowFigures{Generation: 2, Version: "v2", Requests: 1, Errors: 1, P99: time.Millisecond, Window: 300 * time.Millisecond},
			"generation 2 (v2): 1 request in 0.3 s, 1 5xx (100.0%), p99 1ms"},
		{WindowFigures{Generation: 1, Version: "v1", Requests: 31, P99: 500 * time.Microsecond, Window: time.Second, Lifetime: true},
			"generation 1 (v1): 31 requests, 0 5xx (0.0%), p99 500µs over its whole life"},
		{WindowFigures{Generation: 1, Version: "v1", Requests: 3}, // a report of an older supervisor: no window
			"generation 1 (v1): 3 requests, 0 5xx (0.0%), p99 0s"},
	} {
		if got := tt.f.String(); got != tt.want {
			t.Errorf("%+v:\n got %q\nwant %q", tt.f, got, tt.want)
		}
	}
}

// TestReportCountsToItsVerdict: the report of a canary that a newer
// upgrade superseded, that was rolled back on request, or that a stop cut
// short, between two judge readings, counts the requests up to its
// verdict: one more reading is taken then. (It had the reading before, up
// to a second old, as new users' trials found: "new: generation 2 (v2): no
// requests" when clients had 616 answers from v2 after a newer upgrade;
// "34898 requests in 1.0 s" of 65,136 after a rollback at 1.9 s; here the
// first reading's 41.)
func TestReportCountsToItsVerdict(t *testing.T) {
	for _, end := range []string{"superseded", "rollback", "stop"} {
		t.Run(end, func(t *testing.T) {
			fx := newFakeEffects(t)
			fx.behave["v1"] = behaviour{rps: 2000, latency: time.Millisecond} // before its workers start: they take it then
			r := startRig(t, Config{Workers: 1, Probation: time.Second, JudgeEvery: time.Hour}, fx, nil)
			r.behave("v2", behaviour{rps: 2000, latency: time.Millisecond})
			r.waitStarted()
			done := make(chan error, 1)
			var mu sync.Mutex
			var rep *UpgradeReport
			go func() {
				_, err := r.s.UpgradeWith(context.Background(), "v2", UpgradeOptions{Wait: true, Canary: []int{10}, CanaryInterval: time.Hour}, func(p Progress) {
					if p.Step == StepReport {
						mu.Lock()
						rep = p.Report
						mu.Unlock()
					}
				})
				done <- err
			}()
			eventually(t, "the canary step", func() error {
				if g := r.gen(2); g.Weight != 10 {
					return fmt.Errorf("generation 2 = %+v", g)
				}
				return nil
			})
			time.Sleep(300 * time.Millisecond) // 600 requests on v2 (2000 a second), none read
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var err error
			switch end {
			case "superseded":
				_, err = r.s.UpgradeWith(ctx, "v3", UpgradeOptions{}, nil)
			case "rollback":
				_, err = r.s.Rollback(ctx, false, nil)
			case "stop":
				err = (Client{StateDir: r.dir}).Stop(ctx, nil)
			}
			if err != nil {
				t.Fatal(err)
			}
			waitErr := <-done
			if (end == "superseded") != (waitErr == nil) {
				t.Fatalf("upgrade --wait: %v; want an error only for a rollback or a stop", waitErr)
			}
			mu.Lock()
			defer mu.Unlock()
			want := map[string]string{"superseded": VerdictSuperseded, "rollback": VerdictRolledBack, "stop": VerdictStopped}[end]
			if rep == nil || rep.Verdict != want {
				t.Fatalf("report %+v; want %s", rep, want)
			}
			if rep.New == nil || rep.New.Requests < 400 {
				t.Errorf("report: new %v; want about 600 requests, over its 300 ms", rep.New)
			}
			if end != "stop" && (rep.GoneAfter == 0 || rep.GoneAfter < rep.VerdictAfter) {
				t.Errorf("report: gone after %s, verdict after %s; want gone after the verdict", rep.GoneAfter, rep.VerdictAfter)
			}
		})
	}
}

// TestFailedUpgradeLeavesCanaryRunning: an upgrade started during a
// canary whose new generation never gets ready fails and changes nothing:
// the canary goes on at its weight with the old generation on standby, and
// a later rollback still goes back to it. (The canary ended at the
// command: its standby drained and the canary's generation took every
// connection unjudged, as a new user's trial found.)
func TestFailedUpgradeLeavesCanaryRunning(t *testing.T) {
	fx := newFakeEffects(t)
	r := startRig(t, Config{Workers: 1, Probation: time.Second, ReadyTimeout: 300 * time.Millisecond}, fx, nil)
	r.behave("v3", behaviour{neverReady: true})
	r.waitStarted()
	if _, err := r.s.UpgradeWith(context.Background(), "v2", UpgradeOptions{Canary: []int{10}, CanaryInterval: time.Hour}, nil); err != nil {
		t.Fatal(err)
	}
	var steps []string
	_, err := r.s.UpgradeWith(context.Background(), "v3", UpgradeOptions{}, func(p Progress) { steps = append(steps, p.String()) })
	if err == nil || !strings.Contains(err.Error(), "not ready within --ready-timeout") {
		t.Fatalf("upgrade to a release never ready: %v; want not ready within --ready-timeout", err)
	}
	if g1, g2 := r.gen(1), r.gen(2); g2.State != StateActive || g2.Weight != 10 || g1.State != StateStandby || g1.Weight != 90 {
		t.Errorf("after the failed upgrade: generation 1 = %+v, generation 2 = %+v; want the canary as it was (standby at 90%%, active at 10%%)", g1, g2)
	}
	for _, s := range steps {
		if strings.Contains(s, "canary ended") || strings.Contains(s, "drains") {
			t.Errorf("failed upgrade's steps say %q; want the canary left alone", s)
		}
	}
	if _, err := r.s.Rollback(context.Background(), true, nil); err != nil {
		t.Fatal(err)
	}
	if g := r.gen(1); g.State != StateActive {
		t.Errorf("after rollback: generation 1 = %+v; want active again", g)
	}
}

// TestRollbackWhileANewerUpgradeStarts: during a canary, while a newer
// upgrade's generation is still starting, launcher rollback gives traffic
// back to the standby generation at once (the canary goes on until the
// newer generation is ready, so it can be rolled back); when the newer
// one then fails, its error, its log and its report name the generation
// that really serves on. (The rollback was refused, "upgrade in
// progress", for up to --ready-timeout; and after a rollback by the
// judge meanwhile, the failure said only "generation 3 (v3): …", logged
// nothing, and its report was "from generation 2", rolled back from.)
func TestRollbackWhileANewerUpgradeStarts(t *testing.T) {
	fx := newFakeEffects(t)
	r := startRig(t, Config{Workers: 1, Probation: time.Second, ReadyTimeout: time.Second}, fx, nil)
	r.behave("v3", behaviour{neverReady: true})
	r.waitStarted()
	if _, err := r.s.UpgradeWith(context.Background(), "v2", UpgradeOptions{Canary: []int{10}, CanaryInterval: time.Hour}, nil); err != nil {
		t.Fatal(err)
	}
	newer := make(chan error, 1)
	go func() {
		_, err := r.s.UpgradeWith(context.Background(), "v3", UpgradeOptions{}, nil)
		newer <- err
	}()
	eventually(t, "generation 3 starting", func() error {
		if g := r.gen(3); g.State != StateStarting {
			return fmt.Errorf("generation 3 = %+v", g)
		}
		return nil
	})
	if _, err := r.s.Rollback(context.Background(), false, nil); err != nil {
		t.Fatalf("rollback during the canary, a newer upgrade starting: %v; want traffic back to generation 1", err)
	}
	if g := r.gen(1); g.State != StateActive {
		t.Errorf("after the rollback: generation 1 = %+v; want active", g)
	}
	err := <-newer
	if err == nil || !strings.Contains(err.Error(), "upgrade to v3: ") || !strings.Contains(err.Error(), "generation 1 (v1) serves on") {
		t.Errorf("newer upgrade: %v; want upgrade to v3 failed, generation 1 (v1) serves on", err)
	}
	var rep *UpgradeReport
	for _, h := range r.status().History {
		if h.Generation == 3 {
			rep = &h
		}
	}
	if rep == nil || rep.Verdict != VerdictFailed || rep.From != 1 {
		t.Errorf("report of generation 3 = %+v; want failed, from generation 1", rep)
	}
}

// TestRollbackWithNoStandbyLeft: launcher rollback during a canary whose
// standby generation has lost every worker starts the previous release
// again. The canary's upgrade then ends rolled back (its `upgrade --wait`
// exits 1), the release rolled back from drains at once instead of
// standing by behind the rollback, and it is no step a second rollback
// goes back to. (A new user's trial: the canary was reported superseded
// with --wait exiting 0, and a second rollback served it again.)
func TestRollbackWithNoStandbyLeft(t *testing.T) {
	fx := newFakeEffects(t)
	r := startRig(t, Config{Workers: 1, Probation: time.Hour}, fx, nil)
	r.waitStarted()
	old := r.gen(1).PIDs
	done := r.canaryStep(t, time.Hour)
	fx.proc(old[0]).die()
	eventually(t, "the standby worker gone", func() error {
		if g := r.gen(1); len(g.PIDs) > 0 {
			return fmt.Errorf("generation 1 = %+v", g)
		}
		return nil
	})
	// --wait: until generation 2 has exited (bounded: a version of this
	// that put it on standby behind the rollback waited its hour).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := r.s.Rollback(ctx, true, nil); err != nil {
		t.Errorf("rollback --wait: %v", err)
	}
	if g := r.gen(3); g.State != StateActive || g.Version != "v1" {
		t.Errorf("generation 3 = %+v; want v1 active", g)
	}
	if g := r.gen(2); g.State != StateExited || len(g.PIDs) > 0 {
		t.Errorf("generation 2 = %+v; want it drained at once, not on standby", g)
	}
	var res canaryResult
	select {
	case res = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the canary's upgrade --wait did not end")
	}
	if res.err == nil || !strings.Contains(res.err.Error(), "rolled back on request") {
		t.Errorf("the canary's upgrade --wait: %v; want it rolled back on request", res.err)
	}
	if res.rep == nil || res.rep.Verdict != VerdictRolledBack {
		t.Errorf("the canary's report = %+v; want rolled_back", res.rep)
	}
	if n := testutil.ToFloat64(r.s.metrics.Rollbacks.WithLabelValues("requested")); n != 1 {
		t.Errorf("rollbacks{requested} = %v; want 1", n)
	}
	if _, err := r.s.Rollback(context.Background(), true, nil); err == nil || !strings.Contains(err.Error(), "no previous release") {
		t.Errorf("a second rollback: %v; want none to go back to (not v2 again)", err)
	}
}

// An upgrade during a probation says its generation is ready before it
// says the probation it ends is over: readiness is what ends it (a new
// user's trial read the steps in the other order).
func TestSupersedingUpgradeSaysReadyFirst(t *testing.T) {
	fx := newFakeEffects(t)
	r := startRig(t, Config{Workers: 1, Probation: 20 * time.Second}, fx, nil)
	r.waitStarted()
	if _, _, err := r.upgradeWith("v2", UpgradeOptions{}); err != nil {
		t.Fatal(err)
	}
	st, _, err := r.upgradeWith("v3", UpgradeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := st.String()
	ready, superseded := strings.Index(got, string(StepReady)), strings.Index(got, string(StepSuperseded))
	if ready < 0 || superseded < 0 || ready > superseded {
		t.Errorf("steps %s; want %s before %s", got, StepReady, StepSuperseded)
	}
}

// An upgrade to the release already under its canary or probation is
// refused: a restart of it would drain the standby generation and leave
// nothing to roll back to. (A new user's trial: `kill -HUP` out of habit
// during a canary, --current pointing at the new release by then,
// ended the canary unjudged and drained the old release, 3 of 3.)
func TestRestartOfTheReleaseUnderJudgementRefused(t *testing.T) {
	for _, canary := range []bool{true, false} {
		t.Run(fmt.Sprintf("canary=%v", canary), func(t *testing.T) {
			fx := newFakeEffects(t)
			r := startRig(t, Config{Workers: 1, Probation: 20 * time.Second}, fx, nil)
			r.waitStarted()
			opts := UpgradeOptions{}
			if canary {
				opts = UpgradeOptions{Canary: []int{10}, CanaryInterval: 20 * time.Second}
			}
			if _, err := r.s.UpgradeWith(context.Background(), "v2", opts, nil); err != nil {
				t.Fatal(err)
			}
			_, err := r.s.UpgradeWith(context.Background(), "v2", UpgradeOptions{}, nil)
			want := "upgrade refused: generation 2 already runs "
			if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "generation 1 (v1) standing by") {
				t.Fatalf("second upgrade to v2: %v; want %q… naming the standby", err, want)
			}
			if g := r.gen(1); g.State != StateStandby {
				t.Errorf("generation 1 = %+v; want it still on standby", g)
			}
			if st := r.status(); st.Generations[len(st.Generations)-1].Generation != 2 {
				t.Errorf("generations %+v; want none started after 2", st.Generations)
			}
			// Another release still supersedes it, as before.
			if _, err := r.s.UpgradeWith(context.Background(), "v3", UpgradeOptions{}, nil); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// `upgrade --wait` hears of a rollback when it happens, in a rolled-back
// step, not only once the generation rolled back from has drained: it
// printed nothing for the seconds between (a new user's trial took the
// command for hung).
func TestUpgradeWaitHearsOfTheRollbackAtOnce(t *testing.T) {
	fx := newFakeEffects(t)
	r := startRig(t, Config{Workers: 1, Probation: 20 * time.Second}, fx, nil)
	r.waitStarted()
	r.behave("v2", behaviour{drainFor: 1500 * time.Millisecond})
	type step struct {
		p  Progress
		at time.Time
	}
	var mu sync.Mutex
	var got []step
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err := r.s.UpgradeWith(ctx, "v2", UpgradeOptions{Wait: true}, func(p Progress) {
			mu.Lock()
			got = append(got, step{p, time.Now()})
			mu.Unlock()
		})
		done <- err
	}()
	eventually(t, "generation 2 in its probation", func() error {
		if g := r.gen(2); g.ProbationUntil == nil || len(g.PIDs) != 1 {
			return fmt.Errorf("generation 2 = %+v", g)
		}
		return nil
	})
	asked := time.Now()
	newPID := r.gen(2).PIDs[0]
	if _, err := r.s.Rollback(context.Background(), false, nil); err != nil {
		t.Fatalf("rollback: %v", err)
	}
	// The generation rolled back from hands its keep-alive clients over
	// at once, as a standby does: they were answered by it, keep-alive,
	// until its drain began (a new user's recheck).
	eventually(t, "generation 2's worker told to stand by", func() error {
		if got := fx.got(newPID); !slices.Contains(got, control.TypeStandby) {
			return fmt.Errorf("it got %v", got)
		}
		return nil
	})
	if err := <-done; err == nil || !strings.Contains(err.Error(), "rolled back on request") {
		t.Fatalf("upgrade --wait: %v; want rolled back on request", err)
	}
	mu.Lock()
	defer mu.Unlock()
	i := slices.IndexFunc(got, func(s step) bool { return s.p.Step == StepRolledBack })
	if i < 0 {
		t.Fatalf("steps %v; want a rolled-back step", got)
	}
	if s := got[i]; s.at.Sub(asked) > 500*time.Millisecond || s.p.String() != "generation 1 (v1) serves again: rollback requested during the probation" {
		t.Errorf("rolled-back step %q %s after the rollback; want it at once", s.p.String(), s.at.Sub(asked))
	}
	// The report comes once generation 2 has drained, 1.5 s on.
	if j := slices.IndexFunc(got, func(s step) bool { return s.p.Report != nil }); j < i {
		t.Errorf("report at step %d, rolled back at %d; want the rollback first", j, i)
	}
}

// The old generation's figures that a new one is judged against when the
// old one has too few requests in the window (a probation hands every
// client over) are those of its last minute or so before the upgrade,
// read every recentEvery, not those of its whole life: a whole life that
// began with another mix of requests (here a slow warm-up) hid a release
// four times slower, and, the other way round, made a healthy one three
// times slower (a new user's trial).
func TestJudgeComparesWithTheMinuteBeforeTheUpgrade(t *testing.T) {
	fx := newFakeEffects(t)
	fx.behave["v1"] = behaviour{rps: 2000, latency: 12 * time.Millisecond, slowFor: 100 * time.Millisecond, slowLatency: 150 * time.Millisecond,
		trafficFor: 1500 * time.Millisecond} // before its workers start: they take it then
	r := startRig(t, Config{Workers: 1, Probation: 20 * time.Second, JudgeEvery: 100 * time.Millisecond}, fx, func(r *rig) {
		r.s.loop.recentEvery = 200 * time.Millisecond
	})
	r.waitStarted()
	time.Sleep(1600 * time.Millisecond) // readings of it, then no more traffic
	r.behave("v2", behaviour{rps: 2000, latency: 60 * time.Millisecond})
	_, rep, err := r.upgradeWith("v2", UpgradeOptions{Wait: true})
	if err == nil || rep == nil || rep.Verdict != VerdictRolledBack || !strings.Contains(rep.Reason, "latency") {
		t.Fatalf("upgrade: %v, report %+v; want rolled back for latency", err, rep)
	}
	if o := rep.Old; o == nil || !o.Before || o.Lifetime || o.P99 > 15*time.Millisecond || !strings.Contains(o.String(), "requests in its last ") {
		t.Errorf("old figures %+v (%s); want those before the upgrade, p99 under 15 ms", o, o)
	}
}
