package supervisor

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

// Every kill path ends a worker's whole tree (process.kill, never SIGKILL
// to the worker alone: the fake process fails the test on that), and a
// generation's cgroup goes once it is over, never before.

// gensOf returns the pids of generation gen's fake processes.
func (fx *fakeEffects) gensOf(gen int) []*fakeProc {
	fx.mu.Lock()
	defer fx.mu.Unlock()
	var out []*fakeProc
	for _, p := range fx.procs {
		if p.gen == gen {
			out = append(out, p)
		}
	}
	return out
}

// checkKilled checks that generation gen's processes were all killed as
// trees, and that the generation was then forgotten.
func checkKilled(t *testing.T, fx *fakeEffects, gen int) {
	t.Helper()
	procs := fx.gensOf(gen)
	if len(procs) == 0 {
		t.Fatalf("generation %d had no process", gen)
	}
	for _, p := range procs {
		if !p.wasKilled() {
			t.Errorf("process %d of generation %d: not killed as a tree", p.id, gen)
		}
	}
	eventually(t, fmt.Sprint("generation ", gen, " forgotten"), func() error {
		if !slices.Contains(fx.removedGens(), gen) {
			return fmt.Errorf("removed generations %v", fx.removedGens())
		}
		return nil
	})
}

func TestKillPathsKillTheTree(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		v1   behaviour
		// run drives the rig until generation gen was killed.
		run func(t *testing.T, r *rig) (gen int)
	}{
		{
			name: "ready timeout", cfg: Config{Workers: 2, ReadyTimeout: 300 * time.Millisecond},
			run: func(t *testing.T, r *rig) int {
				r.behave("v2", behaviour{neverReady: true})
				if _, err := r.upgrade("v2", false); err == nil || !strings.Contains(err.Error(), "--ready-timeout") {
					t.Fatalf("upgrade: %v; want a ready timeout", err)
				}
				return 2
			},
		},
		{
			name: "failed health check", cfg: Config{Workers: 2},
			run: func(t *testing.T, r *rig) int {
				r.behave("v2", behaviour{unhealthy: true})
				if _, err := r.upgrade("v2", false); err == nil || !strings.Contains(err.Error(), "health check") {
					t.Fatalf("upgrade: %v; want a failed health check", err)
				}
				return 2
			},
		},
		{
			name: "drain timeout", cfg: Config{DrainTimeout: 100 * time.Millisecond, Probation: NoProbation},
			v1: behaviour{drainFor: time.Minute},
			run: func(t *testing.T, r *rig) int {
				if _, err := r.upgrade("v2", true); err != nil {
					t.Fatal(err)
				}
				return 1
			},
		},
		{
			name: "upgrade aborted by a stop", cfg: Config{},
			run: func(t *testing.T, r *rig) int {
				r.behave("v2", behaviour{neverReady: true})
				go r.upgrade("v2", false)
				eventually(t, "generation 2 starting", func() error {
					if g := r.gen(2); g.State != StateStarting || len(g.PIDs) != 1 {
						return fmt.Errorf("generation 2 = %+v", g)
					}
					return nil
				})
				if err := r.s.Stop(context.Background()); err != nil {
					t.Fatal(err)
				}
				return 2
			},
		},
		{
			name: "stop's deadline", cfg: Config{},
			v1: behaviour{drainFor: time.Minute},
			run: func(t *testing.T, r *rig) int {
				ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
				defer cancel()
				if err := r.s.Stop(ctx); err == nil {
					t.Fatal("Stop: the drain did not outlive its context")
				}
				return 1
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := newFakeEffects(t)
			fx.behave["v1"] = tt.v1
			r := startRig(t, tt.cfg, fx, nil)
			r.waitStarted()
			checkKilled(t, fx, tt.run(t, r))
		})
	}
}

// TestAdoptionKillsAStartingGenerationsTree: a generation whose upgrade
// died with the previous supervisor is killed, tree and all.
func TestAdoptionKillsAStartingGenerationsTree(t *testing.T) {
	fx := newFakeEffects(t)
	fx.adoptable = map[int]string{501: "a", 601: "b"}
	r := startRig(t, Config{Listen: []string{"127.0.0.1:7"}}, fx, func(r *rig) {
		fx.saved = &savedState{Supervisor: 9, Listen: []string{"127.0.0.1:7"}, Active: 3, LastGen: 4,
			Gens: []savedGen{
				{Num: 3, Release: savedRelease{Version: "v1", Path: r.path("v1")}, State: StateActive,
					Workers: []savedWorker{{Index: 0, PID: 501, Token: "a", Ready: true}}},
				{Num: 4, Release: savedRelease{Version: "v2", Path: r.path("v2")}, State: StateStarting,
					Workers: []savedWorker{{Index: 0, PID: 601, Token: "b"}}},
			},
			Group: []string{"a", "b"},
		}
	})
	r.waitStarted()
	checkKilled(t, fx, 4)
	if slices.Contains(fx.removedGens(), 3) {
		t.Error("the adopted active generation was forgotten")
	}
}

// TestGenerationsForgottenWhenOver: a generation's cgroup is removed once
// it is over (drained, failed, crash-looped, rolled back, stopped), once,
// never while one of its processes runs (the fake checks that), and not
// while its crashed workers restart.
func TestGenerationsForgottenWhenOver(t *testing.T) {
	t.Run("drained, then stopped", func(t *testing.T) {
		fx := newFakeEffects(t)
		r := startRig(t, Config{Probation: NoProbation}, fx, nil)
		r.waitStarted()
		if _, err := r.upgrade("v2", true); err != nil {
			t.Fatal(err)
		}
		if got := fx.removedGens(); !slices.Equal(got, []int{1}) {
			t.Errorf("after the drain: removed %v; want [1]", got)
		}
		if err := r.s.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := fx.removedGens(); !slices.Equal(got, []int{1, 2}) {
			t.Errorf("after the stop: removed %v; want [1 2]", got)
		}
	})
	t.Run("rolled back in its probation", func(t *testing.T) {
		fx := newFakeEffects(t)
		r := startRig(t, Config{Workers: 2, Probation: 3 * time.Second}, fx, nil)
		r.waitStarted()
		r.behave("v2", behaviour{crashAfter: 100 * time.Millisecond})
		if _, err := r.upgrade("v2", true); err == nil {
			t.Fatal("the crashing upgrade succeeded")
		}
		eventually(t, "generation 2 forgotten", func() error {
			if got := fx.removedGens(); !slices.Equal(got, []int{2}) {
				return fmt.Errorf("removed %v; want [2]", got)
			}
			return nil
		})
	})
	// A standby generation whose workers all died has nothing to drain
	// at a stop: it was left out of the stop's drains and never
	// forgotten, its cgroup left behind (an e2e test left one at every
	// run of the suite).
	t.Run("its standby workers dead, then stopped", func(t *testing.T) {
		fx := newFakeEffects(t)
		r := startRig(t, Config{Probation: time.Hour}, fx, nil)
		r.waitStarted()
		old := r.gen(1).PIDs[0]
		if _, err := r.upgrade("v2", false); err != nil {
			t.Fatal(err)
		}
		fx.proc(old).die()
		eventually(t, "the standby worker's exit seen", func() error {
			if g := r.gen(1); len(g.PIDs) > 0 {
				return fmt.Errorf("generation 1 = %+v", g)
			}
			return nil
		})
		if err := r.s.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := slices.Sorted(slices.Values(fx.removedGens())); !slices.Equal(got, []int{1, 2}) {
			t.Errorf("after the stop: removed %v; want [1 2]", got)
		}
	})
	t.Run("restarts, then a crash loop", func(t *testing.T) {
		fx := newFakeEffects(t)
		fx.behave["v1"] = behaviour{crashAfter: 150 * time.Millisecond}
		r := startRig(t, Config{Workers: 2}, fx, func(r *rig) {
			r.s.loop.restarts = restartPolicy{first: 50 * time.Millisecond, max: 50 * time.Millisecond, reset: time.Minute, loop: 4}
		})
		r.waitStarted()
		eventually(t, "a restart", func() error {
			if g := r.gen(1); g.Restarts < 2 {
				return fmt.Errorf("generation 1 = %+v", g)
			}
			return nil
		})
		if got := fx.removedGens(); len(got) > 0 {
			t.Errorf("removed %v while the generation restarts its workers", got)
		}
		eventually(t, "crash loop, generation forgotten", func() error {
			if g := r.gen(1); g.State != StateFailed || len(g.PIDs) > 0 || !slices.Equal(fx.removedGens(), []int{1}) {
				return fmt.Errorf("generation 1 = %+v, removed %v", g, fx.removedGens())
			}
			return nil
		})
	})
}

// TestGenerationUsageExported: each generation not yet over has its CPU
// time and memory exported, with generation and version, beside the
// other's during a probation; an exited one drops out.
func TestGenerationUsageExported(t *testing.T) {
	fx := newFakeEffects(t)
	r := startRig(t, Config{Probation: 10 * time.Second}, fx, nil)
	r.waitStarted()
	if _, err := r.upgrade("v2", false); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP launcher_generation_cpu_seconds_total CPU time used by a generation's processes (its workers and what they started, exited ones included), seconds: usage_usec of its cgroup's cpu.stat. Only where generations have cgroups.
# TYPE launcher_generation_cpu_seconds_total counter
launcher_generation_cpu_seconds_total{generation="1",version="v1"} 1
launcher_generation_cpu_seconds_total{generation="2",version="v2"} 2
`
	if err := testutil.GatherAndCompare(r.s.registry, strings.NewReader(want), "launcher_generation_cpu_seconds_total"); err != nil {
		t.Errorf("during the probation: %v", err)
	}
	// Another upgrade ends the probation: generation 1 drains and exits,
	// generation 2 stands by for generation 3.
	if _, err := r.upgrade("v3", false); err != nil {
		t.Fatal(err)
	}
	eventually(t, "generation 1 gone from the metrics", func() error {
		n, err := testutil.GatherAndCount(r.s.registry, "launcher_generation_memory_bytes")
		if err != nil || n != 2 {
			return fmt.Errorf("%d series, %v; want generations 2 and 3", n, err)
		}
		return nil
	})
	want = `
# HELP launcher_generation_memory_bytes Memory of a generation's processes (its workers and what they started), bytes: the sum of their resident set sizes from /proc/PID/statm, as no memory controller is enabled for its cgroup (pages shared between processes count once per process). Only where generations have cgroups.
# TYPE launcher_generation_memory_bytes gauge
launcher_generation_memory_bytes{generation="2",version="v2"} 2e+06
launcher_generation_memory_bytes{generation="3",version="v3"} 3e+06
`
	if err := testutil.GatherAndCompare(r.s.registry, strings.NewReader(want), "launcher_generation_memory_bytes"); err != nil {
		t.Errorf("after the next upgrade: %v", err)
	}
}

// A worker that crash-loops while the others of its generation serve
// stays down, and the generation serves on, active, saying so: it was
// marked failed, so /healthz answered "no active generation" (a readiness
// probe takes the service out) and the metrics showed nothing active,
// while it answered (a new user's trial: a release's binary deleted under
// a running generation, then a worker killed).
func TestCrashLoopOfOneWorkerLeavesTheGenerationServing(t *testing.T) {
	fx := newFakeEffects(t)
	r, pids := startFastRestarts(t, fx, Config{Workers: 2}, 3)
	fx.failStarts(false, 1)
	// Worker 1 is the one started second.
	fx.proc(pids[1]).die()
	eventually(t, "worker 1 left down", func() error {
		if g := r.gen(1); !slices.Equal(g.NotRestarted, []int{1}) {
			return fmt.Errorf("generation 1 = %+v", g)
		}
		return nil
	})
	if g := r.gen(1); g.State != StateActive || !slices.Equal(g.PIDs, pids[:1]) {
		t.Errorf("generation 1 = %+v; want active with pid %d", g, pids[0])
	}
	healthy, err := ask(context.Background(), r.s.loop, func(l *loop) bool { return l.active != nil && l.active.state == StateActive })
	if err != nil || !healthy {
		t.Errorf("active generation healthy: %v (%v); want true", healthy, err)
	}
	if want := "crash loop: worker 1 not restarted; the generation goes on with 1 of its 2 workers, 1 serving"; !strings.Contains(r.log.String(), want) {
		t.Errorf("no log line %q", want)
	}
	line, _ := ask(context.Background(), r.s.loop, (*loop).statusLine)
	if want := "serving v1 (generation 1, 1 of 2 workers: 1 not restarted after a crash loop)"; line != want {
		t.Errorf("status line %q; want %q", line, want)
	}
	// Another worker's first crash is no crash loop: it restarts (it was
	// taken for the loop's next crash, and the generation failed).
	fx.proc(pids[0]).die()
	eventually(t, "worker 0 restarted", func() error {
		if g := r.gen(1); g.State != StateActive || len(g.PIDs) != 1 || g.PIDs[0] == pids[0] {
			return fmt.Errorf("generation 1 = %+v", g)
		}
		return nil
	})
	pids = r.gen(1).PIDs
	// The last one crash-looping too: nothing serves, and it says so.
	fx.failStarts(true)
	fx.proc(pids[0]).die()
	eventually(t, "generation 1 failed", func() error {
		if g := r.gen(1); g.State != StateFailed {
			return fmt.Errorf("generation 1 = %+v", g)
		}
		return nil
	})
	line, _ = ask(context.Background(), r.s.loop, (*loop).statusLine)
	if want := "not serving: generation 1 (v1) failed in a crash loop"; line != want {
		t.Errorf("status line %q; want %q", line, want)
	}
}

// An upgrade from a generation that a crash loop left with no worker says
// there was nothing to drain: it said "draining: 0 request(s) in flight"
// and "drained after 0 ms", and counted a drain in
// launcher_drain_duration_seconds (a new user's trial).
func TestUpgradeFromACrashLoopedGenerationDrainsNothing(t *testing.T) {
	fx := newFakeEffects(t)
	r, pids := startFastRestarts(t, fx, Config{Workers: 1}, 3)
	pid := pids[0]
	fx.failStarts(true)
	fx.proc(pid).die()
	eventually(t, "generation 1 failed", func() error {
		if g := r.gen(1); g.State != StateFailed {
			return fmt.Errorf("generation 1 = %+v", g)
		}
		return nil
	})
	fx.failStarts(false)
	st, err := r.upgrade("v2", true)
	if err != nil {
		t.Fatal(err)
	}
	if steps := st.String(); strings.Contains(steps, string(StepDraining)) {
		t.Errorf("steps %s; want no draining step", steps)
	}
	if !strings.Contains(st.text(), "generation 1 gone after 0 ms: no worker of it was left to drain") {
		t.Errorf("steps %q; want the drained step to say nothing was left", st.text())
	}
	if n := testutil.CollectAndCount(r.s.metrics.DrainDuration); n != 1 {
		t.Fatalf("%d drain duration series", n)
	}
	m := &dto.Metric{}
	r.s.metrics.DrainDuration.Write(m)
	if c := m.GetHistogram().GetSampleCount(); c != 0 {
		t.Errorf("launcher_drain_duration_seconds_count = %d; want 0", c)
	}
}

// A restarted worker that fails before it serves (its health check fails
// at its ready, or it is not ready by --ready-timeout: hung in its start
// or its health check) is killed and restarted with the back-off, saying
// why, and serves once it can: it was left running, never steered to and
// never retried, and nothing said so (new users' trial and recheck).
func TestRestartedWorkerThatFailsBeforeServingIsRestarted(t *testing.T) {
	for _, tt := range []struct {
		name string
		b    behaviour
		want string
	}{
		{"health check", behaviour{unhealthy: true}, "health check: database down"},
		{"not ready in time", behaviour{neverReady: true}, "not ready within --ready-timeout 200ms (it listened"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fx := newFakeEffects(t)
			r, pids := startFastRestarts(t, fx, Config{Workers: 2, ReadyTimeout: 200 * time.Millisecond}, 100)
			r.behave("v1", tt.b) // the workers started from now on
			fx.proc(pids[1]).die()
			eventually(t, "the failing restarts killed and restarted", func() error {
				if n := fx.started(); n < 4 {
					return fmt.Errorf("%d processes started", n)
				}
				return nil
			})
			if want := `msg="restarted worker failed before it served: killed, and restarted with the back-off"`; !strings.Contains(r.log.String(), want) || !strings.Contains(r.log.String(), tt.want) {
				t.Errorf("no log line %q with %q", want, tt.want)
			}
			for _, p := range fx.gensOf(1)[2:] {
				if p.alive() && !p.wasKilled() {
					continue // the latest, maybe not ready yet
				}
				if !p.wasKilled() {
					t.Errorf("restarted process %d exited unkilled", p.id)
				}
			}
			// Able again: the next restart serves.
			r.behave("v1", behaviour{})
			eventually(t, "two workers ready again", func() error {
				ready, _ := ask(context.Background(), r.s.loop, func(l *loop) int { return len(l.active.readyLive()) })
				if ready != 2 {
					return fmt.Errorf("%d ready", ready)
				}
				return nil
			})
		})
	}
}

// startFastRestarts starts a rig of cfg, no probation, whose crashed
// workers restart 10–50 ms apart and crash-loop at loop crashes in a row,
// and returns generation 1's pids.
func startFastRestarts(t *testing.T, fx *fakeEffects, cfg Config, loop int) (*rig, []int) {
	t.Helper()
	cfg.Probation = NoProbation
	r := startRig(t, cfg, fx, func(r *rig) {
		r.s.loop.restarts = restartPolicy{first: 10 * time.Millisecond, max: 50 * time.Millisecond, reset: time.Minute, loop: loop}
	})
	r.waitStarted()
	return r, r.gen(1).PIDs
}

// A worker's crash loop while the generation's other worker waits for its
// own restart (here: started again, not ready yet) leaves the generation
// going on. The generation failed, and the other was never restarted:
// the service down for good (a new user's recheck, 3 of 3, 2 workers).
func TestCrashLoopWhileAnotherWorkerRestarts(t *testing.T) {
	fx := newFakeEffects(t)
	r, pids := startFastRestarts(t, fx, Config{Workers: 2}, 3)
	fx.failStarts(false, 0)
	r.behave("v1", behaviour{neverReady: true}) // worker 1's restart: not ready yet
	fx.proc(pids[1]).die()
	eventually(t, "worker 1 restarted", func() error {
		if n := fx.started(); n < 3 {
			return fmt.Errorf("%d processes started", n)
		}
		return nil
	})
	fx.proc(pids[0]).die()
	eventually(t, "worker 0 left down", func() error {
		if g := r.gen(1); !slices.Equal(g.NotRestarted, []int{0}) {
			return fmt.Errorf("generation 1 = %+v", g)
		}
		return nil
	})
	if g := r.gen(1); g.State != StateActive {
		t.Errorf("generation 1 = %+v; want active, worker 1 on its way", g)
	}
}
