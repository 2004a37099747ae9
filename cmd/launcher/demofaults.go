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

// The faults demo's timeline: load for faultsLoad; an upgrade to a release
// that crashes faultsCrashAfter after it starts, at faultsUp1; the
// supervisor SIGKILLed at faultsKill and started again faultsGap later; an
// upgrade to v2 after that.
const (
	faultsLoad       = 12 * time.Second
	faultsUp1        = time.Second
	faultsCrashAfter = time.Second
	faultsKill       = 4 * time.Second
	faultsGap        = 500 * time.Millisecond
	faultsProbation  = 3 * time.Second
	crashedRelease   = "v2-crashes"
)

// demoFaults shows what the launcher does when things go wrong: a release
// that crashes during its probation is rolled back, a killed supervisor's
// workers serve on and a new supervisor adopts them. Requests are lost
// only to the crash itself; any other failure makes it return an error.
func demoFaults(ctx context.Context, r *rig.Rig, workers int, log io.Writer, say func(string, ...any)) error {
	// v2's binary, killed faultsCrashAfter after it starts: it serves
	// "hello from v2" until then.
	script := fmt.Sprintf("#!/bin/sh\n%q \"$@\" & child=$!\nsleep %g\nkill -9 $child\nwait $child\nexit 1\n",
		r.Release("v2"), faultsCrashAfter.Seconds())
	if err := r.AddScript(crashedRelease, script); err != nil {
		return err
	}
	opts := rig.Options{Version: "v1", Workers: workers, Log: log, Extra: []string{"--probation", faultsProbation.String()}}
	sup, err := r.Start(ctx, opts)
	if err != nil {
		return err
	}
	defer func() { sup.Stop() }() // the one running at the end
	say("2. launcher start --listen %s --workers %d --probation %s --releases %s -- releases/v1/hello", sup.Addr, workers, faultsProbation, r.Releases)
	say("3. load for %s: 16 keep-alive clients and 8 clients with a new connection per request (no retries)", faultsLoad)

	results := make([]*loadgen.Result, 2)
	var wg sync.WaitGroup
	for i, cfg := range []loadgen.Config{
		{Addr: sup.Addr, Mode: loadgen.KeepAlive, Method: "POST", Workers: 16, Duration: faultsLoad},
		{Addr: sup.Addr, Mode: loadgen.NewConn, Workers: 8, Duration: faultsLoad},
	} {
		wg.Add(1)
		go func() { defer wg.Done(); results[i], _ = loadgen.Run(ctx, cfg) }()
	}
	start := time.Now()
	at := func(d time.Duration) {
		select {
		case <-time.After(time.Until(start.Add(d))):
		case <-ctx.Done():
		}
	}
	show := func(line string) { say("     %s", line) }

	at(faultsUp1)
	say("4. launcher upgrade --wait %s   (v2, killed %s after it starts)", crashedRelease, faultsCrashAfter)
	crashStart := time.Now()
	_, err = sup.Upgrade(ctx, crashedRelease, show)
	crashEnd := time.Now().Add(500 * time.Millisecond)
	if err == nil {
		return errors.New("demo: the crashing release was not rolled back")
	}
	say("     launcher: %v", err)

	st, err := sup.Status(ctx)
	if err != nil {
		return err
	}
	_, before := activeOf(st)
	at(faultsKill)
	say("5. kill -9 %d   (the supervisor; its workers %v serve on alone)", st.PID, before)
	sup.Kill()
	time.Sleep(faultsGap)
	opts.Addr, opts.StateDir = sup.Addr, sup.StateDir
	if sup, err = r.Start(ctx, opts); err != nil {
		return fmt.Errorf("demo: start after the kill: %w", err)
	}
	if st, err = sup.Status(ctx); err != nil {
		return err
	}
	gen, pids := activeOf(st)
	say("6. launcher start, same state dir: supervisor %d adopted generation %d with pids %v", st.PID, gen, pids)
	if fmt.Sprint(pids) != fmt.Sprint(before) {
		return fmt.Errorf("demo: adopted pids %v, want %v", pids, before)
	}

	say("7. launcher upgrade --wait v2")
	if _, err := sup.Upgrade(ctx, "v2", show); err != nil {
		return fmt.Errorf("demo: upgrade after the adoption: %w", err)
	}
	wg.Wait()

	var total, taken, other int64
	versions := map[string]int64{}
	for _, res := range results {
		if res == nil {
			return errors.New("demo: load did not run")
		}
		total += res.Requests
		for v, n := range res.Versions {
			versions[v] += n
		}
		for rec := range res.Records() {
			if !rec.Class.Failed() {
				continue
			}
			if at := res.Start.Add(rec.Start + rec.Latency); !at.Before(crashStart) && !at.After(crashEnd) {
				taken++
			} else {
				other++
			}
		}
	}
	say("\nResult")
	say("  %d requests (answered by v1 %d, by v2 %d); %d taken by the crash itself (in flight on the killed process or queued on its listener), %d other failures",
		total, versions["v1"], versions["v2"], taken, other)
	if other > 0 {
		return fmt.Errorf("demo: %d requests failed outside the crash", other)
	}
	say("  the crash was rolled back to the standby generation; the supervisor's death lost nothing; the adopted generation was upgraded.")
	return nil
}

// activeOf returns the active generation's number and pids.
func activeOf(st supervisor.Status) (int, []int) {
	for _, g := range st.Generations {
		if g.State == supervisor.StateActive {
			return g.Generation, g.PIDs
		}
	}
	return 0, nil
}
