package deploy_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/launcherd/launcher/internal/rig"
	"github.com/launcherd/launcher/supervisor"
)

// TestMain removes the binaries the integration tests of this package
// built (see buildBinaries). Every process the tests start inherits
// GORACE: a data race ends it with status 66 after its report, which the
// helpers turn into a failed test (see noRace and launcherProc.cleanup).
func TestMain(m *testing.M) {
	os.Setenv("GORACE", rig.GORACE)
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// binaries are the launcher and releases of the hello service, built once
// for the package by [buildBinaries].
type binaries struct {
	dir      string
	launcher string
	// releases is a directory of releases: releases/VERSION/hello.
	releases string
	// broken is a release that exits 1 at once: releases/broken/hello.
	broken string
}

var (
	built     binaries
	buildOnce sync.Once
	buildErr  error
)

// helloVersions are the versions of hello buildBinaries builds.
var helloVersions = []string{"v1", "v2", "v3"}

// buildBinaries builds the launcher and hello v1, v2 and v3, with -race,
// the first time a test asks for them, and returns them.
func buildBinaries(t testing.TB) binaries {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "launcher-deploy-")
		if err != nil {
			buildErr = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		r, err := rig.BuildWith(ctx, dir, rig.BuildOptions{Race: true}, helloVersions...)
		if buildErr = err; err != nil {
			return
		}
		built = binaries{dir: r.Dir, launcher: r.Launcher, releases: r.Releases}
		built.broken = helloPath(built.releases, "broken")
		buildErr = writeBrokenRelease(built.broken)
	})
	if buildErr != nil {
		t.Fatalf("build: %v", buildErr)
	}
	return built
}

// writeBrokenRelease writes a release that fails at once, as a bad build
// would.
func writeBrokenRelease(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte("#!/bin/sh\necho 'broken release: cannot start' >&2\nexit 1\n"), 0o755)
}

// writeCrashingRelease writes a release, a script, that runs the hello
// binary hello and kills it (SIGKILL) after, as a release that crashes
// once it serves: within a probation longer than after, the supervisor
// rolls back to the standby generation.
func writeCrashingRelease(t testing.TB, path, hello string, after time.Duration) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	// $$ is the shell's pid, hello's after the exec; the sleep is its child.
	script := fmt.Sprintf("#!/bin/sh\n(sleep %.1f; kill -9 $$) &\nexec %s \"$@\"\n", after.Seconds(), hello)
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
}

// helloPath is the hello binary of version in releases.
func helloPath(releases, version string) string {
	return filepath.Join(releases, version, "hello")
}

// needTool returns the path of an external tool. When it is missing the
// test is skipped, or fails when the environment variable CI is true (the
// CI installs it: see scripts/test).
func needTool(t testing.TB, name, debianPackage string, alternatives ...string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, p := range alternatives {
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	missing(t, name, debianPackage)
	return ""
}

// missing skips the test because what is not installed, or fails it when
// the environment variable CI is true.
func missing(t testing.TB, what, debianPackage string) {
	t.Helper()
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
		t.Fatalf("%s not found (failing rather than skipping because CI is set; apt-get install %s)", what, debianPackage)
	}
	t.Skipf("%s not found; skipping (apt-get install %s to run this test)", what, debianPackage)
}

// shortTempDir returns a new temporary directory with a short path (unix
// socket paths must stay under 108 bytes), removed at the end of the test.
func shortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ld")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
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

// launcherProc is a running `launcher start`, stopped at the end of the
// test that started it.
type launcherProc struct {
	*rig.Proc
	t        testing.TB
	addr     string // the --listen address
	stateDir string
	log      *rig.LogBuffer
}

// startLauncher runs the launcher binary bin with args (the words after
// the binary: "start", flags, "--", the command) and extra environment,
// and waits until its first generation serves. stateDir must be the
// --state-dir of args; addr the --listen address. The test's cleanup stops
// it (SIGTERM, then SIGKILL), kills every worker it has seen, and fails the
// test if the supervisor or a worker reported a data race.
func startLauncher(t testing.TB, bin, addr, stateDir string, env []string, args ...string) *launcherProc {
	t.Helper()
	p := &launcherProc{t: t, addr: addr, stateDir: stateDir, log: &rig.LogBuffer{}}
	proc, err := rig.StartProc(context.Background(), append([]string{bin}, args...), env, stateDir, p.log)
	if err != nil {
		t.Fatalf("%v\n%s", err, p.log)
	}
	p.Proc = proc
	t.Cleanup(p.cleanup)
	return p
}

// cleanup stops the supervisor gracefully, kills it if it does not stop
// within 15 s, kills every worker it has seen, and checks their output for
// data races.
func (p *launcherProc) cleanup() {
	// A supervisor a test killed leaves its cgroups for the next one on
	// its state dir to sweep: removed here, once its workers are gone.
	defer rig.RemoveCgroups(p.stateDir)
	if err := p.Shutdown(15 * time.Second); errors.Is(err, rig.ErrKilled) {
		p.t.Errorf("launcher: %v", err)
	}
	if r := p.RaceReport(); r != "" {
		p.t.Errorf("data race in the supervisor (%s) or its workers:\n%s", p.stateDir, r)
	}
	if p.t.Failed() {
		p.t.Logf("launcher log (%s):\n%s", p.stateDir, p.log)
	}
}

// wait waits for the supervisor to exit and returns its exit error.
func (p *launcherProc) wait(timeout time.Duration) error { return p.Wait(timeout) }

// statusErr returns the supervisor's status and remembers its workers.
func (p *launcherProc) statusErr() (supervisor.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return p.Status(ctx)
}

// status returns the supervisor's status; it fails the test on error.
func (p *launcherProc) status() supervisor.Status {
	p.t.Helper()
	st, err := p.statusErr()
	if err != nil {
		p.t.Fatalf("launcher status: %v", err)
	}
	return st
}

// launcherCLI runs the launcher CLI with args and returns its combined
// output and error; a data race in it fails the test.
func launcherCLI(t testing.TB, bin string, env []string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	noRace(t, "launcher "+strings.Join(args, " "), out, err)
	return string(out), err
}

// noRace fails the test if out, the output of a process it ran (what),
// has a data race report, or err is the race detector's exit status.
func noRace(t testing.TB, what string, out []byte, err error) {
	t.Helper()
	if r := rig.RaceReport(out, err); r != "" {
		t.Errorf("data race in %s:\n%s", what, r)
	}
}

// activeVersion returns the version of the active generation, "" if none.
// activePIDs returns the active generation's worker pids, printed.
func activePIDs(st supervisor.Status) string {
	for _, g := range st.Generations {
		if g.State == supervisor.StateActive {
			return fmt.Sprint(g.PIDs)
		}
	}
	return ""
}

func activeVersion(st supervisor.Status) string {
	for _, g := range st.Generations {
		if g.State == supervisor.StateActive {
			return g.Version
		}
	}
	return ""
}

// statusJSON parses the output of `launcher status --json`.
func statusJSON(t testing.TB, out string) supervisor.Status {
	t.Helper()
	var st supervisor.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("launcher status --json: %v\n%s", err, out)
	}
	return st
}

// hello returns the body of GET http://addr/, trimmed; it fails the test
// on any error or a status other than 200.
func hello(t testing.TB, addr string) string {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		t.Fatalf("GET %s: %v", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", addr, resp.Status, body)
	}
	return strings.TrimSpace(string(body))
}

// wantHello fails the test unless GET / on addr answers "hello from
// version".
func wantHello(t testing.TB, addr, version string) {
	t.Helper()
	if got, want := hello(t, addr), "hello from "+version; got != want {
		t.Fatalf("GET %s: %q, want %q", addr, got, want)
	}
}
