package deploy_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
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
	t       *testing.T
	bash    string
	env     []string
	appRoot string
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
	bash := needTool(t, "bash", "bash")
	needTool(t, "flock", "util-linux")
	b := buildBinaries(t)
	dir := shortTempDir(t)
	appRoot := filepath.Join(dir, "srv", "hello")
	stateDir := filepath.Join(dir, "run")
	d := &deployScript{t: t, bash: bash, appRoot: appRoot, env: []string{
		"APP=hello", "APP_ROOT=" + appRoot, "LAUNCHER=" + b.launcher,
		"LAUNCHER_STATE_DIR=" + stateDir, "KEEP=5",
	}}
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

	// Start the supervisor the way launcher@.service does: on current.
	addr := freeAddr(t)
	p := startLauncher(t, b.launcher, addr, stateDir, nil, "start", "--listen", addr,
		"--state-dir", stateDir, "--releases", filepath.Join(appRoot, "releases"),
		"--current", filepath.Join(appRoot, "current"), "--drain-timeout", "5s",
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

	// v3 was rolled back from during its probation, so it is no step a
	// later rollback goes back to: the next one goes on back, to v1, which
	// KEEP=1 pruned; it fails and v2 serves on. An explicit version still
	// goes to any installed release.
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
