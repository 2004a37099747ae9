package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/launcherd/launcher/internal/rig"
)

// The fork-based peer measured beside the launcher (--peers): the hello
// service built on github.com/cloudflare/tableflip (tools/peers/tableflip,
// a module of its own so that the launcher's does not depend on it),
// upgraded by SIGHUP. The triggers take turns, one upgrade each,
// with the same poller, so the machine's load meets them alike.

// peerTriggers name the rows of the --peers table, in turn order. The
// last two are the same peer built twice: as is, and with -tags metrics,
// linking the Prometheus client and serving /metrics as hello does (the
// client's package initialisation, its Go and process collectors, is
// milliseconds of every start, so the two binaries then start alike).
// The first row runs the launcher binary as an operator types it; the
// second sends the same request from this process through the client
// library, without the command's own process start (how the idle
// upgrades time "command"), so that the two rows show what that costs.
// The third sends SIGHUP to the supervisor, whose COMMAND is a path
// through a "current" symlink repointed first: the article's habit, and
// a trigger like the peer's. The rows "by sh" send the same SIGHUP as an
// operator types it, `kill -HUP $(cat PIDFILE)` run by sh, whose start
// and cat's count as the command's own start counts in the first row:
// the command against the command, each trigger as its users pull it.
var peerTriggers = []string{
	"launcher upgrade, the command", "launcher upgrade, client library",
	"launcher supervisor SIGHUP", "launcher supervisor SIGHUP, by sh",
	"launcher standalone SIGHUP",
	"tableflip SIGHUP", "tableflip SIGHUP, with Prometheus metrics", "tableflip SIGHUP, with Prometheus metrics, by sh",
}

// The rows of the peer that the others are divided by.
const (
	peerTableflip        = 5
	peerTableflipMetrics = 6
)

// peerHandover is the --handover value of load runs against the
// fork-based peer: tableflip built with the Prometheus client, upgraded
// by SIGHUP, under the same load and upgrades as the launcher's runs, so
// that what each loses is measured side by side.
const peerHandover = "tableflip"

// startPeer builds the tableflip peer with the Prometheus client into
// dir/peers (once: a build already there is used) and starts v1 of it
// alone; upgrade it by SIGHUP, stop it with stop.
func startPeer(ctx context.Context, dir string) (*sighupService, error) {
	release := func(v string) string { return filepath.Join(dir, "peers", "tableflip-metrics", v, "hello") }
	if _, err := os.Stat(release("v2")); err != nil {
		if _, err := buildTableflip(ctx, dir, "tableflip-metrics", "metrics", "v1", "v2"); err != nil {
			return nil, err
		}
	}
	return startSIGHUP(ctx, release)
}

// shKillHUP is how an operator sends SIGHUP to the process of a pid
// file ($1): the article's `kill -HUP $(cat pidfile)`.
func shKillHUP(ctx context.Context, pidFile string) error {
	out, err := exec.CommandContext(ctx, "sh", "-c", `kill -HUP "$(cat "$1")"`, "sh", pidFile).CombinedOutput()
	if err != nil {
		return fmt.Errorf("sh -c 'kill -HUP $(cat %s)': %w: %s", pidFile, err, strings.TrimSpace(string(out)))
	}
	return nil
}

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
	// Its own supervisor: each row upgrades to the same version in a turn.
	supCLI, err := r.Start(ctx, rig.Options{Version: "v1", Workers: 1, Log: log, Extra: cfg.supervisorFlags()})
	if err != nil {
		return res, err
	}
	defer supCLI.Stop()
	// onLink starts a supervisor whose COMMAND goes through a "current"
	// symlink of its own, name, and returns it with the repoint of that
	// link; each SIGHUP row has one.
	onLink := func(name string) (*rig.Supervisor, func(string) error, error) {
		current := filepath.Join(dir, "peers", name)
		point := func(version string) error { return repoint(current, filepath.Dir(r.Release(version))) }
		if err := point("v1"); err != nil {
			return nil, nil, err
		}
		sup, err := r.Start(ctx, rig.Options{Command: filepath.Join(current, filepath.Base(r.Release("v1"))), Workers: 1, Log: log, Extra: cfg.supervisorFlags()})
		return sup, point, err
	}
	supHUP, point, err := onLink("current")
	if err != nil {
		return res, err
	}
	defer supHUP.Stop()
	supHUPSh, pointSh, err := onLink("current-sh") // for the SIGHUP sent by sh
	if err != nil {
		return res, err
	}
	defer supHUPSh.Stop()
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
	tfmSh, err := startSIGHUP(ctx, tableflipMetrics)
	if err != nil {
		return res, err
	}
	defer tfmSh.stop()

	// upgradeBy times one upgrade of a supervisor to version by run: trigger ->
	// first answer from version.
	upgradeBy := func(sup *rig.Supervisor, version string, run func() error) (time.Duration, error) {
		stop := make(chan struct{})
		polled := make(chan time.Time, 1)
		start := time.Now()
		go func() { polled <- pollFor(sup.Addr, version, 10*time.Second, stop) }() // ends with stop
		err := run()
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
	}
	// hupBy times an upgrade of sup by SIGHUP, sent by send once its
	// link points at version. Unlike the command, the signal returns at
	// once: it waits until the old generation is gone, as the others do.
	hupBy := func(sup *rig.Supervisor, point func(string) error, version string, send func() error) (time.Duration, error) {
		if err := point(version); err != nil {
			return 0, err
		}
		d, err := upgradeBy(sup, version, send)
		if err != nil {
			return 0, err
		}
		return d, waitOneGeneration(ctx, sup)
	}
	upgrades := []func(version string) (time.Duration, error){
		func(version string) (time.Duration, error) {
			return upgradeBy(supCLI, version, func() error {
				// --wait: returns once the old generation is gone, as the others.
				out, err := exec.CommandContext(ctx, r.Launcher, "upgrade", "--wait", "--state-dir", supCLI.StateDir, version).CombinedOutput()
				if err != nil {
					return fmt.Errorf("launcher upgrade %s: %w: %s", version, err, strings.TrimSpace(string(out)))
				}
				return nil
			})
		},
		func(version string) (time.Duration, error) {
			return upgradeBy(sup, version, func() error {
				_, err := sup.Upgrade(ctx, version, nil)
				return err
			})
		},
		func(version string) (time.Duration, error) {
			return hupBy(supHUP, point, version, func() error { return syscall.Kill(supHUP.Pid(), syscall.SIGHUP) })
		},
		func(version string) (time.Duration, error) {
			pidFile := filepath.Join(supHUPSh.StateDir, "launcher.pid")
			return hupBy(supHUPSh, pointSh, version, func() error { return shKillHUP(ctx, pidFile) })
		},
		func(version string) (time.Duration, error) { return alone.upgrade(ctx, version, nil) },
		func(version string) (time.Duration, error) { return tf.upgrade(ctx, version, nil) },
		func(version string) (time.Duration, error) { return tfm.upgrade(ctx, version, nil) },
		func(version string) (time.Duration, error) {
			return tfmSh.upgrade(ctx, version, func(int) error { return shKillHUP(ctx, tfmSh.pidFile) })
		},
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
	tf, tfm := median(p.firstAnswer[peerTableflip]), median(p.firstAnswer[peerTableflipMetrics])
	fmt.Fprintf(w, "== trigger -> first answer from the new version, one poller, no load, %d upgrades each in turns ==\n", len(p.firstAnswer[0]))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "trigger\tp50\t× floor\t× tableflip\t× tableflip with metrics\tmin\tmax")
	for i, name := range peerTriggers {
		ds := p.firstAnswer[i]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.2f\t%.2f\t%s\t%s\n", name, msf(median(ds)), xFloor(median(ds), floor), ratio(median(ds), tf), ratio(median(ds), tfm), msf(minOf(ds)), msf(maxOf(ds)))
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

// waitOneGeneration waits until sup's status shows one generation that
// has not exited, the active one: an upgrade by SIGHUP has run its course (up to 10 s).
func waitOneGeneration(ctx context.Context, sup *rig.Supervisor) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := sup.Status(ctx)
		if err == nil {
			live := 0
			for _, g := range st.Generations {
				if g.State != "exited" {
					live++
				}
			}
			if live == 1 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("supervisor SIGHUP: old generation still there 10s on (%v)", err)
		}
		select {
		case <-time.After(5 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
