package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/launcherd/launcher/internal/control"
	"github.com/launcherd/launcher/supervisor"
)

// fakeSupervisor serves the control socket of a new state directory: for
// each connection in turn it reads the hello, sends that connection's
// messages and closes. It returns the directory and the hellos it got.
func fakeSupervisor(t *testing.T, conns ...[]control.Message) (string, <-chan control.Message) {
	t.Helper()
	dir, err := os.MkdirTemp("", "lc") // short: a socket path has 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", supervisor.ControlSocket(dir))
	if err != nil {
		t.Fatal(err)
	}
	hellos := make(chan control.Message, len(conns))
	done := make(chan struct{})
	go func() { // the fake: ends when its connections are served or ln closes
		defer close(done)
		for _, msgs := range conns {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conn := control.NewConn(c)
			if m, err := conn.Read(time.Now().Add(5 * time.Second)); err == nil {
				hellos <- m
			}
			for _, m := range msgs {
				if err := conn.Write(m); err != nil {
					break
				}
			}
			c.Close()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		os.RemoveAll(dir)
	})
	return dir, hellos
}

// progressMsg is a typed progress message as a current supervisor sends it.
func progressMsg(t *testing.T, typ string, p supervisor.Progress) control.Message {
	t.Helper()
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	m := control.Message{Type: typ, Text: p.String(), Data: b}
	if typ == control.TypeResult {
		m.OK = true
	}
	return m
}

func TestClientUpgradeTyped(t *testing.T) {
	starting := supervisor.Progress{Step: supervisor.StepStarting, Elapsed: 2 * time.Millisecond, Generation: 2, Version: "v2", Path: "/r/v2/hello", Workers: 1}
	serves := supervisor.Progress{Step: supervisor.StepServes, Elapsed: 15 * time.Millisecond, Generation: 2, Version: "v2", ReadyAfter: 12 * time.Millisecond}
	dir, hellos := fakeSupervisor(t, []control.Message{
		progressMsg(t, control.TypeProgress, starting),
		progressMsg(t, control.TypeResult, serves),
	})
	var got []supervisor.Progress
	sum, err := supervisor.Client{StateDir: dir}.Upgrade(context.Background(), "v2", true, func(p supervisor.Progress) { got = append(got, p) })
	if err != nil {
		t.Fatal(err)
	}
	if want := []supervisor.Progress{starting}; !reflect.DeepEqual(got, want) {
		t.Errorf("progress = %+v; want %+v", got, want)
	}
	if sum != serves {
		t.Errorf("summary = %+v; want %+v", sum, serves)
	}
	h := <-hellos
	if h.Type != control.TypeHello || h.Role != control.RoleClient || h.Cmd != "upgrade" || h.Arg != "v2" || !h.Wait {
		t.Errorf("hello = %+v; want an upgrade of v2 with wait", h)
	}
}

func TestClientOlderSupervisor(t *testing.T) {
	// A supervisor of before typed steps sends text only.
	dir, _ := fakeSupervisor(t, []control.Message{
		{Type: control.TypeProgress, Text: "generation 2 ready after 12 ms"},
		{Type: control.TypeResult, OK: true, Text: "generation 2 (v2) serves; ready after 12 ms"},
	})
	var got []supervisor.Progress
	sum, err := supervisor.Client{StateDir: dir}.Upgrade(context.Background(), "v2", false, func(p supervisor.Progress) { got = append(got, p) })
	if err != nil {
		t.Fatal(err)
	}
	if want := []supervisor.Progress{{Line: "generation 2 ready after 12 ms"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("progress = %+v; want %+v", got, want)
	}
	if want := (supervisor.Progress{Line: "generation 2 (v2) serves; ready after 12 ms"}); sum != want {
		t.Errorf("summary = %+v; want %+v", sum, want)
	}
}

func TestClientFallsBackToOlderProtocol(t *testing.T) {
	if control.Version < 2 {
		t.Skip("no older protocol version to fall back to")
	}
	refusal := control.Message{Type: control.TypeResult, Error: "protocol: want hello version 1"}
	dir, hellos := fakeSupervisor(t, []control.Message{refusal},
		[]control.Message{{Type: control.TypeResult, OK: true, Text: "rolled back"}})
	sum, err := supervisor.Client{StateDir: dir}.Rollback(context.Background(), false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Line != "rolled back" {
		t.Errorf("summary = %+v; want Line %q", sum, "rolled back")
	}
	if v := (<-hellos).Version; v != control.Version {
		t.Errorf("first hello at version %d; want %d", v, control.Version)
	}
	if v := (<-hellos).Version; v != 1 {
		t.Errorf("second hello at version %d; want 1", v)
	}
}

func TestClientErrors(t *testing.T) {
	t.Run("failed", func(t *testing.T) {
		dir, _ := fakeSupervisor(t, []control.Message{{Type: control.TypeResult, Error: "upgrade in progress"}})
		_, err := supervisor.Client{StateDir: dir}.Upgrade(context.Background(), "v2", false, nil)
		if err == nil || err.Error() != "upgrade in progress" {
			t.Errorf("err = %v; want %q", err, "upgrade in progress")
		}
	})
	t.Run("not running", func(t *testing.T) {
		_, err := supervisor.Client{StateDir: t.TempDir()}.Status(context.Background())
		if !errors.Is(err, supervisor.ErrNotRunning) {
			t.Errorf("err = %v; want %v", err, supervisor.ErrNotRunning)
		}
	})
	t.Run("stop without a result", func(t *testing.T) {
		// The connection ends after the stop was accepted: an error that
		// says so, not a success.
		dir, _ := fakeSupervisor(t, nil)
		err := supervisor.Client{StateDir: dir}.Stop(context.Background(), nil)
		if !errors.Is(err, supervisor.ErrNoResult) || !strings.Contains(err.Error(), "launcher status") {
			t.Errorf("err = %v; want %v, pointing to launcher status", err, supervisor.ErrNoResult)
		}
	})
	t.Run("upgrade without a result", func(t *testing.T) {
		// The supervisor died under upgrade --wait: how to take its
		// workers back, not only the EOF.
		dir, _ := fakeSupervisor(t, nil)
		_, err := supervisor.Client{StateDir: dir}.Upgrade(context.Background(), "v2", true, nil)
		if !errors.Is(err, supervisor.ErrNoResult) || !strings.Contains(err.Error(), "launcher start with the same flags adopts them") {
			t.Errorf("err = %v; want %v, saying how to adopt the workers", err, supervisor.ErrNoResult)
		}
	})
}

func TestClientStop(t *testing.T) {
	stopped := supervisor.Progress{Step: supervisor.StepStopped, Elapsed: time.Second}
	drained := supervisor.Progress{Step: supervisor.StepDrained, Elapsed: time.Second / 2, Generation: 1}
	tests := []struct {
		name string
		msgs []control.Message
		want []string
	}{
		{"typed", []control.Message{progressMsg(t, control.TypeProgress, drained), progressMsg(t, control.TypeResult, stopped)},
			[]string{"generation 1 drained after 0 ms", "stopped"}},
		{"last step also the result", []control.Message{progressMsg(t, control.TypeProgress, stopped), progressMsg(t, control.TypeResult, stopped)},
			[]string{"stopped"}},
		{"older supervisor", []control.Message{{Type: control.TypeResult, OK: true, Text: "stopped"}},
			[]string{"stopped"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, _ := fakeSupervisor(t, tt.msgs)
			var got []string
			if err := (supervisor.Client{StateDir: dir}).Stop(context.Background(), func(p supervisor.Progress) { got = append(got, p.String()) }); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("progress = %q; want %q", got, tt.want)
			}
		})
	}
}

// TestProgressLines checks what `launcher upgrade` prints: a typed step at
// the supervisor's elapsed time, a line of an older supervisor at the
// CLI's, the summary last.
func TestProgressLines(t *testing.T) {
	ready := supervisor.Progress{Step: supervisor.StepReady, Elapsed: 12 * time.Millisecond, Generation: 2, ReadyAfter: 12 * time.Millisecond}
	serves := supervisor.Progress{Step: supervisor.StepServes, Elapsed: 1234 * time.Millisecond, Generation: 2, Version: "v2", ReadyAfter: 12 * time.Millisecond}
	dir, _ := fakeSupervisor(t, []control.Message{
		{Type: control.TypeProgress, Text: "an older line"},
		progressMsg(t, control.TypeProgress, ready),
		progressMsg(t, control.TypeResult, serves),
	})
	code, stdout, stderr := runCLI(t, newCLI, "upgrade", "v2", "--state-dir", dir)
	if code != 0 {
		t.Fatalf("exit %d; want 0 (stderr %q)", code, stderr)
	}
	want := []*regexp.Regexp{
		regexp.MustCompile(`^ [0-9]\.[0-9]{3}s  an older line$`),
		regexp.MustCompile(`^ 0\.012s  generation 2 ready after 12 ms$`),
		regexp.MustCompile(`^ 1\.234s  generation 2 \(v2\) serves; ready after 12 ms$`),
	}
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if len(lines) != len(want) {
		t.Fatalf("stdout = %q; want %d lines", stdout, len(want))
	}
	for i, re := range want {
		if !re.MatchString(lines[i]) {
			t.Errorf("line %d = %q; want %v", i, lines[i], re)
		}
	}
}

// TestStatusJSON checks that status --json prints the supervisor's Status
// with the field names scripts read.
func TestStatusJSON(t *testing.T) {
	st := supervisor.Status{PID: 42, StateDir: "/s", Listen: []string{"127.0.0.1:8080"}, Handover: "steer", Releases: "/srv/r",
		Generations: []supervisor.GenerationStatus{{Generation: 1, Version: "v1", State: "active", Path: "/srv/r/v1/hello", PIDs: []int{43}}}}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	dir, _ := fakeSupervisor(t, []control.Message{{Type: control.TypeResult, OK: true, Data: b}})
	code, stdout, stderr := runCLI(t, newCLI, "status", "--json", "--state-dir", dir)
	if code != 0 {
		t.Fatalf("exit %d; want 0 (stderr %q)", code, stderr)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("stdout %q: %v", stdout, err)
	}
	for _, k := range []string{"pid", "state_dir", "listen", "handover", "generations"} {
		if _, ok := got[k]; !ok {
			t.Errorf("status --json has no %q: %s", k, stdout)
		}
	}
	g := got["generations"].([]any)[0].(map[string]any)
	for _, k := range []string{"generation", "version", "state", "path", "pids", "inflight_requests", "open_connections", "restarts", "started"} {
		if _, ok := g[k]; !ok {
			t.Errorf("a generation in status --json has no %q: %s", k, stdout)
		}
	}
}

func TestClientUpgradeCanary(t *testing.T) {
	canary := supervisor.Progress{Step: supervisor.StepCanary, Elapsed: 15 * time.Millisecond, Generation: 2, Version: "v2", Weight: 10, Interval: 2 * time.Second, Other: 1, OtherVersion: "v1"}
	rep := &supervisor.UpgradeReport{Generation: 2, Version: "v2", From: 1, FromVersion: "v1", Verdict: supervisor.VerdictPassed}
	report := supervisor.Progress{Step: supervisor.StepReport, Generation: 2, Version: "v2", Report: rep}
	dir, hellos := fakeSupervisor(t, []control.Message{
		progressMsg(t, control.TypeProgress, canary),
		progressMsg(t, control.TypeProgress, report),
		{Type: control.TypeResult, OK: true}, // as handleClient sends it: every step was streamed
	})
	var out bytes.Buffer
	c := newCLI(&out, io.Discard)
	c.stateDir = dir
	if err := c.runUpgrade(context.Background(), "v2", upgradeOptions{wait: true, json: true, canary: []int{10, 50}, interval: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	h := <-hellos
	if h.Cmd != "upgrade" || fmt.Sprint(h.Canary) != "[10 50]" || h.CanaryMS != 2000 || !h.Wait {
		t.Errorf("hello = %+v; want an upgrade with canary [10 50] of 2000 ms each, wait", h)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("--json printed %q; want two lines, the canary step and the report", out.String())
	}
	var got supervisor.Progress
	if err := json.Unmarshal([]byte(lines[1]), &got); err != nil || got.Report == nil || got.Report.Verdict != supervisor.VerdictPassed {
		t.Errorf("second line %q (%v); want the report", lines[1], err)
	}
}

func TestStatusShowsTheLastUpgrade(t *testing.T) {
	var b strings.Builder
	printStatus(&b, supervisor.Status{History: []supervisor.UpgradeReport{
		{Generation: 2, Version: "v2", From: 1, FromVersion: "v1", Verdict: supervisor.VerdictRolledBack, Reason: "errors: 5xx ratio 30%"},
	}})
	if want := "last upgrade: generation 2 (v2) from generation 1 (v1): rolled_back (errors: 5xx ratio 30%)"; !strings.Contains(b.String(), want) {
		t.Errorf("status:\n%s\nwant %q", b.String(), want)
	}
	if strings.Contains(b.String(), "under way") {
		t.Errorf("status:\n%s\nwant no upgrade under way", b.String())
	}
	// During a probation the last report is the upgrade before: status
	// says this one has no verdict yet (a new user's trial took the one
	// before for it).
	b.Reset()
	until := time.Now().Add(5 * time.Second)
	printStatus(&b, supervisor.Status{Generations: []supervisor.GenerationStatus{
		{Generation: 3, Version: "v3", State: supervisor.StateActive, ProbationUntil: &until, Weight: 100, Started: time.Now()},
		{Generation: 2, Version: "v2", State: supervisor.StateStandby, Started: time.Now()},
	}, History: []supervisor.UpgradeReport{
		{Generation: 2, Version: "v2", From: 1, FromVersion: "v1", Verdict: supervisor.VerdictPassed},
	}})
	if want := "upgrade under way: generation 3 (v3) on trial, no verdict yet\nlast upgrade: generation 2 (v2)"; !strings.Contains(b.String(), want) {
		t.Errorf("status:\n%s\nwant %q", b.String(), want)
	}
	// The first upgrade on trial: no report before it, and its line
	// still ends the output with a newline (a new user's trial: the next
	// output joined it).
	b.Reset()
	printStatus(&b, supervisor.Status{Generations: []supervisor.GenerationStatus{
		{Generation: 2, Version: "v2", State: supervisor.StateActive, ProbationUntil: &until, Weight: 100, Started: time.Now()},
		{Generation: 1, Version: "v1", State: supervisor.StateStandby, Started: time.Now()},
	}})
	if want := "\n\nupgrade under way: generation 2 (v2) on trial, no verdict yet\n"; !strings.HasSuffix(b.String(), want) {
		t.Errorf("status:\n%q\nwant it to end with %q", b.String(), want)
	}
}

// TestStatusWatchToAPipe: status --watch clears the screen only on a
// terminal; to a pipe or a file its snapshots follow each other, without
// escape codes in the output (status --watch | tee log).
func TestStatusWatchToAPipe(t *testing.T) {
	st := supervisor.Status{PID: 42, StateDir: "/s", Listen: []string{"127.0.0.1:8080"}, Handover: "steer",
		Generations: []supervisor.GenerationStatus{{Generation: 1, Version: "v1", State: "active", Path: "/srv/r/v1/hello", PIDs: []int{43}}}}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	ok := []control.Message{{Type: control.TypeResult, OK: true, Data: b}}
	gone := []control.Message{{Type: control.TypeResult, Error: "supervisor stopping"}} // ends the watch
	dir, _ := fakeSupervisor(t, ok, ok, gone)
	code, stdout, stderr := runCLI(t, newCLI, "status", "--watch", "--interval", "100ms", "--state-dir", dir)
	if code != 1 || !strings.Contains(stderr, "supervisor stopping") {
		t.Errorf("exit %d, stderr %q; want 1 once the fake supervisor refuses the third status", code, stderr)
	}
	if strings.Contains(stdout, "\x1b[") {
		t.Errorf("status --watch to a pipe wrote escape codes: %q", stdout)
	}
	if n := strings.Count(stdout, "supervisor pid 42"); n != 2 {
		t.Errorf("status --watch printed %d snapshots; want 2:\n%s", n, stdout)
	}
}
