package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/launcherd/launcher/internal/loadgen"
	"github.com/launcherd/launcher/supervisor"
)

// genByNum returns generation n of st, or nil.
func genByNum(st supervisor.Status, n int) *supervisor.GenerationStatus {
	for i := range st.Generations {
		if st.Generations[i].Generation == n {
			return &st.Generations[i]
		}
	}
	return nil
}

// probationLoad runs new-connection and keep-alive clients (no retries)
// against addr until ctx ends, and returns their results.
func probationLoad(ctx context.Context, addr string) func() []*loadgen.Result {
	cfgs := []loadgen.Config{
		{Addr: addr, Mode: loadgen.NewConn, Workers: 4, Duration: time.Minute, MaxRequests: 2_000_000},
		{Addr: addr, Mode: loadgen.KeepAlive, Method: "POST", Workers: 4, Duration: time.Minute, MaxRequests: 2_000_000},
	}
	results := make([]*loadgen.Result, len(cfgs))
	var wg sync.WaitGroup
	for i, cfg := range cfgs {
		wg.Add(1)
		go func() { defer wg.Done(); results[i], _ = loadgen.Run(ctx, cfg) }()
	}
	return func() []*loadgen.Result { wg.Wait(); return results }
}

// TestProbationRollsBackACrash: a new generation that crashes a moment
// after taking traffic, within --probation, sends traffic straight back to
// the previous generation, which stood by (the same process, not a
// restart). The upgrade fails loudly, the metric counts it, and no
// request is lost beyond those the crash itself took: the ones in flight
// on the killed process or queued on its dying listener, all at once.
func TestProbationRollsBackACrash(t *testing.T) {
	// v2's binary, killed 1.5 s after start: it serves "hello from v2"
	// until then.
	addRelease(t, "vcrashlate", filepath.Join(bins.releases, "v2", "hello")+` "$@" & child=$!; sleep 1.5; kill -9 $child; wait $child; exit 1`)
	maddr := freeAddr(t)
	s := startSup(t, "--metrics", maddr, "--probation", "5s")
	v1 := activeGen(s.status())

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wait := probationLoad(ctx, s.addr)
	time.Sleep(300 * time.Millisecond)

	start := time.Now()
	out, errOut, code := s.cli("upgrade", "--wait", "vcrashlate")
	took := time.Since(start)
	if code == 0 || !strings.Contains(errOut, "crashed during its probation") || !strings.Contains(errOut, "generation 1 (v1) serves again") {
		t.Fatalf("upgrade --wait vcrashlate: exit %d, stderr %q; want a failure naming the crash and the rollback\nstdout:\n%s", code, errOut, out)
	}
	if took > 4*time.Second {
		t.Errorf("upgrade --wait returned after %s; the crash came at 1.5s, want the answer then, not at the end of the probation", took)
	}
	rolledBack := time.Now()
	time.Sleep(time.Second)
	cancel()
	results := wait()

	st := s.status()
	if g := activeGen(st); g == nil || g.Generation != v1.Generation || fmt.Sprint(g.PIDs) != fmt.Sprint(v1.PIDs) {
		t.Errorf("active after rollback = %+v; want generation %d with the same pids %v (no restart)", g, v1.Generation, v1.PIDs)
	}
	if g := genByNum(st, 2); g == nil || g.State != supervisor.StateFailed || len(g.PIDs) != 0 {
		t.Errorf("generation 2 = %+v; want failed with no process", g)
	}
	if got := metricValue(t, maddr, `launcher_upgrades_total{result="rolled_back"}`); got != 1 {
		t.Errorf(`upgrades_total{result="rolled_back"} = %v; want 1`, got)
	}
	if got := metricValue(t, maddr, `launcher_upgrades_total{result="success"}`); got != 1 {
		t.Errorf(`upgrades_total{result="success"} = %v; want 1 (the start only)`, got)
	}
	if !strings.Contains(s.log.String(), "ROLLED BACK: generation 2 (vcrashlate) crashed during its probation") {
		t.Errorf("no loud rollback line in the log")
	}

	var first, last time.Time // when failures were seen
	sawV2 := false
	for _, r := range results {
		sawV2 = sawV2 || r.Versions["v2"] > 0
		for rec := range r.Records() {
			if rec.Class.Failed() {
				at := r.Start.Add(rec.Start + rec.Latency)
				if first.IsZero() || at.Before(first) {
					first = at
				}
				if at.After(last) {
					last = at
				}
			}
			// Only v1 answers once the rollback has been reported.
			if !rec.Class.Failed() && rec.Version != "v1" && r.Start.Add(rec.Start).After(rolledBack) {
				t.Errorf("a request started %s after the rollback was answered by %q", r.Start.Add(rec.Start).Sub(rolledBack), rec.Version)
				break
			}
		}
		t.Logf("%s: %d requests, %d failed %v, versions %v", r.Config.Mode, r.Requests, r.Failures(), r.Samples, r.Versions)
	}
	if !sawV2 {
		t.Errorf("no request reached v2 before it crashed: the test proves nothing")
	}
	// What the crash itself takes (requests in flight on the killed
	// process, connections queued on its dying listener) fails at once;
	// nothing fails later, when traffic is back on the standby.
	t.Logf("failures seen over %s, the last %s before the rollback was reported", last.Sub(first), rolledBack.Sub(last))
	if !first.IsZero() && last.Sub(first) > 300*time.Millisecond {
		t.Errorf("failures spread over %s (from %s to %s before the rollback was reported); want them all at the crash",
			last.Sub(first), rolledBack.Sub(first), rolledBack.Sub(last))
	}
	if last.After(rolledBack) {
		t.Errorf("a request failed %s after the rollback was reported", last.Sub(rolledBack))
	}
}

// TestProbationRollbackAndPass: `launcher rollback` during a probation
// sends traffic back to the standby generation at once; a probation that
// runs out retires the previous generation, and `upgrade --wait` says so.
func TestProbationRollbackAndPass(t *testing.T) {
	maddr := freeAddr(t)
	s := startSup(t, "--metrics", maddr, "--probation", "3s")
	v1 := activeGen(s.status())

	if out, errOut, code := s.cli("upgrade", "v2"); code != 0 {
		t.Fatalf("upgrade v2: exit %d: %s%s", code, out, errOut)
	}
	st := s.status()
	if g := genByNum(st, 1); g == nil || g.State != supervisor.StateStandby || fmt.Sprint(g.PIDs) != fmt.Sprint(v1.PIDs) {
		t.Fatalf("generation 1 during the probation = %+v; want standby with pids %v", g, v1.PIDs)
	}
	if g := activeGen(st); g == nil || g.ProbationUntil == nil {
		t.Fatalf("active generation %+v shows no probation", g)
	}
	for range 10 {
		if b := mustGet(t, s.addr, "/"); b != "hello from v2" {
			t.Fatalf("during the probation GET / = %q; want v2 (the standby is steered away from)", b)
		}
	}
	start := time.Now()
	out, errOut, code := s.cli("rollback")
	if code != 0 || !strings.Contains(out, "generation 1 (v1) serves again") {
		t.Fatalf("rollback during probation: exit %d, %q %q", code, out, errOut)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("rollback to the standby generation took %s; want well under 1s (no start)", took)
	}
	if b := mustGet(t, s.addr, "/"); b != "hello from v1" {
		t.Errorf("after rollback GET / = %q; want v1", b)
	}
	if g := activeGen(s.status()); g == nil || fmt.Sprint(g.PIDs) != fmt.Sprint(v1.PIDs) {
		t.Errorf("active after rollback = %+v; want the standby's pids %v", g, v1.PIDs)
	}
	if got := metricValue(t, maddr, `launcher_upgrades_total{result="rolled_back"}`); got != 1 {
		t.Errorf(`upgrades_total{result="rolled_back"} = %v; want 1`, got)
	}

	// Now a probation that passes.
	start = time.Now()
	out, errOut, code = s.cli("upgrade", "--wait", "v3")
	if code != 0 || !strings.Contains(out, "generation 3 passed its 3s probation") || !strings.Contains(out, "drained") {
		t.Fatalf("upgrade --wait v3: exit %d\n%s%s", code, out, errOut)
	}
	if took := time.Since(start); took < 3*time.Second {
		t.Errorf("upgrade --wait returned after %s, before the 3s probation ended", took)
	}
	st = s.status()
	if g := genByNum(st, 1); g == nil || g.State != supervisor.StateExited || len(g.PIDs) != 0 {
		t.Errorf("generation 1 after v3's probation = %+v; want exited", g)
	}
	if got := metricValue(t, maddr, `launcher_upgrades_total{result="success"}`); got != 2 {
		t.Errorf(`upgrades_total{result="success"} = %v; want 2 (start, v3)`, got)
	}
}

// TestUpgradeVerdict: `launcher upgrade --verdict`, the systemd unit's
// reload, exits 0 once the new generation has passed its probation,
// while a long request still drains on the old one, and 1 when it was
// rolled back. The unit's reload was `launcher upgrade` without it, which
// exits 0 once the new generation serves: a release that crashed during
// its probation and was rolled back had `systemctl reload` succeed (a new
// user's trial).
func TestUpgradeVerdict(t *testing.T) {
	t.Parallel()
	addRelease(t, "vcrashsoon", filepath.Join(bins.releases, "v2", "hello")+` "$@" & child=$!; sleep 1; kill -9 $child; wait $child; exit 1`)
	s := startSup(t, "--probation", "2s")
	long := longRequest(s.addr, 6*time.Second)
	time.Sleep(200 * time.Millisecond)

	start := time.Now()
	out, errOut, code := s.cli("upgrade", "--verdict", "v2")
	took := time.Since(start)
	if code != 0 || !strings.Contains(out, "generation 2 passed its 2s probation") {
		t.Fatalf("upgrade --verdict v2: exit %d\n%s%s", code, out, errOut)
	}
	if took < 2*time.Second || took > 5*time.Second {
		t.Errorf("upgrade --verdict returned after %s; want the 2s probation's end, not the 6s request's drain", took)
	}
	if strings.Contains(out, "drained") {
		t.Errorf("upgrade --verdict waited for the drain:\n%s", out)
	}
	if g := genByNum(s.status(), 1); g == nil || g.State != supervisor.StateDraining {
		t.Errorf("generation 1 after the verdict = %+v; want draining its long request", g)
	}

	out, errOut, code = s.cli("upgrade", "--verdict", "vcrashsoon")
	if code != 1 || !strings.Contains(errOut, "crashed during its probation") {
		t.Errorf("upgrade --verdict vcrashsoon: exit %d, stderr %q; want 1 naming the crash\n%s", code, errOut, out)
	}
	if _, errOut, code := s.cli("upgrade", "--verdict", "--wait", "v3"); code != 2 || !strings.Contains(errOut, "--wait and --verdict") {
		t.Errorf("upgrade --verdict --wait: exit %d, %q; want a usage error", code, errOut)
	}
	if r := <-long; r.err != nil || r.body != "hello from v1" {
		t.Errorf("the long request on v1: %q, %v; want it finished", r.body, r.err)
	}

	// A verdict that is not "passed" comes as soon as it is known too, not
	// after the drain that follows it (a new user's recheck: a rollback on
	// request, and a probation a newer upgrade superseded, each kept
	// --verdict for the whole drain of a long request).
	type answer struct {
		out, errOut string
		code        int
		took        time.Duration
	}
	verdict := func(version string) <-chan answer {
		ch := make(chan answer, 1)
		go func() {
			start := time.Now()
			out, errOut, code := s.cli("upgrade", "--verdict", version)
			ch <- answer{out, errOut, code, time.Since(start)}
		}()
		return ch
	}
	inProbation := func(version string) {
		t.Helper()
		eventually(t, 10*time.Second, version+" in its probation", func() error {
			if g := activeGen(s.status()); g == nil || g.Version != version || g.ProbationUntil == nil {
				return fmt.Errorf("active generation %+v", g)
			}
			return nil
		})
	}
	answered := verdict("v3")
	inProbation("v3")
	onV3 := longRequest(s.addr, 4*time.Second)
	time.Sleep(200 * time.Millisecond)
	if out, errOut, code := s.cli("rollback"); code != 0 {
		t.Fatalf("rollback: exit %d\n%s%s", code, out, errOut)
	}
	if a := <-answered; a.code != 1 || !strings.Contains(a.errOut, "upgrade to v3: rolled back: generation 2 (v2) serves again: rollback requested") || a.took > 3500*time.Millisecond {
		t.Errorf("upgrade --verdict v3, rolled back on request: exit %d after %s, stderr %q; want 1 at the rollback, not after the 4s request's drain\n%s", a.code, a.took, a.errOut, a.out)
	}

	onV2 := longRequest(s.addr, 4*time.Second)
	time.Sleep(200 * time.Millisecond)
	answered = verdict("v3")
	inProbation("v3")
	if out, errOut, code := s.cli("upgrade", "v1"); code != 0 {
		t.Fatalf("upgrade v1: exit %d\n%s%s", code, out, errOut)
	}
	if a := <-answered; a.code != 0 || !strings.Contains(a.out, "superseded by a newer upgrade") || a.took > 3500*time.Millisecond {
		t.Errorf("upgrade --verdict v3, its probation superseded: exit %d after %s; want 0 at once, not after the 4s request's drain\n%s%s", a.code, a.took, a.out, a.errOut)
	}
	for _, r := range []result{<-onV3, <-onV2} {
		if r.err != nil {
			t.Errorf("a long request: %v; want it finished", r.err)
		}
	}
}

// TestRollbackPassesOverAStoppedStandbyWorker: one of the standby
// generation's two workers is stopped (kill -STOP) during a probation,
// then `launcher rollback --wait`. The stopped worker is killed and left
// out of the program, traffic goes back to the other at once, the stopped
// one is replaced, and the rollback names it. Before, the steer back
// named its socket: its new connections hung in its accept queue (and a
// steer it carried never came), while the rollback said "serves again"
// (a new user's trial, 4 of 4).
func TestRollbackPassesOverAStoppedStandbyWorker(t *testing.T) {
	s := startSup(t, "--workers", "2", "--probation", "1m")
	v1 := activeGen(s.status())
	if out, errOut, code := s.cli("upgrade", "v2"); code != 0 {
		t.Fatalf("upgrade: exit %d\n%s%s", code, out, errOut)
	}
	stopped := v1.PIDs[1]
	stopProc(t, stopped)
	defer syscall.Kill(stopped, syscall.SIGCONT) // if the supervisor left it stopped
	start := time.Now()
	out, errOut, code := s.cli("rollback", "--wait")
	t.Logf("rollback --wait: exit %d after %s\n%s%s", code, time.Since(start).Round(time.Millisecond), out, errOut)
	if code != 0 || !strings.Contains(out, fmt.Sprintf("(pid %d) of generation %d was stopped", stopped, v1.Generation)) {
		t.Errorf("rollback --wait: exit %d, stdout %q; want exit 0, naming the stopped worker", code, out)
	}
	// Every new connection answered by v1, none waiting on the stopped
	// worker's queue: loadgen's timeout is 2 s.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := loadgen.Run(ctx, loadgen.Config{Addr: s.addr, Mode: loadgen.NewConn, Workers: 4, Duration: 20 * time.Second, MaxRequests: 1000, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 1000 || res.Failures() != 0 || res.Versions["v1"] != 1000 {
		t.Errorf("after the rollback: %d requests, %d failed (%v), versions %v; want 1000, all answered by v1", res.Requests, res.Failures(), res.Samples, res.Versions)
	}
	eventually(t, 10*time.Second, "generation 1 active on 2 workers, the stopped one replaced", func() error {
		g := activeGen(s.status())
		if g == nil || g.Generation != v1.Generation || len(g.PIDs) != 2 || slices.Contains(g.PIDs, stopped) || !slices.Contains(g.PIDs, v1.PIDs[0]) {
			return fmt.Errorf("active = %+v", g)
		}
		return nil
	})
}

// TestStoppedWorkerSteeredAwayFrom: one of the active generation's two
// workers is stopped (kill -STOP, as a debugger would); within about a
// second the supervisor steers new connections away from it, without
// killing it, and every request is answered by the other. Before, half
// of the new connections waited in the stopped worker's queue (a new
// user's trial).
func TestStoppedWorkerSteeredAwayFrom(t *testing.T) {
	s := startSup(t, "--workers", "2")
	g := activeGen(s.status())
	stopped := g.PIDs[0]
	stopProc(t, stopped)
	defer syscall.Kill(stopped, syscall.SIGCONT) // the harness's stop drains it
	time.Sleep(2 * time.Second)                  // the supervisor looks every second
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := loadgen.Run(ctx, loadgen.Config{Addr: s.addr, Mode: loadgen.NewConn, Workers: 4, Duration: 20 * time.Second, MaxRequests: 1000, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 1000 || res.Failures() != 0 {
		t.Errorf("with a worker stopped: %d requests, %d failed (%v); want 1000, none failed", res.Requests, res.Failures(), res.Samples)
	}
	if now := activeGen(s.status()); now == nil || !slices.Contains(now.PIDs, stopped) || !slices.Equal(now.Paused, []int{stopped}) {
		t.Errorf("active = %+v; want the stopped worker %d left alone, and shown paused", now, stopped)
	}
}
