package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/launcherd/launcher/supervisor"
)

// TestSupervisorKilledWorkersServeOnAndAreAdopted: SIGKILL the supervisor
// under load and with a long request in flight. The workers serve on
// without it, not one request fails; a `launcher start` with another
// --listen is refused and changes nothing; one on the same state dir and
// address adopts the running generation (same pids, their logs reach the
// new supervisor, their metrics too) and can upgrade it.
func TestSupervisorKilledWorkersServeOnAndAreAdopted(t *testing.T) {
	maddr := freeAddr(t)
	// No probation: the upgrade after the adoption drains generation 1 at
	// once, and upgrade --wait returns when it is gone, not 5 s later.
	flags := []string{"--workers", "2", "--metrics", maddr, "--probation", "0"}
	s := startSup(t, flags...)
	v1 := activeGen(s.status())

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wait := probationLoad(ctx, s.addr)
	long := longRequest(s.addr, 2*time.Second)
	s.waitForInflight(1, 1)

	s.Kill()
	// No supervisor: the workers serve on.
	for range 20 {
		if b := mustGet(t, s.addr, "/"); b != "hello from v1" {
			t.Fatalf("without a supervisor GET / = %q", b)
		}
	}
	if _, err := os.Stat(filepath.Join(s.stateDir, "state.json")); err != nil {
		t.Fatalf("state file: %v", err)
	}
	// status says what is left and how to take it back.
	_, errOut, code := runCLI(t, "status", "--state-dir", s.stateDir)
	wantPIDs := fmt.Sprintf("pids %d, %d", v1.PIDs[0], v1.PIDs[1])
	if code != 1 || !strings.Contains(errOut, "still serve ("+wantPIDs+")") || !strings.Contains(errOut, "adopts them") {
		t.Errorf("status without the supervisor: exit %d, %q; want 1, the serving workers (%s) and how to adopt them", code, errOut, wantPIDs)
	}

	// Another address: refused, nothing changes.
	_, errOut, code = runCLI(t, "start", "--listen", freeAddr(t), "--state-dir", s.stateDir, "--releases", bins.releases,
		"--", filepath.Join(bins.releases, "v1", "hello"))
	if code == 0 || !strings.Contains(errOut, "workers of a killed supervisor still serve") {
		t.Errorf("start with another --listen: exit %d, %q; want refused", code, errOut)
	}
	if b := mustGet(t, s.addr, "/"); b != "hello from v1" {
		t.Fatalf("after the refused start GET / = %q", b)
	}

	s2 := startSupAt(t, s.addr, s.stateDir, flags...)
	st := s2.status()
	g := activeGen(st)
	if st.PID == 0 || g == nil || g.Generation != 1 || fmt.Sprint(g.PIDs) != fmt.Sprint(v1.PIDs) {
		t.Fatalf("after adoption: supervisor %d, active %+v; want generation 1 with pids %v", st.PID, g, v1.PIDs)
	}
	if r := <-long; r.err != nil || r.body != "hello from v1" {
		t.Errorf("long request across the supervisor's death: %q, %v", r.body, r.err)
	}
	eventually(t, 5*time.Second, "adopted workers log to the new supervisor", func() error {
		if !strings.Contains(s2.log.String(), `msg="rejoined a supervisor"`) {
			return fmt.Errorf("no worker line in the new supervisor's log")
		}
		return nil
	})
	if v := metricValue(t, maddr, `launcher_generations{state="active"}`); v != 1 {
		t.Errorf("launcher_generations{state=active} = %v after adoption", v)
	}
	if b := string(scrape(t, maddr)); !strings.Contains(b, `launcher_inflight_requests{generation="1",version="v1",worker="0"}`) {
		t.Errorf("the adopted workers' series are missing from /metrics")
	}

	if out, errOut, code := s2.cli("upgrade", "--wait", "v2"); code != 0 {
		t.Fatalf("upgrade after adoption: exit %d\n%s%s", code, out, errOut)
	}
	s2.checkOnlyGeneration(2, v1.PIDs)
	time.Sleep(200 * time.Millisecond)
	cancel()
	for _, r := range wait() {
		t.Logf("%s: %d requests, %d failed %v, versions %v", r.Config.Mode, r.Requests, r.Failures(), r.Samples, r.Versions)
		if r.Failures() > 0 {
			t.Errorf("%s: %d requests failed across the supervisor's death, the adoption and an upgrade", r.Config.Mode, r.Failures())
		}
		if r.Versions["v2"] == 0 {
			t.Errorf("%s: no answer from v2", r.Config.Mode)
		}
	}
	if _, err := supervisor.GetStatus(context.Background(), s2.stateDir); err != nil {
		t.Fatal(err)
	}
}

// TestAdoptionRestartsWorkersLostMeanwhile: a worker that dies while no
// supervisor runs is started again once one adopts the rest, and steering
// stays right: every request is answered.
func TestAdoptionRestartsWorkersLostMeanwhile(t *testing.T) {
	// Parallel (see TestMetricsPerGeneration): it mostly waits for its
	// processes to start and stop, on a port and state dir of its own.
	t.Parallel()
	s := startSup(t, "--workers", "3")
	before := activeGen(s.status()).PIDs
	s.Kill()
	// The middle one: the kernel moves the last socket into its slot.
	if err := syscall.Kill(before[1], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "worker gone", func() error {
		if alive(before[1]) {
			return fmt.Errorf("pid %d alive", before[1])
		}
		return nil
	})
	s2 := startSupAt(t, s.addr, s.stateDir, "--workers", "3")
	eventually(t, 10*time.Second, "three workers again", func() error {
		g := activeGen(s2.status())
		if g == nil || g.Generation != 1 || len(g.PIDs) != 3 {
			return fmt.Errorf("active %+v", g)
		}
		return nil
	})
	g := activeGen(s2.status())
	for _, p := range []int{before[0], before[2]} {
		if !slices.Contains(g.PIDs, p) {
			t.Errorf("adopted pid %d missing from %v", p, g.PIDs)
		}
	}
	for range 50 {
		if b := mustGet(t, s.addr, "/"); b != "hello from v1" {
			t.Fatalf("GET / = %q", b)
		}
	}
	// A clean stop of the adopting supervisor leaves what a stop of the
	// first would have: nothing, as the first made the state dir (it left
	// admin/ and launcher.lock behind).
	if _, errOut, code := s2.cli("stop"); code != 0 {
		t.Fatalf("stop: exit %d: %s", code, errOut)
	}
	eventually(t, 10*time.Second, "the state dir removed at the stop", func() error {
		if ents, err := os.ReadDir(s.stateDir); err == nil {
			return fmt.Errorf("%s holds %d entries", s.stateDir, len(ents))
		}
		return nil
	})
}

// TestAdoptionPromotesAReadyFirstGeneration: a supervisor killed after its
// first generation got ready but before its state file said so (edited
// here into that state) leaves a "starting" generation and none active.
// Its workers rejoin ready, so the next supervisor adopts them as the
// active generation instead of stopping them.
func TestAdoptionPromotesAReadyFirstGeneration(t *testing.T) {
	// Parallel (see TestMetricsPerGeneration): it mostly waits for its
	// processes to start and stop, on a port and state dir of its own.
	t.Parallel()
	s := startSup(t, "--workers", "2")
	before := activeGen(s.status()).PIDs
	s.Kill()
	path := filepath.Join(s.stateDir, "state.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(b), `"state":"active"`, `"state":"starting"`, 1)
	edited = strings.Replace(edited, `"active_generation":1`, `"active_generation":0`, 1)
	if edited == string(b) || !strings.Contains(edited, `"active_generation":0`) {
		t.Fatalf("state file not in the expected form:\n%s", b)
	}
	if err := os.WriteFile(path, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	s2 := startSupAt(t, s.addr, s.stateDir, "--workers", "2")
	g := activeGen(s2.status())
	if g == nil || g.Generation != 1 || fmt.Sprint(g.PIDs) != fmt.Sprint(before) {
		t.Fatalf("after adoption: active %+v; want generation 1 with pids %v", g, before)
	}
	for range 20 {
		if b := mustGet(t, s.addr, "/"); b != "hello from v1" {
			t.Fatalf("GET / = %q", b)
		}
	}
}

// TestAdoptionRestoresTheStandbyWhenTheTrialDied: the supervisor is killed
// during a canary (and, in the second case, a plain probation), and so is
// every worker of the generation on trial. The next supervisor finds no
// active generation left, but the standby one still listening: it serves
// again at once, as after a crash in the probation, and a load across the
// adoption loses nothing. A first version retired the standby and started
// the first release anew: with nothing else listening, that reset or
// refused what came meanwhile.
func TestAdoptionRestoresTheStandbyWhenTheTrialDied(t *testing.T) {
	for _, tt := range []struct {
		name    string
		upgrade []string
		phase   string
	}{
		{"canary", []string{"--canary", "50", "--canary-interval", "1h"}, "canary (at 50% of new connections)"},
		{"probation", nil, "probation"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			flags := []string{"--workers", "2", "--probation", "1h"}
			s := startSup(t, flags...)
			v1 := activeGen(s.status()).PIDs
			if out, errOut, code := s.cli(append(append([]string{"upgrade"}, tt.upgrade...), "v2")...); code != 0 {
				t.Fatalf("upgrade: exit %d\n%s%s", code, out, errOut)
			}
			v2 := activeGen(s.status())
			if v2 == nil || v2.Version != "v2" {
				t.Fatalf("after the upgrade: active %+v; want v2", v2)
			}

			// The kills reset what the killed workers held; the load
			// starts after them, with v1 serving alone, and runs across
			// the adoption.
			s.Kill()
			for _, pid := range v2.PIDs {
				if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
			}
			eventually(t, 5*time.Second, "the new generation's workers gone", func() error {
				for _, pid := range v2.PIDs {
					if alive(pid) {
						return fmt.Errorf("pid %d alive", pid)
					}
				}
				return nil
			})
			// status names what still serves: the standby generation.
			_, errOut, code := runCLI(t, "status", "--state-dir", s.stateDir)
			want := fmt.Sprintf("generation 1 (v1, standby) still serve (pids %s)", strings.Trim(strings.ReplaceAll(fmt.Sprint(v1), " ", ", "), "[]"))
			if code != 1 || !strings.Contains(errOut, want) {
				t.Errorf("status without the supervisor: exit %d, %q; want 1 and %q", code, errOut, want)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			wait := probationLoad(ctx, s.addr)
			time.Sleep(300 * time.Millisecond)
			s2 := startSupAt(t, s.addr, s.stateDir, flags...)
			g := activeGen(s2.status())
			if g == nil || g.Version != "v1" || fmt.Sprint(g.PIDs) != fmt.Sprint(v1) {
				t.Errorf("after adoption: active %+v; want the standby v1 with pids %v", g, v1)
			}
			time.Sleep(500 * time.Millisecond)
			cancel()
			checkLoad(t, wait(), "v1")
			want = "every worker of v2 died during its " + tt.phase + " while no supervisor ran; generation 1 (v1) serves again"
			if !strings.Contains(s2.log.String(), want) {
				t.Errorf("the adopting supervisor's log does not say %q:\n%s", want, s2.log.String())
			}
			// The restored generation is the one upgraded from next.
			if out, errOut, code := s2.cli("upgrade", "v2"); code != 0 {
				t.Fatalf("upgrade after the adoption: exit %d\n%s%s", code, out, errOut)
			}
			for range 20 {
				if b := mustGet(t, s.addr, "/"); b != "hello from v2" {
					t.Fatalf("GET / = %q after the upgrade", b)
				}
			}
		})
	}
}

// TestAdoptionWatchesADrainingGenerationToItsEnd: a supervisor killed
// while the old generation drains a long request leaves it released; the
// next one shows it draining (its pid, the request in flight) until that
// request ends, and only then drained. A first version took a generation
// whose workers had all been released for drained at once: status and
// launcher_generations said "exited" while it still served the request,
// and "generation drained" was logged twice.
func TestAdoptionWatchesADrainingGenerationToItsEnd(t *testing.T) {
	// Parallel (see TestMetricsPerGeneration): it mostly waits on its 6 s
	// request, on a port and state dir of its own.
	t.Parallel()
	flags := []string{"--probation", "0"}
	s := startSup(t, flags...)
	long := longRequest(s.addr, 6*time.Second)
	s.waitForInflight(1, 1)
	if out, errOut, code := s.cli("upgrade", "v2"); code != 0 {
		t.Fatalf("upgrade: exit %d\n%s%s", code, out, errOut)
	}
	gen1 := func(st supervisor.Status) supervisor.GenerationStatus {
		for _, g := range st.Generations {
			if g.Generation == 1 {
				return g
			}
		}
		return supervisor.GenerationStatus{}
	}
	eventually(t, 5*time.Second, "generation 1 draining", func() error {
		if g := gen1(s.status()); g.State != supervisor.StateDraining {
			return fmt.Errorf("generation 1: %+v", g)
		}
		return nil
	})
	if g := gen1(s.status()); g.InflightRequests != 1 {
		t.Errorf("before the kill, generation 1: %+v; want 1 request in flight", g)
	}
	s.Kill()
	s2 := startSupAt(t, s.addr, s.stateDir, flags...)
	eventually(t, 10*time.Second, "the adoption over", func() error {
		if !strings.Contains(s2.log.String(), `msg=serving supervisor=`) {
			return fmt.Errorf("no serving line yet")
		}
		return nil
	})
	if g := gen1(s2.status()); g.State != supervisor.StateDraining || len(g.PIDs) != 1 || g.InflightRequests != 1 {
		t.Errorf("after adoption, generation 1: %+v; want draining, its pid and 1 request in flight", g)
	}
	if r := <-long; r.err != nil || r.body != "hello from v1" {
		t.Errorf("long request: %q, %v", r.body, r.err)
	}
	eventually(t, 5*time.Second, "generation 1 drained", func() error {
		if g := gen1(s2.status()); g.State != supervisor.StateExited {
			return fmt.Errorf("generation 1: %+v", g)
		}
		return nil
	})
	if n := strings.Count(s2.log.String(), `msg="generation drained" supervisor=`); n != 1 {
		t.Errorf("the adopting supervisor logged %d drains; want 1 (generation 1's):\n%s", n, s2.log.String())
	}
}

// TestAdoptionWithMoreWorkers: a supervisor started on a killed one's
// state dir with a larger --workers adopts the workers there are and
// starts the others as new workers, not as restarts of dead ones (it
// logged "worker gone while no supervisor ran; restarting" for an index
// that never existed, and counted a restart).
func TestAdoptionWithMoreWorkers(t *testing.T) {
	// Parallel (see TestMetricsPerGeneration): it mostly waits for its
	// processes to start and stop, on a port and state dir of its own.
	t.Parallel()
	s := startSup(t, "--workers", "2")
	before := activeGen(s.status()).PIDs
	s.Kill()
	s2 := startSupAt(t, s.addr, s.stateDir, "--workers", "3")
	eventually(t, 10*time.Second, "three workers", func() error {
		if g := activeGen(s2.status()); g == nil || len(g.PIDs) != 3 {
			return fmt.Errorf("active %+v", g)
		}
		return nil
	})
	g := activeGen(s2.status())
	if g.Restarts != 0 || !slices.Contains(g.PIDs, before[0]) || !slices.Contains(g.PIDs, before[1]) {
		t.Errorf("after adoption: %+v; want the two adopted pids %v, a third, and no restart", g, before)
	}
	if strings.Contains(s2.log.String(), "worker gone while no supervisor ran") {
		t.Errorf("a new worker logged as a dead one:\n%s", s2.log.String())
	}
	logged(t, s2, `msg="starting a worker: --workers asks for more than the adopted generation had"`, "worker=2", "workers=3")
}

// TestAdoptedWorkersFoundAndTheirDeathsReported: without a supervisor,
// status names the workers of a release that is a script (their
// executable is not the release's path: they are known by the token in
// their environment, as adoption knows them; status said nothing served);
// after the adoption, a draining worker killed with a request in flight is
// reported as a death, not as a drained generation (its exit status is not
// the adopter's to read, but it never said its drain ended).
func TestAdoptedWorkersFoundAndTheirDeathsReported(t *testing.T) {
	// Parallel (see TestMetricsPerGeneration): it mostly waits for its
	// processes to start and stop, on a port and state dir of its own.
	t.Parallel()
	addRelease(t, "vscript", `exec `+filepath.Join(bins.releases, "v1", "hello")+` "$@"`)
	maddr := freeAddr(t)
	flags := []string{"--probation", "0", "--metrics", maddr, "--", filepath.Join(bins.releases, "vscript", "hello")}
	s := startSup(t, flags...)
	script := activeGen(s.status()).PIDs[0]
	long := longRequest(s.addr, 20*time.Second)
	s.waitForInflight(1, 1)
	if out, errOut, code := s.cli("upgrade", "v2"); code != 0 {
		t.Fatalf("upgrade: exit %d\n%s%s", code, out, errOut)
	}
	s.Kill()
	_, errOut, code := runCLI(t, "status", "--state-dir", s.stateDir)
	if want := fmt.Sprintf("those of generation 1 (vscript, draining) too (pids %d)", script); code != 1 || !strings.Contains(errOut, want) {
		t.Errorf("status without the supervisor: exit %d, %q; want 1 and %q", code, errOut, want)
	}
	s2 := startSupAt(t, s.addr, s.stateDir, flags...)
	eventually(t, 10*time.Second, "the adoption over", func() error {
		if !strings.Contains(s2.log.String(), `msg=serving supervisor=`) {
			return fmt.Errorf("no serving line yet")
		}
		return nil
	})
	if err := syscall.Kill(script, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if r := <-long; r.err == nil {
		t.Errorf("the long request on the killed worker: %q; want it cut", r.body)
	}
	eventually(t, 5*time.Second, "the death counted", func() error {
		if v := metricValue(t, maddr, `launcher_worker_crashes_total{state="draining"}`); v != 1 {
			return fmt.Errorf("draining crashes %v", v)
		}
		return nil
	})
	logged(t, s2, `msg="worker died during its drain: what it still served was cut"`, fmt.Sprintf("generation=1 version=vscript worker=0 pid=%d", script))
	logged(t, s2, `msg="generation gone: not every worker drained"`, "generation=1")
}

// TestAdoptionRollsBackACrashInProbation: a worker of the generation on
// probation dies while no supervisor runs. The adopting supervisor rolls
// back to the standby generation, as a live one would have at the crash,
// and what is left of the new generation drains. (It retired the standby
// and restarted the crashed worker: the release passed its probation.)
func TestAdoptionRollsBackACrashInProbation(t *testing.T) {
	maddr := freeAddr(t)
	flags := []string{"--workers", "2", "--probation", "1h", "--metrics", maddr}
	s := startSup(t, flags...)
	v1 := activeGen(s.status()).PIDs
	if out, errOut, code := s.cli("upgrade", "v2"); code != 0 {
		t.Fatalf("upgrade: exit %d\n%s%s", code, out, errOut)
	}
	v2 := activeGen(s.status()).PIDs
	s.Kill()
	if err := syscall.Kill(v2[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the v2 worker gone", func() error {
		if alive(v2[0]) {
			return fmt.Errorf("pid %d alive", v2[0])
		}
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wait := probationLoad(ctx, s.addr)
	time.Sleep(300 * time.Millisecond)
	s2 := startSupAt(t, s.addr, s.stateDir, flags...)
	eventually(t, 10*time.Second, "v1 active again, v2 gone", func() error {
		st := s2.status()
		if g := activeGen(st); g == nil || g.Version != "v1" || fmt.Sprint(g.PIDs) != fmt.Sprint(v1) {
			return fmt.Errorf("active %+v; want v1 with pids %v", g, v1)
		}
		for _, g := range st.Generations {
			if g.Version == "v2" && len(g.PIDs) > 0 {
				return fmt.Errorf("v2 still has %v", g.PIDs)
			}
		}
		return nil
	})
	time.Sleep(300 * time.Millisecond)
	cancel()
	checkLoad(t, wait(), "v1")
	logged(t, s2, "ROLLED BACK: a worker of v2 died during its probation while no supervisor ran; generation 1 (v1) serves again")
	// status's history says it too (it had no report of the upgrade).
	if h := s2.status().History; len(h) == 0 || h[len(h)-1].Version != "v2" || h[len(h)-1].Verdict != "rolled_back" || !h[len(h)-1].Adopted {
		t.Errorf("history %+v; want v2's upgrade last, rolled_back at the adoption", h)
	}
	if v := metricValue(t, maddr, `launcher_worker_crashes_total{state="active"}`); v != 1 {
		t.Errorf("active crashes %v; want 1", v)
	}
	if v := metricValue(t, maddr, `launcher_rollbacks_total{reason="crashed"}`); v != 1 {
		t.Errorf("crashed rollbacks %v; want 1", v)
	}
}

// TestStartAfterEverythingDiedKeepsTheHistory: the supervisor and all its
// workers killed, a start on the state dir begins anew but keeps what the
// state file knew: generation numbers go on, the upgrade reports stay in
// status, and rollback goes back along the release history (it said "no
// previous release to go back to").
func TestStartAfterEverythingDiedKeepsTheHistory(t *testing.T) {
	// Parallel (see TestMetricsPerGeneration): it mostly waits for its
	// processes to start and stop, on a port and state dir of its own.
	t.Parallel()
	s := startSup(t, "--probation", "0")
	if out, errOut, code := s.cli("upgrade", "--wait", "v2"); code != 0 {
		t.Fatalf("upgrade: exit %d\n%s%s", code, out, errOut)
	}
	pids := activeGen(s.status()).PIDs
	s.Kill()
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	eventually(t, 5*time.Second, "the workers gone", func() error {
		for _, pid := range pids {
			if alive(pid) {
				return fmt.Errorf("pid %d alive", pid)
			}
		}
		return nil
	})
	s2 := startSupAt(t, s.addr, s.stateDir, "--probation", "0")
	st := s2.status()
	if g := activeGen(st); g == nil || g.Generation != 3 || g.Version != "v1" {
		t.Errorf("after the start: active %+v; want generation 3 (numbers go on) of COMMAND's v1", g)
	}
	if len(st.History) != 1 || st.History[0].Version != "v2" {
		t.Errorf("status history %+v; want the v2 upgrade's report", st.History)
	}
	if out, errOut, code := s2.cli("rollback", "--wait"); code != 0 {
		t.Fatalf("rollback: exit %d\n%s%s", code, out, errOut)
	}
	if b := mustGet(t, s.addr, "/"); b != "hello from v2" {
		t.Errorf("after the rollback GET / = %q; want v2, the release before", b)
	}
}

// TestStopLeavesAnOperatorsStateDirAsItWas: a clean stop on a state dir
// that existed before (a systemd RuntimeDirectory) leaves it with what it
// held, and nothing of the supervisor's (a new user's trial found admin/
// and launcher.lock left).
func TestStopLeavesAnOperatorsStateDirAsItWas(t *testing.T) {
	dir := filepath.Join(shortTempDir(t), "run")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "operator.txt"), []byte("mine\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startSupIn(t, dir, "--probation", "0")
	if _, errOut, code := s.cli("upgrade", "v2"); code != 0 {
		t.Fatalf("upgrade: exit %d: %s", code, errOut)
	}
	if _, errOut, code := s.cli("stop"); code != 0 {
		t.Fatalf("stop: exit %d: %s", code, errOut)
	}
	eventually(t, 10*time.Second, "the state dir as it was", func() error {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		if len(names) != 1 || names[0] != "operator.txt" {
			return fmt.Errorf("%s holds %v; want [operator.txt]", dir, names)
		}
		return nil
	})
}
