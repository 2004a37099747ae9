package main

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/launcherd/launcher/internal/rig"
)

// The fork-based peer measured beside the launcher (--peers): the hello
// service built on github.com/cloudflare/tableflip (tools/peers/tableflip,
// a module of its own so that the launcher's does not depend on it),
// upgraded by SIGHUP. The three triggers take turns, one upgrade each,
// with the same poller, so the machine's load meets them alike.

// peerTriggers name the rows of the --peers table, in turn order. The
// last two are the same peer built twice: as is, and with -tags metrics,
// linking the Prometheus client and serving /metrics as hello does (the
// client's package initialisation, its Go and process collectors, is
// milliseconds of every start, so the two binaries then start alike).
var peerTriggers = []string{"launcher upgrade", "launcher standalone SIGHUP", "tableflip SIGHUP", "tableflip SIGHUP, with Prometheus metrics"}

// buildTableflip builds the tableflip peer of hello for each version into
// dir/peers/NAME/VERSION/hello, with the build tags tags (a
// comma-separated list, "" for none), and returns the release function.
func buildTableflip(ctx context.Context, dir, name, tags string, versions ...string) (func(string) string, error) {
	root, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return nil, fmt.Errorf("go env GOMOD: %w", err)
	}
	src := filepath.Join(filepath.Dir(strings.TrimSpace(string(root))), "tools", "peers", "tableflip")
	release := func(v string) string { return filepath.Join(dir, "peers", name, v, "hello") }
	for _, v := range versions {
		cmd := exec.CommandContext(ctx, "go", "build", "-tags", tags, "-ldflags", "-X main.version="+v, "-o", release(v), ".")
		cmd.Dir = src
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("build tools/peers/tableflip %s (tags %q): %w: %s", v, tags, err, strings.TrimSpace(string(out)))
		}
	}
	return release, nil
}

// peerRun is --peers' result: per trigger of peerTriggers, its times from
// the trigger to the first answer from the new version.
type peerRun struct {
	firstAnswer [][]time.Duration
}

// comparePeers upgrades a launcher supervisor (1 worker), hello alone
// (SIGHUP) and the tableflip peer (SIGHUP) n times each, in turns, and
// times each trigger -> first answer from the new version with one
// poller (a GET on a new connection every pollGap).
func comparePeers(ctx context.Context, r *rig.Rig, dir string, cfg config, n int, stderr io.Writer) (peerRun, error) {
	res := peerRun{firstAnswer: make([][]time.Duration, len(peerTriggers))}
	tableflip, err := buildTableflip(ctx, dir, "tableflip", "", "v1", "v2")
	if err != nil {
		return res, err
	}
	tableflipMetrics, err := buildTableflip(ctx, dir, "tableflip-metrics", "metrics", "v1", "v2")
	if err != nil {
		return res, err
	}
	var log io.Writer = io.Discard
	if cfg.verbose {
		log = stderr
	}
	sup, err := r.Start(ctx, rig.Options{Version: "v1", Workers: 1, Log: log, Extra: cfg.supervisorFlags()})
	if err != nil {
		return res, err
	}
	defer sup.Stop()
	alone, err := startSIGHUP(ctx, r.Release)
	if err != nil {
		return res, err
	}
	defer alone.stop()
	tf, err := startSIGHUP(ctx, tableflip)
	if err != nil {
		return res, err
	}
	defer tf.stop()
	tfm, err := startSIGHUP(ctx, tableflipMetrics)
	if err != nil {
		return res, err
	}
	defer tfm.stop()

	upgrades := []func(version string) (time.Duration, error){
		func(version string) (time.Duration, error) {
			stop := make(chan struct{})
			polled := make(chan time.Time, 1)
			start := time.Now()
			go func() { polled <- pollFor(sup.Addr, version, 10*time.Second, stop) }() // ends with stop
			_, err := sup.Upgrade(ctx, version, nil)
			var at time.Time
			select {
			case at = <-polled:
			case <-time.After(time.Second):
			}
			close(stop)
			if err != nil {
				return 0, err
			}
			if at.IsZero() {
				return 0, fmt.Errorf("no answer from %s", version)
			}
			return at.Sub(start), nil
		},
		func(version string) (time.Duration, error) { return alone.upgrade(ctx, version) },
		func(version string) (time.Duration, error) { return tf.upgrade(ctx, version) },
		func(version string) (time.Duration, error) { return tfm.upgrade(ctx, version) },
	}
	version := "v1"
	for k := 0; k < n; k++ {
		version = otherVersion(version)
		for i, up := range upgrades {
			d, err := up(version)
			if err != nil {
				return res, fmt.Errorf("%s %d: %w", peerTriggers[i], k+1, err)
			}
			res.firstAnswer[i] = append(res.firstAnswer[i], d)
			// A pause, so that one upgrade's exits are over before the
			// next one's starts.
			select {
			case <-time.After(50 * time.Millisecond):
			case <-ctx.Done():
				return res, ctx.Err()
			}
		}
	}
	return res, nil
}

// printPeers writes the --peers table: medians, multiples of the floor
// and of the medians of tableflip as is and with the Prometheus client.
func printPeers(w io.Writer, floor time.Duration, p peerRun) {
	tf, tfm := median(p.firstAnswer[2]), median(p.firstAnswer[3])
	fmt.Fprintf(w, "== trigger -> first answer from the new version, one poller, no load, %d upgrades each in turns ==\n", len(p.firstAnswer[0]))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "trigger\tp50\t× floor\t× tableflip\t× tableflip with metrics\tmin\tmax")
	for i, name := range peerTriggers {
		ds := p.firstAnswer[i]
		fmt.Fprintf(tw, "%s\t%s\t%.1f\t%.2f\t%.2f\t%s\t%s\n", name, msf(median(ds)), ratio(median(ds), floor), ratio(median(ds), tf), ratio(median(ds), tfm), msf(minOf(ds)), msf(maxOf(ds)))
	}
	tw.Flush()
	fmt.Fprintln(w)
}

func minOf(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	m := ds[0]
	for _, d := range ds[1:] {
		m = min(m, d)
	}
	return m
}
