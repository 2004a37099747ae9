package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/launcherd/launcher/internal/rig"
	"github.com/launcherd/launcher/supervisor"
)

// binaries built once for all tests.
var bins struct {
	dir      string // holds launcher and releases/VERSION/hello
	launcher string
	releases string
}

// envBins names a directory of already built binaries: a copy of the test
// binary re-executed in a network namespace reuses its parent's.
const envBins = "LAUNCHER_E2E_BINS"

// parallelTests is how many parallel tests run at once unless -parallel
// says: those of this package mostly wait (on a delayed link, on
// Prometheus's scrapes, on a drain or a deadline). With the default,
// GOMAXPROCS (2 in CI), their phase was their sum halved, about 45 s, on
// 0.4 of a core; all at once it is their longest, about 20 s, on under 1
// of 2 cores, and each takes as long as alone.
const parallelTests = 8

func TestMain(m *testing.M) {
	flag.Parse()
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit {
		flag.Set("test.parallel", strconv.Itoa(parallelTests))
	}
	// Every process the tests start inherits it (workers inherit their
	// supervisor's environment): a data race ends the process with status
	// 66 after its report, which the harness turns into a failed test (see
	// noRace and sup.cleanup).
	os.Setenv("GORACE", rig.GORACE)
	if dir := os.Getenv(envBins); dir != "" {
		bins.dir, bins.launcher, bins.releases = dir, filepath.Join(dir, "launcher"), filepath.Join(dir, "releases")
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "launcher-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := 1
	if err := build(dir); err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
	} else {
		code = m.Run()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// build builds the launcher and hello v1, v2 and v3 with -race into dir.
func build(dir string) error {
	r, err := rig.BuildWith(context.Background(), dir, rig.BuildOptions{Race: true}, "v1", "v2", "v3")
	if err != nil {
		return err
	}
	bins.dir, bins.launcher, bins.releases = r.Dir, r.Launcher, r.Releases
	return nil
}

// freeAddr is rig.FreeAddr that fails the test on error.
func freeAddr(t testing.TB) string {
	t.Helper()
	addr, err := rig.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// shortTempDir returns a temp dir with a short path: unix socket paths
// are limited to 108 bytes.
func shortTempDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "lt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// sup is a running `launcher start` of a test.
type sup struct {
	*rig.Proc
	t        *testing.T
	addr     string
	stateDir string
	log      *rig.LogBuffer
}

// startSup starts a supervisor of releases/v1/hello with extra flags and
// waits until it serves. Cleanup stops it, kills anything left, and fails
// the test if the supervisor or a worker reported a data race.
func startSup(t *testing.T, flags ...string) *sup {
	t.Helper()
	return startSupIn(t, filepath.Join(shortTempDir(t), "s"), flags...)
}

// startSupIn is startSup with a given state dir.
func startSupIn(t *testing.T, stateDir string, flags ...string) *sup {
	t.Helper()
	return startSupAt(t, freeAddr(t), stateDir, flags...)
}

// startSupAt is startSup with a given listen address and state dir.
func startSupAt(t *testing.T, addr, stateDir string, flags ...string) *sup {
	t.Helper()
	return startSupWith(t, nil, nil, addr, stateDir, flags...)
}

// startSupEnv is startSupAt with env added to the supervisor's
// environment.
func startSupEnv(t *testing.T, addr, stateDir string, env []string, flags ...string) *sup {
	t.Helper()
	return startSupWith(t, nil, env, addr, stateDir, flags...)
}

// startSupWrapped is startSupAt with the supervisor's command line run
// by wrap, a command that execs its arguments (such as ip netns exec NS).
func startSupWrapped(t *testing.T, wrap []string, addr, stateDir string, flags ...string) *sup {
	t.Helper()
	return startSupWith(t, wrap, nil, addr, stateDir, flags...)
}

// startSupWith starts a supervisor run by wrap (may be nil) with env
// added to its environment.
func startSupWith(t *testing.T, wrap, env []string, addr, stateDir string, flags ...string) *sup {
	t.Helper()
	s := &sup{t: t, addr: addr, stateDir: stateDir, log: &rig.LogBuffer{}}
	args := append(append(wrap[:len(wrap):len(wrap)], bins.launcher, "start", "--listen", s.addr, "--state-dir", s.stateDir, "--releases", bins.releases), flags...)
	if !hasDashDash(flags) {
		args = append(args, "--", filepath.Join(bins.releases, "v1", "hello"))
	}
	p, err := rig.StartProc(context.Background(), args, env, stateDir, s.log)
	if err != nil {
		t.Fatalf("%v\n%s", err, s.log)
	}
	s.Proc = p
	t.Cleanup(s.cleanup)
	return s
}

func hasDashDash(args []string) bool {
	for _, a := range args {
		if a == "--" {
			return true
		}
	}
	return false
}

// status returns the supervisor's status and remembers worker pids.
func (s *sup) status() supervisor.Status {
	s.t.Helper()
	st, err := s.Status(context.Background())
	if err != nil {
		s.t.Fatalf("status: %v", err)
	}
	return st
}

func (s *sup) cleanup() {
	s.Shutdown(15 * time.Second)
	// A supervisor that stopped cleanly removes its cgroups; one killed
	// leaves them for the next on its state dir to sweep, and the test
	// removes them instead.
	if left := rig.RemoveCgroups(s.stateDir); len(left) > 0 && s.Err() == nil {
		s.t.Errorf("the supervisor exited cleanly but left cgroups: %v", left)
	}
	if r := s.RaceReport(); r != "" {
		s.t.Errorf("data race in the supervisor (%s) or its workers:\n%s", s.stateDir, r)
	}
	if s.t.Failed() {
		s.t.Logf("supervisor log:\n%s", s.log)
	}
}

// wait waits for the supervisor to exit and returns its error.
func (s *sup) wait(timeout time.Duration) error {
	s.t.Helper()
	select {
	case <-s.Done():
		return s.Err()
	case <-time.After(timeout):
		s.t.Fatalf("supervisor still running after %s", timeout)
		return nil
	}
}

// cli runs the launcher CLI against this supervisor's state dir.
func (s *sup) cli(args ...string) (stdout, stderr string, code int) {
	return runCLI(s.t, append(args[:1:1], append([]string{"--state-dir", s.stateDir}, args[1:]...)...)...)
}

// runCLI runs the launcher CLI and returns its output and exit status.
func runCLI(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(bins.launcher, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	// A `start` that should have been refused runs on; killed, its
	// workers would hold its output open.
	cmd.WaitDelay = 2 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	go func() { <-ctx.Done(); cmd.Process.Kill() }()
	err := cmd.Run()
	noRace(t, "launcher "+strings.Join(args, " "), append(out.Bytes(), errb.Bytes()...), err)
	code = 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run launcher %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// noRace fails the test if out, the output of a process it ran (what),
// has a data race report, or err is the race detector's exit status.
func noRace(t testing.TB, what string, out []byte, err error) {
	t.Helper()
	if r := rig.RaceReport(out, err); r != "" {
		t.Errorf("data race in %s:\n%s", what, r)
	}
}

func activeGen(st supervisor.Status) *supervisor.GenerationStatus {
	for i := range st.Generations {
		if st.Generations[i].State == supervisor.StateActive {
			return &st.Generations[i]
		}
	}
	return nil
}

// get sends GET path with a fresh connection and returns the body.
func get(addr, path string) (string, error) {
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("status %s", resp.Status)
	}
	return strings.TrimSpace(string(b)), nil
}

// mustGet is get that fails the test on error.
func mustGet(t *testing.T, addr, path string) string {
	t.Helper()
	b, err := get(addr, path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return b
}

// eventually polls f every 10ms until it returns nil or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// alive reports whether pid exists (and is not a zombie we could reap).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// Field 3 is the state; Z is a zombie, as good as gone once it is
	// alone: a killed process's leader turns zombie while its other
	// threads still exit, and the last of them closes its files (its
	// listening sockets). A load started at the leader's Z had 1–4 of
	// 9,000 new connections reset on the closing socket, a loss the kill
	// itself caused.
	f := strings.Fields(string(b))
	if len(f) > 2 && f[2] != "Z" {
		return true
	}
	tasks, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	return err == nil && len(tasks) > 1
}

// statusJSON runs `launcher status --json` and decodes it.
func (s *sup) statusJSON() supervisor.Status {
	s.t.Helper()
	out, errOut, code := s.cli("status", "--json")
	if code != 0 {
		s.t.Fatalf("status --json: exit %d: %s", code, errOut)
	}
	var st supervisor.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		s.t.Fatalf("status --json: %v\n%s", err, out)
	}
	s.Remember(st)
	return st
}

// longRequest starts GET /sleep?d=D in the background.
func longRequest(addr string, d time.Duration) <-chan result {
	ch := make(chan result, 1)
	go func() {
		start := time.Now()
		body, err := get(addr, "/sleep?d="+d.String())
		ch <- result{body, err, time.Since(start)}
	}()
	return ch
}

type result struct {
	body string
	err  error
	took time.Duration
}

// stopProc stops pid (SIGSTOP) and waits until its state reads stopped
// (T): the stop takes effect once each of its threads runs, which on a
// loaded machine can be milliseconds after the signal, and a test that
// acts on a stopped worker must not act before.
func stopProc(t *testing.T, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, fmt.Sprintf("pid %d stopped", pid), func() error {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return err
		}
		s := string(b)
		if f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]); len(f) == 0 || f[0] != "T" {
			return fmt.Errorf("state %v", f[:min(len(f), 1)])
		}
		return nil
	})
}
