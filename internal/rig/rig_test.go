package rig

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStartFails: a launcher start that exits before serving (here a
// script standing for one refusing its flags) gives an error with its
// error line, and the state dir Start made for it is removed.
func TestStartFails(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp) // where Start makes the state dir
	dir := t.TempDir()
	r := &Rig{Dir: dir, Launcher: filepath.Join(dir, "launcher"), Releases: filepath.Join(dir, "releases")}
	script := "#!/bin/sh\necho 'a log line'\necho 'launcher: start: unknown flag: --bogus (see launcher start --help)' >&2\necho 'a last line of no use'\nexit 2\n"
	if err := os.WriteFile(r.Launcher, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := r.Start(context.Background(), Options{Version: "v1", Extra: []string{"--bogus"}})
	want := "launcher start exited before serving (exit status 2): launcher: start: unknown flag: --bogus (see launcher start --help)"
	if err == nil || err.Error() != want {
		t.Errorf("error %v; want %q", err, want)
	}
	if names, _ := os.ReadDir(tmp); len(names) > 0 {
		t.Errorf("left in %s: %s", tmp, names[0].Name())
	}
}

func TestOutputTailErrLine(t *testing.T) {
	for _, tc := range []struct{ out, want string }{
		{"", ""},
		{"taskset: failed\n", "taskset: failed"},
		{"launcher: start: bad\nworker noise\n\n", "launcher: start: bad"},
		{strings.Repeat("x", 2*tailBytes) + "\nlauncher: late\n", "launcher: late"},
	} {
		var tail outputTail
		tail.Write([]byte(tc.out))
		if got := tail.errLine(); got != tc.want {
			t.Errorf("errLine of %.20q = %q; want %q", tc.out, got, tc.want)
		}
	}
}

// TestBuildOutsideRepo: outside the repository Build says so, with an
// error a command can tell and add its own way to run to.
func TestBuildOutsideRepo(t *testing.T) {
	t.Chdir(t.TempDir())
	if _, err := Build(context.Background(), t.TempDir(), "v1"); !errors.Is(err, ErrOutsideRepo) {
		t.Errorf("Build = %v; want %v", err, ErrOutsideRepo)
	}
}
