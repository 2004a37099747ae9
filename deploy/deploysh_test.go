package deploy_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/launcherd/launcher/supervisor"
)

// TestDeployScriptShellcheck checks deploy.sh with shellcheck, every
// optional check of the default severity included.
func TestDeployScriptShellcheck(t *testing.T) {
	t.Parallel()
	sc := needTool(t, "shellcheck", "shellcheck")
	out, err := exec.Command(sc, "--shell=bash", "--severity=style", "--external-sources", "deploy.sh").CombinedOutput()
	if err != nil {
		t.Fatalf("shellcheck deploy.sh: %v\n%s", err, out)
	}
}

// deployScript runs deploy.sh for one app in a temporary root.
type deployScript struct {
	t        *testing.T
	bash     string
	env      []string
	appRoot  string
	stateDir string
}

// newDeployScript sets up deploy.sh for the app hello under a temporary
// directory dir: its APP_ROOT dir/srv/hello, its state dir dir/run, the
// launcher and hello builds b, KEEP=5.
func newDeployScript(t *testing.T) (d *deployScript, b binaries, dir string) {
	t.Helper()
	bash := needTool(t, "bash", "bash")
	needTool(t, "flock", "util-linux")
	b = buildBinaries(t)
	dir = shortTempDir(t)
	appRoot := filepath.Join(dir, "srv", "hello")
	stateDir := filepath.Join(dir, "run")
	d = &deployScript{t: t, bash: bash, appRoot: appRoot, stateDir: stateDir, env: []string{
		"APP=hello", "APP_ROOT=" + appRoot, "LAUNCHER=" + b.launcher,
		"LAUNCHER_STATE_DIR=" + stateDir, "KEEP=5",
	}}
	return d, b, dir
}

// run runs deploy.sh with args (env adds to the script's environment) and
// returns its output; it fails the test if the script fails.
func (d *deployScript) run(env []string, args ...string) string {
	d.t.Helper()
	out, err := d.exec(env, args...)
	if err != nil {
		d.t.Fatalf("deploy.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	d.t.Logf("deploy.sh %s:\n%s", strings.Join(args, " "), out)
	return out
}

// fail runs deploy.sh with args and returns its output; it fails the test
// if the script succeeds.
func (d *deployScript) fail(args ...string) string {
	d.t.Helper()
	out, err := d.exec(nil, args...)
	if err == nil {
		d.t.Fatalf("deploy.sh %s succeeded, want an error:\n%s", strings.Join(args, " "), out)
	}
	d.t.Logf("deploy.sh %s (fails as it should):\n%s", strings.Join(args, " "), out)
	return out
}

func (d *deployScript) exec(env []string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.bash, append([]string{"deploy.sh"}, args...)...)
	cmd.Env = append(append(os.Environ(), d.env...), env...)
	out, err := cmd.CombinedOutput()
	noRace(d.t, "deploy.sh "+strings.Join(args, " "), out, nil) // it runs the launcher CLI
	return string(out), err
}

// current returns the release directory `current` points at, by name.
func (d *deployScript) current() string {
	d.t.Helper()
	target, err := os.Readlink(filepath.Join(d.appRoot, "current"))
	if err != nil {
		d.t.Fatalf("current: %v", err)
	}
	return filepath.Base(target)
}

// releases returns the installed versions, sorted.
func (d *deployScript) releases() []string {
	d.t.Helper()
	entries, err := os.ReadDir(filepath.Join(d.appRoot, "releases"))
	if err != nil {
		d.t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") {
			out = append(out, e.Name())
		}
	}
	slices.Sort(out)
	return out
}

func (d *deployScript) wantCurrent(version string) {
	d.t.Helper()
	if got := d.current(); got != version {
		d.t.Fatalf("current -> %s, want %s", got, version)
	}
}

func (d *deployScript) wantReleases(versions ...string) {
	d.t.Helper()
	if got := d.releases(); !slices.Equal(got, versions) {
		d.t.Fatalf("releases %v, want %v", got, versions)
	}
}

// TestDeployScript drives deploy.sh as an operator would, against a real
// supervisor started on the `current` symlink the script maintains:
// releases staged while the service is down, then upgrades, idempotent
// re-installs, immutable releases, pruning that keeps what runs, a failed
// upgrade that leaves the old release serving, and rollbacks, checking
// which version answers after each step.
func TestDeployScript(t *testing.T) {
	t.Parallel()
	d, b, _ := newDeployScript(t)
	appRoot, stateDir := d.appRoot, d.stateDir
	bin := func(v string) string { return helloPath(b.releases, v) }

	// The service is down: install only stages and points current.
	d.run(nil, "install", "v1", bin("v1"))
	d.wantCurrent("v1")
	d.run(nil, "install", "v2", bin("v2"))
	d.wantCurrent("v2")
	d.run(nil, "rollback") // no supervisor: the release installed before
	d.wantCurrent("v1")
	d.fail("rollback") // nothing before v1
	d.fail("install", "v2", bin("v3"))
	d.fail("install", "../v9", bin("v3"))
	d.wantReleases("v1", "v2")
	// A release there but not runnable is said as such, not as "not
	// installed" (a new user's trial); nothing changes.
	for name, make := range map[string]func(string) error{
		"nox":  func(p string) error { return os.WriteFile(p, []byte("#!/bin/sh\n"), 0o644) },
		"loop": func(p string) error { return os.Symlink("hello", p) },
	} {
		p := filepath.Join(appRoot, "releases", name, "hello")
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := make(p); err != nil {
			t.Fatal(err)
		}
		out := d.fail("activate", name)
		if want := map[string]string{"nox": "is not executable", "loop": "is a symlink to nothing (or a loop)"}[name]; !strings.Contains(out, want) {
			t.Errorf("activate %s: %q; want it to say %q", name, out, want)
		}
		os.RemoveAll(filepath.Dir(p))
	}
	d.wantCurrent("v1")

	// Start the supervisor the way launcher@.service does: on current.
	addr := freeAddr(t)
	p := startLauncher(t, b.launcher, addr, stateDir, nil, "start", "--listen", addr,
		"--state-dir", stateDir, "--releases", filepath.Join(appRoot, "releases"),
		"--current", filepath.Join(appRoot, "current"), "--drain-timeout", "5s",
		"--probation", "0", // probations: TestDeployScriptProbation
		"--", filepath.Join(appRoot, "current", "hello"))
	wantHello(t, addr, "v1")

	// Upgrade to an already staged release.
	d.run(nil, "install", "v2", bin("v2"))
	wantHello(t, addr, "v2")
	d.wantCurrent("v2")

	// Idempotent: the same install again starts no generation.
	gens := len(p.status().Generations)
	out := d.run(nil, "install", "v2", bin("v2"))
	if !strings.Contains(out, "already active") {
		t.Errorf("second install of v2 does not say it is already active:\n%s", out)
	}
	if n := len(p.status().Generations); n != gens {
		t.Errorf("second install of v2 started a generation: %d generations, want %d", n, gens)
	}
	// Immutable: a different binary under an existing version is refused.
	d.fail("install", "v2", bin("v3"))
	wantHello(t, addr, "v2")

	// KEEP=2 after v3: v1 goes, v2 (the previous) and v3 stay.
	d.run([]string{"KEEP=2"}, "install", "v3", bin("v3"))
	wantHello(t, addr, "v3")
	d.wantCurrent("v3")
	d.wantReleases("v2", "v3")

	// Roll back to v2; prune keeps it with KEEP=1 because it runs.
	d.run(nil, "rollback")
	wantHello(t, addr, "v2")
	d.wantCurrent("v2")
	d.run([]string{"KEEP=1"}, "prune")
	d.wantReleases("v2", "v3")

	// A release that cannot start: the install fails, v2 serves on and
	// current still points at it.
	out = d.fail("install", "v4", b.broken)
	if !strings.Contains(out, "serves on") {
		t.Errorf("failed install does not say the old release serves on:\n%s", out)
	}
	wantHello(t, addr, "v2")
	d.wantCurrent("v2")
	if v := activeVersion(p.status()); v != "v2" {
		t.Fatalf("active generation %s after a failed upgrade, want v2", v)
	}

	// v3 was rolled back from, so it is no step a later rollback goes back
	// to: the next one goes on back, to v1, which KEEP=1 pruned; it fails
	// and v2 serves on. An explicit version still goes to any installed
	// release.
	out = d.fail("rollback")
	if !strings.Contains(out, "v1") {
		t.Errorf("second rollback does not go on back to v1:\n%s", out)
	}
	wantHello(t, addr, "v2")
	d.wantCurrent("v2")
	d.run(nil, "rollback", "v3")
	wantHello(t, addr, "v3")
	d.wantCurrent("v3")
	d.run(nil, "rollback", "v2")
	wantHello(t, addr, "v2")
	d.wantCurrent("v2")

	if out := d.run(nil, "status"); !strings.Contains(out, "current -> v2") {
		t.Errorf("deploy.sh status does not show current -> v2:\n%s", out)
	}
	if out, err := launcherCLI(t, b.launcher, nil, "stop", "--state-dir", stateDir); err != nil {
		t.Fatalf("launcher stop: %v\n%s", err, out)
	}
	if err := p.wait(15 * time.Second); err != nil {
		t.Fatalf("launcher start after stop: %v", err)
	}
}

// TestDeployScriptProbation runs deploy.sh against a supervisor with a
// probation, as launcher@.service runs it (the default 5s; 8s here, so
// that the steps during the upgrade to v3 fit in its probation on a
// loaded machine: with 3s the rollback came after the pass, once):
//   - install waits for the verdict (launcher upgrade --wait);
//   - prune during a probation keeps the standby generation's release,
//     which a rollback goes back to and restarts workers from (before, it
//     kept only starting, active and draining ones: KEEP=1 pruned v2, then
//     launcher rollback went back to a release whose directory was gone);
//   - a release that crashes 1.5 s into its probation is rolled back, and
//     install fails saying so (before, it said "v4crash serves", exit 0),
//     with the previous release serving and current pointing at it.
func TestDeployScriptProbation(t *testing.T) {
	t.Parallel()
	d, b, dir := newDeployScript(t)
	appRoot, stateDir := d.appRoot, d.stateDir
	bin := func(v string) string { return helloPath(b.releases, v) }
	d.run(nil, "install", "v1", bin("v1"))
	crash := filepath.Join(dir, "v4crash")
	writeCrashingRelease(t, crash, bin("v3"), 1500*time.Millisecond)

	addr := freeAddr(t)
	p := startLauncher(t, b.launcher, addr, stateDir, nil, "start", "--listen", addr,
		"--state-dir", stateDir, "--releases", filepath.Join(appRoot, "releases"),
		"--current", filepath.Join(appRoot, "current"), "--drain-timeout", "5s",
		"--probation", "8s", "--", filepath.Join(appRoot, "current", "hello"))
	wantHello(t, addr, "v1")

	// install returns once v2 passed its probation and v1 is gone.
	start := time.Now()
	out := d.run(nil, "install", "v2", bin("v2"))
	if took := time.Since(start); took < 8*time.Second || !strings.Contains(out, "passed") {
		t.Errorf("install v2 returned after %s, before the verdict of its 8s probation:\n%s", took, out)
	}
	d.wantCurrent("v2")
	for _, g := range p.status().Generations {
		if g.Version == "v1" && g.State != supervisor.StateExited {
			t.Errorf("generation %d (v1) %s after install v2 returned, want exited", g.Generation, g.State)
		}
	}

	// An upgrade to v3 not through deploy.sh: v2 stands by for 8 s, and
	// prune keeps it (and v3, the newest), pruning v1 only.
	d.run(nil, "stage", "v3", bin("v3"))
	if out, err := launcherCLI(t, b.launcher, nil, "upgrade", "--state-dir", stateDir, "v3"); err != nil {
		t.Fatalf("launcher upgrade v3: %v\n%s", err, out)
	}
	standby := false
	for _, g := range p.status().Generations {
		standby = standby || g.Version == "v2" && g.State == supervisor.StateStandby
	}
	if !standby {
		t.Fatalf("no v2 generation on standby after the upgrade to v3: %+v", p.status().Generations)
	}
	d.run([]string{"KEEP=1"}, "prune")
	if got := d.releases(); !slices.Equal(got, []string{"v2", "v3"}) {
		t.Errorf("KEEP=1 prune during v3's probation left releases %v, want [v2 v3]: the standby's release goes", got)
	}
	if out, err := launcherCLI(t, b.launcher, nil, "rollback", "--state-dir", stateDir); err != nil {
		t.Fatalf("launcher rollback: %v\n%s", err, out)
	}
	wantHello(t, addr, "v2")

	// A release that crashes in its probation: install fails, one line
	// says it was rolled back, v2 serves on and current points at it.
	out = d.fail("install", "v4crash", crash)
	if !strings.Contains(out, "deploy.sh: upgrade to v4crash rolled back during its probation: v2 serves on") {
		t.Errorf("install of a release crashing in its probation does not say it was rolled back:\n%s", out)
	}
	wantHello(t, addr, "v2")
	d.wantCurrent("v2")
	if v := activeVersion(p.status()); v != "v2" {
		t.Errorf("active generation %s after v4crash was rolled back, want v2", v)
	}
}

// startOnCurrent starts a supervisor the way launcher@.service does, on the
// `current` symlink deploy.sh maintains, on addr with a probation of
// probation, and waits until version serves.
func (d *deployScript) startOnCurrent(b binaries, addr, probation, version string) *launcherProc {
	d.t.Helper()
	p := startLauncher(d.t, b.launcher, addr, d.stateDir, nil, "start", "--listen", addr,
		"--state-dir", d.stateDir, "--releases", filepath.Join(d.appRoot, "releases"),
		"--current", filepath.Join(d.appRoot, "current"), "--drain-timeout", "5s",
		"--probation", probation, "--", filepath.Join(d.appRoot, "current", "hello"))
	wantHello(d.t, addr, version)
	return p
}

// TestDeployScriptPruneKnowsWhatRuns: prune deletes nothing when it cannot
// tell which releases run. The supervisor is killed (kill -9) while v1
// stands by in v2's probation: its workers serve on, `launcher status`
// fails, state.json stays. KEEP=1 prune refuses with one line, exit 1,
// and an install's prune only warns (the install succeeded); every release
// stays. Before, prune kept only `current` (v2) and deleted v1, the
// standby's release, which the adopting supervisor restarts workers from
// or rolls back to. An install of v3 stages it but refuses to activate it
// (the next start adopts v2's workers), and current stays. After the
// adoption and a clean stop (state.json removed) prune keeps `current` and
// the KEEP newest only.
func TestDeployScriptPruneKnowsWhatRuns(t *testing.T) {
	t.Parallel()
	d, b, _ := newDeployScript(t)
	bin := func(v string) string { return helloPath(b.releases, v) }
	d.run(nil, "install", "v1", bin("v1"))
	d.run(nil, "stage", "v2", bin("v2"))
	p := d.startOnCurrent(b, freeAddr(t), "60s", "v1")
	if out, err := launcherCLI(t, b.launcher, nil, "upgrade", "--state-dir", d.stateDir, "v2"); err != nil {
		t.Fatalf("launcher upgrade v2: %v\n%s", err, out)
	}
	p.status() // remember both generations' workers, for the cleanup
	p.Kill()

	out, err := d.exec([]string{"KEEP=1"}, "prune")
	if err == nil || !strings.HasPrefix(out, "deploy.sh: not pruning: cannot tell which releases run (launcher: status: no supervisor running on") ||
		strings.Count(out, "\n") != 1 {
		t.Errorf("KEEP=1 prune with a killed supervisor: %v, want a refusal in one line:\n%s", err, out)
	}
	d.wantReleases("v1", "v2")
	// Nor does an install activate another release than the one the
	// killed supervisor's workers serve: the next start adopts them and
	// serves v2, whatever current says (before, current was repointed to
	// v3 and the install said so).
	out, err = d.exec([]string{"KEEP=1"}, "install", "v3", bin("v3"))
	if err == nil || !strings.Contains(out, "deploy.sh: not activating v3: the supervisor on "+d.stateDir+" was killed and its workers still serve v2") ||
		strings.Contains(out, "current ->") {
		t.Errorf("install v3 with a killed supervisor whose workers serve v2: %v, want a refusal to activate:\n%s", err, out)
	}
	if v := d.current(); v != "v2" {
		t.Errorf("current -> %s after the refused activation; want v2 still", v)
	}
	d.wantReleases("v1", "v2", "v3")   // staged, not activated
	out = d.run(nil, "activate", "v2") // what serves: current may say so
	if !strings.Contains(out, "its workers still serve v2: current -> releases/v2 (start the service to adopt them)") {
		t.Errorf("activate v2, which the killed supervisor's workers serve:\n%s", out)
	}

	// The adoption, then a clean stop: state.json goes, prune knows.
	p = d.startOnCurrent(b, p.addr, "0", "v2")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		// Adopted once the workers rejoined: a stop before fails the start.
		if strings.Contains(p.log.String(), "msg=serving") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("v2's workers not adopted within 10s")
		}
	}
	if out, err := launcherCLI(t, b.launcher, nil, "stop", "--state-dir", d.stateDir); err != nil {
		t.Fatalf("launcher stop: %v\n%s", err, out)
	}
	if err := p.wait(15 * time.Second); err != nil {
		t.Fatalf("launcher start after stop: %v", err)
	}
	d.run([]string{"KEEP=1"}, "prune") // current and the newest install
	d.wantReleases("v2", "v3")
}

// TestDeployScriptPruneKeepsWhatAScriptRuns: a release that needs others
// is a script that runs them (the README's releases that are scripts).
// prune kept only `current`, the supervisor's generations and the KEEP
// newest, and deleted the release whose binary the active script release
// execs: the next restart of its worker failed (exit 127) and nothing
// served (a new user's trial). It now keeps the releases a live process
// runs a file of (/proc/PID/exe) and those a kept script names.
func TestDeployScriptPruneKeepsWhatAScriptRuns(t *testing.T) {
	t.Parallel()
	d, b, dir := newDeployScript(t)
	d.run(nil, "install", "v1", helloPath(b.releases, "v1"))
	d.run(nil, "stage", "v2", helloPath(b.releases, "v2"))
	p := d.startOnCurrent(b, freeAddr(t), "0", "v1")
	script := func(name, body string) string {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return f
	}
	// A relative path: only the running worker says it needs v2.
	d.run([]string{"KEEP=1"}, "install", "v2rel", script("v2rel", `cd "$(dirname "$0")/.." && exec ./v2/hello "$@"`))
	wantHello(t, p.addr, "v2")
	d.wantReleases("v2", "v2rel")

	// An absolute one, then a clean stop: nothing runs, the script names v2.
	d.run([]string{"KEEP=1"}, "install", "v2abs", script("v2abs", "exec "+filepath.Join(d.appRoot, "releases")+`/v2/hello "$@"`))
	d.wantReleases("v2", "v2abs")
	if out, err := launcherCLI(t, b.launcher, nil, "stop", "--state-dir", d.stateDir); err != nil {
		t.Fatalf("launcher stop: %v\n%s", err, out)
	}
	if err := p.wait(15 * time.Second); err != nil {
		t.Fatalf("launcher start after stop: %v", err)
	}
	out := d.run([]string{"KEEP=1"}, "prune")
	if !strings.Contains(out, "deploy.sh: kept release v2: release v2abs runs it") {
		t.Errorf("KEEP=1 prune does not say why it kept v2:\n%s", out)
	}
	d.wantReleases("v2", "v2abs")
	// A path from the script's own directory, or to the release's
	// directory without a slash after it, names the release too (a new
	// user's recheck: ../v3/hello was pruned).
	d.run(nil, "stage", "v3", helloPath(b.releases, "v3"))
	d.run(nil, "stage", "v3rel", script("v3rel", `exec "$(dirname "$0")/../v3/hello" "$@"`))
	d.run(nil, "activate", "v3rel") // nothing runs: current moves
	d.run([]string{"KEEP=1"}, "prune")
	d.wantReleases("v3", "v3rel")
	d.run(nil, "stage", "v3cd", script("v3cd", "cd "+filepath.Join(d.appRoot, "releases")+`/v3 && exec ./hello "$@"`))
	d.run(nil, "activate", "v3cd")
	d.run([]string{"KEEP=1"}, "prune")
	d.wantReleases("v3", "v3cd")
	// An alias: current -> releases/stable -> v3 keeps v3 (a recheck: it
	// was pruned, and current led nowhere).
	d.run(nil, "stage", "v4", helloPath(b.releases, "v1"))
	rels := filepath.Join(d.appRoot, "releases")
	if err := os.Symlink("v3", filepath.Join(rels, "stable")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(d.appRoot, "current")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("releases/stable", filepath.Join(d.appRoot, "current")); err != nil {
		t.Fatal(err)
	}
	d.run([]string{"KEEP=1"}, "prune")
	d.wantReleases("stable", "v3", "v4")
	// An alias current does not lead to keeps its target too: it would
	// dangle (a recheck).
	d.run(nil, "stage", "v5", helloPath(b.releases, "v1"))
	if err := os.Symlink("v4", filepath.Join(rels, "previous")); err != nil {
		t.Fatal(err)
	}
	d.run([]string{"KEEP=1"}, "prune")
	d.wantReleases("previous", "stable", "v3", "v4", "v5")
	d.startOnCurrent(b, p.addr, "0", "v3") // what current names still starts
}

// TestDeployScriptPruneStoppedSupervisor: with the supervisor stopped
// (kill -STOP) `launcher status` gives up after 10 s; prune then deletes
// nothing and says why (before: it kept only `current` and deleted the
// standby generation's release).
func TestDeployScriptPruneStoppedSupervisor(t *testing.T) {
	t.Parallel()
	d, b, _ := newDeployScript(t)
	d.run(nil, "install", "v1", helloPath(b.releases, "v1"))
	d.run(nil, "stage", "v2", helloPath(b.releases, "v2"))
	p := d.startOnCurrent(b, freeAddr(t), "60s", "v1")
	if out, err := launcherCLI(t, b.launcher, nil, "upgrade", "--state-dir", d.stateDir, "v2"); err != nil {
		t.Fatalf("launcher upgrade v2: %v\n%s", err, out)
	}
	p.Signal(syscall.SIGSTOP)
	out, err := d.exec([]string{"KEEP=1"}, "prune")
	p.Signal(syscall.SIGCONT)
	if err == nil || !strings.HasPrefix(out, "deploy.sh: not pruning: cannot tell which releases run (launcher: status:") {
		t.Errorf("KEEP=1 prune with a stopped supervisor: %v, want a refusal:\n%s", err, out)
	}
	d.wantReleases("v1", "v2")
}

// TestDeployScriptAwaitsAHandUpgradesVerdict: install or activate of the
// version already active, but still in the probation of an upgrade made
// by hand (launcher upgrade without --wait), waits for the verdict. A
// release crashing 1.5 s into its 4 s probation: install fails saying it
// was rolled back, v1 serving with current on it (before: "v4crash is
// already active", "v4crash serves", exit 0, and the rollback came after).
// A good release: activate waits for the pass, exit 0.
func TestDeployScriptAwaitsAHandUpgradesVerdict(t *testing.T) {
	t.Parallel()
	d, b, dir := newDeployScript(t)
	d.run(nil, "install", "v1", helloPath(b.releases, "v1"))
	crash := filepath.Join(dir, "v4crash")
	writeCrashingRelease(t, crash, helloPath(b.releases, "v3"), 1500*time.Millisecond)
	d.run(nil, "stage", "v4crash", crash)
	d.run(nil, "stage", "v2", helloPath(b.releases, "v2"))
	p := d.startOnCurrent(b, freeAddr(t), "4s", "v1")

	if out, err := launcherCLI(t, b.launcher, nil, "upgrade", "--state-dir", d.stateDir, "v4crash"); err != nil {
		t.Fatalf("launcher upgrade v4crash: %v\n%s", err, out)
	}
	out := d.fail("install", "v4crash", crash)
	if !strings.Contains(out, "waiting for its verdict") ||
		!strings.Contains(out, "deploy.sh: upgrade to v4crash rolled back during its probation: v1 serves on") {
		t.Errorf("install of v4crash, in the probation of a hand-made upgrade, does not wait and fail:\n%s", out)
	}
	wantHello(t, p.addr, "v1")
	d.wantCurrent("v1")

	if out, err := launcherCLI(t, b.launcher, nil, "upgrade", "--state-dir", d.stateDir, "v2"); err != nil {
		t.Fatalf("launcher upgrade v2: %v\n%s", err, out)
	}
	start := time.Now()
	out = d.run(nil, "activate", "v2")
	if took := time.Since(start); took < 2*time.Second || !strings.Contains(out, "upgrade to v2 passed") {
		t.Errorf("activate v2 in its probation returned after %s without its pass:\n%s", took, out)
	}
	if st := p.status(); activeVersion(st) != "v2" {
		t.Errorf("active %s after activate v2, want v2", activeVersion(st))
	}
}

// TestDeployScriptSaysWhenTheSupervisorGoesAway: an install whose
// supervisor goes away during the new release's probation says what
// serves then. Killed (kill -9): its workers serve on, the new release's
// too, which the next start adopts; stopped: nothing serves, and the next
// start runs current. Before, both said "the previous release serves on"
// (a new user's trial).
func TestDeployScriptSaysWhenTheSupervisorGoesAway(t *testing.T) {
	t.Parallel()
	d, b, _ := newDeployScript(t)
	bin := func(v string) string { return helloPath(b.releases, v) }
	d.run(nil, "install", "v1", bin("v1"))
	p := d.startOnCurrent(b, freeAddr(t), "60s", "v1")

	// inProbation waits until version is active and on trial, then does then.
	inProbation := func(p *launcherProc, version string, then func()) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			st, err := p.statusErr()
			if err == nil {
				for _, g := range st.Generations {
					if g.Version == version && g.State == supervisor.StateActive && g.ProbationUntil != nil {
						then()
						return
					}
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not on trial within 20s", version)
			}
		}
	}
	type result struct {
		out string
		err error
	}
	install := func(version string) chan result {
		done := make(chan result, 1)
		go func() { out, err := d.exec(nil, "install", version, bin(version)); done <- result{out, err} }()
		return done
	}

	done := install("v2")
	inProbation(p, "v2", func() { p.Kill() })
	r := <-done
	if want := "deploy.sh: upgrade to v2 cut short: the supervisor on " + d.stateDir + " went away and its workers still serve v2"; r.err == nil || !strings.Contains(r.out, want) || strings.Contains(r.out, "serves on") {
		t.Errorf("install v2, supervisor killed in its probation: %v\n%s\nwant %q", r.err, r.out, want)
	}
	// status names the workers that serve on (it said only "no
	// supervisor").
	if out := d.run(nil, "status"); !strings.Contains(out, "but the workers of its generation 2 (v2) still serve (pids") {
		t.Errorf("deploy.sh status with a killed supervisor:\n%s\nwant the workers that serve on named", out)
	}

	// The next start adopts v2's workers; a stop in v3's probation.
	p = d.startOnCurrent(b, p.addr, "60s", "v2")
	done = install("v3")
	inProbation(p, "v3", func() {
		if out, err := launcherCLI(t, b.launcher, nil, "stop", "--state-dir", d.stateDir); err != nil {
			t.Errorf("launcher stop: %v\n%s", err, out)
		}
	})
	r = <-done
	if want := "deploy.sh: upgrade to v3 cut short: the supervisor on " + d.stateDir + " stopped: nothing serves now, and the next start runs current (v2)"; r.err == nil || !strings.Contains(r.out, want) {
		t.Errorf("install v3, supervisor stopped in its probation: %v\n%s\nwant %q", r.err, r.out, want)
	}
}

// TestDeployScriptAroundAStop: an install while the supervisor is
// stopping is refused as such, and one whose supervisor stops after the
// verdict, while the old generation still drains (a long request on it),
// says that it passed and that nothing serves now. Before, the first said
// "the previous release serves on" and the second "v3 serves", exit 0,
// with nothing serving (a new user's recheck, 2 of 2 each).
func TestDeployScriptAroundAStop(t *testing.T) {
	t.Parallel()
	d, b, _ := newDeployScript(t)
	bin := func(v string) string { return helloPath(b.releases, v) }
	d.run(nil, "install", "v1", bin("v1"))
	d.run(nil, "stage", "v2", bin("v2"))
	d.run(nil, "stage", "v3", bin("v3"))
	p := d.startOnCurrent(b, freeAddr(t), "1s", "v1")
	long := func(d time.Duration) {
		go func() { // ends with the request: the drain waits for it
			resp, err := http.Get(fmt.Sprintf("http://%s/sleep?d=%s", p.addr, d))
			if err == nil {
				resp.Body.Close()
			}
		}()
		time.Sleep(200 * time.Millisecond) // begun on the generation that serves now
	}

	// After the verdict: v2 passes its 1 s probation, v1 drains its 6 s
	// request, and a stop comes then.
	long(6 * time.Second)
	done := make(chan string, 1)
	go func() { out, err := d.exec(nil, "install", "v2", bin("v2")); done <- fmt.Sprintf("%v\n%s", err, out) }()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		st, err := p.statusErr()
		passed := false
		for _, g := range st.Generations {
			passed = passed || g.Version == "v2" && g.State == supervisor.StateActive && g.ProbationUntil == nil
		}
		if err == nil && passed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("v2 not past its probation within 20s: %+v, %v", st, err)
		}
	}
	stopped := make(chan error, 1)
	go func() { _, err := launcherCLI(t, b.launcher, nil, "stop", "--state-dir", d.stateDir); stopped <- err }()
	out := <-done
	if want := "deploy.sh: upgrade to v2 passed its probation, but then the supervisor on " + d.stateDir + " stopped: nothing serves now, and the next start runs current (v2)"; !strings.Contains(out, want) || strings.Contains(out, "v2 serves") {
		t.Errorf("install v2, supervisor stopped after the verdict:\n%s\nwant %q", out, want)
	}
	<-stopped

	// While stopping: a long request keeps the stop's drain going.
	p = d.startOnCurrent(b, p.addr, "1s", "v2")
	long(4 * time.Second)
	go func() { _, err := launcherCLI(t, b.launcher, nil, "stop", "--state-dir", d.stateDir); stopped <- err }()
	time.Sleep(300 * time.Millisecond)
	o, err := d.exec(nil, "install", "v3", bin("v3"))
	if want := "deploy.sh: upgrade to v3 refused: the supervisor on " + d.stateDir + " is stopping: nothing serves once its drain is over, and the next start runs current (v2)"; err == nil || !strings.Contains(o, want) {
		t.Errorf("install v3 during a stop: %v\n%s\nwant %q", err, o, want)
	}
	<-stopped
}
