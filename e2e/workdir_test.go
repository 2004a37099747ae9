package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/launcherd/launcher/internal/rig"
)

// TestStartedInsideCurrentSymlink: the operator starts the launcher from
// inside a `current` symlink with a relative command, as the article's
// habits go (cd /srv/app/current && launcher start … -- ./main). After
// `current` moves to the next release, `launcher upgrade` runs that
// release, and its workers run in its directory: the command and the
// working directory are the logical ones, re-resolved at every start.
func TestStartedInsideCurrentSymlink(t *testing.T) {
	root := shortTempDir(t)
	for _, v := range []string{"v1", "v2"} {
		dir := filepath.Join(root, "releases", v)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Link(filepath.Join(bins.releases, v, "hello"), filepath.Join(dir, "hello")); err != nil {
			t.Fatal(err)
		}
	}
	current := filepath.Join(root, "current")
	if err := os.Symlink("releases/v1", current); err != nil {
		t.Fatal(err)
	}
	addr, state := freeAddr(t), filepath.Join(root, "s")
	log := &rig.LogBuffer{}
	// The shell's cd sets PWD to the logical path, as an operator's does.
	script := "cd " + current + " && exec " + bins.launcher + " start --listen " + addr + " --state-dir " + state + " --releases " + filepath.Join(root, "releases") + " --probation 0 -- ./hello"
	p, err := rig.StartProc(context.Background(), []string{"/bin/sh", "-c", script}, nil, state, log)
	if err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	s := &sup{Proc: p, t: t, addr: addr, stateDir: state, log: log}
	t.Cleanup(s.cleanup)
	if b := mustGet(t, addr, "/"); b != "hello from v1" {
		t.Fatalf("GET / = %q; want hello from v1", b)
	}

	tmp := current + ".new"
	if err := os.Symlink("releases/v2", tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, current); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := s.cli("upgrade", "--wait"); code != 0 {
		t.Fatalf("upgrade: exit %d\n%s%s", code, out, errOut)
	}
	if b := mustGet(t, addr, "/"); b != "hello from v2" {
		t.Errorf("after current moved to v2 and an upgrade, GET / = %q; want hello from v2", b)
	}
	g := activeGen(s.status())
	if g == nil || g.Version != "v2" || len(g.PIDs) == 0 {
		t.Fatalf("active generation %+v; want v2", g)
	}
	cwd, err := os.Readlink(filepath.Join("/proc", itoa(g.PIDs[0]), "cwd"))
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(root, "releases", "v2"); cwd != want {
		t.Errorf("the new worker runs in %s; want %s (current's target at its start)", cwd, want)
	}

	// An upgrade to the same file says so.
	out, errOut, code := s.cli("upgrade", "--wait")
	if code != 0 || !strings.Contains(out, "the same file as the active generation") {
		t.Errorf("upgrade to the same release: exit %d, %q%s; want it said", code, out, errOut)
	}
}
