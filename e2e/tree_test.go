package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A generation is its workers' whole process trees: a release that is a
// shell script running the app, or a helper, as a child (no exec) must
// leave nothing behind on any kill path. Each test runs once per
// mechanism: a cgroup v2 per worker, and process groups (forced with the
// supervisor's test-only environment variable).

// TestTreeKilledAtReadyTimeout: a release that is a script starting
// `sleep 300 &` and then a helper in the foreground, and never gets
// ready, is killed at --ready-timeout with all its processes.
func TestTreeKilledAtReadyTimeout(t *testing.T) {
	forEachTreeMode(t, func(t *testing.T, m treeMode) {
		mark := treeMarker(t)
		addRelease(t, "vtree", "export TREE_MARK="+mark+"\nsleep 300 &\nsleep 300")
		s := startSupEnv(t, freeAddr(t), filepath.Join(shortTempDir(t), "s"), m.env, "--ready-timeout", "1s")
		checkTreeMode(t, s, m)
		done := make(chan string, 1)
		go func() {
			_, stderr, _ := s.cli("upgrade", "vtree")
			done <- stderr
		}()
		var dir string
		eventually(t, 5*time.Second, "generation 2 started, with its children", func() error {
			st := s.status()
			if len(st.Generations) < 2 || len(st.Generations[1].PIDs) == 0 || len(marked(mark)) < 2 {
				return fmt.Errorf("generations %+v, marked %v", st.Generations, marked(mark))
			}
			dir = workerCgroup(t, m, st.Generations[1].PIDs[0], 2)
			return nil
		})
		if stderr := <-done; !strings.Contains(stderr, "not ready within --ready-timeout 1s") {
			t.Fatalf("upgrade: %q; want a ready timeout", stderr)
		}
		// At once: the upgrade ends only once its generation is gone.
		noneMarked(t, mark, "after the failed upgrade")
		gone(t, dir)
		if b := mustGet(t, s.addr, "/"); b != "hello from v1" {
			t.Errorf("after the failed upgrade: %q", b)
		}
	})
}

// TestTreeKilledOnStop: a graceful stop leaves nothing of a release that
// runs the app as a child of its script beside a `sleep 300 &`.
func TestTreeKilledOnStop(t *testing.T) {
	forEachTreeMode(t, func(t *testing.T, m treeMode) {
		mark := treeMarker(t)
		addRelease(t, "vtree", "export TREE_MARK="+mark+"\nsleep 300 &\n"+filepath.Join(bins.releases, "v1", "hello")+` "$@"`)
		s := startSupEnv(t, freeAddr(t), filepath.Join(shortTempDir(t), "s"), m.env, "--",
			filepath.Join(bins.releases, "vtree", "hello"))
		checkTreeMode(t, s, m)
		if b := mustGet(t, s.addr, "/"); b != "hello from v1" {
			t.Fatalf("GET / = %q", b)
		}
		pid := activeGen(s.status()).PIDs[0]
		dir := workerCgroup(t, m, pid, 1)
		if n := len(marked(mark)); n != 2 {
			t.Fatalf("%d marked processes; want the app and the sleep", n)
		}
		s.Signal(syscall.SIGTERM)
		// A process left holding the supervisor's stdout fails this wait too.
		if err := s.wait(15 * time.Second); err != nil {
			t.Errorf("supervisor exit: %v", err)
		}
		noneMarked(t, mark, "after the stop")
		gone(t, dir)
		if dir != "" {
			if _, err := os.Stat(filepath.Dir(filepath.Dir(dir))); err == nil {
				t.Errorf("the supervisor's cgroup %s not removed", filepath.Dir(filepath.Dir(dir)))
			}
		}
	})
}

// TestTreeKilledAtDrainTimeout: an old worker whose script goes on after
// the app drained (a foreground sleep, and one in the background) is
// killed at --drain-timeout with all its processes.
func TestTreeKilledAtDrainTimeout(t *testing.T) {
	// Parallel (see TestMetricsPerGeneration): it mostly waits for the
	// drain timeout, on a port, state dir and marker of its own; no other
	// parallel test writes releases/vtree.
	t.Parallel()
	forEachTreeMode(t, func(t *testing.T, m treeMode) {
		mark := treeMarker(t)
		addRelease(t, "vtree", "export TREE_MARK="+mark+"\nsleep 300 &\n"+filepath.Join(bins.releases, "v1", "hello")+` "$@"`+"\nsleep 300")
		s := startSupEnv(t, freeAddr(t), filepath.Join(shortTempDir(t), "s"), m.env,
			"--drain-timeout", "1s", "--probation", "0", "--", filepath.Join(bins.releases, "vtree", "hello"))
		checkTreeMode(t, s, m)
		old := activeGen(s.status())
		dir := workerCgroup(t, m, old.PIDs[0], 1)
		if _, errOut, code := s.cli("upgrade", "v2"); code != 0 {
			t.Fatalf("upgrade: %s", errOut)
		}
		eventually(t, 10*time.Second, "old generation killed", func() error {
			if alive(old.PIDs[0]) {
				return fmt.Errorf("worker %d alive", old.PIDs[0])
			}
			for _, g := range s.status().Generations {
				if g.Generation == old.Generation && g.State != "exited" {
					return fmt.Errorf("generation %d %s", g.Generation, g.State)
				}
			}
			return nil
		})
		// The app drained, the script's sleep kept the worker: killed as
		// one that drained but had not exited, no cut drain.
		if !strings.Contains(s.log.String(), "worker drained but had not exited by --drain-timeout: killed") {
			t.Errorf("the old worker was not killed at the drain timeout")
		}
		noneMarked(t, mark, "after the drain timeout")
		gone(t, dir)
		if b := mustGet(t, s.addr, "/"); b != "hello from v2" {
			t.Errorf("GET / = %q", b)
		}
	})
}

// TestCrashedWorkerTreeKilled: when a worker (a script running the app as
// a child) crashes, what it started is killed — the app itself, still
// serving, and a sleep — and nothing of the other worker; the worker is
// restarted.
func TestCrashedWorkerTreeKilled(t *testing.T) {
	forEachTreeMode(t, func(t *testing.T, m treeMode) {
		mark := treeMarker(t)
		addRelease(t, "vtree", "export TREE_MARK="+mark+"\nsleep 300 &\n"+filepath.Join(bins.releases, "v1", "hello")+` "$@"`)
		s := startSupEnv(t, freeAddr(t), filepath.Join(shortTempDir(t), "s"), m.env,
			"--workers", "2", "--", filepath.Join(bins.releases, "vtree", "hello"))
		checkTreeMode(t, s, m)
		pids := activeGen(s.status()).PIDs
		crashed, other := pids[0], pids[1]
		dir := workerCgroup(t, m, crashed, 1)
		workerCgroup(t, m, other, 1)
		mine, others := children(crashed), children(other)
		if len(mine) != 2 || len(others) != 2 {
			t.Fatalf("children %v and %v; want the app and a sleep each", mine, others)
		}
		syscall.Kill(crashed, syscall.SIGKILL)
		var restarted int
		eventually(t, 10*time.Second, "worker restarted", func() error {
			g := activeGen(s.status())
			if g == nil || len(g.PIDs) != 2 || g.PIDs[0] == crashed {
				return fmt.Errorf("active generation %+v", g)
			}
			restarted = g.PIDs[0]
			return nil
		})
		for _, pid := range mine {
			if alive(pid) {
				t.Errorf("%s of the crashed worker left", describe([]int{pid}))
			}
		}
		for _, pid := range others {
			if !alive(pid) {
				t.Errorf("process %d of the other worker killed", pid)
			}
		}
		// Removed, or made anew for the restarted worker.
		if dir != "" {
			if _, err := os.Stat(dir); err == nil && workerCgroup(t, m, restarted, 1) != dir {
				t.Errorf("cgroup %s of the crashed worker not removed", dir)
			}
		}
		for i := range 20 {
			if b := mustGet(t, s.addr, "/"); b != "hello from v1" {
				t.Fatalf("GET %d after the crash = %q", i, b)
			}
		}
	})
}

// TestAdoptedWorkerTreeKilled: a supervisor started after one was killed
// finds each adopted worker's tree (its cgroup from /proc/PID/cgroup, or
// its process group); when an adopted worker crashes, what it started
// goes with it, and the generation's cost is still measured.
func TestAdoptedWorkerTreeKilled(t *testing.T) {
	// Parallel (see TestMetricsPerGeneration): it mostly waits for its
	// processes, on a port, state dir and marker of its own, and a release
	// named for it (TestTreeKilledAtDrainTimeout runs beside it).
	t.Parallel()
	forEachTreeMode(t, func(t *testing.T, m treeMode) {
		mark := treeMarker(t)
		addRelease(t, "vtreeadopt", "export TREE_MARK="+mark+"\nsleep 300 &\n"+filepath.Join(bins.releases, "v1", "hello")+` "$@"`)
		cmd := filepath.Join(bins.releases, "vtreeadopt", "hello")
		s := startSupEnv(t, freeAddr(t), filepath.Join(shortTempDir(t), "s"), m.env, "--", cmd)
		checkTreeMode(t, s, m)
		pid := activeGen(s.status()).PIDs[0]
		dir := workerCgroup(t, m, pid, 1)
		mine := children(pid)
		if len(mine) != 2 {
			t.Fatalf("children %v; want the app and a sleep", mine)
		}
		s.Kill()
		maddr := freeAddr(t)
		s2 := startSupEnv(t, s.addr, s.stateDir, m.env, "--metrics", maddr, "--", cmd)
		if g := activeGen(s2.status()); g == nil || g.PIDs[0] != pid {
			t.Fatalf("active generation %+v; want pid %d adopted", g, pid)
		}
		if dir != "" && cgroupDir(pid) != dir {
			t.Errorf("adopted worker moved from %s to %s", dir, cgroupDir(pid))
		}
		if m.cgroup && metricValue(t, maddr, `launcher_generation_cpu_seconds_total{generation="1",version="vtreeadopt"}`) <= 0 {
			t.Errorf("the adopted generation's CPU time is not measured")
		}
		syscall.Kill(pid, syscall.SIGKILL)
		eventually(t, 10*time.Second, "adopted worker's tree killed", func() error {
			for _, c := range mine {
				if alive(c) {
					return fmt.Errorf("%s left", describe([]int{c}))
				}
			}
			return nil
		})
		eventually(t, 10*time.Second, "worker restarted", func() error {
			if g := activeGen(s2.status()); g == nil || len(g.PIDs) != 1 || g.PIDs[0] == pid {
				return fmt.Errorf("active generation %+v", g)
			}
			return nil
		})
	})
}

// TestGenerationCostMetrics: with cgroups, each live generation's CPU
// time and memory are on /metrics, the new version's beside the old
// one's during the probation; an exited generation drops out. With
// process groups there is nothing to measure them by.
func TestGenerationCostMetrics(t *testing.T) {
	// Parallel (see TestMetricsPerGeneration): it mostly waits for its
	// probation, on ports and a state dir of its own.
	t.Parallel()
	forEachTreeMode(t, func(t *testing.T, m treeMode) {
		maddr := freeAddr(t)
		s := startSupEnv(t, freeAddr(t), filepath.Join(shortTempDir(t), "s"), m.env,
			"--metrics", maddr, "--probation", "2s")
		checkTreeMode(t, s, m)
		for range 50 {
			mustGet(t, s.addr, "/")
		}
		if _, errOut, code := s.cli("upgrade", "v2"); code != 0 {
			t.Fatalf("upgrade: %s", errOut)
		}
		body := string(scrape(t, maddr))
		for _, gen := range []string{`generation="1",version="v1"`, `generation="2",version="v2"`} {
			cpu := `launcher_generation_cpu_seconds_total{` + gen + `}`
			mem := `launcher_generation_memory_bytes{` + gen + `}`
			if !m.cgroup {
				if strings.Contains(body, cpu) || strings.Contains(body, mem) {
					t.Errorf("usage series with process groups:\n%s", grepLines(body, "launcher_generation_"))
				}
				continue
			}
			if v := metricValue(t, maddr, cpu); v <= 0 {
				t.Errorf("%s = %v; want > 0", cpu, v)
			}
			// hello's RSS is several MB.
			if v := metricValue(t, maddr, mem); v < 1<<20 {
				t.Errorf("%s = %v; want > 1 MiB", mem, v)
			}
		}
		if !m.cgroup {
			return
		}
		eventually(t, 10*time.Second, "generation 1 gone from /metrics", func() error {
			if b := string(scrape(t, maddr)); strings.Contains(b, `launcher_generation_cpu_seconds_total{generation="1"`) {
				return fmt.Errorf("still there: %s", grepLines(b, "launcher_generation_cpu"))
			}
			return nil
		})
	})
}
