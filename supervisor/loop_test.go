package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/launcherd/launcher/internal/control"
)

// upgrade runs an upgrade to version and returns its steps.
func (r *rig) upgrade(version string, wait bool) (*steps, error) {
	st := &steps{}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_, err := r.s.Upgrade(ctx, version, wait, st.add)
	return st, err
}

func TestUpgradeHandsOverAndDrains(t *testing.T) {
	for _, workers := range []int{1, 3} {
		t.Run(fmt.Sprint(workers, " workers"), func(t *testing.T) {
			fx := newFakeEffects(t)
			r := startRig(t, Config{Workers: workers, Probation: NoProbation}, fx, nil)
			r.waitStarted()
			old := r.gen(1).PIDs
			st, err := r.upgrade("v2", true)
			if err != nil {
				t.Fatal(err)
			}
			want := []Step{StepStarting, StepReady, StepServes, StepDraining, StepDrained, StepReport}
			if got := st.String(); got != fmt.Sprint(want) {
				t.Errorf("steps = %s; want %v", got, want)
			}
			if g := r.gen(2); g.State != StateActive || len(g.PIDs) != workers {
				t.Errorf("generation 2 = %+v; want active with %d workers", g, workers)
			}
			if g := r.gen(1); g.State != StateExited || len(g.PIDs) != 0 {
				t.Errorf("generation 1 = %+v; want exited", g)
			}
			for _, pid := range old {
				got := fx.got(pid)
				if !slices.Contains(got, control.TypeRelease) {
					t.Errorf("old worker %d got %v; want a release", pid, got)
				}
				// Quiesced all at once first, when there are several.
				if q := slices.Contains(got, control.TypeQuiesce); q != (workers > 1) {
					t.Errorf("old worker %d got %v; quiesce %v, want %v", pid, got, q, workers > 1)
				}
			}
			if n := testutil.ToFloat64(r.s.metrics.Upgrades.WithLabelValues("success")); n != 2 {
				t.Errorf("upgrades{success} = %v; want 2 (the start and the upgrade)", n)
			}
		})
	}
}

// TestStartInTurn: with Config.StartInTurn each worker of a new
// generation starts once the one before has said hello (when worker i
// starts, exactly i have), and the generation is activated with all of
// them. Without it they start at once, in one event of the loop; a fake
// worker may say hello while the next ones start, so their order is not
// checked then.
func TestStartInTurn(t *testing.T) {
	for _, inTurn := range []bool{false, true} {
		t.Run(fmt.Sprint(inTurn), func(t *testing.T) {
			fx := newFakeEffects(t)
			r := startRig(t, Config{Workers: 4, Probation: NoProbation, StartInTurn: inTurn}, fx, nil)
			r.waitStarted()
			fx.mu.Lock()
			fx.helloBefore = nil
			fx.mu.Unlock()
			if _, err := r.upgrade("v2", true); err != nil {
				t.Fatal(err)
			}
			if got := len(r.gen(2).PIDs); got != 4 {
				t.Fatalf("generation 2 has %d workers; want 4", got)
			}
			fx.mu.Lock()
			defer fx.mu.Unlock()
			if want := []int{0, 1, 2, 3}; inTurn && !slices.Equal(fx.helloBefore, want) {
				t.Errorf("workers said hello before each start: %v; want %v", fx.helloBefore, want)
			}
		})
	}
}

// TestReadyChecksItself: a worker that checks its own health before its
// ready (control.CapReadyHealth) is taken as ready without a /healthz
// round trip; one of an older library is asked, each of its workers.
func TestReadyChecksItself(t *testing.T) {
	for _, tt := range []struct {
		name  string
		b     behaviour
		asked int
	}{
		{"checks itself", behaviour{}, 0},
		{"an older library", behaviour{adminHealth: true}, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fx := newFakeEffects(t)
			r := startRig(t, Config{Workers: 2, Probation: NoProbation}, fx, nil)
			r.waitStarted()
			r.behave("v2", tt.b)
			fx.mu.Lock()
			fx.healthAsked = 0
			fx.mu.Unlock()
			if _, err := r.upgrade("v2", true); err != nil {
				t.Fatal(err)
			}
			fx.mu.Lock()
			defer fx.mu.Unlock()
			if fx.healthAsked != tt.asked {
				t.Errorf("/healthz asked %d times; want %d", fx.healthAsked, tt.asked)
			}
		})
	}
}

func TestFailedStartLeavesOldServing(t *testing.T) {
	tests := []struct {
		name string
		b    behaviour
		want string
	}{
		{"exits before ready", behaviour{exitBeforeReady: true}, "before ready"},
		{"never ready", behaviour{neverReady: true, stderr: "warming forever"}, "not ready within --ready-timeout 300ms (it listened: its app had not called Ready, or its health check, Options.Health, had not returned); stderr: warming forever"},
		{"fails its own health check", behaviour{unhealthy: true}, "health check: database down"},
		{"fails /healthz (an older library)", behaviour{unhealthy: true, adminHealth: true}, "health check: /healthz answered 503 Service Unavailable: database down"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := newFakeEffects(t)
			r := startRig(t, Config{Workers: 2, ReadyTimeout: 300 * time.Millisecond}, fx, nil)
			r.waitStarted()
			r.behave("v2", tt.b)
			old := r.gen(1).PIDs
			_, err := r.upgrade("v2", false)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "generation 1 (v1) serves on") {
				t.Fatalf("upgrade: %v; want an error with %q, generation 1 serving on", err, tt.want)
			}
			if g := r.gen(1); g.State != StateActive || fmt.Sprint(g.PIDs) != fmt.Sprint(old) {
				t.Errorf("generation 1 = %+v; want active with pids %v", g, old)
			}
			if g := r.gen(2); g.State != StateFailed || len(g.PIDs) != 0 {
				t.Errorf("generation 2 = %+v; want failed, no process", g)
			}
			for _, pid := range old {
				for _, m := range fx.got(pid) {
					if m != control.TypeSteer {
						t.Errorf("old worker %d got %s: it must be left untouched", pid, m)
					}
				}
			}
			if n := testutil.ToFloat64(r.s.metrics.Upgrades.WithLabelValues("failed")); n != 1 {
				t.Errorf("upgrades{failed} = %v; want 1", n)
			}
		})
	}
}

func TestProbationCrashRollsBack(t *testing.T) {
	fx := newFakeEffects(t)
	r := startRig(t, Config{Workers: 2, Probation: 3 * time.Second}, fx, nil)
	r.waitStarted()
	r.behave("v2", behaviour{crashAfter: 200 * time.Millisecond})
	old := r.gen(1).PIDs
	started := time.Now()
	st, err := r.upgrade("v2", true)
	if err == nil || !strings.Contains(err.Error(), "crashed during its probation") || !strings.Contains(err.Error(), "rolled back: generation 1 (v1) serves again") {
		t.Fatalf("upgrade --wait: %v; want a rollback after the crash", err)
	}
	if d := time.Since(started); d > 2*time.Second {
		t.Errorf("rollback after %s; want it at the crash, not at the probation's end", d)
	}
	if want := fmt.Sprint([]Step{StepStarting, StepReady, StepServes, StepStandby, StepRolledBack, StepReport}); st.String() != want {
		t.Errorf("steps = %s; want %s", st, want)
	}
	if g := r.gen(1); g.State != StateActive || fmt.Sprint(g.PIDs) != fmt.Sprint(old) {
		t.Errorf("generation 1 = %+v; want active again with the same pids %v", g, old)
	}
	eventually(t, "generation 2 gone", func() error {
		if g := r.gen(2); g.State != StateFailed || len(g.PIDs) > 0 {
			return fmt.Errorf("generation 2 = %+v; want failed, no process", g)
		}
		return nil
	})
	for _, pid := range old {
		eventually(t, "standby, then resume", func() error {
			if got := fx.got(pid); !slices.Contains(got, control.TypeStandby) || !slices.Contains(got, control.TypeResume) {
				return fmt.Errorf("old worker %d got %v", pid, got)
			}
			return nil
		})
	}
	if n := testutil.ToFloat64(r.s.metrics.Upgrades.WithLabelValues("rolled_back")); n != 1 {
		t.Errorf("upgrades{rolled_back} = %v; want 1", n)
	}
}

func TestRollbackDuringProbationStartsNothing(t *testing.T) {
	fx := newFakeEffects(t)
	r := startRig(t, Config{Workers: 2, Probation: 10 * time.Second}, fx, nil)
	r.waitStarted()
	if _, err := r.upgrade("v2", false); err != nil {
		t.Fatal(err)
	}
	if g := r.gen(1); g.State != StateStandby {
		t.Fatalf("generation 1 = %+v; want standby", g)
	}
	n := fx.started()
	back, err := r.s.Rollback(context.Background(), false, nil)
	if err != nil || back.Step != StepRolledBack || back.Generation != 1 {
		t.Fatalf("rollback = %+v, %v; want generation 1 back", back, err)
	}
	if fx.started() != n {
		t.Errorf("rollback started %d process(es); want none", fx.started()-n)
	}
	if g := r.gen(1); g.State != StateActive {
		t.Errorf("generation 1 = %+v; want active", g)
	}
}

func TestCrashLoopFailsTheGeneration(t *testing.T) {
	fx := newFakeEffects(t)
	fx.behave["v1"] = behaviour{crashAfter: 150 * time.Millisecond}
	r := startRig(t, Config{}, fx, func(r *rig) {
		r.s.loop.restarts = restartPolicy{first: time.Millisecond, max: 4 * time.Millisecond, reset: time.Minute, loop: 4}
	})
	r.waitStarted()
	eventually(t, "crash loop", func() error {
		if g := r.gen(1); g.State != StateFailed {
			return fmt.Errorf("generation 1 = %+v; want failed", g)
		}
		return nil
	})
	// The start and 3 restarts; the 4th crash in a row is a loop.
	if n := fx.started(); n != 4 {
		t.Errorf("%d processes started; want 4", n)
	}
	if g := r.gen(1); g.Restarts != 3 {
		t.Errorf("restarts = %d; want 3", g.Restarts)
	}
}

// TestUpgradeAwayFromAGenerationWithNoWorkerLeft: an upgrade from a
// generation whose workers all crashed and wait for their restart (a
// crash-looping release) ends that generation at once: it has nothing to
// release or drain. (It stayed "draining" for good, and upgrade --wait
// waited forever for its drain.)
func TestUpgradeAwayFromAGenerationWithNoWorkerLeft(t *testing.T) {
	fx := newFakeEffects(t)
	fx.behave["v1"] = behaviour{crashAfter: 100 * time.Millisecond}
	r := startRig(t, Config{Workers: 2, Probation: NoProbation}, fx, func(r *rig) {
		r.s.loop.restarts = restartPolicy{first: time.Minute, max: time.Minute, reset: time.Hour, loop: 10}
	})
	r.waitStarted()
	eventually(t, "generation 1's workers crashed, restarts pending", func() error {
		if g := r.gen(1); g.State != StateActive || len(g.PIDs) != 0 {
			return fmt.Errorf("generation 1 = %+v", g)
		}
		return nil
	})
	st, err := r.upgrade("v2", true)
	if err != nil {
		t.Fatalf("upgrade --wait: %v (steps %s)", err, st)
	}
	if g := r.gen(1); g.State != StateExited {
		t.Errorf("generation 1 = %+v after the upgrade; want exited", g)
	}
	if g := r.gen(2); g.State != StateActive {
		t.Errorf("generation 2 = %+v; want active", g)
	}
}

func TestStopDuringUpgrade(t *testing.T) {
	fx := newFakeEffects(t)
	r := startRig(t, Config{Workers: 2}, fx, nil)
	r.waitStarted()
	r.behave("v2", behaviour{neverReady: true})
	upgraded := make(chan error, 1)
	go func() { _, err := r.upgrade("v2", false); upgraded <- err }()
	eventually(t, "generation 2 starting", func() error {
		if g := r.gen(2); g.State != StateStarting || len(g.PIDs) != 2 {
			return fmt.Errorf("generation 2 = %+v", g)
		}
		return nil
	})
	r.stop()
	if err := <-upgraded; err == nil || !strings.Contains(err.Error(), "aborted") {
		t.Errorf("upgrade: %v; want aborted", err)
	}
	if err := <-r.run; err != nil {
		t.Errorf("Run: %v", err)
	}
	if alive := fx.alive(); len(alive) > 0 {
		t.Errorf("processes %v outlived the supervisor", alive)
	}
	if n := testutil.ToFloat64(r.s.metrics.Upgrades.WithLabelValues("aborted")); n != 1 {
		t.Errorf("upgrades{aborted} = %v; want 1", n)
	}
}

// TestStopDuringRestartBackoff: a restart due after a stop began must not
// start a worker that nothing will ever stop.
func TestStopDuringRestartBackoff(t *testing.T) {
	fx := newFakeEffects(t)
	r := startRig(t, Config{Workers: 2}, fx, func(r *rig) {
		r.s.loop.restarts = restartPolicy{first: 200 * time.Millisecond, max: time.Second, reset: time.Minute, loop: 6}
	})
	r.waitStarted()
	pids := r.gen(1).PIDs
	fx.proc(pids[0]).die() // a crash: a restart is due in 200 ms
	eventually(t, "the crash seen", func() error {
		if g := r.gen(1); len(g.PIDs) != 1 {
			return fmt.Errorf("generation 1 = %+v", g)
		}
		return nil
	})
	r.stop()
	time.Sleep(400 * time.Millisecond) // past the restart's time
	if alive := fx.alive(); len(alive) > 0 {
		t.Errorf("processes %v outlived the supervisor", alive)
	}
	if n := fx.started(); n != 2 {
		t.Errorf("%d processes started; want 2 (no restart after the stop)", n)
	}
}

func TestConcurrentUpgradeRefused(t *testing.T) {
	fx := newFakeEffects(t)
	r := startRig(t, Config{ReadyTimeout: 2 * time.Second}, fx, nil)
	r.waitStarted()
	r.behave("v2", behaviour{neverReady: true})
	upgraded := make(chan error, 1)
	go func() { _, err := r.upgrade("v2", false); upgraded <- err }()
	eventually(t, "generation 2 starting", func() error {
		if g := r.gen(2); g.State != StateStarting {
			return fmt.Errorf("generation 2 = %+v", g)
		}
		return nil
	})
	if _, err := r.upgrade("v3", false); !errors.Is(err, ErrUpgradeInProgress) {
		t.Errorf("second upgrade: %v; want %v", err, ErrUpgradeInProgress)
	}
	if _, err := r.s.Rollback(context.Background(), false, nil); !errors.Is(err, ErrUpgradeInProgress) {
		t.Errorf("rollback: %v; want %v", err, ErrUpgradeInProgress)
	}
	if err := <-upgraded; err == nil {
		t.Error("the never-ready upgrade succeeded")
	}
	if _, err := r.upgrade("v3", false); err != nil {
		t.Errorf("upgrade after the failed one: %v", err)
	}
}

func TestAdoptsStateFile(t *testing.T) {
	fx := newFakeEffects(t)
	fx.adoptable = map[int]string{501: "a", 502: "b", 401: "c"}
	r := startRig(t, Config{Workers: 2, Listen: []string{"127.0.0.1:7"}}, fx, func(r *rig) {
		fx.saved = &savedState{Supervisor: 9, Listen: []string{"127.0.0.1:7"}, Active: 3, LastGen: 3,
			Gens: []savedGen{
				{Num: 2, Release: savedRelease{Version: "v1", Path: r.path("v1")}, State: StateStandby,
					Workers: []savedWorker{{Index: 0, PID: 401, Token: "c", Ready: true}}},
				{Num: 3, Release: savedRelease{Version: "v2", Path: r.path("v2")}, State: StateActive, Restarts: 4,
					Workers: []savedWorker{{Index: 0, PID: 501, Token: "a", Ready: true}, {Index: 1, PID: 502, Token: "b", Ready: true}}},
			},
			Group:   []string{"c", "a", "b"},
			History: []savedRelease{{Version: "v1", Path: r.path("v1")}, {Version: "v2", Path: r.path("v2")}},
			Reports: []savedReport{{UpgradeReport: UpgradeReport{Generation: 3, Version: "v2", From: 2, FromVersion: "v1", Verdict: VerdictRolledBack}}},
		}
	})
	r.waitStarted()
	// The upgrade reports survive the supervisor's death.
	if h := r.status().History; len(h) != 1 || h[0].Generation != 3 || h[0].Verdict != VerdictRolledBack {
		t.Errorf("history after adoption = %+v; want the state file's report", h)
	}
	if g := r.gen(3); g.State != StateActive || fmt.Sprint(g.PIDs) != "[501 502]" || g.Restarts != 4 {
		t.Errorf("generation 3 = %+v; want active with the adopted pids and the state file's 4 restarts", g)
	}
	eventually(t, "the standby generation retired", func() error {
		if g := r.gen(2); g.State != StateExited {
			return fmt.Errorf("generation 2 = %+v; want exited", g)
		}
		return nil
	})
	if got := fx.got(401); !slices.Contains(got, control.TypeRelease) {
		t.Errorf("the standby worker got %v; want a release", got)
	}
	if fx.started() != 3 {
		t.Errorf("%d processes; want the 3 adopted only", fx.started())
	}
	// Rollback goes back to v1, as the state file's history says.
	if _, err := r.s.Rollback(context.Background(), true, nil); err != nil {
		t.Fatal(err)
	}
	if g := r.gen(4); g.State != StateActive || g.Version != "v1" {
		t.Errorf("generation 4 = %+v; want v1 active (numbers go on from the state file's)", g)
	}
	eventually(t, "both reports in the state file", func() error {
		fx.mu.Lock()
		defer fx.mu.Unlock()
		if n := len(fx.state.Reports); n != 2 {
			return fmt.Errorf("%d reports in the state file", n)
		}
		return nil
	})
}

// TestRepliesMatchedByID: two requests in flight to one worker, answered
// in the other order, each get their own reply — by ID from a version 2
// worker, by type from a version 1 one.
func TestRepliesMatchedByID(t *testing.T) {
	for _, protocol := range []int{1, 2} {
		t.Run(fmt.Sprint("protocol ", protocol), func(t *testing.T) {
			fx := newFakeEffects(t)
			fx.behave["v1"] = behaviour{reverse: true, protocol: protocol}
			r := startRig(t, Config{}, fx, nil)
			r.waitStarted()
			type answer struct {
				typ string
				err error
			}
			answers := make(chan answer, 2)
			ask(context.Background(), r.s.loop, func(l *loop) bool {
				w := l.active.workers[0]
				for _, m := range []control.Message{{Type: control.TypeQuiesce, SettleMS: 1}, {Type: control.TypeSteer, Slots: []int{0}}} {
					want := map[string]string{control.TypeQuiesce: control.TypeQuiesced, control.TypeSteer: control.TypeSteered}[m.Type]
					l.request(w, m, want, 5*time.Second, func(l *loop, reply control.Message, err error) {
						answers <- answer{reply.Type, err}
					})
				}
				return true
			})
			for range 2 {
				a := <-answers
				if a.err != nil {
					t.Errorf("request: %v", a.err)
				}
			}
		})
	}
}

// TestStopAnswersTheCaller: `launcher stop` gets its reply before the
// supervisor exits, every time.
func TestStopAnswersTheCaller(t *testing.T) {
	for i := range 20 {
		fx := newFakeEffects(t)
		r := startRig(t, Config{}, fx, nil)
		r.waitStarted()
		m, err := Call(context.Background(), r.dir, "stop", "", false, nil)
		if err != nil || !m.OK {
			t.Fatalf("stop %d: %+v, %v; want its result", i, m, err)
		}
		if err := <-r.run; err != nil {
			t.Fatalf("Run: %v", err)
		}
	}
}

// TestOneQuiesceWaitsForHandshakes checks that of an old generation's
// quiesces exactly one waits for the handshakes in flight on the port
// (they are the same for all its workers), and that the releases after
// them do not wait again; a single worker, which is not quiesced, and
// workers of a library that does not know of handshakes are told nothing.
func TestOneQuiesceWaitsForHandshakes(t *testing.T) {
	tests := []struct {
		name        string
		workers     int
		old         behaviour // of generation 1's workers
		waiting     int       // quiesces without HandshakesDone
		releaseDone bool      // releases with HandshakesDone
	}{
		{"3 workers", 3, behaviour{}, 1, true},
		{"1 worker", 1, behaviour{}, 0, false},
		{"a library without handshakes", 3, behaviour{noHandshakes: true}, 3, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := newFakeEffects(t)
			fx.behave["v1"] = tt.old
			r := startRig(t, Config{Workers: tt.workers, Probation: NoProbation}, fx, nil)
			r.waitStarted()
			old := r.gen(1).PIDs
			if _, err := r.upgrade("v2", true); err != nil {
				t.Fatal(err)
			}
			waiting := 0
			for _, pid := range old {
				got := fx.gotHandshakesDone(pid)
				for _, m := range got {
					switch m {
					case "quiesce:false":
						waiting++
					case "release:true", "release:false":
						if done := m == "release:true"; done != tt.releaseDone {
							t.Errorf("old worker %d got %v; want releases with HandshakesDone %v", pid, got, tt.releaseDone)
						}
					}
				}
			}
			if waiting != tt.waiting {
				t.Errorf("%d quiesces wait for handshakes; want %d", waiting, tt.waiting)
			}
		})
	}
}

// TestSettleByLibrary: the accept queue's settle is short for workers
// that wait for the handshakes in flight themselves, and one poll for a
// quiesced worker's release; a worker of an older library keeps the long
// one, and --settle overrides both.
func TestSettleByLibrary(t *testing.T) {
	tests := []struct {
		name    string
		workers int
		settle  time.Duration
		old     behaviour
		want    []string // per old worker, in order
	}{
		{"1 worker", 1, 0, behaviour{}, []string{"release:2ms"}},
		{"3 workers", 3, 0, behaviour{}, []string{"quiesce:2ms", "release:1ms quick"}},
		{"a library without handshakes", 1, 0, behaviour{noHandshakes: true}, []string{"release:50ms"}},
		{"--settle", 1, 20 * time.Millisecond, behaviour{}, []string{"release:20ms"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := newFakeEffects(t)
			fx.behave["v1"] = tt.old
			r := startRig(t, Config{Workers: tt.workers, Probation: NoProbation, Settle: tt.settle}, fx, nil)
			r.waitStarted()
			old := r.gen(1).PIDs
			if _, err := r.upgrade("v2", true); err != nil {
				t.Fatal(err)
			}
			for _, pid := range old {
				if got := fx.gotSettles(pid); !slices.Equal(got, tt.want) {
					t.Errorf("old worker %d got %v; want %v", pid, got, tt.want)
				}
			}
		})
	}
}

// TestStartRefusedWhereSomethingListens: a second supervisor on the same
// port (another state dir) would share the reuseport group and steer
// the first one's traffic to itself: it is refused, starting nothing.
func TestStartRefusedWhereSomethingListens(t *testing.T) {
	fx := newFakeEffects(t)
	fx.taken = "127.0.0.1:1"
	r := startRig(t, Config{}, fx, nil)
	select {
	case err := <-r.run:
		if err == nil || !strings.Contains(err.Error(), "something already listens there") {
			t.Errorf("Run: %v; want refused", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
	if n := fx.started(); n != 0 {
		t.Errorf("%d processes started; want none", n)
	}
}

// TestReleasesUnderStablePrograms: the old workers' closes go in runs
// under one program each, which names only sockets that no close of the
// run moves, checked against a model of the kernel's group at every
// close, and keeps at least half of the new sockets (never one of many
// alone). The switch steers once (the last new worker's health check
// used to steer a second time, a round trip the first release waited
// for); with 2 old workers or more, a run's program comes before the
// first close, and one steer between their first close and their last
// for these numbers (two runs). Before runs, each close but the first had
// a steer of its own.
func TestReleasesUnderStablePrograms(t *testing.T) {
	for _, workers := range []int{1, 2, 3, 4, 6, 8} {
		t.Run(fmt.Sprintf("%d workers", workers), func(t *testing.T) {
			fx := newFakeEffects(t)
			fx.kernel = &kernelGroup{}
			r := startRig(t, Config{Workers: workers, Probation: NoProbation}, fx, nil)
			r.waitStarted()
			for _, v := range []string{"v2", "v1", "v2"} {
				// The steer to every slot after the last close may
				// come after the upgrade's end: let it.
				before := fx.kernelSettled()
				steersBefore := len(fx.steered())
				if _, err := r.upgrade(v, true); err != nil {
					t.Fatal(err)
				}
				for _, slots := range fx.steered()[steersBefore:] {
					if want := max(1, workers/2); len(slots) < want {
						t.Errorf("upgrade to %s: a program of %d socket(s) %v; want at least %d of the %d new ones", v, len(slots), slots, want, workers)
					}
				}
				events := fx.kernelEvents()[before:]
				if got, want := steersBeforeCloses(events), 1+min(workers-1, 1); got != want {
					t.Errorf("upgrade to %s: %d steers before the old workers' first close (%v); want %d", v, got, events, want)
				}
				if got, want := steersAmidCloses(events), min(workers-1, 1); got != want {
					t.Errorf("upgrade to %s: %d steers amid the old workers' closes (%v); want %d", v, got, events, want)
				}
			}
			for _, v := range fx.kernelViolations() {
				t.Error(v)
			}
		})
	}
}

// TestListenGrantedWithTheWelcome: a new worker of a library that listens
// at its welcome (control.CapWelcomeGrant) is granted its listen with the
// welcome, a round trip fewer on its way to serving, where a steering
// program keeps its sockets from connections until they are ready: an
// upgrade's under --handover steer. The first generation (no program yet),
// --handover close and an older library ask as before, and with several
// workers starting at once the grants stay one at a time (the kernel
// model checks every slot).
func TestListenGrantedWithTheWelcome(t *testing.T) {
	tests := []struct {
		name     string
		workers  int
		handover string
		lib      behaviour // of v2
		// atWelcome: how many of the new workers listened at their
		// welcome: exactly, or at least 1 when several start at once.
		atWelcome int
	}{
		{"this library", 1, HandoverSteer, behaviour{}, 1},
		{"an older library", 1, HandoverSteer, behaviour{askListen: true}, 0},
		{"--handover close", 1, HandoverClose, behaviour{}, 0},
		{"4 workers", 4, HandoverSteer, behaviour{}, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := newFakeEffects(t)
			fx.kernel = &kernelGroup{}
			fx.behave["v2"] = tt.lib
			r := startRig(t, Config{Workers: tt.workers, Probation: NoProbation, Handover: tt.handover}, fx, nil)
			r.waitStarted()
			countAtWelcome := func(pids []int) int {
				n := 0
				for _, pid := range pids {
					if slices.Contains(fx.traced(pid), "listened at welcome") {
						n++
					}
				}
				return n
			}
			if n := countAtWelcome(r.gen(1).PIDs); n != 0 {
				t.Errorf("%d worker(s) of the first generation listened at their welcome; want none (no program in place)", n)
			}
			if _, err := r.upgrade("v2", true); err != nil {
				t.Fatal(err)
			}
			n := countAtWelcome(r.gen(2).PIDs)
			switch {
			case tt.atWelcome >= 0 && n != tt.atWelcome:
				t.Errorf("%d new worker(s) listened at their welcome; want %d", n, tt.atWelcome)
			case tt.atWelcome < 0 && n < 1:
				t.Errorf("no new worker listened at its welcome; want at least the first")
			}
			for _, v := range fx.kernelViolations() {
				t.Error(v)
			}
		})
	}
}

// A supervisor killed during an upgrade left no report of it: the one that
// adopts the workers files one, so that status's history does not skip
// the upgrade (a new user's trial: 11 kills during upgrades, none of them
// in the history). The new generation of a probation cut short passed
// it; one still starting failed.
func TestAdoptionFilesTheReportsOfUpgradesItCut(t *testing.T) {
	fx := newFakeEffects(t)
	fx.adoptable = map[int]string{501: "a", 401: "c", 601: "d"}
	r := startRig(t, Config{Workers: 1, Listen: []string{"127.0.0.1:7"}}, fx, func(r *rig) {
		fx.saved = &savedState{Supervisor: 9, Listen: []string{"127.0.0.1:7"}, Active: 3, LastGen: 4,
			Gens: []savedGen{
				{Num: 2, Release: savedRelease{Version: "v1", Path: r.path("v1")}, State: StateStandby,
					Workers: []savedWorker{{Index: 0, PID: 401, Token: "c", Ready: true}}},
				{Num: 3, Release: savedRelease{Version: "v2", Path: r.path("v2")}, State: StateActive,
					Workers: []savedWorker{{Index: 0, PID: 501, Token: "a", Ready: true}}},
				{Num: 4, Release: savedRelease{Version: "v3", Path: r.path("v3")}, State: StateStarting,
					Workers: []savedWorker{{Index: 0, PID: 601, Token: "d"}}},
			},
			Group:   []string{"c", "a"},
			History: []savedRelease{{Version: "v1", Path: r.path("v1")}, {Version: "v2", Path: r.path("v2")}},
		}
	})
	r.waitStarted()
	eventually(t, "the reports of the cut upgrades", func() error {
		h := r.status().History
		if len(h) != 2 {
			return fmt.Errorf("history %+v; want 2 reports", h)
		}
		return nil
	})
	h := r.status().History
	failed, passed := h[0], h[1]
	if failed.Generation != 4 || failed.Verdict != VerdictFailed || !failed.Adopted || failed.From != 3 {
		t.Errorf("report %+v; want generation 4 failed from 3, adopted", failed)
	}
	if passed.Generation != 3 || passed.Verdict != VerdictPassed || !passed.Adopted || passed.From != 2 || !strings.Contains(passed.Reason, "probation was cut short") {
		t.Errorf("report %+v; want generation 3 passed from 2, its probation cut short, adopted", passed)
	}
	if n := testutil.ToFloat64(r.s.metrics.Upgrades.WithLabelValues("success")); n != 1 {
		t.Errorf("launcher_upgrades_total{result=\"success\"} = %v; want 1", n)
	}
}

// A new worker that is not ready by --ready-timeout is named with what
// the supervisor can tell of where it hangs: stopped (SIGSTOP) before it
// was ready, or listening but never reporting ready (its app hangs before
// Ready, or in its health check). Both read only "not ready" (new users'
// trials: a stopped worker; a health check with no timeout).
func TestReadyTimeoutSaysWhereTheWorkerHangs(t *testing.T) {
	for _, tt := range []struct {
		name    string
		onStart func(*fakeProc)
		want    string
	}{
		{"stopped", func(p *fakeProc) { p.stop() }, "(it " + whyStopped + ")"},
		{"listened", nil, "(it listened: its app had not called Ready, or its health check, Options.Health, had not returned)"},
		{"no hello", nil, "(it never said hello: its process runs, but not the launcher's library, or not yet)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fx := newFakeEffects(t)
			r := startRig(t, Config{Workers: 1, ReadyTimeout: 300 * time.Millisecond}, fx, nil)
			r.waitStarted()
			r.behave("v2", behaviour{neverReady: true, noHello: tt.name == "no hello"})
			fx.onStart = tt.onStart
			_, err := r.upgrade("v2", true)
			if err == nil || !strings.Contains(err.Error(), "not ready within --ready-timeout 300ms "+tt.want) {
				t.Errorf("upgrade: %v; want the ready timeout saying %q", err, tt.want)
			}
		})
	}
}

// A rollback that starts the previous release anew and fails says
// "rollback to", not "upgrade to" (a new user's trial).
func TestFailedRollbackSaysRollback(t *testing.T) {
	fx := newFakeEffects(t)
	r := startRig(t, Config{Workers: 1, Probation: NoProbation, ReadyTimeout: 300 * time.Millisecond}, fx, nil)
	r.waitStarted()
	if _, err := r.upgrade("v2", true); err != nil {
		t.Fatal(err)
	}
	r.behave("v1", behaviour{neverReady: true})
	_, err := r.s.Rollback(context.Background(), true, nil)
	if err == nil || !strings.HasPrefix(err.Error(), "rollback to v1: ") || !strings.Contains(err.Error(), "generation 2 (v2) serves on") {
		t.Errorf("rollback: %v; want \"rollback to v1: …; generation 2 (v2) serves on\"", err)
	}
}

// A stop asked while the first generation starts, or while a new
// supervisor adopts a killed one's workers, is a stop: Run returns nil
// (the start exits 0), not the start's failure. Before, `launcher stop`
// then made `launcher start` exit 1, and systemd's Restart=on-failure
// started the service again that the operator had just stopped.
func TestStopDuringStartIsAStop(t *testing.T) {
	t.Run("first start", func(t *testing.T) {
		fx := newFakeEffects(t)
		fx.behave["v1"] = behaviour{neverReady: true}
		r := startRig(t, Config{Workers: 1}, fx, nil)
		eventually(t, "generation 1 starting", func() error {
			st, err := r.s.Status(context.Background())
			if err != nil || len(st.Generations) == 0 || len(st.Generations[0].PIDs) == 0 {
				return fmt.Errorf("status %+v, %v", st, err)
			}
			return nil
		})
		r.stop()
		if err := <-r.run; err != nil {
			t.Errorf("Run after a stop during the first start: %v; want nil", err)
		}
		if alive := fx.alive(); len(alive) > 0 {
			t.Errorf("processes %v outlived the supervisor", alive)
		}
	})
	t.Run("adoption", func(t *testing.T) {
		fx := newFakeEffects(t)
		// Worker 777 is alive but never dials again (stopped): the
		// adoption waits for it.
		fx.adoptable = map[int]string{501: "a", 777: "b"}
		fx.adoptSilent = map[int]bool{777: true}
		r := startRig(t, Config{Workers: 2, Listen: []string{"127.0.0.1:7"}}, fx, func(r *rig) {
			fx.saved = &savedState{Supervisor: 9, Listen: []string{"127.0.0.1:7"}, Active: 1, LastGen: 1,
				Gens: []savedGen{{Num: 1, Release: savedRelease{Version: "v1", Path: r.path("v1")}, State: StateActive,
					Workers: []savedWorker{{Index: 0, PID: 501, Token: "a", Ready: true}, {Index: 1, PID: 777, Token: "b", Ready: true}}}},
				Group: []string{"a", "b"},
			}
		})
		eventually(t, "adopting", func() error {
			if !strings.Contains(r.log.String(), "worker rejoined") {
				return errors.New("worker 501 not rejoined yet")
			}
			return nil
		})
		r.stop()
		if err := <-r.run; err != nil {
			t.Errorf("Run after a stop during an adoption: %v; want nil", err)
		}
	})
}

// An upgrade asked for while the first generation starts (a SIGHUP
// after `current` was repointed, or launcher upgrade without an
// argument) resolves COMMAND when it is asked, not once the start is
// over: by then --current had been repointed to the first generation's
// release, and the queued upgrade restarted that release instead of the
// one the operator had pointed at (a new user's trial, 3 of 3).
func TestUpgradeDuringTheFirstStartResolvesWhenAsked(t *testing.T) {
	fx := newFakeEffects(t)
	fx.behave["v1"] = behaviour{readyAfter: 500 * time.Millisecond}
	r, current := startRigOnCurrent(t, fx)
	r.waitFirstStarting()
	repointLink(t, current, filepath.Join(r.rels, "v2"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sum, err := r.s.Upgrade(ctx, "", false, nil)
	if err != nil {
		t.Fatalf("upgrade asked during the first start: %v", err)
	}
	if sum.Version != "v2" {
		t.Errorf("the upgrade asked during the first start went to %s; want v2, where current pointed when it was asked", sum.Version)
	}
	eventually(t, "current -> v2", func() error {
		if got, _ := os.Readlink(current); got != filepath.Join(r.rels, "v2") {
			return fmt.Errorf("current -> %s", got)
		}
		return nil
	})
}

// Upgrades asked for while the first generation starts go in the order
// asked: the first starts once the first generation serves, the later
// ones are refused as in progress, naming what they asked for. Before,
// every caller waited for the start and then raced to post, and the last
// one asked won (a new user's recheck, 7 of 7).
func TestUpgradesAskedDuringTheFirstStartKeepTheirOrder(t *testing.T) {
	fx := newFakeEffects(t)
	fx.behave["v1"] = behaviour{readyAfter: 700 * time.Millisecond}
	r := startRig(t, Config{Workers: 1, Probation: NoProbation}, fx, nil)
	type result struct {
		p   Progress
		err error
	}
	upgrade := func(v string) chan result {
		done := make(chan result, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			p, err := r.s.Upgrade(ctx, v, false, nil)
			done <- result{p, err}
		}()
		return done
	}
	first := upgrade("v2")
	time.Sleep(150 * time.Millisecond) // asked in this order, long before the start is over
	second := upgrade("v3")
	eventually(t, "both waiting, named in status", func() error {
		if st := r.status(); !slices.Equal(st.Waiting, []string{"v2", "v3"}) {
			return fmt.Errorf("waiting %v; want [v2 v3]", st.Waiting)
		}
		return nil
	})
	if res := <-first; res.err != nil || res.p.Version != "v2" {
		t.Errorf("the upgrade asked first: %+v, %v; want v2 serving", res.p, res.err)
	}
	// Its report counts from the command, not from the end of its wait
	// (a new user's recheck: "command → ready 2006 ms" of an upgrade
	// whose ready came 3.7 s after the command).
	eventually(t, "the report", func() error {
		h := r.status().History
		if len(h) != 1 || h[0].Generation != 2 {
			return fmt.Errorf("history %+v", h)
		}
		if h[0].ReadyAfter < 400*time.Millisecond {
			return fmt.Errorf("ready %s after the command; want the wait for the first generation in it (over 400 ms)", h[0].ReadyAfter)
		}
		return nil
	})
	if res := <-second; res.err == nil || !errors.Is(res.err, ErrUpgradeInProgress) || !strings.Contains(res.err.Error(), "upgrade to v3") {
		t.Errorf("the upgrade asked second: %v; want v3 refused as in progress", res.err)
	}
}

// An upgrade the killed supervisor was starting whose workers had all
// exited before a new supervisor adopted what was left is reported as
// failed too; before, it got no report, and status named the upgrade
// before it as the last (a new user's recheck, 2 of 2).
func TestAdoptionReportsAStartWhoseWorkersAreGone(t *testing.T) {
	fx := newFakeEffects(t)
	fx.adoptable = map[int]string{501: "a"} // 601, generation 4's, is gone
	r := startRig(t, Config{Workers: 1, Listen: []string{"127.0.0.1:7"}}, fx, func(r *rig) {
		fx.saved = savedUpgradeStarting(r)
	})
	r.waitStarted()
	h := r.status().History
	if len(h) != 1 {
		t.Fatalf("history %+v; want the cut upgrade's report", h)
	}
	if rep := h[0]; rep.Generation != 4 || rep.Version != "v3" || rep.Verdict != VerdictFailed || !rep.Adopted || rep.From != 3 || !strings.Contains(rep.Reason, "its workers had exited") {
		t.Errorf("report %+v; want generation 4 (v3) failed from 3, adopted, its workers gone", rep)
	}
	if n := testutil.ToFloat64(r.s.metrics.Upgrades.WithLabelValues("aborted")); n != 1 {
		t.Errorf("launcher_upgrades_total{result=\"aborted\"} = %v; want 1", n)
	}
}

// An adopted worker's exit, whose status is unknown, can reach the loop
// before the drain's end it reported just before (the pidfd and the
// connection race): its exit is judged once the connection has closed,
// and a clean drain is not read as a death. Before, a stop said "died
// during its drain: what it still served was cut" of a drain that cut
// nothing (a new user's recheck, 1 of 12).
func TestAdoptedWorkersDrainReadBeforeItsExit(t *testing.T) {
	fx := newFakeEffects(t)
	fx.adoptable = map[int]string{501: "a"}
	fx.adoptedExits = true
	r := startRig(t, Config{Workers: 1, Listen: []string{"127.0.0.1:7"}}, fx, func(r *rig) {
		fx.saved = &savedState{Supervisor: 9, Listen: []string{"127.0.0.1:7"}, Active: 1, LastGen: 1,
			Gens: []savedGen{{Num: 1, Release: savedRelease{Version: "v1", Path: r.path("v1")}, State: StateActive,
				Workers: []savedWorker{{Index: 0, PID: 501, Token: "a", Ready: true}}}},
			Group: []string{"a"},
		}
	})
	r.waitStarted()
	var steps []string
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.s.stopAndWait(ctx, func(p Progress) { steps = append(steps, p.String()) }); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(strings.Join(steps, "\n"), "died during its drain") || strings.Contains(r.log.String(), "worker died during its drain") {
		t.Errorf("the stop of an adopted worker that drained clean:\n%s\nwant no death during its drain", strings.Join(steps, "\n"))
	}
}

// A worker that dies while its release is still unanswered (killed during
// its drain) is named in its generation's drain: its exit failed the
// pending release first, whose callback ended the drain, and the death
// was recorded only after "generation drained" (a CI run of
// e2e/TestWorkerDeathsOutsideActiveAreReported).
func TestDeathWithAReleasePendingIsNamedInTheDrain(t *testing.T) {
	fx := newFakeEffects(t)
	fx.behave["v1"] = behaviour{dieAtRelease: true}
	r := startRig(t, Config{Workers: 1, Probation: NoProbation}, fx, nil)
	r.waitStarted()
	pid := r.gen(1).PIDs[0]
	st, err := r.upgrade("v2", true)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("worker 0 (pid %d) died during its drain (exit status 1): what it still served was cut", pid)
	if !strings.Contains(st.text(), want) {
		t.Errorf("upgrade --wait's steps:\n%s\nwant the drain to name %q", st.text(), want)
	}
	if log := r.log.String(); !strings.Contains(log, `msg="generation gone: not every worker drained"`) || !strings.Contains(log, "deaths=1") {
		t.Errorf("the log does not say generation 1's drain lost a worker:\n%s", log)
	}
}
