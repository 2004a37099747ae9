package e2e

import (
	"errors"
	"fmt"
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

// waitForInflight waits until the active generation reports n in flight.
func (s *sup) waitForInflight(gen, n int) {
	s.t.Helper()
	eventually(s.t, 5*time.Second, "in-flight request visible", func() error {
		for _, g := range s.status().Generations {
			if g.Generation == gen && g.InflightRequests >= int64(n) {
				return nil
			}
		}
		return fmt.Errorf("generation %d has not %d in flight", gen, n)
	})
}

// checkOnlyGeneration asserts that gen is the only generation with
// processes, and that every process of the others is gone.
func (s *sup) checkOnlyGeneration(gen int, oldPIDs []int) {
	s.t.Helper()
	// The default probation keeps the old generation 5s, then it drains.
	eventually(s.t, 5*time.Second+supervisor.DefaultProbation, "old generation gone", func() error {
		st := s.statusJSON()
		for _, g := range st.Generations {
			if g.Generation != gen && len(g.PIDs) > 0 {
				return fmt.Errorf("generation %d still has pids %v (state %s)", g.Generation, g.PIDs, g.State)
			}
			if g.Generation != gen && g.State != "exited" && g.State != "failed" {
				return fmt.Errorf("generation %d state %s", g.Generation, g.State)
			}
		}
		for _, p := range oldPIDs {
			if alive(p) {
				return fmt.Errorf("old pid %d alive", p)
			}
		}
		return nil
	})
}

// TestArticleScenario is the article's flow under the supervisor: a long
// request on v1 survives the upgrade to v2 and completes with v1's answer,
// while new requests reach v2 within a second.
func TestArticleScenario(t *testing.T) {
	s := startSup(t)
	if got := mustGet(t, s.addr, "/"); got != "hello from v1" {
		t.Fatalf("GET / = %q; want hello from v1", got)
	}
	oldPIDs := activeGen(s.status()).PIDs
	long := longRequest(s.addr, 3*time.Second)
	s.waitForInflight(1, 1)

	start := time.Now()
	out, errOut, code := s.cli("upgrade", "v2")
	if code != 0 {
		t.Fatalf("upgrade v2: exit %d: %s", code, errOut)
	}
	for _, want := range []string{"generation 2 (v2) starting", "generation 2 ready after", "generation 1 (v1) on standby for the 5s probation: 1 request(s) in flight there complete", "generation 2 (v2) serves"} {
		if !strings.Contains(out, want) {
			t.Errorf("upgrade output lacks %q:\n%s", want, out)
		}
	}
	eventually(t, time.Second-time.Since(start), "new requests answer v2", func() error {
		if b, err := get(s.addr, "/"); err != nil || b != "hello from v2" {
			return fmt.Errorf("got %q, %v", b, err)
		}
		return nil
	})
	for i := 0; i < 20; i++ {
		if b := mustGet(t, s.addr, "/"); b != "hello from v2" {
			t.Fatalf("request %d after upgrade: %q; want hello from v2", i, b)
		}
	}
	r := <-long
	if r.err != nil || r.body != "hello from v1" {
		t.Fatalf("long request: %q, %v; want hello from v1", r.body, r.err)
	}
	s.checkOnlyGeneration(2, oldPIDs)
	st := s.statusJSON()
	if g := activeGen(st); g == nil || g.Generation != 2 || g.Version != "v2" || len(g.PIDs) != 1 {
		t.Fatalf("status after upgrade: %+v", st.Generations)
	}
}

// TestSymlinkSIGHUP is the article's deploy habit: repoint "current" to a
// new release and send SIGHUP to the supervisor's pid file.
func TestSymlinkSIGHUP(t *testing.T) {
	root := shortTempDir(t)
	current := filepath.Join(root, "current")
	if err := os.Symlink(filepath.Join(bins.releases, "v1"), current); err != nil {
		t.Fatal(err)
	}
	s := startSup(t, "--", filepath.Join(current, "hello"))
	supPID := s.status().PID
	if g := activeGen(s.status()); g.Version != "v1" {
		t.Fatalf("version %q; want v1", g.Version)
	}
	long := longRequest(s.addr, 2*time.Second)
	s.waitForInflight(1, 1)

	tmp := current + ".new"
	if err := os.Symlink(filepath.Join(bins.releases, "v2"), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, current); err != nil {
		t.Fatal(err)
	}
	pidFile, err := os.ReadFile(filepath.Join(s.stateDir, "launcher.pid"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(pidFile)) != fmt.Sprint(supPID) {
		t.Fatalf("pid file %q; want %d", pidFile, supPID)
	}
	if err := syscall.Kill(supPID, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "v2 serves after SIGHUP", func() error {
		if b, err := get(s.addr, "/"); err != nil || b != "hello from v2" {
			return fmt.Errorf("got %q, %v", b, err)
		}
		return nil
	})
	if r := <-long; r.err != nil || r.body != "hello from v1" {
		t.Fatalf("long request: %q, %v; want hello from v1", r.body, r.err)
	}
	st := s.status()
	if st.PID != supPID {
		t.Errorf("supervisor pid changed: %d -> %d", supPID, st.PID)
	}
	if g := activeGen(st); g.Version != "v2" || g.Generation != 2 {
		t.Errorf("active %+v; want generation 2, v2", g)
	}
}

// standalone is a hello started without a supervisor, from a "current"
// symlink, with a pid file.
type standalone struct {
	t       *testing.T
	root    string // holds current, hello.pid and hello.log
	current string
	pidFile string
	addr    string
	cmd     *exec.Cmd
	exited  chan struct{} // closed once the first process is reaped
	log     *os.File
	onPID   func(int) // remembers a pid for the cleanup to kill
}

// startStandalone runs hello of current → version and waits until it
// serves with its pid file written. Cleanup kills every process the pid
// file named.
func startStandalone(t *testing.T, version string) *standalone {
	t.Helper()
	return startStandaloneWith(t, version, get)
}

// startStandaloneWith is startStandalone with hello's extra args, whose
// serving is checked with getter.
func startStandaloneWith(t *testing.T, version string, getter func(addr, path string) (string, error), args ...string) *standalone {
	t.Helper()
	root := shortTempDir(t)
	sa := &standalone{t: t, root: root, current: filepath.Join(root, "current"),
		pidFile: filepath.Join(root, "hello.pid"), addr: freeAddr(t), exited: make(chan struct{})}
	sa.point(filepath.Join(bins.releases, version))
	// A file, not a pipe: the new process inherits the old one's stderr,
	// and a pipe would keep Wait waiting for it too.
	log, err := os.Create(filepath.Join(root, "hello.log"))
	if err != nil {
		t.Fatal(err)
	}
	sa.log = log
	sa.cmd = exec.Command(filepath.Join(sa.current, "hello"), append([]string{"-addr", sa.addr, "-pidfile", sa.pidFile}, args...)...)
	sa.cmd.Stdout, sa.cmd.Stderr = log, log
	if err := sa.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var exit error                                         // the first process's, once sa.exited is closed
	go func() { exit = sa.cmd.Wait(); close(sa.exited) }() // ends when the first process is reaped
	pids := map[int]bool{sa.cmd.Process.Pid: true}
	var mu sync.Mutex
	sa.onPID = func(p int) { mu.Lock(); pids[p] = true; mu.Unlock() }
	t.Cleanup(func() {
		mu.Lock()
		pids[readPID(sa.pidFile)] = true
		for p := range pids {
			if p > 0 {
				syscall.Kill(p, syscall.SIGKILL)
			}
		}
		mu.Unlock()
		sa.cmd.Process.Kill()
		<-sa.exited
		b, _ := os.ReadFile(log.Name())
		noRace(t, "hello or the process it handed over to", b, exit)
		if t.Failed() {
			t.Logf("log:\n%s", b)
		}
		log.Close()
	})
	eventually(t, 10*time.Second, "standalone "+version+" serves", func() error {
		if b, err := getter(sa.addr, "/"); err != nil || b != "hello from "+version {
			return fmt.Errorf("got %q, %v", b, err)
		}
		if readPID(sa.pidFile) != sa.cmd.Process.Pid {
			return fmt.Errorf("pid file not written yet")
		}
		return nil
	})
	return sa
}

// point repoints current to dir, atomically.
func (sa *standalone) point(dir string) {
	sa.t.Helper()
	tmp := sa.current + ".new"
	if err := os.Symlink(dir, tmp); err != nil {
		sa.t.Fatal(err)
	}
	if err := os.Rename(tmp, sa.current); err != nil {
		sa.t.Fatal(err)
	}
}

// hup sends SIGHUP to the pid in the pid file and returns that pid.
func (sa *standalone) hup() int {
	sa.t.Helper()
	pid := readPID(sa.pidFile)
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		sa.t.Fatal(err)
	}
	return pid
}

// release makes releases/NAME/hello under sa's root the shell script
// script and returns its directory, for point.
func (sa *standalone) release(name, script string) string {
	sa.t.Helper()
	dir := filepath.Join(sa.root, "releases", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		sa.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "hello"), []byte(script), 0o755); err != nil {
		sa.t.Fatal(err)
	}
	return dir
}

// logged waits up to 10s until the log of sa's processes holds every one
// of lines.
func (sa *standalone) logged(what string, lines ...string) {
	sa.t.Helper()
	eventually(sa.t, 10*time.Second, what, func() error {
		b, _ := os.ReadFile(sa.log.Name())
		for _, l := range lines {
			if !strings.Contains(string(b), l) {
				return fmt.Errorf("no %q in the log yet", l)
			}
		}
		return nil
	})
}

// TestStandaloneSIGHUP runs hello without a supervisor: kill -HUP on its
// pid file starts the "current" release and hands the port over.
func TestStandaloneSIGHUP(t *testing.T) {
	sa := startStandalone(t, "v1")
	oldPID := sa.cmd.Process.Pid
	long := longRequest(sa.addr, 2*time.Second)
	time.Sleep(200 * time.Millisecond)

	sa.point(filepath.Join(bins.releases, "v2"))
	sa.hup()
	eventually(t, 5*time.Second, "v2 serves after kill -HUP", func() error {
		if b, err := get(sa.addr, "/"); err != nil || b != "hello from v2" {
			return fmt.Errorf("got %q, %v", b, err)
		}
		return nil
	})
	if r := <-long; r.err != nil || r.body != "hello from v1" {
		t.Fatalf("long request: %q, %v; want hello from v1", r.body, r.err)
	}
	select {
	case <-sa.exited:
	case <-time.After(5 * time.Second):
		t.Fatal("old process still running after its long request finished")
	}
	newPID := readPID(sa.pidFile)
	if newPID == oldPID || !alive(newPID) {
		t.Fatalf("pid file %d after handover (old %d); want the new live process", newPID, oldPID)
	}
	sa.onPID(newPID)
	// The new process is standalone now: SIGTERM drains and exits, and it
	// removes the pid file it took over.
	syscall.Kill(newPID, syscall.SIGTERM)
	eventually(t, 5*time.Second, "new process exits on SIGTERM", func() error {
		if alive(newPID) {
			return fmt.Errorf("pid %d alive", newPID)
		}
		return nil
	})
	if _, err := os.Stat(sa.pidFile); !os.IsNotExist(err) {
		t.Errorf("pid file left after the new process's clean exit (holds %d): %v", readPID(sa.pidFile), err)
	}
}

// TestStandaloneHandoversLeaveNoTempFiles: a standalone SIGHUP handover
// makes a temporary directory for the new process's control socket, and
// the old process removes it before it can exit. (With nothing in flight
// the drain ended at once and the process exited before the handover's
// deferred removal ran: about one handover in three left a
// launcher-handoff-* directory in TMPDIR.)
func TestStandaloneHandoversLeaveNoTempFiles(t *testing.T) {
	tmp := shortTempDir(t)
	t.Setenv("TMPDIR", tmp) // inherited by hello and every process it starts
	sa := startStandalone(t, "v1")
	version := "v1"
	const handovers = 20
	for i := 0; i < handovers; i++ {
		version = map[string]string{"v1": "v2", "v2": "v1"}[version]
		sa.point(filepath.Join(bins.releases, version))
		oldPID := sa.hup()
		eventually(t, 10*time.Second, "handover "+strconv.Itoa(i+1)+" done", func() error {
			if p := readPID(sa.pidFile); p == oldPID || p == 0 {
				return fmt.Errorf("pid file still %d", p)
			}
			if alive(oldPID) {
				return fmt.Errorf("old process %d alive", oldPID)
			}
			if b, err := get(sa.addr, "/"); err != nil || b != "hello from "+version {
				return fmt.Errorf("got %q, %v", b, err)
			}
			return nil
		})
		sa.onPID(readPID(sa.pidFile))
	}
	if left, _ := filepath.Glob(filepath.Join(tmp, "launcher-handoff-*")); len(left) > 0 {
		t.Errorf("%d handovers left %d temporary directories: %v", handovers, len(left), left)
	}
}

// TestStandaloneSIGTERMRemovesPIDFile: a standalone hello stopped by
// SIGTERM drains, exits 0 and leaves no pid file behind for a later
// kill -HUP $(cat hello.pid) to miss or, once the pid is reused, to hit
// another process. (TestStandaloneSIGHUP checks that the process that
// handed over leaves the file to the new one.)
func TestStandaloneSIGTERMRemovesPIDFile(t *testing.T) {
	sa := startStandalone(t, "v1")
	syscall.Kill(sa.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-sa.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("hello still running 10s after SIGTERM")
	}
	if code := sa.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit status %d after SIGTERM; want 0", code)
	}
	if _, err := os.Stat(sa.pidFile); !os.IsNotExist(err) {
		t.Errorf("pid file left after a clean exit (holds %d): %v", readPID(sa.pidFile), err)
	}
}

// TestStandaloneSIGHUPAfterAFailedRelease: kill -HUP to a standalone hello
// whose "current" release exits at start leaves the old process serving,
// and the next kill -HUP, to a good release, hands over. (The first
// failure used to leave the process ignoring every later SIGHUP: "a
// handover is in progress".)
func TestStandaloneSIGHUPAfterAFailedRelease(t *testing.T) {
	hello := filepath.Join(bins.releases, "v2", "hello")
	for _, tt := range []struct{ name, script, log string }{
		{"exits at start", "#!/bin/sh\necho \"fatal: cannot read /etc/hello.conf\" >&2\nexit 3\n", "exited before"},
		// A clean exit is said as one (it read "<nil>").
		{"exits 0 at start", "#!/bin/sh\nexit 0\n", "exited before connecting: exit status 0"},
		// Ready, but its health check fails: a supervisor refuses it,
		// and so does a standalone handover.
		{"fails its health check", "#!/bin/sh\nexec " + hello + " -unhealthy \"$@\"\n", "database unreachable (-unhealthy)"},
		// The same app run by a script without exec: the script is not all
		// that must go (the app it started went on serving on the port).
		{"fails its health check, run by a script", "#!/bin/sh\n" + hello + " -unhealthy \"$@\" &\necho $! > \"$(dirname \"$0\")/app.pid\"\nwait\n", "database unreachable (-unhealthy)"},
	} {
		t.Run(tt.name, func(t *testing.T) { testStandaloneSIGHUPAfterAFailedRelease(t, tt.script, tt.log) })
	}
}

func testStandaloneSIGHUPAfterAFailedRelease(t *testing.T, script, why string) {
	sa := startStandalone(t, "v1")
	oldPID := sa.cmd.Process.Pid
	bad := sa.release("vbad", script)

	sa.point(bad)
	sa.hup()
	sa.logged("the failed handover logged, and why", "handover failed; still serving", why)
	if app := readPID(filepath.Join(bad, "app.pid")); app > 0 {
		eventually(t, 5*time.Second, "the app the failed release's script started is gone", func() error {
			if alive(app) {
				return fmt.Errorf("pid %d alive", app)
			}
			return nil
		})
	}
	for i := 0; i < 20; i++ {
		if b := mustGet(t, sa.addr, "/"); b != "hello from v1" {
			t.Fatalf("request %d after the failed handover: %q; want hello from v1", i, b)
		}
	}
	if p := readPID(sa.pidFile); p != oldPID {
		t.Fatalf("pid file %d after the failed handover; want the old process %d", p, oldPID)
	}

	sa.point(filepath.Join(bins.releases, "v2"))
	sa.hup()
	eventually(t, 10*time.Second, "v2 serves after the second kill -HUP", func() error {
		if b, err := get(sa.addr, "/"); err != nil || b != "hello from v2" {
			return fmt.Errorf("got %q, %v", b, err)
		}
		if p := readPID(sa.pidFile); p == oldPID || p == 0 {
			return errors.New("pid file not rewritten yet")
		}
		return nil
	})
	sa.onPID(readPID(sa.pidFile))
	select {
	case <-sa.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("old process still running after the handover to v2")
	}
}

// TestStandaloneNoConnectionBeforeReady: while the new process a kill -HUP
// started warms up, new connections go to the old process, which answers
// them; none goes to the new process before its health check passed and
// the old one steered to it. (A process started alone left its reuseport
// group unsteered, so the kernel's hash gave the new process its share
// from its listen on: 13 of 30 requests were answered by it during its
// warm-up, even by one that then failed its check; a connection still in
// its accept queue when that kill came was reset, as CI once saw.)
func TestStandaloneNoConnectionBeforeReady(t *testing.T) {
	hello := filepath.Join(bins.releases, "v2", "hello")
	for _, tt := range []struct{ name, flags, after, log string }{
		{"fails its health check", "-unhealthy", "hello from v1", "handover failed; still serving"},
		{"passes it", "", "hello from v2", "handover: new process serves"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sa := startStandalone(t, "v1")
			sa.point(sa.release("vwarm", "#!/bin/sh\nexec "+hello+" -warmup 2s "+tt.flags+" \"$@\"\n"))
			sa.hup()
			sa.logged("the new process listens", "msg=listening generation=2")
			// Concurrently, so that all of them fall in the warm-up.
			var wg sync.WaitGroup
			errs := make([]error, 30)
			for i := range errs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if b, err := get(sa.addr, "/"); err != nil || b != "hello from v1" {
						errs[i] = fmt.Errorf("got %q, %v", b, err)
					}
				}()
			}
			wg.Wait()
			bad := 0
			for i, err := range errs {
				if err != nil {
					bad++
					t.Errorf("request %d during the new process's warm-up: %v; want hello from v1", i, err)
				}
			}
			if bad > 0 {
				t.Fatalf("%d of %d requests during the warm-up not answered by the old process", bad, len(errs))
			}
			sa.logged("the handover's end", tt.log)
			eventually(t, 10*time.Second, "the handover's end", func() error {
				if b, err := get(sa.addr, "/"); err != nil || b != tt.after {
					return fmt.Errorf("got %q, %v", b, err)
				}
				return nil
			})
			sa.onPID(readPID(sa.pidFile))
		})
	}
}

// TestStandaloneSIGHUPFollowsCurrentAfterAScript: after a kill -HUP
// handover to a release that is a script exec'ing the app at a path of
// its own, the next kill -HUP still starts current's release: a failing
// one is refused and a good one served. (The new process's argv[0] was
// the script's path, releases/v2/hello, and every later SIGHUP started
// v2 again whatever current named, as a new user's trial found.)
func TestStandaloneSIGHUPFollowsCurrentAfterAScript(t *testing.T) {
	sa := startStandalone(t, "v1")
	script := sa.release("vscript", "#!/bin/sh\nexec "+filepath.Join(bins.releases, "v2", "hello")+" \"$@\"\n")
	bad := sa.release("vbad", "#!/bin/sh\necho \"fatal: cannot read /etc/hello.conf\" >&2\nexit 3\n")
	handover := func(to, want string) {
		t.Helper()
		old := readPID(sa.pidFile)
		sa.point(to)
		sa.hup()
		eventually(t, 10*time.Second, want+" serves, pid file rewritten", func() error {
			if b, err := get(sa.addr, "/"); err != nil || b != want {
				return fmt.Errorf("got %q, %v", b, err)
			}
			if p := readPID(sa.pidFile); p == old || p == 0 {
				return errors.New("pid file not rewritten yet")
			}
			return nil
		})
		sa.onPID(readPID(sa.pidFile))
	}
	handover(script, "hello from v2")

	before := readPID(sa.pidFile)
	sa.point(bad)
	sa.hup()
	sa.logged("the handover to the failing release refused", "handover failed; still serving")
	if p := readPID(sa.pidFile); p != before {
		t.Fatalf("pid file %d after the failed handover; want %d", p, before)
	}
	handover(filepath.Join(bins.releases, "v1"), "hello from v1")
}

// TestStandaloneSIGHUPScriptFlagsStayWithTheirRelease: flags a release
// script adds before exec'ing the app are that release's: the next
// kill -HUP starts the binary release after it with the first process's
// arguments. (They stuck and piled up: the app's own argv, the script's
// flags included, was what the next SIGHUP started, so v1 after a script
// adding -fail-ratio 1 answered 500, as a new user's trial found.)
func TestStandaloneSIGHUPScriptFlagsStayWithTheirRelease(t *testing.T) {
	sa := startStandalone(t, "v1")
	failing := sa.release("vfail", "#!/bin/sh\nexec "+filepath.Join(bins.releases, "v2", "hello")+" -fail-ratio 1 \"$@\"\n")
	old := readPID(sa.pidFile)
	sa.point(failing)
	sa.hup()
	sa.logged("the handover to the script release", "handover: new process serves")
	eventually(t, 10*time.Second, "the pid file names the script release's process", func() error {
		if p := readPID(sa.pidFile); p == old || p == 0 {
			return errors.New("pid file not rewritten yet")
		}
		return nil
	})
	sa.onPID(readPID(sa.pidFile))
	old = readPID(sa.pidFile)
	sa.point(filepath.Join(bins.releases, "v1"))
	sa.hup()
	eventually(t, 10*time.Second, "v1 serves again, without the script's flags", func() error {
		if p := readPID(sa.pidFile); p == old || p == 0 {
			return errors.New("pid file not rewritten yet")
		}
		if b, err := get(sa.addr, "/"); err != nil || b != "hello from v1" {
			return fmt.Errorf("got %q, %v", b, err)
		}
		return nil
	})
	sa.onPID(readPID(sa.pidFile))
	for i := 0; i < 10; i++ {
		if b := mustGet(t, sa.addr, "/"); b != "hello from v1" {
			t.Fatalf("request %d: %q; want hello from v1", i, b)
		}
	}
}

// TestStandaloneParentKilledDuringHandover: a kill -9 of the process that
// handed over, while its new process warms up, leaves the new one serving
// alone once its health check passes: it writes the pid file, and the
// next kill -HUP hands over from it; one that fails its check exits
// without ever naming itself in the pid file. (It exited at its ready,
// "the supervisor went away", and the service was down with a pid file
// naming the dead process; killed just after its ready, it served on
// unseen, with no pid file naming it. A first version of the takeover
// took the pid file before the check, as a new user's trial found: an
// unhealthy one then exited, leaving it naming a dead process.)
func TestStandaloneParentKilledDuringHandover(t *testing.T) {
	for _, healthy := range []bool{true, false} {
		t.Run(map[bool]string{true: "healthy", false: "unhealthy"}[healthy], func(t *testing.T) {
			sa := startStandalone(t, "v1")
			oldPID := sa.cmd.Process.Pid
			flags := "-warmup 1s"
			if !healthy {
				flags += " -unhealthy"
			}
			sa.point(sa.release("vwarm", "#!/bin/sh\nexec "+filepath.Join(bins.releases, "v2", "hello")+" "+flags+" \"$@\"\n"))
			sa.hup()
			sa.logged("the new process listens", "msg=listening generation=2")
			// Killed with the rest at cleanup even if it never writes the
			// pid file (the script execs it: same pid).
			child := 0
			b, _ := os.ReadFile(sa.log.Name())
			if m := regexp.MustCompile(`child=(\d+)`).FindAllSubmatch(b, -1); len(m) > 0 {
				child, _ = strconv.Atoi(string(m[len(m)-1][1]))
				sa.onPID(child)
			}
			if err := syscall.Kill(oldPID, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			if !healthy {
				eventually(t, 10*time.Second, "the unhealthy new process exits", func() error {
					if child > 0 && alive(child) {
						return fmt.Errorf("pid %d alive", child)
					}
					return nil
				})
				if p := readPID(sa.pidFile); p == child {
					t.Errorf("pid file names the unhealthy process %d, which exited", p)
				}
				return
			}
			eventually(t, 10*time.Second, "the new process serves alone, in the pid file", func() error {
				p := readPID(sa.pidFile)
				if p == oldPID || p == 0 || !alive(p) {
					return fmt.Errorf("pid file names %d", p)
				}
				if b, err := get(sa.addr, "/"); err != nil || b != "hello from v2" {
					return fmt.Errorf("got %q, %v", b, err)
				}
				return nil
			})
			alone := readPID(sa.pidFile)
			sa.onPID(alone)
			sa.point(filepath.Join(bins.releases, "v1"))
			sa.hup()
			eventually(t, 10*time.Second, "the next kill -HUP hands over to v1, which writes the pid file", func() error {
				if b, err := get(sa.addr, "/"); err != nil || b != "hello from v1" {
					return fmt.Errorf("got %q, %v", b, err)
				}
				if p := readPID(sa.pidFile); p == alone || p == 0 {
					return errors.New("pid file not rewritten yet")
				}
				return nil
			})
			sa.onPID(readPID(sa.pidFile))
		})
	}
}

// TestStandaloneStopDuringAHandover: SIGTERM to a standalone hello while
// its kill -HUP handover waits for a new process that is slow to start
// gives the handover up: the new process and what it started are killed
// and the handover's temporary directory removed before the old process
// exits. (They outlived it: a release script's children ran on, and the
// directory stayed in TMPDIR.)
func TestStandaloneStopDuringAHandover(t *testing.T) {
	tmp := shortTempDir(t)
	t.Setenv("TMPDIR", tmp) // inherited by hello and every process it starts
	sa := startStandalone(t, "v1")
	slow := sa.release("vslow", "#!/bin/sh\nsleep 100 &\necho $! > \"$(dirname \"$0\")/app.pid\"\nwait\n")
	sa.point(slow)
	sa.hup()
	var app int
	eventually(t, 10*time.Second, "the slow release started", func() error {
		if app = readPID(filepath.Join(slow, "app.pid")); app == 0 {
			return errors.New("no app.pid yet")
		}
		return nil
	})
	syscall.Kill(sa.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-sa.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("hello still running 10 s after SIGTERM")
	}
	if alive(app) {
		syscall.Kill(app, syscall.SIGKILL)
		t.Errorf("the slow release's process %d outlived the process that gave its handover up", app)
	}
	if left, _ := filepath.Glob(filepath.Join(tmp, "launcher-handoff-*")); len(left) > 0 {
		t.Errorf("the handover's temporary directory outlived the process: %v", left)
	}
}

// TestStandaloneStopWithASIGHUP: a SIGTERM and a SIGHUP sent back to
// back, in either order, stop the service: no new process serves on
// (before, the SIGHUP started a handover while the process stopped, and
// its new process took the port over and served), and the pid file goes.
func TestStandaloneStopWithASIGHUP(t *testing.T) {
	for _, order := range [][]syscall.Signal{{syscall.SIGTERM, syscall.SIGHUP}, {syscall.SIGHUP, syscall.SIGTERM}} {
		t.Run(fmt.Sprintf("%v then %v", order[0], order[1]), func(t *testing.T) {
			tmp := shortTempDir(t)
			t.Setenv("TMPDIR", tmp) // inherited by hello and every process it starts
			sa := startStandalone(t, "v1")
			sa.point(filepath.Join(bins.releases, "v2"))
			pid := sa.cmd.Process.Pid
			for _, sig := range order {
				syscall.Kill(pid, sig)
			}
			select {
			case <-sa.exited:
			case <-time.After(10 * time.Second):
				t.Fatal("hello still running 10 s after SIGTERM")
			}
			// A new process that took over would serve v2 and write its
			// pid in the file; give it the time a handover takes.
			time.Sleep(500 * time.Millisecond)
			if b, err := get(sa.addr, "/"); err == nil {
				t.Errorf("%s still answers %q after the process was stopped", sa.addr, b)
			}
			if p := readPID(sa.pidFile); p != 0 {
				sa.onPID(p) // killed at cleanup
				t.Errorf("the pid file names %d after the process was stopped", p)
			}
			if left, _ := filepath.Glob(filepath.Join(tmp, "launcher-handoff-*")); len(left) > 0 {
				t.Errorf("a handover's temporary directory outlived the process: %v", left)
			}
		})
	}
}

// TestWorkersRollbackStop covers --workers, rollback and stop.
func TestWorkersRollbackStop(t *testing.T) {
	s := startSup(t, "--workers", "3", "--probation", "0") // upgrade --wait returns once v1 is gone, not 5 s later
	g := activeGen(s.status())
	if len(g.PIDs) != 3 {
		t.Fatalf("generation 1 pids %v; want 3", g.PIDs)
	}
	out, _, _ := s.cli("status")
	if !strings.Contains(out, "GEN") || strings.Count(out, ",") < 2 {
		t.Errorf("status output lacks the 3 pids:\n%s", out)
	}
	// Every worker gets a share of new connections.
	seen := map[string]bool{}
	_ = seen
	if _, errOut, code := s.cli("upgrade", "--wait", "v2"); code != 0 {
		t.Fatalf("upgrade: %s", errOut)
	}
	g = activeGen(s.status())
	if g.Version != "v2" || len(g.PIDs) != 3 {
		t.Fatalf("after upgrade: %+v; want v2 with 3 pids", g)
	}
	out, errOut, code := s.cli("rollback", "--wait")
	if code != 0 {
		t.Fatalf("rollback: exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "rolling back to v1") {
		t.Errorf("rollback output:\n%s", out)
	}
	if b := mustGet(t, s.addr, "/"); b != "hello from v1" {
		t.Fatalf("after rollback: %q; want hello from v1", b)
	}
	all := s.status()
	var pids []int
	for _, g := range all.Generations {
		pids = append(pids, g.PIDs...)
	}
	long := longRequest(s.addr, time.Second)
	s.waitForInflight(3, 1)
	if _, errOut, code := s.cli("stop"); code != 0 {
		t.Fatalf("stop: exit %d: %s", code, errOut)
	}
	if r := <-long; r.err != nil || r.body != "hello from v1" {
		t.Errorf("request in flight during stop: %q, %v", r.body, r.err)
	}
	if err := s.wait(10 * time.Second); err != nil {
		t.Fatalf("supervisor exit: %v", err)
	}
	for _, p := range pids {
		if alive(p) {
			t.Errorf("worker %d alive after stop", p)
		}
	}
	if _, err := os.Stat(filepath.Join(s.stateDir, "launcher.pid")); !os.IsNotExist(err) {
		t.Errorf("pid file left after stop: %v", err)
	}
}

func readPID(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	var p int
	fmt.Sscanf(string(b), "%d", &p)
	return p
}

// TestWorkerCrashRestarted: a worker killed outside an upgrade is
// restarted, traffic is steered to the new process, and status counts it.
func TestWorkerCrashRestarted(t *testing.T) {
	s := startSup(t, "--workers", "2")
	g := activeGen(s.status())
	victim := g.PIDs[0]
	if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "worker restarted", func() error {
		g := activeGen(s.status())
		if g == nil || len(g.PIDs) != 2 || g.Restarts < 1 {
			return fmt.Errorf("active generation %+v", g)
		}
		for _, p := range g.PIDs {
			if p == victim {
				return fmt.Errorf("victim %d still listed", victim)
			}
		}
		return nil
	})
	for i := 0; i < 50; i++ {
		if b := mustGet(t, s.addr, "/"); b != "hello from v1" {
			t.Fatalf("request %d after the restart: %q", i, b)
		}
	}
	if out, _, _ := s.cli("status"); !strings.Contains(out, "RESTARTS") {
		t.Errorf("status lacks the restarts column:\n%s", out)
	}
}

// TestStartInTurn: with --start-in-turn, generations of 3 real workers
// start, serve with all 3, upgraded and back (the order of the starts is
// checked with fake workers in supervisor's TestStartInTurn).
func TestStartInTurn(t *testing.T) {
	s := startSup(t, "--workers", "3", "--start-in-turn", "--probation", "0")
	for _, v := range []string{"v2", "v1"} {
		if _, errOut, code := s.cli("upgrade", "--wait", v); code != 0 {
			t.Fatalf("upgrade --wait %s: exit %d: %s", v, code, errOut)
		}
		g := activeGen(s.status())
		if g.Version != v || len(g.PIDs) != 3 {
			t.Fatalf("active generation %s with pids %v; want %s with 3", g.Version, g.PIDs, v)
		}
		if b := mustGet(t, s.addr, "/"); b != "hello from "+v {
			t.Fatalf("GET / = %q; want hello from %s", b, v)
		}
	}
}
