package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/launcherd/launcher/internal/ticketkeys"
	"github.com/launcherd/launcher/supervisor"
)

// runCLI runs the command line args on the cli mk returns and returns the
// exit status, stdout and stderr.
func runCLI(t *testing.T, mk func(stdout, stderr io.Writer) *cli, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := mk(&stdout, &stderr).run(args)
	return code, stdout.String(), stderr.String()
}

// call is what a fake action was called with.
type call struct {
	action   string
	stateDir string
	cfg      supervisor.Config
	verbose  bool
	arg      string
	wait     bool
	upgrade  upgradeOptions
	status   statusOptions
	demo     demoOptions
}

// fakeCLI returns a constructor of clis whose actions record their call in
// *got and return err.
func fakeCLI(got *call, err error) func(stdout, stderr io.Writer) *cli {
	return func(stdout, stderr io.Writer) *cli {
		c := newCLI(stdout, stderr)
		record := func(cl call) error {
			cl.stateDir = c.stateDirOrDefault()
			*got = cl
			return err
		}
		c.start = func(cfg supervisor.Config, verbose bool) error {
			return record(call{action: "start", cfg: cfg, verbose: verbose})
		}
		c.upgrade = func(_ context.Context, arg string, o upgradeOptions) error {
			return record(call{action: "upgrade", arg: arg, wait: o.wait, upgrade: o})
		}
		c.promote = func(context.Context) error { return record(call{action: "promote"}) }
		c.rollback = func(_ context.Context, wait bool) error { return record(call{action: "rollback", wait: wait}) }
		c.stop = func(context.Context) error { return record(call{action: "stop"}) }
		c.status = func(_ context.Context, o statusOptions) error { return record(call{action: "status", status: o}) }
		c.demo = func(_ context.Context, o demoOptions) error { return record(call{action: "demo", demo: o}) }
		c.releases = func(context.Context) (string, error) { return "", supervisor.ErrNotRunning }
		return c
	}
}

// upOpts is upgrade's options with the flags' defaults.
func upOpts(wait bool) upgradeOptions {
	return upgradeOptions{wait: wait, interval: supervisor.DefaultCanaryInterval}
}

// startConfig is start's Config with the flags' defaults, changed by set.
func startConfig(set func(*supervisor.Config)) supervisor.Config {
	cfg := supervisor.Config{
		Command: []string{"/srv/hello"}, Listen: []string{"127.0.0.1:8080"}, StateDir: "/env/state",
		Workers: 1, DrainTimeout: 30 * time.Second, ReadyTimeout: 30 * time.Second,
		Handover: supervisor.HandoverSteer, MaxDraining: 4,
		Probation: supervisor.DefaultProbation, KeepExited: supervisor.DefaultKeepExited,
		TicketRotate: ticketkeys.DefaultRotate, TicketLifetime: ticketkeys.DefaultLifetime,
		MaxErrorRatio: supervisor.DefaultMaxErrorRatio, MaxLatencyRatio: supervisor.DefaultMaxLatencyRatio, MinRequests: supervisor.DefaultMinRequests,
	}
	if set != nil {
		set(&cfg)
	}
	return cfg
}

func TestParse(t *testing.T) {
	t.Setenv("LAUNCHER_STATE_DIR", "/env/state")
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	listen := []string{"--listen", "127.0.0.1:8080"}
	tests := []struct {
		args []string
		want call
	}{
		{[]string{"upgrade", "v2", "--wait"}, call{action: "upgrade", arg: "v2", wait: true, upgrade: upOpts(true)}},
		{[]string{"upgrade", "--wait", "v2"}, call{action: "upgrade", arg: "v2", wait: true, upgrade: upOpts(true)}},
		{[]string{"upgrade"}, call{action: "upgrade", upgrade: upOpts(false)}},
		{[]string{"upgrade", "v2", "--state-dir", "/s"}, call{action: "upgrade", arg: "v2", stateDir: "/s", upgrade: upOpts(false)}},
		{[]string{"--state-dir", "/s", "upgrade", "v2"}, call{action: "upgrade", arg: "v2", stateDir: "/s", upgrade: upOpts(false)}},
		{[]string{"upgrade", "/abs/hello"}, call{action: "upgrade", arg: "/abs/hello", upgrade: upOpts(false)}},
		{[]string{"upgrade", "build/hello"}, call{action: "upgrade", arg: filepath.Join(wd, "build/hello"), upgrade: upOpts(false)}},
		{[]string{"upgrade", "--canary", "10,50", "--canary-interval", "2s", "--json", "v2"}, call{action: "upgrade", arg: "v2",
			upgrade: upgradeOptions{canary: []int{10, 50}, interval: 2 * time.Second, json: true}}},
		{[]string{"promote"}, call{action: "promote"}},
		{[]string{"start", "--listen", "a:1", "--max-error-ratio", "0.1", "--max-latency-ratio", "0", "--min-requests", "20", "--", "/srv/hello"},
			call{action: "start", cfg: startConfig(func(c *supervisor.Config) {
				c.Listen, c.MaxErrorRatio, c.MaxLatencyRatio, c.MinRequests = []string{"a:1"}, 0.1, supervisor.NoJudge, 20
			})}},
		{[]string{"rollback", "--wait"}, call{action: "rollback", wait: true}},
		{[]string{"stop", "--state-dir=/s"}, call{action: "stop", stateDir: "/s"}},
		{[]string{"status"}, call{action: "status", status: statusOptions{interval: time.Second}}},
		{[]string{"status", "--watch", "--json", "--interval", "2s"}, call{action: "status", status: statusOptions{json: true, watch: true, interval: 2 * time.Second}}},
		{[]string{"demo"}, call{action: "demo", demo: demoOptions{workers: 2}}},
		{[]string{"demo", "-v", "--faults", "--workers", "3"}, call{action: "demo", demo: demoOptions{verbose: true, faults: true, workers: 3}}},
		{append(append([]string{"start"}, listen...), "--", "/srv/hello"), call{action: "start", cfg: startConfig(nil)}},
		// The service's flags are its own, with or without "--".
		{append(append([]string{"start"}, listen...), "--", "/srv/hello", "-addr", "x", "--workers", "9", "--help"),
			call{action: "start", cfg: startConfig(func(c *supervisor.Config) {
				c.Command = []string{"/srv/hello", "-addr", "x", "--workers", "9", "--help"}
			})}},
		{append(append([]string{"start"}, listen...), "/srv/hello", "-addr", "x", "-v"),
			call{action: "start", cfg: startConfig(func(c *supervisor.Config) { c.Command = []string{"/srv/hello", "-addr", "x", "-v"} })}},
		{[]string{"start", "--probation", "0", "--listen", "a:1", "--listen", "b:2", "--workers", "4", "-v", "--handover", "close", "--keep-exited", "0", "--", "/srv/hello"},
			call{action: "start", verbose: true, cfg: startConfig(func(c *supervisor.Config) {
				c.Probation, c.Listen, c.Workers, c.Handover = supervisor.NoProbation, []string{"a:1", "b:2"}, 4, supervisor.HandoverClose
				c.KeepExited = supervisor.NoKeepExited
			})}},
		{[]string{"start", "--state-dir", "/s", "--probation", "2s", "--releases", "/r", "--current", "/c", "--metrics", ":9100",
			"--drain-timeout", "1m", "--ready-timeout", "5s", "--max-draining", "2", "--settle", "1.5s", "--keep-exited", "90s", "--listen", "127.0.0.1:8080", "/srv/hello"},
			call{action: "start", stateDir: "/s", cfg: startConfig(func(c *supervisor.Config) {
				c.StateDir, c.Probation, c.Releases, c.Current, c.MetricsAddr = "/s", 2*time.Second, "/r", "/c", ":9100"
				c.DrainTimeout, c.ReadyTimeout, c.MaxDraining, c.Settle = time.Minute, 5*time.Second, 2, 1500*time.Millisecond
				c.KeepExited = 90 * time.Second
			})}},
		// --settle 0 is the default, documented; --probation 0 is off.
		{[]string{"start", "--listen", "a:1", "--settle", "0", "--probation", "0", "--", "/srv/hello"},
			call{action: "start", cfg: startConfig(func(c *supervisor.Config) {
				c.Listen, c.Probation = []string{"a:1"}, supervisor.NoProbation
			})}},
		{[]string{"start", "--listen", "127.0.0.1:8080", "--tls-ticket-rotate", "1h", "--tls-ticket-lifetime", "12h", "--tls-ticket-key-file", "/k", "--", "/srv/hello"},
			call{action: "start", cfg: startConfig(func(c *supervisor.Config) {
				c.TicketRotate, c.TicketLifetime, c.TicketKeyFile = time.Hour, 12*time.Hour, "/k"
			})}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var got call
			code, _, stderr := runCLI(t, fakeCLI(&got, nil), tt.args...)
			if code != 0 {
				t.Fatalf("exit %d, stderr %q; want 0", code, stderr)
			}
			if tt.want.stateDir == "" {
				tt.want.stateDir = "/env/state"
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v; want %+v", got, tt.want)
			}
		})
	}
}

func TestExitStatus(t *testing.T) {
	t.Setenv("LAUNCHER_STATE_DIR", "/env/state")
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	long := "/tmp/" + strings.Repeat("d", 100)
	tests := []struct {
		args     []string
		err      error // the action's
		code     int
		stdout   string // a substring
		stderr   string // the whole of it, "" for none, "*" for anything
		noAction bool
	}{
		{args: []string{"--help"}, code: 0, stdout: "launcher [command]", noAction: true},
		{args: []string{"-h"}, code: 0, stdout: "Available Commands", noAction: true},
		{args: []string{"help", "upgrade"}, code: 0, stdout: "launcher upgrade [--wait | --verdict] [--json] [--canary W[,W...] [--canary-interval D]] [VERSION|PATH]", noAction: true},
		{args: []string{"upgrade", "--help"}, code: 0, stdout: "--wait", noAction: true},
		{args: []string{"start", "--help"}, code: 0, stdout: "--probation", noAction: true},
		{args: []string{"start", "--listen", "a:1", "-h", "--", "x"}, code: 0, stdout: "--probation", noAction: true},
		{args: []string{"stop", "--help"}, code: 0, stdout: "--state-dir", noAction: true},
		{args: []string{"upgrade", "v2"}, code: 0},
		{args: []string{"upgrade", "v2"}, err: errors.New("upgrade to v2: crashed"), code: 1, stderr: "launcher: upgrade to v2: crashed\n"},
		{args: []string{"status"}, err: supervisor.ErrNotRunning, code: 1, stderr: "launcher: no supervisor running\n"},
		{args: []string{}, code: 2, stderr: "*", noAction: true},
		{args: []string{"upgrdae"}, code: 2, stderr: `launcher: unknown command "upgrdae" (see launcher --help); did you mean "upgrade"?` + "\n", noAction: true},
		{args: []string{"--bogus"}, code: 2, stderr: "launcher: unknown flag: --bogus (see launcher --help)\n", noAction: true},
		{args: []string{"upgrade", "--bogus"}, code: 2, stderr: "launcher: upgrade: unknown flag: --bogus (see launcher upgrade --help)\n", noAction: true},
		{args: []string{"upgrade", "--canary", "50,10", "v2"}, code: 2, stderr: "launcher: upgrade: --canary 50,10: want increasing weights\n", noAction: true},
		{args: []string{"upgrade", "--canary", "100", "v2"}, code: 2, stderr: "launcher: upgrade: --canary 100: want percentages from 1 to 99\n", noAction: true},
		{args: []string{"upgrade", "--canary", "ten", "v2"}, code: 2, stderr: "launcher: upgrade: invalid argument \"ten\" for \"--canary\" flag: want percentages from 1 to 99 separated by commas, such as 10,50 (see launcher upgrade --help)\n", noAction: true},
		{args: []string{"upgrade", "--canary", "", "v2"}, code: 2, stderr: "launcher: upgrade: invalid argument \"\" for \"--canary\" flag: want percentages from 1 to 99 separated by commas, such as 10,50 (see launcher upgrade --help)\n", noAction: true},
		{args: []string{"upgrade", "--canary", " 10, 50%", "v2"}, code: 0},
		{args: []string{"upgrade", "--canary", "10%", "v2"}, code: 0},
		{args: []string{"demo", "--state-dir", "/tmp/x"}, code: 2, stderr: "launcher: demo: --state-dir does not apply: the demo runs a supervisor of its own in a temporary directory\n", noAction: true},
		{args: []string{"status", "--interval", "2s"}, code: 2, stderr: "launcher: status: --interval needs --watch\n", noAction: true},
		// A state dir given empty fell back to the default silently, a
		// file or a long path failed with a system call's words.
		{args: []string{"status", "--state-dir", ""}, code: 2, stderr: `launcher: status: --state-dir "": empty (leave it out for the default, /env/state)` + "\n", noAction: true},
		{args: []string{"upgrade", "--state-dir", file, "v2"}, code: 2, stderr: "launcher: upgrade: --state-dir " + file + ": not a directory\n", noAction: true},
		{args: []string{"start", "--state-dir", long, "--listen", "a:1", "--", "x"}, code: 2, stderr: "launcher: start: --state-dir " + long + ": too long: its control socket's path would take 118 bytes, and a unix socket's at most 107\n", noAction: true},
		{args: []string{"upgrade", "--canary-interval", "2s", "v2"}, code: 2, stderr: "launcher: upgrade: --canary-interval needs --canary\n", noAction: true},
		{args: []string{"upgrade", "--canary", "10", "--canary-interval", "0s", "v2"}, code: 2, stderr: "launcher: upgrade: --canary-interval 0s: want more than 0\n", noAction: true},
		{args: []string{"promote", "now"}, code: 2, stderr: "*", noAction: true},
		{args: []string{"start", "--listen", "a:1", "--max-error-ratio", "-1", "--", "x"}, code: 2, stderr: "launcher: start: --max-error-ratio -1: want 0 (off) to 1 (a share of requests: 0.05 is 5 points)\n", noAction: true},
		{args: []string{"upgrade", "v2", "v3"}, code: 2, stderr: `launcher: upgrade: one VERSION or PATH at most, got ["v2" "v3"]` + "\n", noAction: true},
		{args: []string{"status", "now"}, code: 2, stderr: "*", noAction: true},
		{args: []string{"rollback", "v1"}, code: 2, stderr: "*", noAction: true},
		{args: []string{"status", "--interval", "soon"}, code: 2, stderr: "*", noAction: true},
		{args: []string{"start", "--listen", "a:1", "--workers", "many", "--", "x"}, code: 2, stderr: "*", noAction: true},
		{args: []string{"start", "--listen", "a:1", "--workers", "0", "--", "x"}, code: 2, stderr: "launcher: start: --workers 0: want at least 1\n", noAction: true},
		{args: []string{"start", "--listen", "a:1", "--probation", "-1s", "--", "x"}, code: 2, stderr: "launcher: start: --probation -1s: want 0 (off) or more\n", noAction: true},
		{args: []string{"start", "--listen", "a:1", "--keep-exited", "-1m", "--", "x"}, code: 2, stderr: "launcher: start: --keep-exited -1m0s: want 0 (off) or more\n", noAction: true},
		{args: []string{"start", "--listen", "a:1", "--tls-ticket-rotate", "0", "--", "x"}, code: 2, stderr: "launcher: start: --tls-ticket-rotate 0s: want 1s or more\n", noAction: true},
		{args: []string{"start", "--listen", "a:1", "--tls-ticket-lifetime", "1h", "--", "x"}, code: 2, stderr: "launcher: start: --tls-ticket-lifetime 1h0m0s: want at least --tls-ticket-rotate (24h0m0s)\n", noAction: true},
		// A zero timeout used to mean the default silently; a negative
		// --settle or --max-draining 0 likewise reached the supervisor.
		{args: []string{"start", "--listen", "a:1", "--ready-timeout", "0", "--", "x"}, code: 2, stderr: "launcher: start: --ready-timeout 0s: want more than 0\n", noAction: true},
		{args: []string{"start", "--listen", "a:1", "--ready-timeout", "-5s", "--", "x"}, code: 2, stderr: "launcher: start: --ready-timeout -5s: want more than 0\n", noAction: true},
		{args: []string{"start", "--listen", "a:1", "--drain-timeout", "0", "--", "x"}, code: 2, stderr: "launcher: start: --drain-timeout 0s: want more than 0\n", noAction: true},
		{args: []string{"start", "--listen", "a:1", "--drain-timeout", "-1m", "--", "x"}, code: 2, stderr: "launcher: start: --drain-timeout -1m0s: want more than 0\n", noAction: true},
		{args: []string{"start", "--listen", "a:1", "--settle", "-1ms", "--", "x"}, code: 2, stderr: "launcher: start: --settle -1ms: want 0 (the default) or more\n", noAction: true},
		{args: []string{"start", "--listen", "a:1", "--max-draining", "0", "--", "x"}, code: 2, stderr: "launcher: start: --max-draining 0: want at least 1\n", noAction: true},
		{args: []string{"start", "--listen", "a:1", "--tls-ticket-rotate", "-1h", "--", "x"}, code: 2, stderr: "launcher: start: --tls-ticket-rotate -1h0m0s: want 1s or more\n", noAction: true},
		{args: []string{"start", "--listen", "a:1", "--tls-ticket-lifetime", "-1h", "--", "x"}, code: 2, stderr: "launcher: start: --tls-ticket-lifetime -1h0m0s: want at least --tls-ticket-rotate (24h0m0s)\n", noAction: true},
		{args: []string{"upgrade", "--canary", "10", "--canary-interval", "-1s", "v2"}, code: 2, stderr: "launcher: upgrade: --canary-interval -1s: want more than 0\n", noAction: true},
		// An empty VERSION used to re-resolve COMMAND, as no argument does.
		{args: []string{"upgrade", ""}, code: 2, stderr: "launcher: upgrade: empty VERSION or PATH \"\": give one, or none to re-resolve COMMAND\n", noAction: true},
		{args: []string{"upgrade", " \t", "--wait"}, code: 2, stderr: "launcher: upgrade: empty VERSION or PATH \" \\t\": give one, or none to re-resolve COMMAND\n", noAction: true},
		{args: []string{"start", "--listen", "a:1"}, code: 2, stderr: "launcher: start: no COMMAND: launcher start [flags] -- COMMAND [ARGS...]\n", noAction: true},
		// Given empty, each was taken as not given (a new user's trial).
		{args: []string{"start", "--listen", "a:1", "--releases", "", "--", "x"}, code: 2, stderr: "launcher: start: --releases \"\": empty (leave it out if there is none)\n", noAction: true},
		{args: []string{"start", "--listen", "a:1", "--current", "", "--", "x"}, code: 2, stderr: "launcher: start: --current \"\": empty (leave it out if there is none)\n", noAction: true},
		{args: []string{"start", "--listen", "a:1", "--metrics", "", "--", "x"}, code: 2, stderr: "launcher: start: --metrics \"\": empty (leave it out if there is none)\n", noAction: true},
		// It blamed another supervisor for the port its own --listen took.
		{args: []string{"start", "--listen", "127.0.0.1:9", "--metrics", "127.0.0.1:9", "--", "x"}, code: 2, stderr: "launcher: start: --metrics 127.0.0.1:9: also a --listen address: give the metrics another port\n", noAction: true},
		{args: []string{"start", "--", "x"}, code: 2, stderr: "launcher: start: no listen address: give --listen ADDR\n", noAction: true},
		{args: []string{"start", "--listen", "a:1", "--bogus", "x"}, code: 2, stderr: "*", noAction: true},
		{args: []string{"completion"}, code: 2, stderr: "*", noAction: true},
		{args: []string{"completion", "tcsh"}, code: 2, stderr: "*", noAction: true},
		{args: []string{"man"}, code: 2, stderr: "*", noAction: true},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var got call
			code, stdout, stderr := runCLI(t, fakeCLI(&got, tt.err), tt.args...)
			if code != tt.code {
				t.Errorf("exit %d; want %d (stderr %q)", code, tt.code, stderr)
			}
			if !strings.Contains(stdout, tt.stdout) {
				t.Errorf("stdout = %q; want it to contain %q", stdout, tt.stdout)
			}
			switch {
			case tt.stderr == "*" && len(tt.args) > 0:
				// One line, ours.
				if !strings.HasPrefix(stderr, "launcher: ") || strings.Count(stderr, "\n") != 1 {
					t.Errorf("stderr = %q; want one line starting with %q", stderr, "launcher: ")
				}
			case tt.stderr == "*":
				if stderr == "" {
					t.Errorf("stderr is empty; want the usage")
				}
			case stderr != tt.stderr:
				t.Errorf("stderr = %q; want %q", stderr, tt.stderr)
			}
			if tt.noAction && got.action != "" {
				t.Errorf("action %q ran; want none", got.action)
			}
		})
	}
}

// TestNotRunning runs the real actions against a state directory no
// supervisor serves.
func TestNotRunning(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{{"upgrade", "v2"}, {"rollback"}, {"stop"}, {"status"}} {
		t.Run(args[0], func(t *testing.T) {
			code, stdout, stderr := runCLI(t, newCLI, append(args, "--state-dir", dir)...)
			if code != 1 || stdout != "" {
				t.Errorf("exit %d, stdout %q; want 1 and nothing", code, stdout)
			}
			want := "launcher: " + args[0] + ": no supervisor running on " + dir
			if !strings.HasPrefix(stderr, want) || strings.Count(stderr, "\n") != 1 {
				t.Errorf("stderr = %q; want one line starting with %q", stderr, want)
			}
		})
	}
}

func TestDefaultStateDir(t *testing.T) {
	t.Setenv("LAUNCHER_STATE_DIR", "")
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/1000")
	want := "/run/user/1000/launcher"
	if os.Getuid() == 0 {
		want = "/run/launcher"
	}
	if got := defaultStateDir(); got != want {
		t.Errorf("defaultStateDir() = %q; want %q", got, want)
	}
	t.Setenv("LAUNCHER_STATE_DIR", "/x")
	if got := defaultStateDir(); got != "/x" {
		t.Errorf("defaultStateDir() = %q; want %q", got, "/x")
	}
}

// TestUpgradeArg: a version stays a version (with the trailing slash a
// shell completes a release directory with), a relative path becomes
// absolute against the caller's directory, an absolute one stays.
func TestUpgradeArg(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ arg, want string }{
		{"v2", "v2"},
		{"v2/", "v2"},
		{"/srv/app/releases/v2/hello", "/srv/app/releases/v2/hello"},
		{"releases/v2/hello", filepath.Join(wd, "releases/v2/hello")},
		{"v1/../v2", filepath.Join(wd, "v2")},
	} {
		if got, err := upgradeArg([]string{tt.arg}); err != nil || got != tt.want {
			t.Errorf("upgradeArg(%q) = %q, %v; want %q", tt.arg, got, err, tt.want)
		}
	}
}

// TestDemoHelpLeavesOutStateDir: the demo runs a supervisor of its own, so
// its help does not offer --state-dir (a new user took it to apply), and
// the flag stays in the other commands' help.
func TestDemoHelpLeavesOutStateDir(t *testing.T) {
	code, stdout, _ := runCLI(t, newCLI, "demo", "--help")
	if code != 0 || !strings.Contains(stdout, "--faults") || strings.Contains(stdout, "--state-dir") {
		t.Errorf("demo --help: exit %d, %q; want 0, --faults and no --state-dir", code, stdout)
	}
	if code, stdout, _ := runCLI(t, newCLI, "stop", "--help"); code != 0 || !strings.Contains(stdout, "--state-dir") {
		t.Errorf("stop --help: exit %d, %q; want 0 with --state-dir", code, stdout)
	}
}
