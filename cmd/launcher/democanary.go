package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/launcherd/launcher/internal/loadgen"
	"github.com/launcherd/launcher/internal/rig"
	"github.com/launcherd/launcher/supervisor"
)

// The canary demo: a healthy canary (10%, then 50%, canaryStep each) is
// promoted on schedule, then a release answering 500 to canaryFailRatio
// of its requests is rolled back by the judge within its 10% step, all
// under load.
const (
	canaryStep      = 2 * time.Second
	canaryProbation = 2 * time.Second
	canaryFailRatio = 0.3
	badRelease      = "v2-fails"
	canaryLoadMax   = time.Minute // the load stops when the demo is over
)

// demoCanary runs the canary demo and returns an error if a request failed
// other than by the bad release's own 500s.
func demoCanary(ctx context.Context, r *rig.Rig, workers int, log io.Writer, say func(string, ...any)) error {
	script := fmt.Sprintf("#!/bin/sh\nexec %q \"$@\" -fail-ratio %g\n", r.Release("v2"), canaryFailRatio)
	if err := r.AddScript(badRelease, script); err != nil {
		return err
	}
	sup, err := r.Start(ctx, rig.Options{Version: "v1", Workers: workers, Log: log, Extra: []string{"--probation", canaryProbation.String()}})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer sup.Stop()
	say("2. launcher start --listen %s --workers %d --probation %s --releases %s -- releases/v1/hello", sup.Addr, workers, canaryProbation, r.Releases)
	say("3. load: 8 clients with a new connection per request and 8 keep-alive clients (no retries)")

	lctx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	results := make([]*loadgen.Result, 2)
	var wg sync.WaitGroup
	for i, cfg := range []loadgen.Config{
		{Addr: sup.Addr, Mode: loadgen.NewConn, Workers: 8, Duration: canaryLoadMax},
		{Addr: sup.Addr, Mode: loadgen.KeepAlive, Method: "POST", Workers: 8, Duration: canaryLoadMax},
	} {
		wg.Add(1)
		go func() { defer wg.Done(); results[i], _ = loadgen.Run(lctx, cfg) }()
	}
	time.Sleep(500 * time.Millisecond)

	client := supervisor.Client{StateDir: sup.StateDir}
	show := func(p supervisor.Progress) {
		for i, line := range splitLines(p.String()) {
			if i == 0 {
				say("   %6.3fs  %s", p.Elapsed.Seconds(), line)
			} else {
				say("            %s", line)
			}
		}
	}
	say("4. launcher upgrade --wait --canary 10,50 --canary-interval %s v2", canaryStep)
	if _, err := client.UpgradeWith(ctx, "v2", supervisor.UpgradeOptions{Wait: true, Canary: []int{10, 50}, CanaryInterval: canaryStep}, show); err != nil {
		return fmt.Errorf("demo: the healthy canary: %w", err)
	}
	say("5. launcher upgrade --wait --canary 10 --canary-interval 20s %s   (v2 answering 500 to %.0f%% of requests)", badRelease, 100*canaryFailRatio)
	_, err = client.UpgradeWith(ctx, badRelease, supervisor.UpgradeOptions{Wait: true, Canary: []int{10}, CanaryInterval: 20 * time.Second}, show)
	if err == nil {
		return errors.New("demo: the failing release was not rolled back")
	}
	say("   launcher: %v", err)
	time.Sleep(500 * time.Millisecond)
	stopLoad()
	wg.Wait()

	var total, fiveXX, other int64
	versions := map[string]int64{}
	for _, res := range results {
		if res == nil {
			return errors.New("demo: load did not run")
		}
		total += res.Requests
		fiveXX += res.Count[loadgen.Non2xx]
		other += res.Failures() - res.Count[loadgen.Non2xx]
		for v, n := range res.Versions {
			versions[v] += n
		}
	}
	say("\nResult")
	say("  %d requests: answered by v1 %d, by v2 %d; %d answered 500 by %s during its 10%% step; %d other failures",
		total, versions["v1"], versions["v2"], fiveXX, badRelease, other)
	if other > 0 {
		return fmt.Errorf("demo: %d requests failed other than by the bad release's 500s", other)
	}
	say("  the healthy canary reached all new connections on schedule and passed; the failing one was judged and rolled back at once.")
	return nil
}

// splitLines splits a multi-line step (a report) into its lines.
func splitLines(s string) []string {
	var out []string
	for len(s) > 0 {
		i := 0
		for i < len(s) && s[i] != '\n' {
			i++
		}
		out = append(out, s[:i])
		if i < len(s) {
			i++
		}
		s = s[i:]
	}
	return out
}
