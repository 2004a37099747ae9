package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/launcherd/launcher/examples/websocket/echo"
	"github.com/launcherd/launcher/internal/rig"
)

// bins are the binaries the test runs, built with -race into a temp dir:
// dir/launcher and dir/releases/VERSION/wsecho.
type bins struct{ launcher, releases string }

// build compiles the launcher (../../cmd/launcher) and this service as
// releases v1 and v2, all with -race, in parallel.
func build(t *testing.T) bins {
	t.Helper()
	dir := t.TempDir()
	b := bins{launcher: filepath.Join(dir, "launcher"), releases: filepath.Join(dir, "releases")}
	// The launcher is built in its own module, at the repository's root.
	type job struct {
		dir  string
		args []string
	}
	jobs := []job{{"../..", []string{"build", "-race", "-o", b.launcher, "./cmd/launcher"}}}
	for _, v := range []string{"v1", "v2"} {
		jobs = append(jobs, job{".", []string{"build", "-race", "-ldflags", "-X main.version=" + v, "-o", filepath.Join(b.releases, v, "wsecho"), "."}})
	}
	errs := make([]error, len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Go(func() { // ends with its go build
			cmd := exec.Command("go", j.args...)
			cmd.Dir = j.dir
			if out, err := cmd.CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("go %s (in %s): %v\n%s", strings.Join(j.args, " "), j.dir, err, out)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return b
}

// cli runs a launcher command against stateDir and fails the test on an
// error or a race report.
func cli(t *testing.T, b bins, stateDir string, args ...string) string {
	t.Helper()
	cmd := exec.Command(b.launcher, append(args, "--state-dir", stateDir)...)
	cmd.Env = append(os.Environ(), "GORACE="+rig.GORACE)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if r := rig.RaceReport(out.Bytes(), err); r != "" {
		t.Fatalf("launcher %s: %s", strings.Join(args, " "), r)
	}
	if err != nil {
		t.Fatalf("launcher %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// TestClientsFollowUpgrades runs the service under a real supervisor with
// 2 workers per generation, 8 clients echoing continuously, and 5 upgrades
// (v2, v1, v2, …): every connection to an old generation must end with a
// close frame of status 1001 (not a reset: 1006, or no close frame), every
// client must be on the new generation after each upgrade, and every
// message must be echoed exactly once.
func TestClientsFollowUpgrades(t *testing.T) {
	const (
		clients  = 8
		upgrades = 5
	)
	b := build(t)
	addr, err := rig.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	state, err := os.MkdirTemp("", "ws") // short: unix socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(state)
	logs := &rig.LogBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	sup, err := rig.StartProc(ctx, []string{b.launcher, "start", "--workers", "2", "--probation", "0",
		"--drain-timeout", "10s", "--releases", b.releases, "--listen", addr, "--state-dir", state,
		"--", filepath.Join(b.releases, "v1", "wsecho")}, []string{"GORACE=" + rig.GORACE}, state, logs)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			sup.Shutdown(5 * time.Second) // kills it and every worker it had if need be
		}
		if r := sup.RaceReport(); r != "" {
			t.Errorf("race in the supervisor or a worker: %s", r)
		}
		if t.Failed() {
			t.Logf("supervisor and worker log:\n%s", logs.String())
		}
	}()

	var wg sync.WaitGroup
	defer wg.Wait() // after stopClients, even on a failure: no client outlives the test
	cctx, stopClients := context.WithCancel(ctx)
	defer stopClients()
	cs := make([]*echo.Client, clients)
	reps := make([]echo.Report, clients)
	errs := make([]error, clients)
	for i := range cs {
		cs[i] = &echo.Client{URL: "ws://" + addr + "/echo", Name: fmt.Sprintf("c%d", i), Interval: 2 * time.Millisecond}
		wg.Go(func() { reps[i], errs[i] = cs[i].Run(cctx) }) // ends after stopClients
	}
	waitGen := func(gen int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for i, c := range cs {
			for c.Generation() != gen {
				if time.Now().After(deadline) {
					t.Fatalf("client %d on generation %d, want %d", i, c.Generation(), gen)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	waitGen(1)
	var took []time.Duration
	for i := 1; i <= upgrades; i++ {
		time.Sleep(300 * time.Millisecond) // echoes flow on this generation
		v := "v2"
		if i%2 == 0 {
			v = "v1"
		}
		t0 := time.Now()
		cli(t, b, state, "upgrade", "--wait", v) // returns once the old generation has exited: every socket closed
		took = append(took, time.Since(t0).Round(time.Millisecond))
		waitGen(i + 1)
	}
	time.Sleep(300 * time.Millisecond)
	stopClients()
	wg.Wait()
	cli(t, b, state, "stop")
	if err := sup.Wait(20 * time.Second); err != nil {
		t.Errorf("supervisor after stop: %v", err)
	}
	stopped = true

	var sent, answered uint64
	resent := 0
	for i, rep := range reps {
		sent += rep.Sent
		answered += rep.Answered
		if errs[i] != nil {
			t.Errorf("client %d: %v (lost %v)", i, errs[i], rep.Lost)
		}
		if rep.Duplicates != 0 || rep.Mismatched != 0 || rep.Answered != rep.Sent {
			t.Errorf("client %d: %d sent, %d echoed, %d duplicate(s), %d mismatched; want each echoed exactly once",
				i, rep.Sent, rep.Answered, rep.Duplicates, rep.Mismatched)
		}
		if len(rep.Sessions) != upgrades+1 {
			t.Errorf("client %d: %d connections, want %d (one per generation): %+v", i, len(rep.Sessions), upgrades+1, rep.Sessions)
		}
		for j, s := range rep.Sessions {
			resent += s.Resent
			wantV := "v1" // generations 1, 3, 5
			if (j+1)%2 == 0 {
				wantV = "v2"
			}
			if s.Generation != j+1 || s.Version != wantV {
				t.Errorf("client %d: connection %d to generation %d (%s), want %d (%s)", i, j+1, s.Generation, s.Version, j+1, wantV)
			}
			last := j == len(rep.Sessions)-1
			if !last && s.Close != websocket.StatusGoingAway {
				t.Errorf("client %d: connection %d (generation %d) ended with close status %d (%v), want %d going away",
					i, j+1, s.Generation, s.Close, s.Err, websocket.StatusGoingAway)
			}
			if last && !s.ByClient {
				t.Errorf("client %d: last connection (generation %d) not closed by the client: %v", i, s.Generation, s.Err)
			}
		}
	}
	if sent == 0 {
		t.Fatal("no message sent")
	}
	t.Logf("%d clients, %d upgrades (upgrade --wait took %v), %d messages echoed of %d sent (%d sent again after a 1001), in %v",
		clients, upgrades, took, answered, sent, resent, time.Since(start).Round(time.Millisecond))
}
