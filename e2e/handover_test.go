package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/launcherd/launcher/internal/loadgen"
)

// upgradeLoop runs n upgrades alternating v2 and v1, 300ms apart: with a
// probation (loopProbation) each ends the previous one's, so its standby
// generation drains under load. The last one waits for its probation to
// pass and the previous generation to drain.
func (s *sup) upgradeLoop(n int) {
	s.t.Helper()
	s.upgradeLoopEvery(n, 300*time.Millisecond)
}

// loopProbation is the --probation of the services upgradeLoop drives:
// longer than an upgrade under load (a few hundred ms) and the 300ms
// between two, so that each upgrade ends the previous one's probation;
// shorter than the default 5s, which the last upgrade would wait for.
const loopProbation = 2 * time.Second

// upgradeLoopEvery is upgradeLoop with gap between an upgrade's command
// returning and the next one's. It returns how long the last one, which
// waits for the previous generation to be gone, took.
func (s *sup) upgradeLoopEvery(n int, gap time.Duration) (last time.Duration) {
	s.t.Helper()
	version := "v1"
	for i := 0; i < n; i++ {
		version = map[string]string{"v1": "v2", "v2": "v1"}[version]
		args := []string{"upgrade", version}
		if i == n-1 {
			args = []string{"upgrade", "--wait", version}
		}
		if i > 0 {
			time.Sleep(gap)
		}
		start := time.Now()
		if _, errOut, code := s.cli(args...); code != 0 {
			s.t.Fatalf("upgrade %d to %s: exit %d: %s", i+1, version, code, errOut)
		}
		last = time.Since(start)
	}
	return last
}

// TestUpgradesUnderLoadLoseNothing drives never-retrying clients (keep-
// alive POSTs, a new connection per request, and long requests) through
// back-to-back upgrades, with one and with four workers per generation:
// not one request may fail.
func TestUpgradesUnderLoadLoseNothing(t *testing.T) {
	const upgrades = 6
	for _, workers := range []int{1, 4} {
		t.Run(fmt.Sprintf("workers=%d", workers), func(t *testing.T) {
			s := startSup(t, "--workers", fmt.Sprint(workers), "--probation", loopProbation.String())
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cfgs := []loadgen.Config{
				{Addr: s.addr, Mode: loadgen.KeepAlive, Method: "POST", Workers: 8, Duration: 30 * time.Second},
				{Addr: s.addr, Mode: loadgen.NewConn, Workers: 4, Duration: 30 * time.Second},
				{Addr: s.addr, Mode: loadgen.Long, Workers: 4, Duration: 30 * time.Second, SleepMin: 200 * time.Millisecond, SleepMax: time.Second},
			}
			loadCtx, stopLoad := context.WithCancel(ctx)
			results := make([]*loadgen.Result, len(cfgs))
			errs := make([]error, len(cfgs))
			var wg sync.WaitGroup
			for i, cfg := range cfgs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					// Duration is only a bound: the load stops through
					// MaxRequests or when the upgrades are done.
					cfg.MaxRequests = 2_000_000
					results[i], errs[i] = loadgen.Run(loadCtx, cfg)
				}()
			}
			time.Sleep(300 * time.Millisecond)
			s.upgradeLoop(upgrades)
			time.Sleep(300 * time.Millisecond)
			stopLoad()
			wg.Wait()
			for i, r := range results {
				if r == nil {
					t.Fatalf("%s: %v", cfgs[i].Mode, errs[i])
				}
				if r.Failures() > 0 {
					t.Errorf("%s: %d of %d requests failed: %v", cfgs[i].Mode, r.Failures(), r.Requests, r.Samples)
				}
				if cfgs[i].Mode != loadgen.Long && (r.Versions["v1"] == 0 || r.Versions["v2"] == 0) {
					t.Errorf("%s: versions %v; want both v1 and v2", cfgs[i].Mode, r.Versions)
				}
				t.Logf("%s: %d requests, %d failed, %d cut at the end, versions %v", cfgs[i].Mode, r.Requests, r.Failures(), r.Aborted, r.Versions)
			}
		})
	}
}

// TestWrkDuringUpgrades uses wrk, an independent client, with keep-alive
// and with Connection: close, while the service is upgraded: it must see
// no socket error and no non-2xx answer.
func TestWrkDuringUpgrades(t *testing.T) {
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("wrk not installed (scripts/test installs it)")
		}
		t.Skip("wrk not installed")
	}
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"keepalive", nil},
		{"connection-close", []string{"-H", "Connection: close"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startSup(t, "--workers", "2", "--probation", loopProbation.String())
			// -d only bounds it: wrk is interrupted (it then reports, as
			// at -d's end) once the upgrades, the last one's probation
			// and drain included (about 5 s), are done.
			args := append([]string{"-t2", "-c50", "-d30s", "--timeout", "5s"}, tc.args...)
			args = append(args, "http://"+s.addr+"/")
			var b bytes.Buffer
			cmd := exec.Command(wrk, args...)
			cmd.Stdout, cmd.Stderr = &b, &b
			if err := cmd.Start(); err != nil {
				t.Fatalf("wrk: %v", err)
			}
			done := make(chan struct{})
			go func() { cmd.Wait(); close(done) }() // ends with wrk, within -d
			t.Cleanup(func() { cmd.Process.Kill(); <-done })
			time.Sleep(500 * time.Millisecond)
			s.upgradeLoop(5)
			time.Sleep(300 * time.Millisecond)
			cmd.Process.Signal(os.Interrupt)
			<-done
			report := b.String()
			t.Logf("wrk %s:\n%s", strings.Join(args, " "), report)
			if !regexp.MustCompile(`Requests/sec:\s+[0-9.]+`).MatchString(report) {
				t.Fatalf("wrk did not run")
			}
			for _, bad := range []string{"Socket errors", "Non-2xx or 3xx responses"} {
				if strings.Contains(report, bad) {
					t.Errorf("wrk reported %q", bad)
				}
			}
		})
	}
}
