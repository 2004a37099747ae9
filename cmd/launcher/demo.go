package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/launcherd/launcher/internal/loadgen"
	"github.com/launcherd/launcher/internal/rig"
)

// demo timeline: load for demoLoad; a long request starts at demoLong and
// sleeps demoSleep; upgrades v1→v2 at demoUp1 (while it is in flight)
// and v2→v1 at demoUp2.
const (
	demoLoad  = 8 * time.Second
	demoLong  = 1 * time.Second
	demoSleep = 3 * time.Second
	demoUp1   = 1500 * time.Millisecond
	demoUp2   = 5 * time.Second
	// demoProbation: the previous generation stands by this long after
	// each upgrade (the default is supervisor.DefaultProbation).
	demoProbation = 2 * time.Second
)

// cmdDemo runs the demo (or with o.faults the faults demo) and returns an
// error if a request failed.
func cmdDemo(ctx context.Context, o demoOptions, stdout, stderr io.Writer) error {
	if o.workers < 1 {
		return usagef("demo: --workers %d: want at least 1", o.workers)
	}
	if o.faults && o.canary {
		return usagef("demo: --faults and --canary are two demos: give one")
	}
	say := func(format string, a ...any) { fmt.Fprintf(stdout, format+"\n", a...) }
	// Outside a checkout there is nothing to build: say so first.
	if err := rig.InRepo(ctx); err != nil {
		return fmt.Errorf("demo: %w (go run ./cmd/launcher demo)", err)
	}
	dir, err := os.MkdirTemp("", "launcher-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	say("1. building hello v1 and v2 into %s/releases ...", dir)
	r, err := rig.Build(ctx, dir, "v1", "v2")
	if errors.Is(err, rig.ErrOutsideRepo) {
		return fmt.Errorf("demo: %w (go run ./cmd/launcher demo)", err)
	}
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	var log io.Writer = io.Discard
	if o.verbose {
		log = stderr
	}
	if o.faults {
		return demoFaults(ctx, r, o.workers, log, say)
	}
	if o.canary {
		return demoCanary(ctx, r, o.workers, log, say)
	}
	// A probation shorter than the default, so the timeline shows it end.
	sup, err := r.Start(ctx, rig.Options{Version: "v1", Workers: o.workers, Log: log, Extra: []string{"--probation", demoProbation.String()}})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer sup.Stop()
	say("2. launcher start --listen %s --workers %d --probation %s --releases %s -- releases/v1/hello", sup.Addr, o.workers, demoProbation, r.Releases)
	say("3. load for %s: 16 keep-alive clients and 8 clients with a new connection per request (no retries)", demoLoad)

	type loadRun struct {
		res *loadgen.Result
		err error
	}
	runs := make([]loadRun, 2)
	var wg sync.WaitGroup
	for i, cfg := range []loadgen.Config{
		{Addr: sup.Addr, Mode: loadgen.KeepAlive, Method: "POST", Workers: 16, Duration: demoLoad},
		{Addr: sup.Addr, Mode: loadgen.NewConn, Workers: 8, Duration: demoLoad},
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := loadgen.Run(ctx, cfg)
			runs[i] = loadRun{res, err}
		}()
	}
	start := time.Now()
	at := func(d time.Duration) {
		select {
		case <-time.After(time.Until(start.Add(d))):
		case <-ctx.Done():
		}
	}
	type longResult struct {
		body string
		err  error
		took time.Duration
	}
	long := make(chan longResult, 1)
	at(demoLong)
	say("4. GET /sleep?d=%s started on v1 (the article's long request)", demoSleep)
	go func() {
		t := time.Now()
		body, err := httpGet(ctx, "http://"+sup.Addr+"/sleep?d="+demoSleep.String())
		long <- longResult{body, err, time.Since(t)}
	}()
	var windows loadgen.WindowLog
	var timings []rig.Timing
	for i, step := range []struct {
		at time.Duration
		to string
	}{{demoUp1, "v2"}, {demoUp2, "v1"}} {
		at(step.at)
		say("%d. launcher upgrade --wait %s", 5+i, step.to)
		t0 := time.Now()
		t, err := sup.Upgrade(ctx, step.to, func(line string) { say("     %s", line) })
		windows.Mark(t0, time.Now())
		if err != nil {
			return fmt.Errorf("demo: upgrade to %s: %w", step.to, err)
		}
		timings = append(timings, t)
	}
	lr := <-long
	wg.Wait()

	say("\nResult")
	if lr.err != nil {
		say("  long request: FAILED: %v", lr.err)
	} else {
		say("  long request: %q after %s (served to the end by the old generation)", lr.body, lr.took.Round(10*time.Millisecond))
	}
	for i, t := range timings {
		// From the `launcher upgrade` process's own start, which the
		// steps above do not count (they start at its command's receipt).
		say("  upgrade %d: new generation serving %d ms after the upgrade command started; old generation on standby for the %s probation, then drained, gone after %d ms", i+1, t.Serving.Milliseconds(), demoProbation, t.OldGone.Milliseconds())
	}
	var rows []loadgen.Row
	var failed, total int64
	for _, run := range runs {
		if run.err != nil {
			return fmt.Errorf("demo: load: %w", run.err)
		}
		s := run.res.Summarize(windows.Windows())
		rows = append(rows, loadgen.Row{Handover: "steer", Summary: s})
		failed += s.Failures
		total += s.Requests
	}
	fmt.Fprintln(stdout)
	loadgen.WriteTable(stdout, rows)
	fmt.Fprintln(stdout)
	if failed > 0 || lr.err != nil || lr.body != "hello from v1" {
		return fmt.Errorf("demo: %d of %d requests failed during the upgrades", failed, total)
	}
	say("%d requests, 0 failed, over 2 upgrades: v1 -> v2 -> v1.", total)
	return nil
}

// httpGet returns the trimmed body of a GET on a fresh connection.
func httpGet(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: time.Minute}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s", resp.Status)
	}
	return strings.TrimSpace(string(b)), err
}
