package supervisor

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// A script release whose #! line names no interpreter that can run is
// refused before anything starts, saying why; exec said "no such file or
// directory" of the script itself (a new user's trial: a missing
// /usr/bin/python9, and a script saved with CRLF line endings).
func TestCheckExecutableScripts(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ name, body, want string }{
		{"sh", "#!/bin/sh\nexec true\n", ""},
		{"env", "#! /usr/bin/env sh\nexec true\n", ""},
		{"missing", "#!/usr/bin/python9\nprint(1)\n", "its interpreter /usr/bin/python9 (its #! line) does not exist"},
		{"crlf", "#!/bin/sh\r\nexec true\r\n", "its #! line ends with a carriage return (CRLF line endings): exec looks for \"/bin/sh\\r\""},
		{"crlf-arg", "#!/bin/sh -e\r\nexec true\r\n", ""}, // the CR is the argument's: the interpreter decides
		{"dir", "#!/tmp\n", "its interpreter /tmp (its #! line) is not an executable file"},
		{"empty", "#!\n", "its #! line names no interpreter"},
		{"other", "not a script\n", ""}, // left to exec (binfmt_misc)
		{"nested", "#!" + dir + "/missing\n", "its interpreter " + dir + "/missing (its #! line) is a script: its interpreter /usr/bin/python9 (its #! line) does not exist"},
		{"nested-ok", "#!" + dir + "/sh\n", ""},
		{"long", "#!/" + strings.Repeat("x", 300) + "\n", "its #! line's interpreter path runs past the 256 bytes of it that exec reads"},
		{"long-arg", "#!/bin/sh " + strings.Repeat("x", 300) + "\n", ""},              // the argument is cut, not the interpreter
		{"long-spaces", "#!/bin/sh" + strings.Repeat(" ", 250) + "\nexec true\n", ""}, // the name ends within the buffer
	} {
		p := filepath.Join(dir, c.name)
		if err := os.WriteFile(p, []byte(c.body), 0o755); err != nil {
			t.Fatal(err)
		}
		err := checkExecutable(p)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v; want it taken", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v; want %q", c.name, err, c.want)
		}
	}
}

// An upgrade to a path through a symlink outside --releases (a `current`
// link beside it) that resolves inside it is taken, as the start command
// through the same link is; one that leads outside is refused. (A new
// user's recheck: `upgrade /srv/app/current/hello` was refused as outside
// --releases.)
func TestResolvePathThroughASymlink(t *testing.T) {
	fx := newFakeEffects(t)
	r := startRig(t, Config{Workers: 1, Probation: NoProbation}, fx, nil)
	r.waitStarted()
	dir := t.TempDir()
	in, out := filepath.Join(dir, "current"), filepath.Join(dir, "elsewhere")
	if err := os.Symlink(filepath.Join(r.s.cfg.Releases, "v2"), in); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(dir, out); err != nil {
		t.Fatal(err)
	}
	rel, err := r.s.resolve(filepath.Join(in, "app"))
	if err != nil || rel.Version != "v2" {
		t.Errorf("resolve through current: %+v, %v; want v2", rel, err)
	}
	if _, err := r.s.resolve(filepath.Join(out, "current", "app")); err != nil {
		t.Errorf("resolve through two links into --releases: %v; want it taken", err)
	}
	os.WriteFile(filepath.Join(dir, "app"), []byte("#!/bin/sh\n"), 0o755)
	if _, err := r.s.resolve(filepath.Join(out, "app")); err == nil || !strings.Contains(err.Error(), "outside --releases") {
		t.Errorf("resolve of a file outside --releases: %v; want it refused", err)
	}

	// A symlink loop is said as one, not as a missing file (a new user's
	// trial); a missing file still reads "no such file".
	loop := filepath.Join(r.s.cfg.Releases, "loop")
	if err := os.MkdirAll(loop, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("app", filepath.Join(loop, "app")); err != nil {
		t.Fatal(err)
	}
	if _, err := r.s.resolve("loop"); !errors.Is(err, ErrBadRelease) || !strings.HasSuffix(err.Error(), "/loop/app: a symbolic link loop (too many links to follow)") {
		t.Errorf("resolve of a release that is a symlink loop: %v; want it refused as a loop", err)
	}
	// Through a link, a file that cannot run is named beside the link.
	nox := filepath.Join(r.s.cfg.Releases, "nox")
	if err := os.MkdirAll(nox, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(nox, "app"), []byte("#!/bin/sh\n"), 0o644)
	link := filepath.Join(dir, "cur")
	if err := os.Symlink(nox, link); err != nil {
		t.Fatal(err)
	}
	if _, err := r.s.resolve(filepath.Join(link, "app")); err == nil || !strings.Contains(err.Error(), filepath.Join(link, "app")+" ("+filepath.Join(nox, "app")+"): ") {
		t.Errorf("resolve of a file that cannot run, through a link: %v; want both named", err)
	}
	// A dangling link says where it leads (a new user's recheck).
	dangle := filepath.Join(r.s.cfg.Releases, "dangle")
	if err := os.MkdirAll(dangle, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/nonexistent/app", filepath.Join(dangle, "app")); err != nil {
		t.Fatal(err)
	}
	if _, err := r.s.resolve("dangle"); err == nil || !strings.HasSuffix(err.Error(), "/dangle/app: a symbolic link to /nonexistent/app, which does not exist") {
		t.Errorf("resolve of a dangling link: %v; want it said as one", err)
	}
	if _, err := r.s.resolve(filepath.Join(r.s.cfg.Releases, "v2", "missing")); err == nil || !strings.HasSuffix(err.Error(), "missing: no such file") {
		t.Errorf("resolve of a missing file: %v; want no such file", err)
	}
}

// A release outside --releases is labelled NAME@ and 8 hex digits of a
// SHA-256 of its ELF build ID, read from its notes, rather than of the
// whole file: hashing a 16 MB Go binary took 12–16 ms of every such
// SIGHUP upgrade's way to serving. Releases without one (a script) are
// still labelled by the whole file's hash; two builds differ.
func TestReleaseLabelledByItsBuildID(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("go", "tool", "buildid", exe).Output()
	if err != nil {
		t.Skipf("go tool buildid: %v", err)
	}
	goID := strings.TrimSpace(string(out))
	sum := sha256.Sum256([]byte(goID))
	if got, err := releaseID(exe); err != nil || got != hex.EncodeToString(sum[:])[:8] {
		t.Errorf("releaseID(the test binary) = %q, %v; want the hash of its Go build ID %q", got, err, goID)
	}

	dir := t.TempDir()
	script := filepath.Join(dir, "run")
	os.WriteFile(script, []byte("#!/bin/sh\nexec true\n"), 0o755)
	want, _ := fileSum(script)
	if got, err := releaseID(script); err != nil || got != want {
		t.Errorf("releaseID(a script) = %q, %v; want the file's hash %q", got, err, want)
	}

	// A GNU build ID (a C program's), where the system has one.
	if out, err := exec.Command("readelf", "-n", "/bin/true").Output(); err == nil {
		_, after, ok := strings.Cut(string(out), "Build ID: ")
		if ok {
			hexID := strings.Fields(after)[0]
			raw, _ := hex.DecodeString(hexID)
			sum := sha256.Sum256(raw)
			if got, _ := releaseID("/bin/true"); got != hex.EncodeToString(sum[:])[:8] {
				t.Errorf("releaseID(/bin/true) = %q; want the hash of its GNU build ID %s", got, hexID)
			}
		}
	}

	// Notes that run past their section are not read.
	if d := noteDesc([]byte{4, 0, 0, 0, 200, 0, 0, 0, 4, 0, 0, 0, 'G', 'o', 0, 0, 1}, binary.LittleEndian, "Go\x00\x00", 4); d != nil {
		t.Errorf("noteDesc of a cut note = %v; want nil", d)
	}
}

// A rollback that starts the release before again refuses, changing
// nothing, when that release's file is gone (pruned) or, for a release
// labelled by its content, holds another build now; before, a pruned one
// started a generation that failed (fork/exec: no such file), with a
// failed upgrade's report (a new user's trial).
func TestRollbackRefusesAReleaseGoneOrReplaced(t *testing.T) {
	fx := newFakeEffects(t)
	r := startRig(t, Config{Workers: 1, Probation: NoProbation}, fx, nil)
	r.waitStarted()
	if _, err := r.upgrade("v2", true); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(r.path("v1")); err != nil {
		t.Fatal(err)
	}
	_, err := r.s.Rollback(context.Background(), false, nil)
	if err == nil || !strings.Contains(err.Error(), "rollback refused: bad release: the release before, v1, cannot start again") || !errors.Is(err, ErrBadRelease) {
		t.Errorf("rollback to a deleted release: %v; want it refused", err)
	}
	st := r.status()
	if n := len(st.Generations); n != 2 || st.Generations[1].Generation != 2 || st.Generations[1].State != StateActive || len(st.History) != 1 {
		t.Errorf("after the refused rollback: generations %+v, %d report(s); want generation 2 active and no generation 3, one report", st.Generations, len(st.History))
	}

	// Content labels: the file replaced in place.
	dir := t.TempDir()
	p := filepath.Join(dir, "app")
	os.WriteFile(p, []byte("#!/bin/sh\nexec true\n"), 0o755)
	id, _ := releaseID(p)
	rel := release{Version: "app@" + id, Path: p}
	if now, changed := rel.replaced(); changed {
		t.Errorf("replaced() of an unchanged file = %q, true", now)
	}
	os.WriteFile(p, []byte("#!/bin/sh\nexec false\n"), 0o755)
	id2, _ := releaseID(p)
	if now, changed := rel.replaced(); !changed || now != "app@"+id2 {
		t.Errorf("replaced() of a rewritten file = %q, %v; want app@%s, true", now, changed, id2)
	}
	if _, changed := (release{Version: "v1", Path: p}).replaced(); changed {
		t.Error("replaced() of a --releases version: true; want false (no content label)")
	}
}

// Outside --releases, a worker restarted after its generation's file was
// replaced in place runs the new file: a WARN line says so, naming the
// build it runs, since its label names the old one (a new user's trial).
func TestRestartFromAReplacedFileIsSaid(t *testing.T) {
	fx := newFakeEffects(t)
	r := startRig(t, Config{Workers: 1}, fx, func(r *rig) {
		r.s.releasesReal, r.s.releasesAbs = "", "" // labels by content
		first, err := r.s.resolve("")
		if err != nil {
			t.Fatal(err)
		}
		r.s.first = first
	})
	r.waitStarted()
	g := r.gen(1)
	if !strings.HasPrefix(g.Version, "app@") {
		t.Fatalf("generation 1 labelled %q; want app@ID", g.Version)
	}
	if err := os.WriteFile(r.path("v1"), []byte("#!/bin/sh\nexit 2\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	fx.proc(g.PIDs[0]).die()
	eventually(t, "the restart's warning", func() error {
		if !strings.Contains(r.log.String(), "worker restarted from a file replaced since its generation started") {
			return errors.New("not said yet")
		}
		return nil
	})
}
