package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/launcherd/launcher/internal/rig"
	"github.com/launcherd/launcher/supervisor"
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
	// --handover migrate is refused where the kernel would not migrate,
	// as launcher start refuses it.
	migrate := ""
	if err := supervisor.CheckMigrateReq(); err != nil {
		migrate = err.Error()
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
		// Every part off ran nothing, exit 0 (a new user's trial).
		{[]string{"--floor", "0", "--idle-upgrades", "0", "--upgrade-runs=false", "--throughput=false"}, "nothing to run"},
		{[]string{"--floor", "0", "--idle-upgrades", "0", "--upgrade-runs=false", "--throughput=false", "--peers", "3"}, ""},
		{[]string{"--throughput-rounds", "0"}, "--throughput-rounds 0: want 6 or more"},
		{[]string{"--throughput-rounds", "5"}, "--throughput-rounds 5: want 6 or more (fewer give no 95% interval of the median)"},
		{[]string{"--throughput-round", "1500ms"}, "--throughput-round 1.5s: want whole seconds, 1s or more"},
		{[]string{"--throughput-round", "0s"}, "--throughput-round 0s: want whole seconds"},
		{[]string{"--throughput-rounds", "6", "--throughput-round", "2s", "--profile"}, ""},
		{[]string{"--profile", "--throughput=false"}, "--profile: profiles the throughput comparison's launcher"},
		{[]string{"--start-flags", "--settle 5ms --listen=:80"}, "--listen=:80 is the benchmark's own"},
		{[]string{"--ab-start-flags", "-- /bin/sh"}, "-- is the benchmark's own"},
		{[]string{"--start-flags", "--start-in-turn", "--ab-start-flags", "--settle 5ms"}, ""},
		{[]string{"--handover", "steer,migrate"}, migrate},
		{[]string{"--handover", "steer,tableflip"}, ""},
		{[]string{"--handover", "fork"}, `--handover: unknown strategy "fork" (steer, migrate, close or tableflip)`},
		{[]string{"--handover", "tableflip", "--workers", "4"}, "--handover tableflip: the peer is one process: its runs need 1 among --workers (4)"},
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

// TestCheckStartFlags: launcher start's own error line for flags it
// refuses (here from a script standing for it), nothing for good ones.
func TestCheckStartFlags(t *testing.T) {
	dir := t.TempDir()
	r := &rig.Rig{Dir: dir, Launcher: filepath.Join(dir, "launcher")}
	script := "#!/bin/sh\n[ \"$2\" = --bogus ] || exit 0\necho 'launcher: start: unknown flag: --bogus (see launcher start --help)' >&2\necho usage >&2\nexit 2\n"
	if err := os.WriteFile(r.Launcher, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := checkStartFlags(ctx, r, []string{"--start-in-turn"}); err != nil {
		t.Errorf("--start-in-turn: %v", err)
	}
	want := "launcher: start: unknown flag: --bogus (see launcher start --help)"
	if err := checkStartFlags(ctx, r, []string{"--bogus"}); err == nil || err.Error() != want {
		t.Errorf("--bogus: %v; want %q", err, want)
	}
}

// TestInterrupted: a run whose context has ended (a SIGINT) exits 130
// with one error, whatever step it was in (here the build).
func TestInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	code, err := run(ctx, []string{"--floor", "0", "--idle-upgrades", "0", "--upgrade-runs=false", "--throughput=false"}, io.Discard, io.Discard)
	if code != 130 || err != errInterrupted {
		t.Errorf("run = %d, %v; want 130, %v", code, err, errInterrupted)
	}
}

// The cold start's and the switch's window medians are medians: the mean
// of the middle two of an even count (it was the upper one: 116 % for the
// windows 96 % and 116 %, a new user's check against the JSON), with the
// count they rest on.
func TestPctSpreadIsAMedian(t *testing.T) {
	for _, c := range []struct {
		xs   []float64
		want string
	}{
		{nil, "-"},
		{[]float64{0.9615, 1.15625}, "106% (96%) of 2"},
		{[]float64{1.0, 0.5, 0.9}, "90% (50%) of 3"},
	} {
		if got := pctSpread(c.xs); got != c.want {
			t.Errorf("pctSpread(%v) = %q; want %q", c.xs, got, c.want)
		}
	}
}
