package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestParseFlagsRefuses: a command line that could only fail at the end
// of a run (or means nothing) is refused before any work, with the flag
// named.
func TestParseFlagsRefuses(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "exists.json")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string // in the error; "" for none
	}{
		{[]string{"--plot", filepath.Join(dir, "x.txt")}, "--plot " + filepath.Join(dir, "x.txt") + ": want a .svg or .png file"},
		{[]string{"--plot", filepath.Join(dir, "x.svg"), "--upgrade-runs=false"}, "--plot: no load run to draw"},
		{[]string{"--json", "/nonexistent/dir/x.json"}, "--json /nonexistent/dir/x.json: cannot create a file in /nonexistent/dir: no such file or directory"},
		{[]string{"--plot", "/nonexistent/dir/x.png"}, "--plot /nonexistent/dir/x.png: cannot create a file in /nonexistent/dir"},
		{[]string{"--json", dir}, "is a directory"},
		{[]string{"--peers", "-1"}, "--peers -1: want 0 or more"},
		{[]string{"--idle-conns", "-5"}, "--idle-conns -5: want 0 or more"},
		{[]string{"--sighup", "-2"}, "--sighup -2: want 0 or more"},
		{[]string{"--floor", "-1"}, "--floor -1: want 0 or more"},
		{[]string{"--idle-upgrades", "-1"}, "--idle-upgrades -1: want 0 or more"},
		{[]string{"--floor", "0", "--idle-upgrades", "0", "--peers", "0"}, ""},
		{[]string{"--json", file, "--plot", filepath.Join(dir, "x.svg")}, ""},
		{[]string{"--json", filepath.Join(dir, "new.json")}, ""},
	} {
		_, err := parseFlags(tc.args, io.Discard)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: %v", tc.args, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q: error %v; want one with %q", tc.args, err, tc.want)
		}
	}
	// The probe of the directory leaves nothing behind.
	if names, _ := os.ReadDir(dir); len(names) != 1 {
		t.Errorf("%s holds %d files; want only %s", dir, len(names), file)
	}
}
