package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/launcherd/launcher/supervisor"
)

// addRelease writes a release whose "hello" is a shell script, for faults
// a real build would show; it is removed when the test ends.
func addRelease(t *testing.T, version, script string) {
	t.Helper()
	dir := filepath.Join(bins.releases, version)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "hello"), []byte("#!/bin/sh\n"+script+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
}

// metricValue scrapes one sample from the supervisor's /metrics.
func metricValue(t *testing.T, addr, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no %s in /metrics", series)
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// TestFailedUpgradesLeaveOldServing: a new generation that exits before
// it is ready, or never gets ready, is stopped; the old one serves on
// untouched, the error says why, and the failure is counted.
func TestFailedUpgradesLeaveOldServing(t *testing.T) {
	addRelease(t, "vexit", `echo "fatal: cannot read /etc/hello.conf" >&2; exit 3`)
	addRelease(t, "vhang", `exec sleep 60`)
	// A port held by a socket without SO_REUSEPORT: the release listens on
	// it too, and its bind fails.
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	hello := filepath.Join(bins.releases, "v2", "hello")
	addRelease(t, "vbind", `LAUNCHER_LISTEN="$LAUNCHER_LISTEN,`+held.Addr().String()+`" exec `+hello+` "$@"`)
	addRelease(t, "vunhealthy", `exec `+hello+` -unhealthy "$@"`)
	maddr := freeAddr(t)
	s := startSup(t, "--metrics", maddr, "--ready-timeout", "1s")
	before := activeGen(s.status())
	failed := `launcher_upgrades_total{result="failed"}`
	tests := []struct {
		version string
		want    []string
	}{
		{"vexit", []string{"before ready", "fatal: cannot read /etc/hello.conf", "generation 1 (v1) serves on"}},
		{"vhang", []string{"not ready within --ready-timeout 1s", "generation 1 (v1) serves on"}},
		{"vbind", []string{held.Addr().String(), "address in use by a socket without SO_REUSEPORT", "generation 1 (v1) serves on"}},
		{"vunhealthy", []string{"health check", "database unreachable (-unhealthy)", "generation 1 (v1) serves on"}},
	}
	for i, tt := range tests {
		_, stderr, code := s.cli("upgrade", tt.version)
		if code != 1 {
			t.Errorf("upgrade %s: exit %d; want 1", tt.version, code)
		}
		for _, w := range tt.want {
			if !strings.Contains(stderr, w) {
				t.Errorf("upgrade %s: stderr %q lacks %q", tt.version, stderr, w)
			}
		}
		after := activeGen(s.status())
		if after.Generation != before.Generation || after.PIDs[0] != before.PIDs[0] {
			t.Fatalf("after %s: active %+v; want %+v", tt.version, after, before)
		}
		if b := mustGet(t, s.addr, "/"); b != "hello from v1" {
			t.Fatalf("after %s: %q", tt.version, b)
		}
		if got := metricValue(t, maddr, failed); got != float64(i+1) {
			t.Errorf("after %s: %s = %v; want %d", tt.version, failed, got, i+1)
		}
	}
	for _, g := range s.status().Generations {
		if g.Generation != before.Generation && (g.State != "failed" || len(g.PIDs) != 0) {
			t.Errorf("failed generation %d: state %s, pids %v; want failed, none", g.Generation, g.State, g.PIDs)
		}
	}
	// A worker that never got ready served nothing: its exit is the
	// failed upgrade's, not a death during a drain (which fired
	// LauncherWorkerCrashes at every failed upgrade; a new user's trial).
	if v := metricValue(t, maddr, `launcher_worker_crashes_total{state="draining"}`); v != 0 {
		t.Errorf("launcher_worker_crashes_total{state=draining} = %v after failed upgrades; want 0", v)
	}
	if strings.Contains(s.log.String(), "died during its drain") {
		t.Errorf("a failed upgrade's worker logged as dead during a drain:\n%s", s.log)
	}
}

// TestWrongArchRefused: a release built for another machine is refused
// before anything starts. The release is hello with its ELF header's
// machine changed, as a cross build would have it.
func TestWrongArchRefused(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(bins.releases, "v1", "hello"))
	if err != nil {
		t.Fatal(err)
	}
	machine := uint16(183) // EM_AARCH64
	if b[18] == 183 {
		machine = 62 // EM_X86_64
	}
	b[18], b[19] = byte(machine), byte(machine>>8) // e_machine, little-endian
	dir := filepath.Join(bins.releases, "vother")
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "hello"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	s := startSup(t)
	before := len(s.status().Generations)
	_, stderr, code := s.cli("upgrade", "vother")
	if code != 1 || !strings.Contains(stderr, "built for") {
		t.Errorf("exit %d, stderr %q; want 1 and \"built for\"", code, stderr)
	}
	if n := len(s.status().Generations); n != before {
		t.Errorf("generations %d; want %d: nothing may start", n, before)
	}
}

// TestConcurrentUpgradeRefused: a second upgrade while one runs is refused
// with "upgrade in progress".
func TestConcurrentUpgradeRefused(t *testing.T) {
	addRelease(t, "vslow", `sleep 1; exec `+filepath.Join(bins.releases, "v2", "hello")+` "$@"`)
	s := startSup(t)
	var wg sync.WaitGroup
	wg.Add(1)
	var firstCode int
	go func() {
		defer wg.Done()
		_, _, firstCode = s.cli("upgrade", "vslow")
	}()
	eventually(t, 5*time.Second, "first upgrade running", func() error {
		if len(s.status().Generations) < 2 {
			return fmt.Errorf("not started")
		}
		return nil
	})
	_, stderr, code := s.cli("upgrade", "v2")
	if code != 1 || !strings.Contains(stderr, "upgrade in progress") {
		t.Errorf("second upgrade: exit %d, %q; want 1, upgrade in progress", code, stderr)
	}
	wg.Wait()
	if firstCode != 0 {
		t.Errorf("first upgrade: exit %d", firstCode)
	}
	if b := mustGet(t, s.addr, "/"); b != "hello from v2" {
		t.Errorf("after the first upgrade: %q", b)
	}
}

// TestStopDuringUpgrade: SIGTERM while a new generation is starting aborts
// the upgrade, then stops gracefully: exit 0, no process left.
func TestStopDuringUpgrade(t *testing.T) {
	addRelease(t, "vhang", `exec sleep 60`)
	s := startSup(t, "--ready-timeout", "30s")
	// Not s.cli: this command may outlive the test's assertions.
	up := exec.Command(bins.launcher, "upgrade", "--state-dir", s.stateDir, "vhang")
	var upOut bytes.Buffer
	up.Stdout, up.Stderr = &upOut, &upOut
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { err := up.Wait(); noRace(t, "launcher upgrade vhang", upOut.Bytes(), err) }()
	var pids []int
	eventually(t, 5*time.Second, "new generation starting", func() error {
		st := s.status()
		if len(st.Generations) < 2 || len(st.Generations[1].PIDs) == 0 {
			return fmt.Errorf("not started")
		}
		for _, g := range st.Generations {
			pids = append(pids, g.PIDs...)
		}
		return nil
	})
	start := time.Now()
	s.Signal(syscall.SIGTERM)
	if err := s.wait(10 * time.Second); err != nil {
		t.Fatalf("supervisor exit: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("stop took %s: the upgrade was not aborted", d)
	}
	for _, p := range pids {
		if alive(p) {
			t.Errorf("pid %d alive after stop", p)
		}
	}
	if !strings.Contains(s.log.String(), "aborted") {
		t.Errorf("log does not say the upgrade was aborted:\n%s", s.log)
	}
}

// TestInterruptedUpgradeWaitSaysSo: Ctrl-C on launcher upgrade --wait
// stops only the command's wait, and its one line says so and where to
// look (it said only "context canceled"); the upgrade carries on.
func TestInterruptedUpgradeWaitSaysSo(t *testing.T) {
	s := startSup(t, "--probation", "5s")
	up := exec.Command(bins.launcher, "upgrade", "--wait", "--state-dir", s.stateDir, "v2")
	var stdout, stderr bytes.Buffer
	up.Stdout, up.Stderr = &stdout, &stderr
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "v2 on probation", func() error {
		if g := activeGen(s.status()); g == nil || g.Version != "v2" {
			return fmt.Errorf("active %+v", g)
		}
		return nil
	})
	up.Process.Signal(syscall.SIGINT)
	err := up.Wait()
	noRace(t, "launcher upgrade --wait v2", stderr.Bytes(), err)
	if code := up.ProcessState.ExitCode(); code != 1 {
		t.Errorf("exit %d; want 1", code)
	}
	if want := "launcher: upgrade: interrupted; only this command stopped: the supervisor carries the upgrade on (launcher status shows it)\n"; stderr.String() != want {
		t.Errorf("stderr %q; want %q", stderr.String(), want)
	}
	if g := activeGen(s.status()); g == nil || g.Version != "v2" {
		t.Errorf("after the interrupt the active generation is %+v; want v2 still", g)
	}
}

// TestDrainTimeoutKills: an old generation that does not finish draining
// is killed at --drain-timeout, and the cut is counted and logged, and
// said by `upgrade --wait` and its report rather than "drained".
func TestDrainTimeoutKills(t *testing.T) {
	maddr := freeAddr(t)
	// No probation: the drain is what this test watches.
	s := startSup(t, "--metrics", maddr, "--drain-timeout", "1s", "--probation", "0")
	oldPID := activeGen(s.status()).PIDs[0]
	long := longRequest(s.addr, 30*time.Second)
	s.waitForInflight(1, 1)
	out, errOut, code := s.cli("upgrade", "--wait", "v2")
	if code != 0 {
		t.Fatalf("upgrade: %s", errOut)
	}
	cut := "worker 0 cut its drain at --drain-timeout 1s: 1 request(s) and 1 connection(s) cut"
	for _, want := range []string{"generation 1 gone after", ": " + cut, "\n  drain: " + cut} {
		if !strings.Contains(out, want) {
			t.Errorf("upgrade --wait says\n%s\nwant %q in it", out, want)
		}
	}
	if strings.Contains(out, "drained after") {
		t.Errorf("upgrade --wait says the cut drain drained:\n%s", out)
	}
	eventually(t, 5*time.Second, "old generation killed", func() error {
		if alive(oldPID) {
			return fmt.Errorf("pid %d alive", oldPID)
		}
		return nil
	})
	if r := <-long; r.err == nil {
		t.Errorf("the 30 s request survived a 1 s drain timeout: %q", r.body)
	}
	if got := metricValue(t, maddr, "launcher_drain_timeouts_total"); got != 1 {
		t.Errorf("launcher_drain_timeouts_total = %v; want 1", got)
	}
	if got := metricValue(t, maddr, "launcher_drain_cut_requests_total"); got != 1 {
		t.Errorf("launcher_drain_cut_requests_total = %v; want 1", got)
	}
	logged(t, s, `msg="drain cut at --drain-timeout"`, "requests_cut=1", "connections_cut=1")
}

// TestCrashLoopFails: a release that crashes shortly after it is ready is
// restarted with back-off until the crashes form a loop; then restarting
// stops, status shows the generation failed, and an upgrade recovers.
func TestCrashLoopFails(t *testing.T) {
	// Parallel (see TestMetricsPerGeneration): it mostly waits out the
	// restarts' back-off, on a port and state dir of its own; a crash loop
	// is 6 crashes each within 30 s of the last, which a loaded machine's
	// slower starts do not change.
	t.Parallel()
	// 1.2 s: a -race hello on a loaded machine took more than 0.3 s to
	// be ready, and the first start failed instead (twice in one day).
	addRelease(t, "vcrash", filepath.Join(bins.releases, "v1", "hello")+` "$@" & child=$!; sleep 1.2; kill -9 $child; exit 1`)
	s := startSup(t, "--", filepath.Join(bins.releases, "vcrash", "hello"))
	eventually(t, 40*time.Second, "generation failed after a crash loop", func() error {
		st := s.status()
		g := st.Generations[0]
		if g.State != "failed" {
			return fmt.Errorf("state %s, restarts %d", g.State, g.Restarts)
		}
		return nil
	})
	g := s.status().Generations[0]
	if g.Restarts < 3 {
		t.Errorf("restarts %d before giving up; want several", g.Restarts)
	}
	time.Sleep(500 * time.Millisecond)
	if g2 := s.status().Generations[0]; g2.Restarts != g.Restarts || len(g2.PIDs) != 0 {
		t.Errorf("still restarting after failed: %+v -> %+v", g, g2)
	}
	if !strings.Contains(s.log.String(), "crash loop") {
		t.Errorf("no crash-loop line in the log")
	}
	// One "restarting" per restart: the last crash is the loop's, not
	// also "restarting" (both were logged in the same millisecond).
	if n := strings.Count(s.log.String(), `msg="worker exited; restarting"`); n != g.Restarts {
		t.Errorf("%d 'worker exited; restarting' lines for %d restarts", n, g.Restarts)
	}
	logged(t, s, `msg="worker exited: a crash loop, not restarted"`, "generation=1")
	if _, errOut, code := s.cli("upgrade", "v2"); code != 0 {
		t.Fatalf("upgrade out of the failed generation: %s", errOut)
	}
	if b := mustGet(t, s.addr, "/"); b != "hello from v2" {
		t.Fatalf("after recovery: %q", b)
	}
	// The generation the upgrade left stays failed (it became "exited").
	time.Sleep(200 * time.Millisecond)
	if g := s.status().Generations[0]; g.State != supervisor.StateFailed {
		t.Errorf("the crash-looped generation after the upgrade: %+v; want still failed", g)
	}
}

// TestDrainingGenerationsCoexistWithALimit: upgrades while earlier
// generations still drain long requests are allowed, each generation keeps
// its own drain, all are visible in status, and --max-draining refuses the
// upgrade beyond the limit with a clear error.
func TestDrainingGenerationsCoexistWithALimit(t *testing.T) {
	// Parallel (see TestMetricsPerGeneration): it mostly waits on its 4 s
	// requests, on a port and state dir of its own.
	t.Parallel()
	s := startSup(t, "--max-draining", "2", "--probation", "0")
	var longs []<-chan result
	for i, v := range []string{"v2", "v1"} {
		longs = append(longs, longRequest(s.addr, 4*time.Second))
		s.waitForInflight(i+1, 1)
		if _, errOut, code := s.cli("upgrade", v); code != 0 {
			t.Fatalf("upgrade %s: %s", v, errOut)
		}
	}
	draining := 0
	for _, g := range s.status().Generations {
		if g.State == "draining" && g.InflightRequests == 1 {
			draining++
		}
	}
	if draining != 2 {
		t.Fatalf("status shows %d draining generations with a request each; want 2: %+v", draining, s.status().Generations)
	}
	_, stderr, code := s.cli("upgrade", "v2")
	if code != 1 || !strings.Contains(stderr, "it would leave 3 generation(s) draining at once (2 draining now, and generation 3, active now), and --max-draining is 2") {
		t.Errorf("third upgrade: exit %d, %q; want a refusal naming --max-draining", code, stderr)
	}
	for i, l := range longs {
		if r := <-l; r.err != nil {
			t.Errorf("long request %d: %v", i, r.err)
		}
	}
	if b := mustGet(t, s.addr, "/"); b != "hello from v1" {
		t.Errorf("active after all: %q; want v1", b)
	}
	eventually(t, 5*time.Second, "drains finished", func() error {
		if _, errOut, code := s.cli("upgrade", "v2"); code != 0 {
			return fmt.Errorf("upgrade after the drains: %s", errOut)
		}
		return nil
	})
}

// TestWorkerDeathsOutsideActiveAreReported: a worker killed from outside
// while its generation stands by, or while it drains a long request, is
// logged and counted in launcher_worker_crashes_total by that state, and
// the drain's end says what died. (A new user's trial: `upgrade --wait`
// printed "drained" and the log "generation drained" for a worker killed
// with a request in flight, and a standby worker's death went unlogged.)
func TestWorkerDeathsOutsideActiveAreReported(t *testing.T) {
	t.Run("standby", func(t *testing.T) {
		maddr := freeAddr(t)
		s := startSup(t, "--probation", "1h", "--metrics", maddr)
		v1 := activeGen(s.status()).PIDs[0]
		if out, errOut, code := s.cli("upgrade", "v2"); code != 0 {
			t.Fatalf("upgrade: exit %d\n%s%s", code, out, errOut)
		}
		if err := syscall.Kill(v1, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		eventually(t, 5*time.Second, "the standby worker's death counted", func() error {
			if v := metricValue(t, maddr, `launcher_worker_crashes_total{state="standby"}`); v != 1 {
				return fmt.Errorf("standby crashes %v", v)
			}
			return nil
		})
		logged(t, s, `msg="worker of the standby generation exited; not restarted while it stands by"`, fmt.Sprintf(`generation=1 version=v1 worker=0 pid=%d err="signal: killed"`, v1))
	})
	t.Run("draining", func(t *testing.T) {
		maddr := freeAddr(t)
		s := startSup(t, "--probation", "0", "--metrics", maddr)
		v1 := activeGen(s.status()).PIDs[0]
		long := longRequest(s.addr, 10*time.Second)
		s.waitForInflight(1, 1)
		type cliResult struct {
			out, errOut string
			code        int
		}
		done := make(chan cliResult, 1)
		go func() {
			out, errOut, code := s.cli("upgrade", "--wait", "v2")
			done <- cliResult{out, errOut, code}
		}()
		eventually(t, 10*time.Second, "generation 1 draining", func() error {
			for _, g := range s.status().Generations {
				if g.Generation == 1 && g.State == supervisor.StateDraining {
					return nil
				}
			}
			return fmt.Errorf("generation 1 not draining")
		})
		if err := syscall.Kill(v1, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if r := <-long; r.err == nil {
			t.Errorf("the long request on the killed worker: %q; want it cut", r.body)
		}
		r := <-done
		want := regexp.MustCompile(fmt.Sprintf(`generation 1 gone after \d+ ms: worker 0 \(pid %d\) died during its drain \(signal: killed\): what it still served was cut`, v1))
		if r.code != 0 || !want.MatchString(r.out) {
			t.Errorf("upgrade --wait: exit %d\n%s%s\nwant exit 0 and a line matching %s", r.code, r.out, r.errOut, want)
		}
		if v := metricValue(t, maddr, `launcher_worker_crashes_total{state="draining"}`); v != 1 {
			t.Errorf("launcher_worker_crashes_total{state=draining} = %v; want 1", v)
		}
		logged(t, s, `msg="worker died during its drain: what it still served was cut"`, fmt.Sprintf(`generation=1 version=v1 worker=0 pid=%d err="signal: killed"`, v1))
		logged(t, s, `msg="generation gone: not every worker drained"`, "generation=1 version=v1", "deaths=1")
		// The stop's drain of generation 2 ends cleanly: no death there.
		if _, errOut, code := s.cli("stop"); code != 0 {
			t.Fatalf("stop: exit %d %s", code, errOut)
		}
		if n := strings.Count(s.log.String(), "died during its drain"); n != 1 {
			t.Errorf("%d deaths during a drain logged; want 1:\n%s", n, s.log.String())
		}
	})
}

// logged fails t unless one line of s's log holds every part within 2 s:
// the supervisor writes a line before it answers a command, but the
// harness copies its stderr on a goroutine of its own, which may come
// later than the answer.
func logged(t *testing.T, s *sup, parts ...string) {
	t.Helper()
	has := func() bool {
		for _, line := range strings.Split(s.log.String(), "\n") {
			all := true
			for _, p := range parts {
				all = all && strings.Contains(line, p)
			}
			if all {
				return true
			}
		}
		return false
	}
	for deadline := time.Now().Add(2 * time.Second); !has(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("no log line with %q:\n%s", parts, s.log.String())
			return
		}
	}
}
