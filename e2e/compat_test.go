package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/launcherd/launcher/internal/loadgen"
	"github.com/launcherd/launcher/internal/rig"
	"github.com/launcherd/launcher/supervisor"
)

// protocolV1Commit is the last commit whose launcher and app library speak
// version 1 of the control protocol only: its supervisor refuses any other
// hello, and its workers match no IDs.
const protocolV1Commit = "c9d624e"

// errNoOldTree says the old commit cannot be built here: no git, or a
// shallow clone without it.
var errNoOldTree = errors.New("old tree unavailable")

// oldBins is the launcher and hello (as v1 and v3) of protocolV1Commit.
type oldBins struct {
	launcher, helloV1, helloV3 string
}

// buildOld builds oldBins once for every test, with -race, into bins.dir
// (which TestMain removes).
var buildOld = sync.OnceValues(func() (oldBins, error) {
	out := filepath.Join(bins.dir, protocolV1Commit)
	ob := oldBins{
		launcher: filepath.Join(out, "launcher"),
		helloV1:  filepath.Join(out, "v1", "hello"),
		helloV3:  filepath.Join(out, "v3", "hello"),
	}
	git := func(args ...string) (string, error) {
		b, err := exec.Command("git", args...).Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				err = fmt.Errorf("%w: %s", err, bytes.TrimSpace(ee.Stderr))
			}
			return "", fmt.Errorf("%w: git %s: %v", errNoOldTree, strings.Join(args, " "), err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	root, err := git("rev-parse", "--show-toplevel")
	if err != nil {
		return ob, err
	}
	if _, err := git("-C", root, "rev-parse", "--verify", "--quiet", protocolV1Commit+"^{commit}"); err != nil {
		return ob, err
	}
	if _, err := git("-C", root, "merge-base", "--is-ancestor", protocolV1Commit, "HEAD"); err != nil {
		return ob, err
	}
	src, err := os.MkdirTemp("", "launcher-"+protocolV1Commit+"-")
	if err != nil {
		return ob, err
	}
	defer os.RemoveAll(src)
	tarball := filepath.Join(src, "tree.tar")
	if _, err := git("-C", root, "archive", "-o", tarball, protocolV1Commit); err != nil {
		return ob, err
	}
	if b, err := exec.Command("tar", "-x", "-f", tarball, "-C", src).CombinedOutput(); err != nil {
		return ob, fmt.Errorf("tar: %v: %s", err, b)
	}
	// The test means what it says only if that tree speaks version 1.
	ctl, err := os.ReadFile(filepath.Join(src, "internal", "control", "control.go"))
	if err != nil {
		return ob, err
	}
	if !bytes.Contains(ctl, []byte("const Version = 1\n")) {
		return ob, fmt.Errorf("%s does not speak protocol version 1 only", protocolV1Commit)
	}
	jobs := [][]string{
		{"build", "-race", "-o", ob.launcher, "./cmd/launcher"},
		{"build", "-race", "-ldflags", "-X main.version=v1", "-o", ob.helloV1, "./cmd/hello"},
		{"build", "-race", "-ldflags", "-X main.version=v3", "-o", ob.helloV3, "./cmd/hello"},
	}
	errs := make([]error, len(jobs))
	var wg sync.WaitGroup
	for i, args := range jobs {
		wg.Add(1)
		go func() { // one go build; ends with it
			defer wg.Done()
			cmd := exec.Command("go", args...)
			cmd.Dir = src
			// Same module cache; no workspace or VCS stamp of this tree.
			cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-buildvcs=false")
			if b, err := cmd.CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("go %s (in the tree of %s): %v: %s", strings.Join(args, " "), protocolV1Commit, err, b)
			}
		}()
	}
	wg.Wait()
	return ob, errors.Join(errs...)
})

// needOld returns the old binaries, skipping the test where the old
// commit is not available, except in CI, where a clone has full history.
func needOld(t *testing.T) oldBins {
	t.Helper()
	ob, err := buildOld()
	switch {
	case errors.Is(err, errNoOldTree) && os.Getenv("CI") == "":
		t.Skipf("cannot build the launcher of %s, the last with protocol version 1 (a shallow clone?): %v", protocolV1Commit, err)
	case err != nil:
		t.Fatalf("build the launcher of %s, the last with protocol version 1: %v", protocolV1Commit, err)
	}
	return ob
}

// releasesOf makes a --releases directory: version → hello binary (copied,
// since every release must resolve inside the directory).
func releasesOf(t *testing.T, hellos map[string]string) string {
	t.Helper()
	dir := filepath.Join(shortTempDir(t), "rel")
	for v, src := range hellos {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(dir, v), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, v, "hello"), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// compatLoad drives a small never-retrying load at addr (a new connection
// per request, and keep-alive POSTs) until the returned function is
// called; that returns the results.
func compatLoad(t *testing.T, addr string) func() []*loadgen.Result {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cfgs := []loadgen.Config{
		{Addr: addr, Mode: loadgen.NewConn, Workers: 3, Duration: time.Minute, MaxRequests: 1_000_000},
		{Addr: addr, Mode: loadgen.KeepAlive, Method: "POST", Workers: 3, Duration: time.Minute, MaxRequests: 1_000_000},
	}
	results := make([]*loadgen.Result, len(cfgs))
	var wg sync.WaitGroup
	for i, cfg := range cfgs {
		wg.Add(1)
		go func() { // ends when cancel is called
			defer wg.Done()
			var err error
			if results[i], err = loadgen.Run(ctx, cfg); results[i] == nil {
				t.Errorf("load %s: %v", cfg.Mode, err)
			}
		}()
	}
	var once sync.Once
	stop := func() []*loadgen.Result {
		once.Do(func() { cancel(); wg.Wait() })
		return results
	}
	t.Cleanup(func() { stop() })
	time.Sleep(200 * time.Millisecond) // load on the first generation too
	return stop
}

// checkLoad fails the test on any failed request, and unless every
// version in want answered some.
func checkLoad(t *testing.T, results []*loadgen.Result, want ...string) {
	t.Helper()
	versions := map[string]int64{}
	for _, r := range results {
		if r == nil {
			continue
		}
		if r.Failures() > 0 {
			t.Errorf("%s: %d of %d requests failed: %v", r.Config.Mode, r.Failures(), r.Requests, r.Samples)
		}
		for v, n := range r.Versions {
			versions[v] += n
		}
		t.Logf("%s: %d requests, %d failed, %d cut at the end, versions %v", r.Config.Mode, r.Requests, r.Failures(), r.Aborted, r.Versions)
	}
	for _, v := range want {
		if versions[v] == 0 {
			t.Errorf("no request answered by %s: versions %v", v, versions)
		}
	}
}

// TestCompatNewLauncherOldApp: the launcher does not need the app upgraded
// first. A new supervisor runs workers of the old library (protocol
// version 1, no request IDs) as generation 1, upgrades them to the new
// library and back to the old one under load, and loses no request.
func TestCompatNewLauncherOldApp(t *testing.T) {
	ob := needOld(t)
	rel := releasesOf(t, map[string]string{
		"v1": ob.helloV1,                                  // old
		"v2": filepath.Join(bins.releases, "v2", "hello"), // new
		"v3": ob.helloV3,                                  // old again
	})
	addr, state := freeAddr(t), filepath.Join(shortTempDir(t), "s")
	log := &rig.LogBuffer{}
	argv := []string{bins.launcher, "start", "--listen", addr, "--state-dir", state, "--releases", rel,
		"--workers", "2", "--probation", "300ms", "--", filepath.Join(rel, "v1", "hello")}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := rig.StartProc(ctx, argv, nil, state, log)
	if err != nil {
		t.Fatalf("new launcher with an old app: %v\n%s", err, log)
	}
	s := &rig.Supervisor{Proc: p, Addr: addr}
	t.Cleanup(func() {
		s.Stop()
		if r := p.RaceReport(); r != "" {
			t.Errorf("data race in the new launcher or its workers:\n%s", r)
		}
		if t.Failed() {
			t.Logf("supervisor log:\n%s", log)
		}
	})
	if got, want := mustGet(t, addr, "/"), "hello from v1"; got != want {
		t.Fatalf("got %q; want %q", got, want)
	}

	stopLoad := compatLoad(t, addr)
	for _, v := range []string{"v2", "v3"} {
		if _, err := s.Upgrade(ctx, v, nil); err != nil {
			t.Fatalf("upgrade to %s: %v", v, err)
		}
		if got, want := mustGet(t, addr, "/"), "hello from "+v; got != want {
			t.Fatalf("after the upgrade to %s: got %q; want %q", v, got, want)
		}
	}
	time.Sleep(200 * time.Millisecond)
	checkLoad(t, stopLoad(), "v1", "v2", "v3")
	if err := s.Stop(); err != nil {
		t.Errorf("stop: %v", err)
	}
}

// oldSupervisor is a `launcher start` of protocolV1Commit. The new CLI
// may not speak to it, so it is driven with its own CLI.
type oldSupervisor struct {
	t        *testing.T
	cli      string
	stateDir string
	cmd      *exec.Cmd
	done     chan struct{} // closed once cmd is reaped
	log      *rig.LogBuffer
	pids     map[int]bool // every worker pid seen, for the cleanup
}

func startOldSupervisor(t *testing.T, launcher string, args ...string) *oldSupervisor {
	t.Helper()
	s := &oldSupervisor{t: t, cli: launcher, stateDir: filepath.Join(shortTempDir(t), "s"),
		done: make(chan struct{}), log: &rig.LogBuffer{}, pids: map[int]bool{}}
	s.cmd = exec.Command(launcher, append([]string{"start", "--state-dir", s.stateDir}, args...)...)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	s.cmd.WaitDelay = 2 * time.Second // workers share its output
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.cmd.Wait(); close(s.done) }() // ends when the supervisor is reaped
	t.Cleanup(s.cleanup)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if st, err := s.status(); err == nil && activeGen(st) != nil {
			return s
		}
		select {
		case <-s.done:
			t.Fatalf("old launcher start exited: %v\n%s", s.cmd.ProcessState, s.log)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("old launcher start not serving after 20s\n%s", s.log)
		}
	}
}

// run runs the old CLI with --state-dir after the command name.
func (s *oldSupervisor) run(args ...string) (string, error) {
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.cli, append([]string{args[0], "--state-dir", s.stateDir}, args[1:]...)...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	noRace(s.t, "the old launcher's CLI", append(out.Bytes(), errb.Bytes()...), err)
	if err != nil {
		return out.String(), fmt.Errorf("launcher %s: %v: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

// status returns the old supervisor's status and remembers its workers.
func (s *oldSupervisor) status() (supervisor.Status, error) {
	var st supervisor.Status
	out, err := s.run("status", "--json")
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return st, err
	}
	for _, g := range st.Generations {
		for _, pid := range g.PIDs {
			s.pids[pid] = true
		}
	}
	return st, nil
}

// stop stops the supervisor with SIGTERM (a drain of everything) and
// returns its exit error, or an error if it has not exited within timeout.
func (s *oldSupervisor) stop(timeout time.Duration) error {
	s.status() // remember the latest workers
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
		if !s.cmd.ProcessState.Success() {
			return fmt.Errorf("exit: %v", s.cmd.ProcessState)
		}
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("still running %s after SIGTERM", timeout)
	}
}

func (s *oldSupervisor) cleanup() {
	select {
	case <-s.done:
	default:
		if err := s.stop(15 * time.Second); err != nil {
			s.cmd.Process.Kill()
			<-s.done
		}
	}
	for pid := range s.pids {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	noRace(s.t, "the old launcher or its workers", []byte(s.log.String()), nil)
	if s.t.Failed() {
		s.t.Logf("old supervisor log:\n%s", s.log)
	}
}

// TestCompatOldLauncherNewApp: the app does not need the launcher upgraded
// first. A supervisor of protocol version 1, which refuses a version-2
// hello, runs workers of the new library (they fall back to version 1),
// upgrades them under load without losing a request, and stops them.
func TestCompatOldLauncherNewApp(t *testing.T) {
	ob := needOld(t)
	rel := releasesOf(t, map[string]string{
		"v1": filepath.Join(bins.releases, "v1", "hello"),
		"v2": filepath.Join(bins.releases, "v2", "hello"),
	})
	addr := freeAddr(t)
	s := startOldSupervisor(t, ob.launcher, "--listen", addr, "--releases", rel,
		"--workers", "2", "--probation", "300ms", "--", filepath.Join(rel, "v1", "hello"))
	if got, want := mustGet(t, addr, "/"), "hello from v1"; got != want {
		t.Fatalf("got %q; want %q", got, want)
	}

	stopLoad := compatLoad(t, addr)
	if _, err := s.run("upgrade", "--wait", "v2"); err != nil {
		t.Fatal(err)
	}
	if got, want := mustGet(t, addr, "/"), "hello from v2"; got != want {
		t.Fatalf("after the upgrade: got %q; want %q", got, want)
	}
	st, err := s.status()
	if err != nil {
		t.Fatal(err)
	}
	if g := activeGen(st); g == nil || g.Generation != 2 || len(g.PIDs) != 2 {
		t.Errorf("active generation %+v; want generation 2 with 2 workers", g)
	}
	time.Sleep(200 * time.Millisecond)
	checkLoad(t, stopLoad(), "v1", "v2")
	if err := s.stop(15 * time.Second); err != nil {
		t.Errorf("stop: %v", err)
	}
}

// TestCompatStandaloneHandoff: without a supervisor, kill -HUP hands the
// port from one release to the next whichever library each has: the old
// library's parent accepts only a version-1 hello on a single connection,
// so the new library's child says hello at version 1 there. Old → new →
// old, under load, loses no request.
func TestCompatStandaloneHandoff(t *testing.T) {
	ob := needOld(t)
	rel := releasesOf(t, map[string]string{
		"v1": ob.helloV1,                                  // old
		"v2": filepath.Join(bins.releases, "v2", "hello"), // new
		"v3": ob.helloV3,                                  // old again
	})
	root := shortTempDir(t)
	current, pidFile := filepath.Join(root, "current"), filepath.Join(root, "hello.pid")
	point := func(v string) {
		t.Helper()
		tmp := current + ".new"
		if err := os.Symlink(filepath.Join(rel, v), tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, current); err != nil {
			t.Fatal(err)
		}
	}
	pidOf := func() int {
		b, _ := os.ReadFile(pidFile)
		var pid int
		fmt.Sscan(string(b), &pid)
		return pid
	}
	point("v1")
	addr := freeAddr(t)
	// A file, not a pipe: each new process inherits its parent's stderr.
	log, err := os.Create(filepath.Join(root, "hello.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd := exec.Command(filepath.Join(current, "hello"), "-addr", addr, "-pidfile", pidFile)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }() // ends when the first process is reaped
	pids := []int{cmd.Process.Pid}
	t.Cleanup(func() {
		for _, pid := range append(pids, pidOf()) {
			if pid > 0 {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		<-exited
		if t.Failed() {
			b, _ := os.ReadFile(log.Name())
			t.Logf("log:\n%s", b)
		}
	})
	eventually(t, 10*time.Second, "standalone v1 serves", func() error {
		if b, err := get(addr, "/"); err != nil || b != "hello from v1" {
			return fmt.Errorf("got %q, %v", b, err)
		}
		if pidOf() != cmd.Process.Pid {
			return errors.New("pid file not written yet")
		}
		return nil
	})

	stopLoad := compatLoad(t, addr)
	for _, v := range []string{"v2", "v3"} {
		old := pidOf()
		point(v)
		if err := syscall.Kill(old, syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, v+" serves after kill -HUP", func() error {
			if b, err := get(addr, "/"); err != nil || b != "hello from "+v {
				return fmt.Errorf("got %q, %v", b, err)
			}
			if pid := pidOf(); pid == old || pid == 0 {
				return errors.New("pid file not rewritten yet")
			}
			return nil
		})
		pids = append(pids, pidOf())
		eventually(t, 10*time.Second, "the process before "+v+" exits", func() error {
			if alive(old) {
				return fmt.Errorf("pid %d alive", old)
			}
			return nil
		})
	}
	time.Sleep(200 * time.Millisecond)
	checkLoad(t, stopLoad(), "v1", "v2", "v3")
}
