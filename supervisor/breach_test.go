package supervisor

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/launcherd/launcher/internal/control"
)

// generationWeights gathers launcher_generation_weight by generation.
func generationWeights(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "launcher_generation_weight" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "generation" {
					out[lp.GetValue()] = m.GetGauge().GetValue()
				}
			}
		}
	}
	return out
}

// A canary whose standby generation lost all its workers gets all new
// connections (the program has nothing else to steer to): status and
// launcher_generation_weight say 100 for it and 0 for the standby, not the
// step's weight.
func TestCanaryWeightWithNoStandbyWorker(t *testing.T) {
	fx := newFakeEffects(t)
	r := startRig(t, Config{Workers: 2, Probation: time.Second}, fx, nil)
	r.waitStarted()
	old := r.gen(1).PIDs
	if _, _, err := r.upgradeWith("v2", UpgradeOptions{Canary: []int{10}, CanaryInterval: 20 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if g := r.gen(2); g.Weight != 10 {
		t.Fatalf("generation 2 = %+v; want weight 10", g)
	}
	for _, pid := range old {
		fx.proc(pid).die()
	}
	eventually(t, "weights 100 and 0", func() error {
		g1, g2 := r.gen(1), r.gen(2)
		if len(g1.PIDs) > 0 || g1.Weight != 0 || g2.Weight != 100 {
			return fmt.Errorf("generation 1 = %+v, generation 2 = %+v", g1, g2)
		}
		if w := generationWeights(t, r.s.metrics); w["1"] != 0 || w["2"] != 100 {
			return fmt.Errorf("launcher_generation_weight = %v", w)
		}
		return nil
	})
	lastShare(t, fx, 100, 0, 1) // generation 2's sockets, renumbered as the standby's left the group
}

// breachNoStandby starts v1 (2 workers), upgrades to v2 (30% 5xx) with a
// long canary step and a long probation, kills v1's workers and returns
// what `upgrade --wait` returned and how long it took after the kill.
func breachNoStandby(t *testing.T) (*rig, *steps, *UpgradeReport, error, time.Duration) {
	t.Helper()
	fx := newFakeEffects(t)
	fx.behave["v1"] = behaviour{rps: 2000, latency: time.Millisecond} // before its workers start: they take it then
	r := startRig(t, Config{Workers: 2, Probation: 20 * time.Second, JudgeEvery: 100 * time.Millisecond, MinRequests: 300}, fx, nil)
	r.behave("v2", behaviour{rps: 200, errorRatio: 0.3, latency: time.Millisecond})
	r.waitStarted()
	old := r.gen(1).PIDs
	type result struct {
		st  *steps
		rep *UpgradeReport
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, rep, err := r.upgradeWith("v2", UpgradeOptions{Wait: true, Canary: []int{10}, CanaryInterval: 20 * time.Second})
		done <- result{st, rep, err}
	}()
	eventually(t, "the canary step", func() error {
		if g := r.gen(2); g.Weight != 10 {
			return fmt.Errorf("generation 2 = %+v", g)
		}
		return nil
	})
	killed := time.Now()
	for _, pid := range old {
		fx.proc(pid).die()
	}
	select {
	case res := <-done:
		return r, res.st, res.rep, res.err, time.Since(killed)
	case <-time.After(10 * time.Second):
		// The canary step and the probation last 40 s: the verdict did
		// not come at the breach.
		t.Fatalf("upgrade --wait did not end within 10 s of the standby's loss (a breach at about 1 s)")
	}
	return nil, nil, nil, nil, 0
}

// A judged breach with no standby worker left ends the upgrade at once:
// verdict breached, exit 1, a step saying so, a BREACHED log line (no
// "probation over … passed"), counted as breached only.
func TestCanaryBreachWithNoStandbyEndsAtOnce(t *testing.T) {
	r, st, rep, err, after := breachNoStandby(t)
	t.Logf("upgrade --wait ended %s after the standby's loss: %v", after.Round(time.Millisecond), err)
	if err == nil || !strings.Contains(err.Error(), "no rollback possible") {
		t.Errorf("upgrade --wait: %v; want an error: no rollback possible", err)
	}
	if rep == nil || rep.Verdict != VerdictBreached || !strings.Contains(rep.Reason, "errors: 5xx ratio") {
		t.Errorf("report = %+v; want breached for errors", rep)
	}
	if !strings.Contains(st.String(), string(StepProbationEnded)) {
		t.Errorf("steps %s; want a %s step at the breach", st, StepProbationEnded)
	}
	log := r.log.String()
	if !strings.Contains(log, "BREACHED: generation 2 (v2) breached its judged canary") || strings.Contains(log, "outcome=passed") {
		t.Errorf("log: want a BREACHED line and no probation passed:\n%s", log)
	}
	if g := r.gen(2); g.State != StateActive || g.Weight != 100 || g.ProbationUntil != nil {
		t.Errorf("generation 2 = %+v; want active at 100, no probation", g)
	}
	for res, want := range map[string]float64{"breached": 1, "success": 1} { // success: the first start
		if n := testutil.ToFloat64(r.s.metrics.Upgrades.WithLabelValues(res)); n != want {
			t.Errorf("upgrades{%s} = %v; want %v", res, n, want)
		}
	}
}

// After a breach with no standby, a rollback starts the previous release
// and drains the breached generation at once (it does not stand by for
// the rollback's probation); a second rollback does not go forward to
// the breached release. The breach stays breached in the history.
func TestRollbackAfterBreachWithNoStandby(t *testing.T) {
	r, _, _, _, _ := breachNoStandby(t)
	if _, err := r.s.Rollback(context.Background(), true, nil); err != nil {
		t.Fatalf("rollback: %v", err)
	}
	g3 := r.gen(3)
	if g3.Version != "v1" || g3.State != StateActive || g3.Weight != 100 {
		t.Errorf("generation 3 = %+v; want v1 active", g3)
	}
	if g := r.gen(2); len(g.PIDs) > 0 || g.State == StateStandby {
		t.Errorf("generation 2 = %+v; want drained, not on standby", g)
	}
	if _, err := r.s.Rollback(context.Background(), true, nil); err == nil || !strings.Contains(err.Error(), "no previous release") {
		t.Errorf("second rollback: %v; want no previous release (not v2, the breached one)", err)
	}
	if g := r.gen(4); g.Generation != 0 {
		t.Errorf("generation 4 = %+v; want none", g)
	}
	h := r.status().History
	if len(h) != 2 || h[0].Generation != 2 || h[0].Verdict != VerdictBreached ||
		h[1].Generation != 3 || h[1].Verdict != VerdictPassed || !strings.Contains(h[1].Reason, "stands by for none") {
		t.Errorf("history = %+v; want generation 2 breached, then generation 3 passed with no probation", h)
	}
	for _, rep := range h {
		if rep.Verdict == VerdictSuperseded {
			t.Errorf("history has a superseded upgrade: %+v", rep)
		}
	}
	if n := testutil.ToFloat64(r.s.metrics.Upgrades.WithLabelValues("breached")); n != 1 {
		t.Errorf("upgrades{breached} = %v; want 1", n)
	}
}

// An upgrade from a breached generation drains it at once, even with a
// probation configured; a rollback then skips the breached release.
func TestUpgradeFromBreachedDrainsIt(t *testing.T) {
	r, _, _, _, _ := breachNoStandby(t)
	st := &steps{}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := r.s.UpgradeWith(ctx, "v3", UpgradeOptions{Wait: true}, st.add); err != nil {
		t.Fatalf("upgrade v3: %v", err)
	}
	if slices.Contains(st.l, StepStandby) || !slices.Contains(st.l, StepDraining) {
		t.Errorf("upgrade v3 steps %s; want generation 2 draining, not on standby", st)
	}
	// Not --wait: the rollback's probation (20 s) is not the subject.
	if _, err := r.s.Rollback(context.Background(), false, nil); err != nil {
		t.Fatalf("rollback: %v", err)
	}
	if g := r.gen(4); g.Version != "v1" || g.State != StateActive {
		t.Errorf("generation 4 = %+v; want v1 (the release before the breached v2) active", g)
	}
}

// A crash of the new generation during its probation with no standby
// worker left ends the upgrade at once as breached (exit 1), as a judged
// breach does, and the crashed worker is restarted: before, it was
// restarted and the upgrade passed its probation, exit 0 (a new user's
// trial, 2 of 2).
func TestCrashWithNoStandbyEndsAtOnce(t *testing.T) {
	fx := newFakeEffects(t)
	r := startRig(t, Config{Workers: 1, Probation: 20 * time.Second}, fx, nil)
	r.waitStarted()
	old := r.gen(1).PIDs
	done := r.probationStep(t, 1)
	for _, pid := range old {
		fx.proc(pid).die()
	}
	eventually(t, "the standby's worker gone", func() error {
		if g := r.gen(1); len(g.PIDs) > 0 {
			return fmt.Errorf("generation 1 = %+v", g)
		}
		return nil
	})
	crashed := r.gen(2).PIDs[0]
	fx.proc(crashed).die()
	res := awaitResult(t, done, 5*time.Second) // the probation lasts 20 s
	if res.err == nil || !strings.Contains(res.err.Error(), "crashed during its probation") || !strings.Contains(res.err.Error(), "no rollback possible") {
		t.Errorf("upgrade --wait: %v; want an error: crashed during its probation, no rollback possible", res.err)
	}
	if res.rep == nil || res.rep.Verdict != VerdictBreached || !strings.Contains(res.rep.Reason, "crashed") {
		t.Errorf("report = %+v; want breached: crashed", res.rep)
	}
	eventually(t, "generation 2 serving on, its worker restarted", func() error {
		if g := r.gen(2); g.State != StateActive || len(g.PIDs) != 1 || g.PIDs[0] == crashed {
			return fmt.Errorf("generation 2 = %+v", g)
		}
		return nil
	})
	if n := testutil.ToFloat64(r.s.metrics.Upgrades.WithLabelValues("breached")); n != 1 {
		t.Errorf("upgrades{breached} = %v; want 1", n)
	}
}

// An old worker that answers nothing (stopped with SIGSTOP, stuck) is
// killed once --drain-timeout and its second of grace have passed, and
// the drain says so: its generation was gone only after the quiesce's 10
// s and the release's 15 s had each run out, 25 s beyond the drain
// timeout, and "drained" said nothing of it (a new user's trial, 3 of 3).
func TestStuckOldWorkerKilledAtTheDrainTimeout(t *testing.T) {
	fx := newFakeEffects(t)
	r := startRig(t, Config{Workers: 1, Probation: NoProbation, DrainTimeout: 500 * time.Millisecond}, fx, nil)
	r.waitStarted()
	// Set before its workers start: they take their behaviour then.
	r.behave("v2", behaviour{mute: true})
	if _, err := r.upgrade("v2", true); err != nil {
		t.Fatal(err)
	}
	st := &steps{}
	var drained string
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	_, err := r.s.Upgrade(ctx, "v3", true, func(p Progress) {
		st.add(p)
		if p.Step == StepDrained {
			drained = p.String()
		}
	})
	took := time.Since(start)
	if err != nil {
		t.Fatalf("upgrade --wait: %v (steps %s)", err, st)
	}
	if took > 5*time.Second {
		t.Errorf("upgrade --wait took %s with a stuck old worker and a 500ms drain timeout; want about 1.5 s", took)
	}
	if !strings.Contains(drained, "answered nothing (stopped or stuck): killed") {
		t.Errorf("drained step %q; want it to name the stuck worker killed", drained)
	}
	if g := r.gen(2); len(g.PIDs) != 0 {
		t.Errorf("generation 2 = %+v; want gone", g)
	}
}

// A release that crashes in all its workers at once during its probation
// is rolled back on the first crash; the others are that release failing
// again, counted as active workers' crashes, not as deaths during a drain,
// which launcher_worker_crashes_total{state="draining"} and the drain's
// note said (a new user's trial, 4 of 4; a later one found them counted
// nowhere).
func TestCrashOfEveryWorkerInProbationIsNoDrainDeath(t *testing.T) {
	fx := newFakeEffects(t)
	r := startRig(t, Config{Workers: 2, Probation: 5 * time.Second}, fx, nil)
	r.waitStarted()
	done := r.probationStep(t, 2)
	for _, pid := range r.gen(2).PIDs { // at once, as a release that crashes does
		fx.proc(pid).die()
	}
	res := awaitResult(t, done, 10*time.Second)
	if res.err == nil || res.rep == nil || res.rep.Verdict != VerdictRolledBack {
		t.Fatalf("upgrade --wait: %v, report %+v; want rolled back", res.err, res.rep)
	}
	if strings.Contains(res.rep.Drain, "died during its drain") {
		t.Errorf("report's drain %q; want no death during a drain", res.rep.Drain)
	}
	if n := testutil.ToFloat64(r.s.metrics.WorkerCrashes.WithLabelValues(StateDraining)); n != 0 {
		t.Errorf("worker_crashes_total{draining} = %v; want 0", n)
	}
	if n := testutil.ToFloat64(r.s.metrics.WorkerCrashes.WithLabelValues(StateActive)); n != 2 {
		t.Errorf("worker_crashes_total{active} = %v; want 2, one per crash", n)
	}
}

// A rollback to a standby generation one of whose workers is stopped
// (SIGSTOP, a tracer) passes over that worker: it is killed and left out
// of the program, traffic goes back to the others at once, the worker is
// restarted, and the rollback says so. The steer back named the stopped
// worker's socket, whose new connections would have waited in its accept
// queue, and when that worker carried the steer it never came, leaving
// the program on the generation rolled back from (a new user's trial, 4
// of 4, said "serves again" all the same). Each of the two workers is
// tried: one of them is the one the steer goes through.
func TestRollbackPassesOverAStoppedStandbyWorker(t *testing.T) {
	for i := range 2 {
		t.Run(fmt.Sprintf("worker %d stopped", i), func(t *testing.T) {
			fx := newFakeEffects(t)
			fx.kernel = &kernelGroup{}
			r := startRig(t, Config{Workers: 2, Probation: 20 * time.Second}, fx, nil)
			r.waitStarted()
			done := r.probationStep(t, 2)
			old := r.gen(1).PIDs
			stopped, running := old[i], old[1-i]
			fx.proc(stopped).stop()
			steersBefore := len(fx.kernelPrograms())
			var reason string
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			start := time.Now()
			_, err := r.s.Rollback(ctx, true, func(p Progress) {
				if p.Step == StepRolledBack {
					reason = p.Reason
				}
			})
			if err != nil {
				t.Fatalf("rollback: %v", err)
			}
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("rollback --wait took %s; want well under the 5 s a steer through a stopped worker waits", took)
			}
			if !strings.Contains(reason, fmt.Sprintf("worker %d (pid %d) of generation 1 was stopped", i, stopped)) {
				t.Errorf("rolled-back step's reason %q; want it to name the stopped worker", reason)
			}
			if res := awaitResult(t, done, 5*time.Second); res.err == nil || !strings.Contains(res.err.Error(), "was stopped") {
				t.Errorf("upgrade --wait: %v; want rolled back, naming the stopped worker", res.err)
			}
			if !fx.proc(stopped).wasKilled() {
				t.Errorf("stopped worker (pid %d) not killed", stopped)
			}
			eventually(t, "generation 1 serving on 2 workers again, the stopped one replaced", func() error {
				if g := r.gen(1); g.State != StateActive || len(g.PIDs) != 2 || slices.Contains(g.PIDs, stopped) || !slices.Contains(g.PIDs, running) {
					return fmt.Errorf("generation 1 = %+v", g)
				}
				return nil
			})
			programs := fx.kernelPrograms()[steersBefore:]
			if len(programs) == 0 {
				t.Fatal("no steer after the rollback")
			}
			for _, named := range programs {
				if slices.Contains(named, stopped) {
					t.Errorf("a program after the rollback named the stopped worker's socket: pids %v (all: %v)", named, programs)
				}
			}
			// The first that names generation 1 (a steer of generation
			// 2's may come first: a watch's, before the rollback).
			for _, named := range programs {
				if slices.Contains(named, running) || slices.Contains(named, stopped) {
					if !slices.Equal(named, []int{running}) {
						t.Errorf("first program back on generation 1 named pids %v; want only the running standby worker %d", named, running)
					}
					break
				}
			}
			for _, v := range fx.kernelViolations() {
				t.Error(v)
			}
		})
	}
}

// A steer that its worker never answers (hung, not stopped: nothing tells
// it from a slow one until the steer's timeout) goes through another
// worker then, rather than through the same one again: after a rollback
// to a standby generation with a hung worker, the program came back to it
// never (each steer went through the hung worker, the agent preferred,
// and timed out). Silent for the whole timeout, it is hung: the program
// that goes out through the other leaves it out (it named it, and new
// connections waited in a queue nobody reads), and the generation rolled
// back from keeps serving until that program is in place (it was retired
// at the first timeout, with the program still on it).
func TestSteerGoesThroughAnotherWorkerAfterASilentOne(t *testing.T) {
	fx := newFakeEffects(t)
	fx.kernel = &kernelGroup{}
	// A short drain timeout: the hung worker is killed at its end when
	// the rig stops.
	r := startRig(t, Config{Workers: 2, Probation: 20 * time.Second, DrainTimeout: 200 * time.Millisecond}, fx, func(r *rig) {
		r.s.loop.steer.timeout = 300 * time.Millisecond
	})
	r.waitStarted()
	done := r.probationStep(t, 2)
	old := r.gen(1).PIDs
	// The worker that carried generation 1's last steers, the last of
	// it in the group's order (which the workers' joins set), carries
	// the first one back.
	agent := 0
	fx.mu.Lock()
	for _, pid := range fx.kernel.socks {
		if slices.Contains(old, pid) {
			agent = pid
		}
	}
	fx.mu.Unlock()
	if !slices.Contains(fx.got(agent), control.TypeSteer) {
		t.Fatalf("worker %d of generation 1 %v carried no steer", agent, old)
	}
	other := old[0]
	if other == agent {
		other = old[1]
	}
	fx.proc(agent).hang()
	steersBefore, eventsBefore := len(fx.kernelPrograms()), len(fx.kernelEvents())
	if _, err := r.s.Rollback(context.Background(), false, nil); err != nil {
		t.Fatalf("rollback: %v", err)
	}
	// `launcher rollback` answers once the program is back on generation
	// 1: it answered before the steer went out, and a request sent then
	// met generation 2.
	if programs := fx.kernelPrograms()[steersBefore:]; len(programs) == 0 {
		t.Error("rollback answered before the program was back on generation 1")
	}
	awaitResult(t, done, 5*time.Second)
	eventually(t, "the program back on generation 1", func() error {
		if programs := fx.kernelPrograms()[steersBefore:]; len(programs) == 0 || !slices.Equal(programs[0], []int{other}) {
			return fmt.Errorf("programs since the rollback name pids %v; want the first to name only %d", programs, other)
		}
		return nil
	})
	if events := fx.kernelEvents()[eventsBefore:]; len(events) == 0 || events[0] != "steer" {
		t.Errorf("kernel events since the rollback %v; want the steer back before generation 2's first close", events)
	}
	if !strings.Contains(r.log.String(), "worker answered no steer: steering through another") {
		t.Error("no log line of the fallback")
	}
	if g := r.gen(1); !slices.Equal(g.Paused, []int{agent}) {
		t.Errorf("generation 1 = %+v; want the hung pid %d paused", g, agent)
	}
	for _, v := range fx.kernelViolations() {
		t.Error(v)
	}
}

// A stop that had to kill a worker answering nothing says so before
// "stopped": it said only "stopped" (a new user's trial). A stop whose
// drains lose nothing still says only that.
func TestStopSaysWhatItsDrainCut(t *testing.T) {
	fx := newFakeEffects(t)
	r := startRig(t, Config{Workers: 1, Probation: NoProbation, DrainTimeout: 300 * time.Millisecond}, fx, nil)
	r.waitStarted()
	// Set before its workers start: they take their behaviour then.
	r.behave("v2", behaviour{mute: true})
	if _, err := r.upgrade("v2", true); err != nil {
		t.Fatal(err)
	}
	var steps []string
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := (Client{StateDir: r.dir}).Stop(ctx, func(p Progress) { steps = append(steps, p.String()) }); err != nil {
		t.Fatal(err)
	}
	if n := len(steps); n != 2 || !strings.Contains(steps[0], "generation 2 gone after") || !strings.Contains(steps[0], "answered nothing (stopped or stuck): killed") || steps[1] != "stopped" {
		t.Errorf("stop's steps %q; want generation 2's cut drain, then stopped", steps)
	}
}

// During a canary the standby generation takes new connections: a worker
// of it that is stopped (SIGSTOP) is steered away from within about a
// second, its share going to the other standby worker, and steered to
// again once it runs; it is not killed, so a short stop costs no standby
// worker (only a rollback kills one still stopped). Without the judge (a
// new user's trial: --max-error-ratio 0 --max-latency-ratio 0 and a 1 min
// step) it kept its share for the whole step.
func TestCanaryLeavesOutAStoppedStandbyWorker(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  Config
	}{
		{"judged", Config{JudgeEvery: 100 * time.Millisecond}},
		{"no judge", Config{MaxErrorRatio: -1, MaxLatencyRatio: -1}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fx := newFakeEffects(t)
			fx.kernel = &kernelGroup{}
			cfg := tt.cfg
			cfg.Workers, cfg.Probation = 2, 20*time.Second
			r := startRig(t, cfg, fx, nil)
			r.waitStarted()
			r.canaryStep(t, time.Hour)
			old := r.gen(1).PIDs
			stopped, running := old[0], old[1]
			last := func() []int {
				programs := fx.kernelPrograms()
				return programs[len(programs)-1]
			}
			fx.proc(stopped).stop()
			eventually(t, "the program without the stopped worker", func() error {
				if got := last(); slices.Contains(got, stopped) || !slices.Contains(got, running) {
					return fmt.Errorf("last program names pids %v", got)
				}
				return nil
			})
			if g := r.gen(1); fx.proc(stopped).wasKilled() || !slices.Equal(g.Paused, []int{stopped}) {
				t.Errorf("killed %v, generation 1 = %+v; want the stopped worker left alone, and shown paused", fx.proc(stopped).wasKilled(), g)
			}
			if g := r.gen(2); g.Weight != 10 {
				t.Errorf("generation 2 = %+v; want its canary at 10%% on", g)
			}
			fx.proc(stopped).cont()
			eventually(t, "the program back on both standby workers", func() error {
				if got := last(); !slices.Contains(got, stopped) || !slices.Contains(got, running) {
					return fmt.Errorf("last program names pids %v", got)
				}
				return nil
			})
		})
	}
}

// The judge reads each worker within its own second, beside the others:
// one of the new generation's workers stopped (SIGSTOP) took the whole
// second of a reading that went through them in turn, and every worker
// after it went unread, so a release answering 30 % 500s passed its
// probation "not judged: 0 of the 100 requests it needs" (a new user's
// trial, 2 of 2, stopped a new worker 0.3 s after the upgrade command:
// before the judge's first reading).
func TestJudgeReadsPastAStoppedWorker(t *testing.T) {
	fx := newFakeEffects(t)
	fx.behave["v1"] = behaviour{rps: 2000, latency: time.Millisecond} // before its workers start: they take it then
	r := startRig(t, Config{Workers: 2, Probation: 4 * time.Second, JudgeEvery: 200 * time.Millisecond}, fx, func(r *rig) {
		r.s.loop.steer.timeout = 200 * time.Millisecond // if the stopped worker carries the switch's steer
	})
	r.behave("v2", behaviour{rps: 2000, errorRatio: 0.3, latency: time.Millisecond, stopOneReady: true})
	r.waitStarted()
	_, rep, err := r.upgradeWith("v2", UpgradeOptions{Wait: true})
	if err == nil || !strings.Contains(err.Error(), "5xx ratio") || rep == nil || rep.Verdict != VerdictRolledBack {
		t.Fatalf("upgrade --wait: %v, report %+v; want rolled back for its 5xx ratio", err, rep)
	}
	// The figures say one of v2's workers is not in them (they did not).
	if rep.New == nil || rep.New.Unread != 1 || !strings.Contains(rep.String(), "; 1 worker(s) not read (paused or not answering)") {
		t.Errorf("report %s; want the new generation's figures to say 1 worker was not read", rep)
	}
}

// A worker being retired whose process is stopped (SIGSTOP, a tracer) is
// killed at once: it would answer no release, and until killStuck, 15 s
// later (or --drain-timeout and its second), its listeners took new
// connections into queues nobody read (a new user's trial, 3 of 3, with
// `launcher stop`). The stop says so.
func TestStoppedWorkerKilledAtOnceWhenRetired(t *testing.T) {
	fx := newFakeEffects(t)
	r := startRig(t, Config{Workers: 2, Probation: NoProbation}, fx, nil)
	r.waitStarted()
	stopped := r.gen(1).PIDs[0]
	fx.proc(stopped).stop()
	var steps []string
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	if err := (Client{StateDir: r.dir}).Stop(ctx, func(p Progress) { steps = append(steps, p.String()) }); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("stop took %s; want the stopped worker killed at once", took)
	}
	want := fmt.Sprintf("(pid %d) was stopped (SIGSTOP, a tracer or a frozen cgroup): killed, what it held cut", stopped)
	if len(steps) != 2 || !strings.Contains(steps[0], want) || steps[1] != "stopped" {
		t.Errorf("stop's steps %q; want generation 1's drain naming the stopped worker, then stopped", steps)
	}
}

// A standby worker that is hung (it answers nothing, but its process does
// not read stopped: a deadlock) is found by its admin socket answering no
// count two seconds in a row, and steered away from; a rollback then kills
// it, goes to the other worker alone, and names it. Before, the rollback steered back to
// it and said nothing (a new user's trial, 4 of 4, with a frozen cgroup,
// which now reads stopped: this is the case left).
func TestRollbackPassesOverAHungStandbyWorker(t *testing.T) {
	fx := newFakeEffects(t)
	fx.kernel = &kernelGroup{}
	r := startRig(t, Config{Workers: 2, Probation: 20 * time.Second, DrainTimeout: 500 * time.Millisecond}, fx, func(r *rig) {
		r.s.loop.steer.timeout = 300 * time.Millisecond
	})
	r.waitStarted()
	done := r.probationStep(t, 2)
	old := r.gen(1).PIDs
	hung, running := old[0], old[1]
	fx.proc(hung).hang()
	eventually(t, "the hung standby worker paused", func() error {
		if g := r.gen(1); !slices.Equal(g.Paused, []int{hung}) {
			return fmt.Errorf("generation 1 = %+v", g)
		}
		return nil
	})
	steersBefore := len(fx.kernelPrograms())
	var reason string
	if _, err := r.s.Rollback(context.Background(), true, func(p Progress) {
		if p.Step == StepRolledBack {
			reason = p.Reason
		}
	}); err != nil {
		t.Fatalf("rollback: %v", err)
	}
	if !strings.Contains(reason, fmt.Sprintf("(pid %d) of generation 1 answered nothing on its admin socket for 2 s (hung): killed", hung)) || !fx.proc(hung).wasKilled() {
		t.Errorf("rolled-back step's reason %q; want it to name the hung worker", reason)
	}
	awaitResult(t, done, 5*time.Second)
	programs := fx.kernelPrograms()[steersBefore:]
	if len(programs) == 0 || !slices.Equal(programs[0], []int{running}) {
		t.Errorf("programs after the rollback name pids %v; want the first to name only %d", programs, running)
	}
	// Killed by the supervisor, restarted as its generation serves: not
	// a crash (a new user's recheck: counted as one).
	eventually(t, "the killed worker restarted", func() error {
		if g := r.gen(1); len(g.PIDs) != 2 || slices.Contains(g.PIDs, hung) {
			return fmt.Errorf("generation 1 = %+v", g)
		}
		return nil
	})
	if n := testutil.ToFloat64(r.s.metrics.WorkerCrashes.WithLabelValues(StateActive)); n != 0 {
		t.Errorf("launcher_worker_crashes_total{state=\"active\"} = %v; want 0", n)
	}
}

// A worker of the active generation that is stopped (a debugger,
// SIGSTOP) is steered away from within about a second, and steered to
// again once it runs; one hung (it answers nothing, but its process does
// not read stopped: a deadlock) likewise once its admin socket has
// answered no count two seconds in a row, and again once it answers.
// Neither is killed, and what a stopped one queued waits for it. Before,
// a stopped one kept its share of new connections, each waiting in its
// queue (a new user's trial), and a hung one did too.
func TestPausedActiveWorkerSteeredAwayFromUntilItRuns(t *testing.T) {
	for _, tt := range []struct {
		name          string
		pause, resume func(*fakeProc)
		logged        string // a log line of the pause, if any
	}{
		{"stopped", (*fakeProc).stop, (*fakeProc).cont, ""},
		{"hung", (*fakeProc).hang, (*fakeProc).unhang, "worker " + whyHung + ": steered away from until it runs again"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fx := newFakeEffects(t)
			fx.kernel = &kernelGroup{}
			r := startRig(t, Config{Workers: 2, Probation: NoProbation, DrainTimeout: 200 * time.Millisecond}, fx, nil)
			r.waitStarted()
			pids := r.gen(1).PIDs
			paused, running := pids[0], pids[1]
			last := func() []int {
				programs := fx.kernelPrograms()
				return slices.Sorted(slices.Values(programs[len(programs)-1]))
			}
			tt.pause(fx.proc(paused))
			eventually(t, "the program without the paused worker", func() error {
				if got := last(); !slices.Equal(got, []int{running}) {
					return fmt.Errorf("last program names pids %v; want only %d", got, running)
				}
				return nil
			})
			if fx.proc(paused).wasKilled() {
				t.Error("the paused worker was killed; want it left alone")
			}
			if g := r.gen(1); !slices.Equal(g.Paused, []int{paused}) {
				t.Errorf("generation 1 = %+v; want pid %d paused in status", g, paused)
			}
			if tt.logged != "" && !strings.Contains(r.log.String(), tt.logged) {
				t.Errorf("no log line %q", tt.logged)
			}
			tt.resume(fx.proc(paused))
			eventually(t, "the program back on both workers", func() error {
				if got := last(); !slices.Equal(got, slices.Sorted(slices.Values(pids))) {
					return fmt.Errorf("last program names pids %v; want %v", got, pids)
				}
				return nil
			})
			if g := r.gen(1); len(g.Paused) != 0 {
				t.Errorf("generation 1 = %+v; want none paused once it runs", g)
			}
		})
	}
}

// A stop during a canary steers every new connection to the active
// generation before the standby generation's listeners close: they were
// released while the program still sent them their share, so a connection
// that met one as it closed was reset (a recheck trial: 1 of 6 stops
// during a canary, none of 6 without one). The kernel model checks every
// close of the standby generation's against the program in place.
func TestStopDuringCanaryStepsAwayFromTheStandbyFirst(t *testing.T) {
	fx := newFakeEffects(t)
	fx.kernel = &kernelGroup{}
	r := startRig(t, Config{Workers: 2}, fx, nil)
	r.waitStarted()
	standby := r.gen(1).PIDs
	done := r.canaryStep(t, time.Hour)
	r.stop()
	<-done
	// The active generation's last listeners close with nowhere else to
	// steer to: the model flags them, and they are not this test's.
	for _, v := range fx.kernelViolations() {
		for _, pid := range standby {
			if strings.Contains(v, fmt.Sprintf("pid %d clos", pid)) {
				t.Error(v)
			}
		}
	}
}

// A rollback whose every standby worker is stopped starts the previous
// release again, and says why: it named none of the workers it had killed
// (a recheck trial, --workers 1).
func TestRollbackAnewNamesTheStoppedStandbyWorkers(t *testing.T) {
	fx := newFakeEffects(t)
	fx.behave["v1"] = behaviour{inflight: 1} // before its workers start: they take it then
	r := startRig(t, Config{Workers: 1, Probation: 20 * time.Second}, fx, nil)
	r.waitStarted()
	done := r.probationStep(t, 1)
	stopped := r.gen(1).PIDs[0]
	r.counted(t, stopped, 1) // by the standby watch
	fx.proc(stopped).stop()
	var rolling string
	if _, err := r.s.Rollback(context.Background(), false, func(p Progress) {
		if p.Step == StepRollingBack {
			rolling = p.String()
		}
	}); err != nil {
		t.Fatalf("rollback: %v", err)
	}
	if want := fmt.Sprintf("rolling back to v1: no standby worker could take traffic back: worker 0 (pid %d) of generation 1 was stopped", stopped); !strings.HasPrefix(rolling, want) {
		t.Errorf("rolling-back step %q; want it to start %q", rolling, want)
	}
	// What it held is said; a restart of it is not, as its generation
	// serves no more (a new user's recheck: both wrong).
	if !strings.HasSuffix(rolling, "killed (1 request(s) in flight at its last count cut)") {
		t.Errorf("rolling-back step %q; want it to end with what the killed worker held, no restart", rolling)
	}
	awaitResult(t, done, 10*time.Second)
}

// A worker killed while it sleeps uninterruptibly (state D: a cgroup v1
// freezer, a hung mount) exits only when it wakes. The commands waiting
// for its generation are told so after killLinger, naming it and its
// state, instead of waiting without a word: `launcher stop`, and
// `upgrade --wait` following the old generation's drain. (A new user's
// trial: both printed nothing for as long as the freezer held.)
func TestKilledWorkerThatLingersIsNamed(t *testing.T) {
	for _, cmd := range []string{"stop", "upgrade --wait"} {
		t.Run(cmd, func(t *testing.T) {
			fx := newFakeEffects(t)
			r := startRig(t, Config{Workers: 1, Probation: NoProbation, DrainTimeout: 300 * time.Millisecond}, fx, func(r *rig) {
				r.s.loop.killLinger = 200 * time.Millisecond
			})
			r.waitStarted()
			asleep := r.gen(1).PIDs[0]
			fx.proc(asleep).sleepD()
			// Without the waiting step the sleep ends anyway, later, so
			// that the command ends and the test can say what it missed.
			wake := time.AfterFunc(5*time.Second, fx.proc(asleep).wakeD)
			defer wake.Stop()
			var mu sync.Mutex
			var steps []Progress
			collect := func(p Progress) {
				mu.Lock()
				steps = append(steps, p)
				mu.Unlock()
				if p.Step == StepWaiting {
					fx.proc(asleep).wakeD()
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var err error
			if cmd == "stop" {
				err = (Client{StateDir: r.dir}).Stop(ctx, collect)
			} else {
				_, err = r.s.UpgradeWith(ctx, "v2", UpgradeOptions{Wait: true}, collect)
			}
			if err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			want := fmt.Sprintf("waiting: worker 0 (pid %d) of generation 1, killed ", asleep)
			i := slices.IndexFunc(steps, func(p Progress) bool { return p.Step == StepWaiting })
			if i < 0 || !strings.HasPrefix(steps[i].String(), want) || !strings.Contains(steps[i].String(), "has not exited: its process sleeps uninterruptibly (state D") {
				t.Fatalf("steps %v; want one %q… naming state D", steps, want)
			}
			if d := slices.IndexFunc(steps, func(p Progress) bool { return p.Step == StepDrained && p.Generation == 1 }); d < i {
				t.Errorf("steps %v; want generation 1's drain after the waiting step", steps)
			}
		})
	}
}

// A worker that stops answering during its drain (frozen: asleep in state
// D) and is killed at --drain-timeout counts the requests it had in flight
// at its last count as cut, at once: they were counted as 0 after a
// second's wait for an answer that could not come (a new user's trial,
// 2 of 2: "0 request(s) in flight cut" of the 1 its client lost, and
// launcher_drain_cut_requests_total unchanged).
func TestFrozenWorkerCutAtTheDeadlineCountsItsRequests(t *testing.T) {
	fx := newFakeEffects(t)
	fx.behave["v1"] = behaviour{inflight: 1, drainFor: time.Hour} // before its workers start: they take it then
	r := startRig(t, Config{Workers: 1, Probation: NoProbation, DrainTimeout: 300 * time.Millisecond}, fx, func(r *rig) {
		r.s.loop.killLinger = 100 * time.Millisecond
	})
	r.waitStarted()
	old := r.gen(1).PIDs[0]
	var mu sync.Mutex
	var steps []Progress
	collect := func(p Progress) {
		mu.Lock()
		steps = append(steps, p)
		mu.Unlock()
		switch p.Step {
		case StepDraining:
			fx.proc(old).sleepD()
		case StepWaiting:
			fx.proc(old).wakeD()
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := r.s.UpgradeWith(ctx, "v2", UpgradeOptions{Wait: true}, collect); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	// Killed as stuck when its release goes unanswered, or at the
	// drain's deadline, depending on when it froze: either counts it.
	i := slices.IndexFunc(steps, func(p Progress) bool { return p.Step == StepDrained })
	stuck := fmt.Sprintf("worker 0 (pid %d) answered nothing (stopped or stuck): killed, what it held cut (1 request(s) in flight at its last count)", old)
	deadline := fmt.Sprintf("worker(s) 0 (pid %d) killed after --drain-timeout 300ms: 1 request(s) in flight cut", old)
	if i < 0 || !strings.Contains(steps[i].Reason, stuck) && !strings.Contains(steps[i].Reason, deadline) {
		t.Errorf("steps %v; want the drained step to count its 1 request in flight", steps)
	}
	if n := testutil.ToFloat64(r.s.metrics.DrainCutRequests); n != 1 {
		t.Errorf("launcher_drain_cut_requests_total = %v; want 1", n)
	}
}

// A failed upgrade's verdict is when it failed (here its --ready-timeout),
// not when its last process was gone: a worker asleep in state D, killed
// at the timeout, exits only when it wakes. (A new user's recheck: a 3 s
// ready timeout read "verdict 9088 ms", the moment of the thaw.)
func TestFailedUpgradeVerdictIsWhenItFailed(t *testing.T) {
	fx := newFakeEffects(t)
	r := startRig(t, Config{Workers: 1, ReadyTimeout: 300 * time.Millisecond}, fx, nil)
	r.waitStarted()
	r.behave("v2", behaviour{neverReady: true})
	fx.onStart = func(p *fakeProc) {
		p.sleepD()
		time.AfterFunc(1500*time.Millisecond, p.wakeD)
	}
	_, rep, err := r.upgradeWith("v2", UpgradeOptions{})
	if err == nil || rep == nil || rep.Verdict != VerdictFailed {
		t.Fatalf("upgrade: %v, report %+v; want failed", err, rep)
	}
	if rep.VerdictAfter > time.Second || rep.GoneAfter < 1500*time.Millisecond {
		t.Errorf("verdict after %s, gone after %s; want the verdict at the ready timeout (300 ms), gone at the wake (1.5 s)", rep.VerdictAfter, rep.GoneAfter)
	}
}

// A worker stopped or frozen before its drain, killed when retired,
// counts the requests it had in flight a second or less before it
// stopped: the supervisor keeps the active workers' counts as it looks at
// them every second. (A new user's trial, 4 of 4: a worker frozen with a
// request in flight, then an upgrade or a stop, counted "what it held
// cut" and 0 in launcher_drain_cut_requests_total.)
func TestStoppedWorkerCountsWhatItHeldWhenRetired(t *testing.T) {
	fx := newFakeEffects(t)
	fx.behave["v1"] = behaviour{inflight: 1} // before its workers start: they take it then
	r := startRig(t, Config{Workers: 1, Probation: NoProbation}, fx, nil)
	r.waitStarted()
	old := r.gen(1).PIDs[0]
	r.counted(t, old, 1) // by the paused watch
	fx.proc(old).stop()
	var mu sync.Mutex
	var drained string
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := r.s.UpgradeWith(ctx, "v2", UpgradeOptions{Wait: true}, func(p Progress) {
		if p.Step == StepDrained {
			mu.Lock()
			drained = p.String()
			mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(drained, "what it held cut (1 request(s) in flight at its last count)") {
		t.Errorf("drained step %q; want its 1 request counted", drained)
	}
	if n := testutil.ToFloat64(r.s.metrics.DrainCutRequests); n != 1 {
		t.Errorf("launcher_drain_cut_requests_total = %v; want 1", n)
	}
}

// A worker that drained, cutting nothing, but had not exited by
// --drain-timeout (the app's code after Run ran long) is killed then, and
// its drain reads drained, with a note: it read as a cut drain ("gone
// after …: killed after --drain-timeout: 0 request(s) in flight cut") and
// counted in launcher_drain_timeouts_total (a new user's trial).
func TestWorkerThatDrainedButExitsLateIsNoCutDrain(t *testing.T) {
	fx := newFakeEffects(t)
	fx.behave["v1"] = behaviour{finalMetrics: true, exitLate: time.Hour} // before its workers start: they take it then
	r := startRig(t, Config{Workers: 1, Probation: NoProbation, DrainTimeout: 300 * time.Millisecond}, fx, nil)
	r.waitStarted()
	old := r.gen(1).PIDs[0]
	st, err := r.upgrade("v2", true)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("drained after %%d ms; worker 0 (pid %d) drained, but had not exited by --drain-timeout 300ms (the app's code after Run returned): killed", old)
	var n int
	if _, err := fmt.Sscanf(lastLine(st.text(), "generation 1 "), "generation 1 "+want, &n); err != nil {
		t.Errorf("steps:\n%s\nwant a line %q", st.text(), "generation 1 "+want)
	}
	if v := testutil.ToFloat64(r.s.metrics.DrainTimeouts); v != 0 {
		t.Errorf("launcher_drain_timeouts_total = %v; want 0", v)
	}
	if !fx.proc(old).wasKilled() {
		t.Error("the worker was not killed")
	}
}

// lastLine returns text's last line that begins with prefix, "" if none.
func lastLine(text, prefix string) string {
	out := ""
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = l
		}
	}
	return out
}

// A generation that crashes in its probation is read once more for its
// report, and the report names the worker whose figures died with it,
// instead of the judge's last reading (up to a second old, before any
// traffic): a new user's trial read "no requests" for a generation that
// had served 556.
func TestCrashedGenerationsReportSaysWhatWasLost(t *testing.T) {
	fx := newFakeEffects(t)
	fx.behave["v1"] = behaviour{rps: 2000, latency: time.Millisecond}
	r := startRig(t, Config{Workers: 2, Probation: 20 * time.Second, JudgeEvery: 5 * time.Second}, fx, nil)
	r.waitStarted()
	// One worker of two crashes 300 ms in, long before the judge's
	// first reading (5 s): the other is read at the crash.
	r.behave("v2", behaviour{rps: 2000, latency: time.Millisecond, crashAfter: 300 * time.Millisecond, crashOne: true})
	_, rep, err := r.upgradeWith("v2", UpgradeOptions{Wait: true})
	if err == nil || rep == nil || rep.Verdict != VerdictRolledBack {
		t.Fatalf("upgrade: %v, report %+v; want rolled back for the crash", err, rep)
	}
	n := rep.New
	if n == nil || n.Lost != 1 || n.Requests <= 0 || !strings.Contains(n.String(), "1 worker(s) exited without a drain (crashed or killed)") {
		t.Errorf("new generation's figures %+v (%s); want the surviving worker's requests and 1 lost worker named", n, n)
	}
	if o := rep.Old; o == nil || o.Lost != 0 {
		t.Errorf("old generation's figures %+v; want none lost", o)
	}
	if s := (WindowFigures{Generation: 3, Version: "v3", Lost: 1}).String(); !strings.HasPrefix(s, "generation 3 (v3): no requests read; 1 worker(s) exited") {
		t.Errorf("figures of a generation read at none: %q; want no requests read", s)
	}
}
