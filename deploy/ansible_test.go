package deploy_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/launcherd/launcher/supervisor"
)

// ansibleEnv is the environment of ansible commands run by the tests: no
// user or system configuration, temporary files under dir, plain output.
func ansibleEnv(dir string) []string {
	cfg := filepath.Join(dir, "ansible.cfg")
	os.WriteFile(cfg, nil, 0o644)
	return append(os.Environ(),
		"ANSIBLE_CONFIG="+cfg,
		"ANSIBLE_HOME="+filepath.Join(dir, "ansible-home"),
		"ANSIBLE_LOCAL_TEMP="+filepath.Join(dir, "ansible-local"),
		"ANSIBLE_REMOTE_TEMP="+filepath.Join(dir, "ansible-remote"),
		"ANSIBLE_INVENTORY_UNPARSED_FAILED=true",
		"ANSIBLE_RETRY_FILES_ENABLED=false",
		"ANSIBLE_LOCALHOST_WARNING=false",
		"ANSIBLE_NOCOLOR=true",
		"ANSIBLE_FORCE_COLOR=false",
		"ANSIBLE_PYTHON_INTERPRETER=auto_silent",
	)
}

// ansiblePlaybook runs ansible-playbook in deploy/ansible and returns its
// output and error.
func ansiblePlaybook(t *testing.T, bin, dir string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = "ansible"
	cmd.Env = ansibleEnv(dir)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	noRace(t, "ansible-playbook (which runs the launcher CLI)", out, nil)
	t.Logf("ansible-playbook %s: %v in %s", strings.Join(args, " "), err, time.Since(start).Round(time.Millisecond))
	return string(out), err
}

// TestAnsibleSyntax checks rollout.yml with the example inventory with
// ansible-playbook --syntax-check (an unparsable inventory fails too).
func TestAnsibleSyntax(t *testing.T) {
	t.Parallel()
	bin := needTool(t, "ansible-playbook", "ansible")
	out, err := ansiblePlaybook(t, bin, t.TempDir(), "--syntax-check", "-i", "inventory.ini", "rollout.yml")
	if err != nil {
		t.Fatalf("ansible-playbook --syntax-check: %v\n%s", err, out)
	}
}

// ansibleHost is one local "host" of the rollout test: its own releases,
// state directory, port and supervisor.
type ansibleHost struct {
	name    string
	appRoot string
	p       *launcherProc
	metrics string
}

// generations returns the host's generations of version.
func (h *ansibleHost) generations(version string) []supervisor.GenerationStatus {
	var out []supervisor.GenerationStatus
	for _, g := range h.p.status().Generations {
		if g.Version == version {
			out = append(out, g)
		}
	}
	return out
}

var recapRE = regexp.MustCompile(`(?m)^(host\d)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)\s+skipped=(\d+)`)

// recap returns the PLAY RECAP of an ansible-playbook output: host →
// "ok=N changed=N failed=N".
func recap(out string) map[string]string {
	m := map[string]string{}
	for _, f := range recapRE.FindAllStringSubmatch(out, -1) {
		m[f[1]] = fmt.Sprintf("ok=%s changed=%s failed=%s", f[2], f[3], f[5])
	}
	return m
}

// TestAnsibleRollout runs rollout.yml for real against three local hosts
// (ansible_connection=local, each with its own releases, state directory,
// port and a real supervisor serving v1):
//   - v2 reaches all three, one host after the other (generation start
//     times in host order), each serving v2 with current -> v2;
//   - the same run again changes nothing and starts no generation;
//   - a broken v3 (exits 1 at once) fails on host1, which serves v2 on,
//     and stops the rollout: host2 and host3 have no v3 release and no v3
//     generation, and serve v2;
//   - v4crash, which serves and crashes 1 s later, in its 2 s probation,
//     is rolled back on host1 and stops the rollout alike, saying so in
//     one line (before, the upgrade's exit 0 once it served let the
//     rollout go on: failed=0).
func TestAnsibleRollout(t *testing.T) {
	t.Parallel()
	bin := needTool(t, "ansible-playbook", "ansible")
	b := buildBinaries(t)
	root := shortTempDir(t)

	var hosts []*ansibleHost
	var inv strings.Builder
	inv.WriteString("[launcher]\n")
	for i := 1; i <= 3; i++ {
		h := &ansibleHost{name: fmt.Sprintf("host%d", i), metrics: freeAddr(t)}
		dir := filepath.Join(root, h.name)
		h.appRoot = filepath.Join(dir, "srv", "hello")
		linkOrCopy(t, helloPath(b.releases, "v1"), helloPath(filepath.Join(h.appRoot, "releases"), "v1"))
		if err := os.Symlink("releases/v1", filepath.Join(h.appRoot, "current")); err != nil {
			t.Fatal(err)
		}
		state, addr := filepath.Join(dir, "run"), freeAddr(t)
		h.p = startLauncher(t, b.launcher, addr, state, nil, "start", "--listen", addr, "--metrics", h.metrics,
			"--state-dir", state, "--releases", filepath.Join(h.appRoot, "releases"),
			"--current", filepath.Join(h.appRoot, "current"), "--drain-timeout", "5s",
			"--probation", "2s", "--", filepath.Join(h.appRoot, "current", "hello"))
		fmt.Fprintf(&inv, "%s ansible_connection=local app_root=%s state_dir=%s health_url=http://%s/healthz\n",
			h.name, h.appRoot, state, h.metrics)
		hosts = append(hosts, h)
	}
	fmt.Fprintf(&inv, "\n[launcher:vars]\napp=hello\nlauncher_bin=%s\nansible_python_interpreter={{ ansible_playbook_python }}\n", b.launcher)
	invPath := filepath.Join(root, "inventory.ini")
	if err := os.WriteFile(invPath, []byte(inv.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	rollout := func(version, binary string) (string, error) {
		return ansiblePlaybook(t, bin, root, "-i", invPath, "rollout.yml",
			"-e", "release_version="+version, "-e", "release_binary="+binary)
	}

	// v2 everywhere, one host at a time.
	out, err := rollout("v2", helloPath(b.releases, "v2"))
	if err != nil {
		t.Fatalf("rollout of v2: %v\n%s", err, out)
	}
	var prev time.Time
	for _, h := range hosts {
		wantHello(t, h.p.addr, "v2")
		if target, _ := os.Readlink(filepath.Join(h.appRoot, "current")); filepath.Base(target) != "v2" {
			t.Errorf("%s: current -> %s, want releases/v2", h.name, target)
		}
		gens := h.generations("v2")
		if len(gens) != 1 || gens[0].State != supervisor.StateActive {
			t.Fatalf("%s: v2 generations %+v, want one, active", h.name, gens)
		}
		if !gens[0].Started.After(prev) {
			t.Errorf("%s upgraded at %s, before the host before it (%s): not one at a time", h.name, gens[0].Started, prev)
		}
		prev = gens[0].Started
	}
	t.Logf("v2 rollout recap: %v", recap(out))

	// Again: nothing to do.
	counts := map[string]int{}
	for _, h := range hosts {
		counts[h.name] = len(h.p.status().Generations)
	}
	out, err = rollout("v2", helloPath(b.releases, "v2"))
	if err != nil {
		t.Fatalf("second rollout of v2: %v\n%s", err, out)
	}
	for _, h := range hosts {
		if n := len(h.p.status().Generations); n != counts[h.name] {
			t.Errorf("%s: the second rollout of v2 started a generation (%d, was %d)", h.name, n, counts[h.name])
		}
		if r := recap(out)[h.name]; !strings.Contains(r, "changed=0 failed=0") {
			t.Errorf("%s: second rollout of v2: %q, want changed=0 failed=0\n%s", h.name, r, out)
		}
	}

	// A broken v3 stops at host1.
	out, err = rollout("v3", b.broken)
	if err == nil {
		t.Fatalf("rollout of a broken v3 succeeded:\n%s", out)
	}
	if !strings.Contains(out, "serves on") {
		t.Errorf("the failed rollout does not show launcher's error (… serves on):\n%s", out)
	}
	h1 := hosts[0]
	wantHello(t, h1.p.addr, "v2")
	if v := activeVersion(h1.p.status()); v != "v2" {
		t.Errorf("host1: active %s after the failed upgrade, want v2", v)
	}
	if gens := h1.generations("v3"); len(gens) != 1 || gens[0].State != supervisor.StateFailed {
		t.Errorf("host1: v3 generations %+v, want one, failed", gens)
	}
	for _, h := range hosts[1:] {
		wantHello(t, h.p.addr, "v2")
		if _, err := os.Stat(filepath.Join(h.appRoot, "releases", "v3")); !os.IsNotExist(err) {
			t.Errorf("%s: releases/v3 exists (%v): the rollout went on after host1 failed", h.name, err)
		}
		if gens := h.generations("v3"); len(gens) != 0 {
			t.Errorf("%s: v3 generations %+v, want none", h.name, gens)
		}
	}
	t.Logf("broken v3 rollout recap: %v", recap(out))

	// A release that crashes in its probation: rolled back on host1, and
	// the rollout stops there.
	crash := filepath.Join(root, "v4crash")
	writeCrashingRelease(t, crash, helloPath(b.releases, "v3"), time.Second)
	out, err = rollout("v4crash", crash)
	if err == nil {
		t.Errorf("rollout of v4crash, rolled back in its probation, succeeded:\n%s", out)
	}
	if !strings.Contains(out, "upgrade of host1 to v4crash rolled back during its probation; rollout stopped") {
		t.Errorf("the rollout does not say v4crash was rolled back on host1 and the rollout stopped:\n%s", out)
	}
	wantHello(t, h1.p.addr, "v2")
	if v := activeVersion(h1.p.status()); v != "v2" {
		t.Errorf("host1: active %s after v4crash was rolled back, want v2", v)
	}
	for _, h := range hosts[1:] {
		wantHello(t, h.p.addr, "v2")
		if _, err := os.Stat(filepath.Join(h.appRoot, "releases", "v4crash")); !os.IsNotExist(err) {
			t.Errorf("%s: releases/v4crash exists (%v): the rollout went on after host1 rolled back", h.name, err)
		}
	}
	t.Logf("v4crash rollout recap: %v", recap(out))
}

// TestAnsibleRolloutAwaitsAHandUpgrade: the release to roll out is already
// the active generation, but in the probation of an upgrade made by hand
// (launcher upgrade without --wait): the upgrade task is skipped, and the
// rollout waits for the verdict. v4crash, crashing 10 s into its 20 s
// probation (after the playbook, 3 s, 5 s and more beside the whole test
// suite, reached its wait), is rolled back:
// the host fails with one line saying so, not the status JSON (before, the
// wait task found v4crash active at once and the rollout passed, failed=0).
func TestAnsibleRolloutAwaitsAHandUpgrade(t *testing.T) {
	t.Parallel()
	bin := needTool(t, "ansible-playbook", "ansible")
	b := buildBinaries(t)
	root := shortTempDir(t)
	appRoot := filepath.Join(root, "srv", "hello")
	linkOrCopy(t, helloPath(b.releases, "v1"), helloPath(filepath.Join(appRoot, "releases"), "v1"))
	crash := filepath.Join(root, "v4crash")
	// It crashes well after ansible-playbook has read the generations,
	// which took over 5 s beside the whole test suite (then the rollout
	// found v1 active and upgraded itself: another path).
	writeCrashingRelease(t, crash, helloPath(b.releases, "v3"), 10*time.Second)
	// The release staged as the rollout's copy task would: unchanged then.
	if err := os.MkdirAll(filepath.Join(appRoot, "releases", "v4crash"), 0o755); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(crash); err != nil {
		t.Fatal(err)
	} else if err := os.WriteFile(helloPath(filepath.Join(appRoot, "releases"), "v4crash"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("releases/v1", filepath.Join(appRoot, "current")); err != nil {
		t.Fatal(err)
	}
	state, addr := filepath.Join(root, "run"), freeAddr(t)
	p := startLauncher(t, b.launcher, addr, state, nil, "start", "--listen", addr,
		"--state-dir", state, "--releases", filepath.Join(appRoot, "releases"),
		"--current", filepath.Join(appRoot, "current"), "--drain-timeout", "5s",
		"--probation", "20s", "--", filepath.Join(appRoot, "current", "hello"))
	inv := filepath.Join(root, "inventory.ini")
	if err := os.WriteFile(inv, fmt.Appendf(nil, "[launcher]\nhost1 ansible_connection=local app_root=%s state_dir=%s\n\n"+
		"[launcher:vars]\napp=hello\nlauncher_bin=%s\nansible_python_interpreter={{ ansible_playbook_python }}\n",
		appRoot, state, b.launcher), 0o644); err != nil {
		t.Fatal(err)
	}

	if out, err := launcherCLI(t, b.launcher, nil, "upgrade", "--state-dir", state, "v4crash"); err != nil {
		t.Fatalf("launcher upgrade v4crash: %v\n%s", err, out)
	}
	out, err := ansiblePlaybook(t, bin, root, "-i", inv, "rollout.yml",
		"-e", "release_version=v4crash", "-e", "release_binary="+crash)
	if err == nil {
		t.Errorf("rollout of v4crash, rolled back in the probation of a hand-made upgrade, succeeded:\n%s", out)
	}
	if !strings.Contains(out, "upgrade of host1 to v4crash rolled back during its probation; rollout stopped, the hosts after it are not touched: v1 serves on") ||
		strings.Contains(out, `"generations"`) {
		t.Errorf("the rollout does not fail in one line saying v4crash was rolled back:\n%s", out)
	}
	t.Logf("rollout of v4crash:\n%s", out)
	wantHello(t, p.addr, "v1")
	if v := activeVersion(p.status()); v != "v1" {
		t.Errorf("active %s after v4crash was rolled back, want v1", v)
	}
}
