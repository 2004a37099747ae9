// Command upgradebench measures what an upgrade costs the clients of a
// launcher-managed service: it builds hello v1/v2, starts a real
// supervisor, drives load from its own never-retrying client while it
// upgrades K times, and prints one table per client mode with failures by
// class, latency in steady state and inside upgrade windows, requests per
// version and upgrade times. With --handover steer,close the naive close
// is measured beside the lossless handover under the same load.
//
//	go run ./cmd/upgradebench                       # defaults: 20 upgrades, workers 1 and 4
//	go run ./cmd/upgradebench --duration 10s --upgrades 5 --modes keepalive
//
// It exits 1 when any request failed under a lossless strategy (steer);
// failures of the naive close are expected and only reported.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/launcherd/launcher/internal/loadgen"
	"github.com/launcherd/launcher/internal/rig"
	"github.com/launcherd/launcher/supervisor"
)

func main() {
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	code, err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "upgradebench:", err)
	}
	os.Exit(code)
}

type config struct {
	duration    time.Duration
	upgrades    int
	clients     int
	workers     []int
	modes       []loadgen.Mode
	handovers   []string
	throughput  bool
	tpRounds    int           // ABBA rounds of the throughput comparison
	tpRound     time.Duration // each run of the client in them
	profile     bool          // perf the launcher's worker during one more wrk run
	upgradeRuns bool
	verbose     bool
	floorRuns   int      // starts of the exec floor
	idleRuns    int      // upgrades with nothing in flight, per --workers value
	startFlags  []string // more flags for launcher start
	abFlags     []string // with them, each load run again, in turn (an A/B of a setting)
	idleConns   int      // idle keep-alive connections on the old generation of each idle upgrade
	trace       bool     // split the idle upgrades into phases from the logs
	poll        bool     // time the idle upgrades' first answer from the new version with a poller
	sighups     int      // standalone SIGHUP handovers to time
	peers       int      // upgrades each of launcher, standalone and tableflip (as is, with metrics), in turns
	before      string   // a directory with launcher and releases/v1,v2/hello of another build
	jsonFile    string
	plotFile    string
}

// supervisorFlags are the flags of launcher start for every run. No
// probation: the old generation is released at once, so "old gone" times
// the handover and drain themselves.
func (c config) supervisorFlags() []string {
	return append([]string{"--drain-timeout", "20s", "--probation", "0"}, c.startFlags...)
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("upgradebench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.DurationVar(&c.duration, "duration", 20*time.Second, "load duration of each run")
	fs.IntVar(&c.upgrades, "upgrades", 20, "upgrades per run, spread evenly over the duration")
	fs.IntVar(&c.clients, "clients", 32, "concurrent client connections")
	workers := fs.String("workers", "1,4", "comma-separated --workers values to run")
	modes := fs.String("modes", "new-conn,keepalive,long", "comma-separated client modes: new-conn, keepalive, long")
	handovers := fs.String("handover", "steer,close", "comma-separated handover strategies: steer, migrate (needs net.ipv4.tcp_migrate_req=1), close; and tableflip: the fork-based peer (tools/peers/tableflip, with the Prometheus client) upgraded by SIGHUP, one process, so --workers 1 only")
	fs.BoolVar(&c.throughput, "throughput", true, "also compare throughput with a plain net/http server (wrk if installed)")
	fs.IntVar(&c.tpRounds, "throughput-rounds", 30, "rounds of the throughput comparison (6 or more), each in ABBA order (plain, launcher, launcher, plain): one ratio each, reported as the median with its 95% confidence interval")
	fs.DurationVar(&c.tpRound, "throughput-round", time.Second, "each run of the client in the throughput comparison's rounds, in whole seconds (wrk's -d)")
	fs.BoolVar(&c.profile, "profile", false, "after the throughput comparison, record the launcher's worker with perf during one more wrk run, and print the share of its CPU in the launcher's own code (needs perf and wrk)")
	fs.BoolVar(&c.upgradeRuns, "upgrade-runs", true, "run the upgrade-under-load runs (false: none; the floor, idle upgrades, peers and throughput comparison run as their own flags say)")
	fs.BoolVar(&c.verbose, "v", false, "show supervisor logs and upgrade progress")
	fs.IntVar(&c.floorRuns, "floor", 25, "starts of the release alone that measure the exec floor (0: skip)")
	fs.IntVar(&c.idleRuns, "idle-upgrades", 20, "upgrades with nothing in flight per --workers value, timed against the floor (0: skip)")
	fs.StringVar(&c.before, "before", "", "a directory with launcher and releases/{v1,v2}/hello built from another commit: its idle upgrades run in turn with this build's, for a side-by-side comparison")
	fs.BoolVar(&c.trace, "trace", false, "split each idle upgrade into phases (fork/exec to listening, ready, release, drain, exit) from the supervisor's and workers' -v log lines")
	fs.BoolVar(&c.poll, "poll", false, "during each idle upgrade, poll GET / on new connections (every 0.2 ms) and time the command -> first answer from the new version")
	fs.IntVar(&c.sighups, "sighup", 0, "also time this many standalone handovers (kill -HUP to hello run alone through a symlink): SIGHUP -> first answer from the new version, with the same poller")
	fs.IntVar(&c.peers, "peers", 0, "time this many upgrades of each trigger, taking turns, trigger -> first answer from the new version with the same poller: launcher upgrade (the command, and the same request from the client library), SIGHUP to a launcher supervisor (1 worker; from this process, and kill -HUP $(cat PIDFILE) by sh), hello alone (SIGHUP), and the tableflip peer (tools/peers/tableflip, SIGHUP; as is, and built with the Prometheus client hello links, also by sh)")
	fs.IntVar(&c.idleConns, "idle-conns", 0, "idle keep-alive connections to open on the old generation before each upgrade with nothing in flight (one request each, then idle past the drain's idle grace)")
	abFlags := fs.String("ab-start-flags", "", "run each load run twice in turn, the second with these more flags for launcher start, space-separated (e.g. \"--start-in-turn\"): an A/B of a setting under the same machine load")
	startFlags := fs.String("start-flags", "", "more flags for launcher start, space-separated (e.g. \"--settle 5ms\")")
	fs.StringVar(&c.jsonFile, "json", "", "write the results as JSON to this file")
	fs.StringVar(&c.plotFile, "plot", "", "draw requests/s and in-flight requests per version over time, upgrades and failures marked, of the first load run to this SVG or PNG file (needs the Go toolchain: the plot is drawn by tools/upgradeplot)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	c.startFlags = strings.Fields(*startFlags)
	c.abFlags = strings.Fields(*abFlags)
	for _, f := range [][]string{c.startFlags, c.abFlags} {
		for _, tok := range f {
			name, _, _ := strings.Cut(strings.TrimLeft(tok, "-"), "=")
			if tok == "--" || strings.HasPrefix(tok, "-") && slices.Contains([]string{"listen", "state-dir", "releases"}, name) {
				return c, fmt.Errorf("--start-flags, --ab-start-flags: %s is the benchmark's own", tok)
			}
		}
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	for _, w := range strings.Split(*workers, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(w))
		if err != nil || n < 1 {
			return c, fmt.Errorf("--workers %q: want positive numbers", *workers)
		}
		c.workers = append(c.workers, n)
	}
	for _, m := range strings.Split(*modes, ",") {
		mode := loadgen.Mode(strings.TrimSpace(m))
		if !slices.Contains([]loadgen.Mode{loadgen.NewConn, loadgen.KeepAlive, loadgen.Long}, mode) {
			return c, fmt.Errorf("--modes: unknown mode %q", m)
		}
		c.modes = append(c.modes, mode)
	}
	for _, h := range strings.Split(*handovers, ",") {
		h = strings.TrimSpace(h)
		if !slices.Contains([]string{"steer", "close", "migrate", peerHandover}, h) {
			return c, fmt.Errorf("--handover: unknown strategy %q (steer, migrate, close or tableflip)", h)
		}
		c.handovers = append(c.handovers, h)
	}
	if slices.Contains(c.handovers, peerHandover) && !slices.Contains(c.workers, 1) {
		return c, fmt.Errorf("--handover %s: the peer is one process: its runs need 1 among --workers (%s)", peerHandover, *workers)
	}
	if slices.Contains(c.handovers, "migrate") {
		if err := supervisor.CheckMigrateReq(); err != nil {
			return c, err
		}
	}
	if c.upgrades < 1 || c.duration < time.Second || c.clients < 1 {
		return c, fmt.Errorf("want --upgrades ≥ 1, --duration ≥ 1s, --clients ≥ 1")
	}
	for _, n := range []struct {
		flag string
		v    int
	}{{"--floor", c.floorRuns}, {"--idle-upgrades", c.idleRuns}, {"--idle-conns", c.idleConns}, {"--sighup", c.sighups}, {"--peers", c.peers}} {
		if n.v < 0 {
			return c, fmt.Errorf("%s %d: want 0 or more", n.flag, n.v)
		}
	}
	// The sign-test interval of a median reaches 95 % coverage only from
	// 6 rounds on (1 − 2·(1/2)⁶ = 96.9 %): with fewer, a verdict on the 99 %
	// target would come from a narrower interval than the output says.
	if c.tpRounds < minThroughputRounds {
		return c, fmt.Errorf("--throughput-rounds %d: want %d or more (fewer give no 95%% interval of the median)", c.tpRounds, minThroughputRounds)
	}
	if c.tpRound < time.Second || c.tpRound%time.Second != 0 {
		return c, fmt.Errorf("--throughput-round %s: want whole seconds, 1s or more (wrk's -d)", c.tpRound)
	}
	// A run with every part off built two releases and printed nothing,
	// exit 0 (a new user's trial).
	if c.floorRuns == 0 && c.idleRuns == 0 && c.sighups == 0 && c.peers == 0 && !c.upgradeRuns && !c.throughput {
		return c, errors.New("nothing to run: --floor 0, --idle-upgrades 0, --upgrade-runs=false and --throughput=false turn off every part (and --peers, --sighup are 0)")
	}
	if c.profile && !c.throughput {
		return c, errors.New("--profile: profiles the throughput comparison's launcher (--throughput=false)")
	}
	// The output files are written at the end of a run of up to minutes:
	// what would fail then is refused now.
	if c.plotFile != "" {
		if ext := filepath.Ext(c.plotFile); ext != ".svg" && ext != ".png" {
			return c, fmt.Errorf("--plot %s: want a .svg or .png file", c.plotFile)
		}
		if !c.upgradeRuns {
			return c, errors.New("--plot: no load run to draw (--upgrade-runs=false)")
		}
	}
	for _, out := range []struct{ flag, file string }{{"--json", c.jsonFile}, {"--plot", c.plotFile}} {
		if out.file == "" {
			continue
		}
		if err := checkWritable(out.file); err != nil {
			return c, fmt.Errorf("%s %s: %w", out.flag, out.file, err)
		}
	}
	return c, nil
}

// checkWritable returns an error unless file can be written: it is not a
// directory, and its directory exists and takes a new file (tried with a
// temporary one, removed at once).
func checkWritable(file string) error {
	if fi, err := os.Stat(file); err == nil && fi.IsDir() {
		return errors.New("is a directory")
	}
	dir := filepath.Dir(file)
	f, err := os.CreateTemp(dir, ".upgradebench-*")
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("cannot create a file in %s: %w", dir, err)
	}
	f.Close()
	return os.Remove(f.Name())
}

// checkStartFlags has r's launcher start parse flags, with --help after
// them (parsing stops there, and nothing starts): a flag it does not know
// or a bad value is refused with its own error line before the runs that
// would pass it.
func checkStartFlags(ctx context.Context, r *rig.Rig, flags []string) error {
	if len(flags) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.Launcher, append(append([]string{"start"}, flags...), "--help")...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if line, _, _ := strings.Cut(strings.TrimSpace(stderr.String()), "\n"); line != "" {
			return errors.New(line)
		}
		return fmt.Errorf("launcher start --help: %w", err)
	}
	return nil
}

// runResult is one (mode, handover, workers) run.
type runResult struct {
	mode     loadgen.Mode
	handover string
	variant  string // the --ab-start-flags of the run's B side, "" for A
	workers  int
	summary  loadgen.Summary
	timings  []rig.Timing
	failed   int // upgrades that failed
	samples  []string
	start    time.Time   // of the load
	starts   []time.Time // of each upgrade in timings
	windows  []loadgen.Window
	series   loadgen.Series
	capacity loadgen.Capacity
	// skipped counts the upgrades not begun: the load had ended before
	// their turn, the ones before having taken longer than their gaps.
	skipped int
	// coldRatios and switchRatios are the capacity of the windows that
	// overlap only an upgrade's cold start, or only its switch.
	coldRatios, switchRatios []float64
	// p99Cold and p99Switch are the p99 latencies of the OK requests
	// begun during the cold starts (command -> serving) and during the
	// switches (serving -> old gone): which phase makes the upgrade
	// windows' tail.
	p99Cold, p99Switch time.Duration
}

// errInterrupted is the error of a run whose context ended (SIGINT,
// SIGTERM): whatever failed then, failed of it.
var errInterrupted = errors.New("interrupted")

// run runs the benchmark and returns its exit code: 130 (as a shell
// reports a SIGINT) with errInterrupted once ctx has ended.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) (int, error) {
	code, err := bench(ctx, args, stdout, stderr)
	if ctx.Err() != nil {
		return 130, errInterrupted
	}
	return code, err
}

func bench(ctx context.Context, args []string, stdout, stderr io.Writer) (int, error) {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0, nil
	}
	if err != nil {
		return 2, err
	}
	dir, err := os.MkdirTemp("", "upgradebench-")
	if err != nil {
		return 1, err
	}
	defer os.RemoveAll(dir)
	fmt.Fprintf(stdout, "building launcher and hello v1, v2 ...\n")
	r, err := rig.Build(ctx, dir, "v1", "v2")
	if errors.Is(err, rig.ErrOutsideRepo) {
		return 1, fmt.Errorf("%w (go run ./cmd/upgradebench)", err)
	}
	if err != nil {
		return 1, err
	}
	for _, f := range []struct {
		flag  string
		extra []string
	}{{"--start-flags", cfg.startFlags}, {"--ab-start-flags", cfg.abFlags}} {
		if err := checkStartFlags(ctx, r, f.extra); err != nil {
			return 2, fmt.Errorf("%s %q: %w", f.flag, strings.Join(f.extra, " "), err)
		}
	}
	var before *rig.Rig
	if cfg.before != "" {
		before = &rig.Rig{Dir: cfg.before, Launcher: filepath.Join(cfg.before, "launcher"), Releases: filepath.Join(cfg.before, "releases")}
		for _, f := range []string{before.Launcher, before.Release("v1"), before.Release("v2")} {
			if _, err := os.Stat(f); err != nil {
				return 2, fmt.Errorf("--before: %w", err)
			}
		}
	}
	var floor time.Duration
	var idle []idleRun
	if cfg.floorRuns > 0 {
		fmt.Fprintf(stdout, "exec floor: %s of the release alone ...\n", plural(cfg.floorRuns, "start"))
		ds, err := execFloor(ctx, r, cfg.floorRuns)
		if err != nil {
			return 1, err
		}
		floor = median(ds)
	}
	if cfg.idleRuns > 0 {
		for _, w := range cfg.workers {
			fmt.Fprintf(stdout, "workers %d: %s with nothing in flight ...\n", w, plural(cfg.idleRuns, "upgrade"))
			rigs := []*rig.Rig{r}
			if before != nil {
				rigs = append(rigs, before)
			}
			runs, err := idleUpgrades(ctx, rigs, cfg, w, cfg.idleRuns, stderr)
			if err != nil {
				return 1, fmt.Errorf("workers %d: %w", w, err)
			}
			runs[0].label = "this"
			if before != nil {
				runs[1].label = "before"
			}
			idle = append(idle, runs...)
		}
	}
	var sighup []time.Duration
	if cfg.sighups > 0 {
		fmt.Fprintf(stdout, "%s ...\n", plural(cfg.sighups, "standalone SIGHUP handover"))
		if sighup, err = standaloneSIGHUP(ctx, r, cfg.sighups); err != nil {
			return 1, fmt.Errorf("--sighup: %w", err)
		}
	}
	var peers peerRun
	if cfg.peers > 0 {
		fmt.Fprintf(stdout, "%s each of %s, in turns ...\n", plural(cfg.peers, "upgrade"), strings.Join(peerTriggers, "; "))
		if peers, err = comparePeers(ctx, r, dir, cfg, cfg.peers, stderr); err != nil {
			return 1, fmt.Errorf("--peers: %w", err)
		}
	}
	var results []runResult
	variants := [][]string{nil}
	if len(cfg.abFlags) > 0 {
		variants = append(variants, cfg.abFlags)
	}
	// The peer runs one process, with no setting of the launcher's: once
	// per mode, with 1 worker, and not twice for an A/B.
	runsOf := func(h string, w int) [][]string {
		switch {
		case h != peerHandover:
			return variants
		case w == 1:
			return [][]string{nil}
		}
		return nil
	}
	total := 0
	for _, w := range cfg.workers {
		for _, h := range cfg.handovers {
			total += len(cfg.modes) * len(runsOf(h, w))
		}
	}
	if !cfg.upgradeRuns {
		cfg.modes = nil
	}
	i := 0
	for _, mode := range cfg.modes {
		for _, w := range cfg.workers {
			for _, h := range cfg.handovers {
				for _, extra := range runsOf(h, w) {
					i++
					fmt.Fprintf(stdout, "[%d/%d] mode %s, handover %s, workers %d: %s of load, %s ...\n", i, total, mode, strings.Join(append([]string{h}, extra...), " "), w, cfg.duration, plural(cfg.upgrades, "upgrade"))
					res, err := benchOne(ctx, r, cfg, mode, h, extra, w, stderr)
					if err != nil {
						return 1, fmt.Errorf("%s/%s/%d: %w", mode, h, w, err)
					}
					results = append(results, res)
				}
			}
		}
	}
	fmt.Fprintln(stdout)
	if cfg.floorRuns > 0 || len(idle) > 0 {
		printFloor(stdout, floor, cfg.floorRuns, idle)
	}
	if len(sighup) > 0 {
		of := ""
		if floor > 0 {
			of = fmt.Sprintf(" (%s× the floor)", xFloor(median(sighup), floor))
		}
		fmt.Fprintf(stdout, "== standalone handover: SIGHUP -> first answer from the new version, median of %d: %s%s ==\n\n",
			len(sighup), msf(median(sighup)), of)
	}
	if cfg.peers > 0 {
		printPeers(stdout, floor, peers)
	}
	if cfg.trace && len(idle) > 0 {
		printTrace(stdout, idle)
	}
	if len(results) > 0 {
		printTables(stdout, cfg, floor, results)
	}
	var tp *throughputJSON
	if cfg.throughput {
		var err error
		if tp, err = compareThroughput(ctx, r, cfg, stdout); err != nil {
			if ctx.Err() != nil {
				return 1, err
			}
			fmt.Fprintf(stdout, "throughput comparison: %v\n", err)
		}
	}
	rep := newReport(cfg, floor, idle, results)
	rep.Throughput = tp
	if len(sighup) > 0 {
		rep.SIGHUPFirstAnswerMS = ms64(median(sighup))
	}
	if cfg.peers > 0 {
		rep.Peers, rep.PeersAll = map[string]float64{}, map[string][]float64{}
		for i, name := range peerTriggers {
			rep.Peers[name] = ms64(median(peers.firstAnswer[i]))
			for _, d := range peers.firstAnswer[i] {
				rep.PeersAll[name] = append(rep.PeersAll[name], ms64(d))
			}
		}
	}
	if cfg.jsonFile != "" {
		if err := rep.write(cfg.jsonFile); err != nil {
			return 1, err
		}
	}
	if cfg.plotFile != "" {
		if err := plot(ctx, rep, cfg.plotFile, stderr); err != nil {
			return 1, err
		}
	}
	code := 0
	for _, res := range results {
		if res.handover != "close" && res.handover != peerHandover && (res.summary.Failures > 0 || res.failed > 0) {
			code = 1
			fmt.Fprintf(stderr, "upgradebench: %s, handover %s, workers %d: %d failed requests, %d failed upgrades; samples: %s\n",
				res.mode, res.handover, res.workers, res.summary.Failures, res.failed, strings.Join(res.samples, "; "))
		}
	}
	return code, nil
}

// benchOne starts a supervisor, loads it, upgrades it K times, stops it.
func benchOne(ctx context.Context, r *rig.Rig, cfg config, mode loadgen.Mode, handover string, extra []string, workers int, stderr io.Writer) (runResult, error) {
	res := runResult{mode: mode, handover: handover, variant: strings.Join(extra, " "), workers: workers}
	var log io.Writer = io.Discard
	if cfg.verbose {
		log = stderr
	}
	var addr string
	var upgrade func(version string, progress func(string)) (rig.Timing, error)
	if handover == peerHandover {
		peer, err := startPeer(ctx, r.Dir)
		if err != nil {
			return res, err
		}
		defer peer.stop()
		addr, upgrade = peer.addr, func(version string, _ func(string)) (rig.Timing, error) {
			start := time.Now()
			first, err := peer.upgrade(ctx, version, nil)
			return rig.Timing{Serving: first, OldGone: time.Since(start)}, err
		}
	} else {
		sup, err := r.Start(ctx, rig.Options{Version: "v1", Workers: workers, Handover: handover, Log: log, Extra: append(cfg.supervisorFlags(), extra...)})
		if err != nil {
			return res, err
		}
		defer sup.Stop()
		addr, upgrade = sup.Addr, func(version string, progress func(string)) (rig.Timing, error) {
			return sup.Upgrade(ctx, version, progress)
		}
	}

	lg := loadgen.Config{Addr: addr, Mode: mode, Method: "POST", Workers: cfg.clients, Duration: cfg.duration}
	if mode == loadgen.Long {
		lg.Method = "GET"
	}
	type loadDone struct {
		res *loadgen.Result
		err error
	}
	done := make(chan loadDone, 1)
	go func() {
		lr, err := loadgen.Run(ctx, lg)
		done <- loadDone{lr, err}
	}()
	var windows loadgen.WindowLog
	// The upgrades begin at even points of the load, counted from its
	// start, not a gap after the one before ended: an upgrade that waits
	// for long requests to drain took the next ones past the load's end
	// (a new user's recheck: 2 of 3 after it). One whose point comes
	// after the load has ended is not begun, and said.
	began := time.Now()
	gap := cfg.duration / time.Duration(cfg.upgrades+1)
	version := "v1"
	for k := 0; k < cfg.upgrades; k++ {
		if time.Since(began) >= cfg.duration {
			res.skipped = cfg.upgrades - k
			break
		}
		select {
		case <-time.After(time.Until(began.Add(time.Duration(k+1) * gap))):
		case <-ctx.Done():
			return res, ctx.Err()
		}
		version = map[string]string{"v1": "v2", "v2": "v1"}[version]
		start := time.Now()
		t, err := upgrade(version, func(line string) {
			if cfg.verbose {
				fmt.Fprintln(stderr, "  ", line)
			}
		})
		windows.Mark(start, time.Now())
		if err != nil {
			res.failed++
			res.samples = append(res.samples, "upgrade: "+err.Error())
			continue
		}
		res.timings = append(res.timings, t)
		res.starts = append(res.starts, start)
	}
	d := <-done
	if d.err != nil {
		return res, d.err
	}
	res.windows = windows.Windows()
	res.summary = d.res.Summarize(res.windows)
	res.start = d.res.Start
	res.series = d.res.Series(bucket)
	res.capacity = res.series.Capacity(res.start, res.windows)
	// The two phases of each upgrade apart: the new generation's cold
	// start (command -> serving) and the switch (serving -> old gone).
	var cold, switching []loadgen.Window
	for i, t := range res.timings {
		s := res.starts[i]
		cold = append(cold, loadgen.Window{Start: s, End: s.Add(t.Serving)})
		switching = append(switching, loadgen.Window{Start: s.Add(t.Serving), End: s.Add(t.OldGone)})
	}
	res.coldRatios = res.series.Ratios(res.start, cold, switching, res.capacity.SteadyMedian)
	res.switchRatios = res.series.Ratios(res.start, switching, cold, res.capacity.SteadyMedian)
	res.p99Cold = d.res.Summarize(cold).Upgrade.P99
	res.p99Switch = d.res.Summarize(switching).Upgrade.P99
	for _, s := range d.res.Samples {
		res.samples = append(res.samples, s...)
	}
	return res, nil
}

// label is the run's handover, with its --ab-start-flags if any.
func (r runResult) label() string {
	if r.variant == "" {
		return r.handover
	}
	return r.handover + " " + r.variant
}

// pctSpread formats ratios as "median% (min%) of n", or "-". The median
// of an even count is the mean of the middle two, as every other median
// here (it was the upper one: 116 % for the two windows 96 % and 116 %, a
// new user's check against the JSON), and n says how few windows it
// may rest on.
func pctSpread(xs []float64) string {
	if len(xs) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f%% (%.0f%%) of %d", 100*median(xs), 100*slices.Min(xs), len(xs))
}

// bucket is the width of the capacity windows and of the plot's steps.
const bucket = 100 * time.Millisecond

func printTables(w io.Writer, cfg config, floor time.Duration, results []runResult) {
	for _, mode := range cfg.modes {
		var rows []loadgen.Row
		for _, r := range results {
			if r.mode == mode {
				rows = append(rows, loadgen.Row{Handover: fmt.Sprintf("%s w=%d", r.label(), r.workers), Summary: r.summary})
			}
		}
		fmt.Fprintf(w, "== mode %s: %s, %s, %s per run ==\n", mode, plural(cfg.clients, "client"), cfg.duration, plural(cfg.upgrades, "upgrade"))
		loadgen.WriteTable(w, rows)
		fmt.Fprintln(w)
	}
	of := "× the exec floor of " + msf(floor)
	if floor <= 0 {
		of = "no exec floor (--floor 0)"
	}
	fmt.Fprintf(w, "== upgrade times (command -> new generation serving; command -> old generation gone; %s) and capacity per %s window ==\n", of, bucket)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "mode\thandover\tworkers\tupgrades\tfailed upgrades\tserving p50\t× floor\tserving max\told gone p50\t× floor\told gone max\tmin window capacity\twindows < 95%\tcold start windows: p50 (min) of n\tswitch windows: p50 (min) of n\tsteady min\tsteady < 95%\tp99 upgrade / steady\tp99 cold start / steady\tp99 switch / steady")
	for _, r := range results {
		serve, gone := servingAndGone(r.timings)
		// Without a steady median (a window of the steady state holds no
		// response: fewer than 10 a second, the long mode's) capacity is
		// undefined: "-", not 100 % with a steady minimum of 0 %.
		cf := capacityOf(r.capacity)
		minCap, below := pctOrDash(cf.minRatio), countOrDash(cf.below, r.capacity.WindowBuckets)
		steadyMin, steadyBelow := pctOrDash(cf.steadyMin), countOrDash(cf.steadyBelow, r.capacity.SteadyBuckets)
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.mode, r.label(), r.workers, len(r.timings), r.failed,
			ms(median(serve)), xFloor(median(serve), floor), ms(maxOf(serve)), ms(median(gone)), xFloor(median(gone), floor), ms(maxOf(gone)),
			minCap, below, pctSpread(r.coldRatios), pctSpread(r.switchRatios),
			steadyMin, steadyBelow, ratioOf(r.summary.Upgrade.P99, r.summary.Steady.P99),
			ratioOf(r.p99Cold, r.summary.Steady.P99), ratioOf(r.p99Switch, r.summary.Steady.P99))
	}
	tw.Flush()
	for _, r := range results {
		if r.skipped > 0 {
			fmt.Fprintf(w, "(mode %s, handover %s, workers %d: %d of %d upgrades not begun: the load's %s had ended, the upgrades before having taken longer than their turns)\n",
				r.mode, r.label(), r.workers, r.skipped, r.skipped+len(r.timings)+r.failed, cfg.duration)
		}
	}
	fmt.Fprintln(w)
}

// pctOrDash formats a ratio as a percentage, "-" for nil (undefined).
func pctOrDash(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", 100**v)
}

// countOrDash formats "n/of", "-" for nil (undefined).
func countOrDash(n *int, of int) string {
	if n == nil {
		return "-"
	}
	return fmt.Sprintf("%d/%d", *n, of)
}

// ratioOf formats d/base to two decimals, "-" when either is 0 (no
// request timed in that part of the run).
func ratioOf(d, base time.Duration) string {
	if d <= 0 || base <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", float64(d)/float64(base))
}

// plural returns n and noun, in the plural unless n is 1: "1 upgrade",
// "20 upgrades".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func maxOf(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	return slices.Max(ds)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond)) }
