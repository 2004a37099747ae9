package e2e

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBadInputLeavesServiceUntouched runs every kind of bad input against
// a running supervisor: each must fail with one clear line on stderr and a
// non-zero exit, and the running generation must be the same afterwards.
func TestBadInputLeavesServiceUntouched(t *testing.T) {
	s := startSup(t)
	before := activeGen(s.status())

	notExec := filepath.Join(shortTempDir(t), "notexec")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A release directory inside --releases whose binary is not executable.
	badRel := filepath.Join(bins.releases, "vbad")
	os.MkdirAll(badRel, 0o755)
	os.WriteFile(filepath.Join(badRel, "hello"), []byte("not a program"), 0o644)
	t.Cleanup(func() { os.RemoveAll(badRel) })

	tests := []struct {
		name     string
		args     []string
		code     int
		contains string
	}{
		{"unknown command", []string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{"unknown flag", []string{"upgrade", "--state-dir", s.stateDir, "--bogus"}, 2, "unknown flag: --bogus"},
		{"version not in releases", []string{"upgrade", "--state-dir", s.stateDir, "v9"}, 1, `version "v9" is not in`},
		{"release not executable", []string{"upgrade", "--state-dir", s.stateDir, "vbad"}, 1, "not executable"},
		{"path not executable", []string{"upgrade", "--state-dir", s.stateDir, notExec}, 1, "outside --releases"},
		{"path escaping releases", []string{"upgrade", "--state-dir", s.stateDir, "../../bin/sh"}, 1, "outside --releases"},
		{"version with a slash trick", []string{"upgrade", "--state-dir", s.stateDir, ".."}, 1, "not a version name"},
		{"two arguments", []string{"upgrade", "--state-dir", s.stateDir, "v1", "v2"}, 2, "one VERSION or PATH at most"},
		{"empty version", []string{"upgrade", "--state-dir", s.stateDir, ""}, 2, `empty VERSION or PATH ""`},
		{"blank version", []string{"upgrade", "--state-dir", s.stateDir, " "}, 2, `empty VERSION or PATH " "`},
		{"ready timeout 0", []string{"start", "--listen", freeAddr(t), "--ready-timeout", "0", "--state-dir", s.stateDir, "--", filepath.Join(bins.releases, "v1", "hello")}, 2, "--ready-timeout 0s: want more than 0"},
		{"drain timeout 0", []string{"start", "--listen", freeAddr(t), "--drain-timeout", "0", "--state-dir", s.stateDir, "--", filepath.Join(bins.releases, "v1", "hello")}, 2, "--drain-timeout 0s: want more than 0"},
		{"second start on a live state dir", []string{"start", "--listen", freeAddr(t), "--state-dir", s.stateDir, "--", filepath.Join(bins.releases, "v1", "hello")}, 1, "a supervisor is already running on"},
		{"workers 0", []string{"start", "--listen", freeAddr(t), "--workers", "0", "--state-dir", s.stateDir, "--", "x"}, 2, "--workers 0"},
		{"malformed listen", []string{"start", "--listen", "127.0.0.1", "--state-dir", s.stateDir, "--", filepath.Join(bins.releases, "v1", "hello")}, 2, "missing port"},
		{"start without command", []string{"start", "--listen", freeAddr(t), "--state-dir", s.stateDir}, 2, "no COMMAND"},
		// The file would have been replaced by a symlink at start.
		{"current names a file", []string{"start", "--listen", freeAddr(t), "--current", notExec, "--state-dir", shortTempDir(t), "--", filepath.Join(bins.releases, "v1", "hello")}, 2, "a file is there, not a symlink"},
		{"current in no directory", []string{"start", "--listen", freeAddr(t), "--current", "/nonexistent-dir/current", "--state-dir", shortTempDir(t), "--", filepath.Join(bins.releases, "v1", "hello")}, 2, "its directory /nonexistent-dir does not exist"},
		{"probation without steer", []string{"start", "--listen", freeAddr(t), "--handover", "close", "--probation", "5s", "--state-dir", shortTempDir(t), "--", filepath.Join(bins.releases, "v1", "hello")}, 2, "--probation 5s: steer handover only"},
		// Exit 1, as if the flag were not the operator's input.
		{"releases not there", []string{"start", "--listen", freeAddr(t), "--releases", "/nonexistent-releases", "--state-dir", shortTempDir(t), "--", filepath.Join(bins.releases, "v1", "hello")}, 2, "launcher: start: --releases /nonexistent-releases: lstat /nonexistent-releases: no such file or directory"},
		// It said the command "resolves to …, outside --releases", exit 1.
		{"releases names a file", []string{"start", "--listen", freeAddr(t), "--releases", notExec, "--state-dir", shortTempDir(t), "--", filepath.Join(bins.releases, "v1", "hello")}, 2, "launcher: start: --releases " + notExec + ": not a directory"},
		// The error lacked the command's name: "launcher: --metrics …".
		{"metrics address in use", []string{"start", "--listen", freeAddr(t), "--metrics", s.addr, "--state-dir", shortTempDir(t), "--", filepath.Join(bins.releases, "v1", "hello")}, 1, "launcher: start: --metrics " + s.addr + ": listen tcp " + s.addr + ": bind: address already in use"},
		{"rollback with nothing to roll back to", []string{"rollback", "--state-dir", s.stateDir}, 1, "no previous release"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, stderr, code := runCLI(t, tt.args...)
			if code != tt.code {
				t.Errorf("exit %d; want %d (stderr %q)", code, tt.code, stderr)
			}
			checkOneLine(t, stderr, tt.contains)
			after := activeGen(s.status())
			if after == nil || after.Generation != before.Generation || after.PIDs[0] != before.PIDs[0] {
				t.Fatalf("service changed: %+v; want %+v", after, before)
			}
			if b := mustGet(t, s.addr, "/"); b != "hello from v1" {
				t.Fatalf("GET / = %q; want hello from v1", b)
			}
		})
	}
	if fi, err := os.Lstat(notExec); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("the file --current named: %v, %v; want it left a regular file", fi, err)
	}
}

func checkOneLine(t *testing.T, stderr, contains string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "launcher: ") {
		t.Errorf("stderr is not one launcher: line:\n%s", stderr)
	}
	if !strings.Contains(stderr, contains) {
		t.Errorf("stderr %q lacks %q", stderr, contains)
	}
}

// TestNoSupervisor: commands that need a supervisor say none runs.
func TestNoSupervisor(t *testing.T) {
	dir := filepath.Join(shortTempDir(t), "none")
	for _, args := range [][]string{
		{"status", "--state-dir", dir},
		{"upgrade", "--state-dir", dir, "v2"},
		{"rollback", "--state-dir", dir},
		{"stop", "--state-dir", dir},
	} {
		_, stderr, code := runCLI(t, args...)
		if code != 1 {
			t.Errorf("%v: exit %d; want 1", args, code)
		}
		checkOneLine(t, stderr, "no supervisor running on "+dir)
	}
}

// TestStaleStateDir: a pid file and socket left by a dead supervisor
// neither block a new start nor confuse status.
func TestStaleStateDir(t *testing.T) {
	dir := filepath.Join(shortTempDir(t), "s")
	os.MkdirAll(dir, 0o700)
	os.WriteFile(filepath.Join(dir, "launcher.pid"), []byte("999999\n"), 0o600)
	// A socket file nobody listens on, as a SIGKILLed supervisor leaves.
	l, err := net.Listen("unix", filepath.Join(dir, "control.sock"))
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	_, stderr, code := runCLI(t, "status", "--state-dir", dir)
	if code != 1 {
		t.Errorf("status on stale dir: exit %d; want 1", code)
	}
	checkOneLine(t, stderr, "no supervisor running")

	s := startSupIn(t, dir)
	if b := mustGet(t, s.addr, "/"); b != "hello from v1" {
		t.Fatalf("GET / = %q", b)
	}
	if p := readPID(filepath.Join(dir, "launcher.pid")); p != s.status().PID {
		t.Errorf("pid file %d; want %d", p, s.status().PID)
	}
}

// TestListenHeld: a port held by a socket without SO_REUSEPORT fails the
// start with the bind error, and leaves no process behind.
func TestListenHeld(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dir := filepath.Join(shortTempDir(t), "s")
	_, stderr, code := runCLI(t, "start", "--listen", l.Addr().String(), "--state-dir", dir, "--", filepath.Join(bins.releases, "v1", "hello"))
	if code != 1 {
		t.Errorf("exit %d; want 1", code)
	}
	last := strings.TrimSpace(stderr[strings.LastIndex(strings.TrimRight(stderr, "\n"), "\n")+1:])
	if !strings.HasPrefix(last, "launcher: start:") || !strings.Contains(last, "without SO_REUSEPORT") {
		t.Errorf("last line %q; want the bind error", last)
	}
	if _, err := os.Stat(filepath.Join(dir, "launcher.pid")); !os.IsNotExist(err) {
		t.Errorf("pid file left: %v", err)
	}
}

// TestSecondSupervisorOnTheSamePortRefused: a supervisor started on
// another state dir but the same --listen would share the port's
// reuseport group and steer the first one's traffic to its own service;
// it is refused, and the first serves on.
func TestSecondSupervisorOnTheSamePortRefused(t *testing.T) {
	s := startSup(t, "--probation", "0")
	dir := filepath.Join(shortTempDir(t), "s")
	_, stderr, code := runCLI(t, "start", "--listen", s.addr, "--state-dir", dir, "--", filepath.Join(bins.releases, "v2", "hello"))
	last := strings.TrimSpace(stderr[strings.LastIndex(strings.TrimRight(stderr, "\n"), "\n")+1:])
	if code != 1 || !strings.Contains(last, "something already listens there") {
		t.Errorf("second start: exit %d, %q; want 1 and refused", code, last)
	}
	// A refused start changes nothing: the state dir it made is gone.
	if ents, err := os.ReadDir(dir); !os.IsNotExist(err) {
		t.Errorf("the refused start left its new state dir %s (%v, %d entries)", dir, err, len(ents))
	}
	if out, errOut, code := s.cli("upgrade", "--wait", "v3"); code != 0 {
		t.Fatalf("upgrade of the first: exit %d\n%s%s", code, out, errOut)
	}
	for range 20 {
		if b := mustGet(t, s.addr, "/"); b != "hello from v3" {
			t.Fatalf("GET / = %q; want the first supervisor's v3", b)
		}
	}
}
