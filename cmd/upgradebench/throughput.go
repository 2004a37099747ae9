package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/launcherd/launcher/internal/loadgen"
	"github.com/launcherd/launcher/internal/rig"
)

// warmupLoad is the client's first run against each server, not counted.
const warmupLoad = time.Second

// minThroughputRounds is the fewest rounds whose median has a 95 %
// order-statistic interval (see newMedianCI).
const minThroughputRounds = 6

// target is issue #14's: the launcher serves at least 99 % of what plain
// net/http serves of the same handler.
const target = 0.99

// compareThroughput measures the same hello handler served by plain
// net/http and by a launcher-managed worker, in ABBA rounds (see
// [abbaOrder]) so that machine noise and drift hit both alike, and prints
// the median rates and the median ratio with its confidence interval.
// The client is wrk pinned to CPU 1 if installed, else the benchmark's
// own (unpinned) client.
func compareThroughput(ctx context.Context, r *rig.Rig, cfg config, w io.Writer) (*throughputJSON, error) {
	plainAddr, err := rig.FreeAddr()
	if err != nil {
		return nil, err
	}
	// On a small machine the client and the server fight for the same
	// cores; pinning the servers to CPU 0 and wrk to CPU 1 removes most of
	// that noise from the comparison.
	var serverCPU, clientCPU []string
	if ts, err := exec.LookPath("taskset"); err == nil && runtime.NumCPU() >= 2 {
		serverCPU, clientCPU = []string{ts, "-c", "0"}, []string{ts, "-c", "1"}
	}
	argv := append(append([]string(nil), serverCPU...), r.Release("v1"), "-plain", "-addr", plainAddr)
	plain := exec.Command(argv[0], argv[1:]...)
	if err := plain.Start(); err != nil {
		return nil, err
	}
	defer func() { plain.Process.Signal(syscall.SIGTERM); plain.Wait() }()
	sup, err := r.Start(ctx, rig.Options{Version: "v1", Wrap: serverCPU})
	if err != nil {
		return nil, err
	}
	defer sup.Stop()

	st, err := sup.Status(ctx)
	if err != nil || len(st.Generations) == 0 || len(st.Generations[0].PIDs) == 0 {
		return nil, fmt.Errorf("launcher's worker: %v", err)
	}
	worker := st.Generations[0].PIDs[0]

	// One client only: the rounds' time goes to the comparison that
	// measures the servers. The benchmark's own client is not pinned and
	// shares the servers' cores, so its ratio measures the scheduler as
	// much as the servers; it is the fallback without wrk.
	name, pinned := "wrk", "servers on CPU 0, wrk on CPU 1"
	var run func(addr string, d time.Duration) (round, error)
	if wrkPath, _ := exec.LookPath("wrk"); wrkPath != "" {
		run = func(addr string, d time.Duration) (round, error) {
			return runWrk(ctx, clientCPU, wrkPath, addr, cfg.clients, d)
		}
		if serverCPU == nil {
			pinned = "not pinned"
		}
	} else {
		fmt.Fprintln(w, "(wrk not installed: apt-get install wrk for the pinned comparison; this is the benchmark's own client, unpinned)")
		name, pinned = "loadgen keepalive", "not pinned"
		run = func(addr string, d time.Duration) (round, error) {
			res, err := loadgen.Run(ctx, loadgen.Config{Addr: addr, Mode: loadgen.KeepAlive, Workers: cfg.clients, Duration: d})
			if err != nil {
				return round{}, err
			}
			if res.Failures() > 0 {
				return round{}, fmt.Errorf("%d failed requests", res.Failures())
			}
			return round{rate: float64(res.Requests) / res.Elapsed.Seconds(), requests: res.Requests}, nil
		}
	}
	pids := map[bool]int{false: plain.Process.Pid, true: worker}
	addrs := map[bool]string{false: plainAddr, true: sup.Addr}
	for _, launcher := range []bool{false, true} {
		if _, err := run(addrs[launcher], warmupLoad); err != nil {
			return nil, fmt.Errorf("%s warm-up: %w", name, err)
		}
	}
	order := abbaOrder(cfg.tpRounds)
	runs := make([]round, len(order))
	for i, launcher := range order {
		runs[i], err = measureRound(pids[launcher], func() (round, error) { return run(addrs[launcher], cfg.tpRound) })
		if err != nil {
			return nil, fmt.Errorf("%s on %s: %w", name, serverName(launcher), err)
		}
	}
	res := printThroughput(w, fmt.Sprintf("%s; %s", name, pinned), cfg.tpRound, runs)
	if cfg.profile {
		if name != "wrk" {
			fmt.Fprintln(w, "--profile: skipped, wrk is not installed")
		} else if p, err := profileWorker(ctx, w, worker, func(d time.Duration) error {
			_, err := run(sup.Addr, d)
			return err
		}); err != nil {
			fmt.Fprintf(w, "--profile: %v\n", err)
		} else {
			res.Profile = p
		}
	}
	fmt.Fprintln(w)
	return res, nil
}

func serverName(launcher bool) string {
	if launcher {
		return "launcher"
	}
	return "plain"
}

// printThroughput prints the comparison of runs, made in the order of
// [abbaOrder]: per server the median of its runs, and the launcher's
// ratio as the median of the rounds' ratios with its 95 % confidence
// interval, and where issue #14's target of 99 % lies against it.
func printThroughput(w io.Writer, client string, each time.Duration, runs []round) *throughputJSON {
	order := abbaOrder(len(runs) / 4)
	var rate, perCPU [2][]float64 // [0] plain, [1] launcher
	var rateAll, perCPUAll []float64
	for i, launcher := range order {
		s := 0
		if launcher {
			s = 1
		}
		r := runs[i]
		rate[s], perCPU[s] = append(rate[s], r.rate), append(perCPU[s], r.perCPU())
		rateAll, perCPUAll = append(rateAll, r.rate), append(perCPUAll, r.perCPU())
	}
	rateRatios, cpuRatios := roundRatios(rateAll), roundRatios(perCPUAll)
	rateCI, cpuCI := newMedianCI(rateRatios, 0.95), newMedianCI(cpuRatios, 0.95)
	fmt.Fprintf(w, "== throughput: same handler, plain net/http vs launcher (%s) ==\n", client)
	fmt.Fprintf(w, "%s in ABBA order (plain, launcher, launcher, plain; each run %s): a round's ratio is the mean of its launcher runs over the mean of its plain runs, in which a linear drift cancels; the ratio is the median of the rounds', with its %.1f%% confidence interval from order statistics (distribution-free: the rounds ranked %d and %d of %d)\n",
		plural(len(rateRatios), "round"), each, 100*cpuCI.Coverage, cpuCI.K, cpuCI.N+1-cpuCI.K, cpuCI.N)
	fmt.Fprintln(w, "req/s is what the client got; req/CPU-s is requests per second of the server process's CPU time (all its threads, user and kernel, in ns from its CPU clock; the loopback's work on the client's CPU is not in it), which the machine's other jobs do not take from it")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "\tplain (median)\tlauncher (median)\tratio (median)\t%.1f%% CI\trounds min–max\ttarget %.0f%%\n", 100*cpuCI.Coverage, 100*target)
	for _, row := range []struct {
		unit   string
		server [2][]float64
		ci     medianCI
		ratios []float64
	}{{"req/s", rate, rateCI, rateRatios}, {"req/CPU-s", perCPU, cpuCI, cpuRatios}} {
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.1f%%\t%.1f–%.1f%%\t%.0f–%.0f%%\t%s\n", row.unit, median(row.server[0]), median(row.server[1]),
			100*row.ci.Median, 100*row.ci.Lo, 100*row.ci.Hi, 100*slices.Min(row.ratios), 100*slices.Max(row.ratios), verdict(row.ci, target))
	}
	tw.Flush()
	fmt.Fprintf(w, "per round, req/s: %s\n", pct(rateRatios))
	fmt.Fprintf(w, "per round, req/CPU-s: %s\n", pct(cpuRatios))
	row := func(server [2][]float64, ci medianCI, ratios []float64) throughputRow {
		v, _, _ := strings.Cut(verdict(ci, target), " (")
		return throughputRow{PlainMedian: median(server[0]), LauncherMedian: median(server[1]), RatioMedian: ci.Median,
			CILow: ci.Lo, CIHigh: ci.Hi, CICoverage: ci.Coverage, Verdict: v, RoundRatios: ratios}
	}
	return &throughputJSON{Client: client, RoundS: each.Seconds(), Rounds: len(rateRatios), Target: target,
		ReqS: row(rate, rateCI, rateRatios), ReqCPUS: row(perCPU, cpuCI, cpuRatios)}
}

// verdict says where target lies against ci's interval.
func verdict(ci medianCI, target float64) string {
	switch {
	case ci.Lo >= target:
		return "met (interval above)"
	case ci.Hi < target:
		return "not met (interval below)"
	}
	return "undecided (inside the interval)"
}

// round is one client run against one server.
type round struct {
	rate     float64       // requests/s the client got
	requests int64         // requests answered
	cpu      time.Duration // the server process's CPU time meanwhile
}

// perCPU is requests per second of the server's CPU time: unlike the
// rate, the machine's other jobs do not take it from the server (a
// pinned server that waits for its CPU serves fewer requests a second,
// not fewer per CPU-second), so it is the steadier figure of what the
// server spends on a request.
func (r round) perCPU() float64 { return float64(r.requests) / r.cpu.Seconds() }

// measureRound runs one round and adds the CPU time process pid spent
// during it.
func measureRound(pid int, run func() (round, error)) (round, error) {
	before, err := procCPUClock(pid)
	if err != nil {
		return round{}, err
	}
	r, err := run()
	if err != nil {
		return r, err
	}
	after, err := procCPUClock(pid)
	if err != nil {
		return r, err
	}
	if r.cpu = after - before; r.cpu <= 0 || r.requests <= 0 {
		return r, fmt.Errorf("no CPU time or no request measured (%s, %d requests)", r.cpu, r.requests)
	}
	return r, nil
}

var wrkRate = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
var wrkRequests = regexp.MustCompile(`(\d+) requests in `)
var wrkErrors = regexp.MustCompile(`Socket errors: (.*)|Non-2xx or 3xx responses: (\d+)`)

func runWrk(ctx context.Context, wrap []string, wrk, addr string, conns int, d time.Duration) (round, error) {
	threads := "-t2"
	if len(wrap) > 0 {
		threads = "-t1" // pinned to one CPU
	}
	argv := append(append([]string(nil), wrap...), wrk, threads, fmt.Sprintf("-c%d", conns), fmt.Sprintf("-d%ds", int(d.Seconds())), "http://"+addr+"/")
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return round{}, fmt.Errorf("wrk: %w: %s", err, out)
	}
	if m := wrkErrors.FindSubmatch(out); m != nil {
		return round{}, fmt.Errorf("wrk reported errors: %s", m[0])
	}
	m, n := wrkRate.FindSubmatch(out), wrkRequests.FindSubmatch(out)
	if m == nil || n == nil {
		return round{}, errors.New("wrk: no Requests/sec or requests in its output")
	}
	var r round
	r.rate, _ = strconv.ParseFloat(string(m[1]), 64)
	r.requests, _ = strconv.ParseInt(string(n[1]), 10, 64)
	return r, nil
}

func pct(xs []float64) string {
	out := ""
	for i, x := range xs {
		if i > 0 {
			out += " "
		}
		out += fmt.Sprintf("%.0f%%", 100*x)
	}
	return out
}
