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
	"syscall"
	"time"

	"github.com/launcherd/launcher/internal/loadgen"
	"github.com/launcherd/launcher/internal/rig"
)

// rounds of the side-by-side throughput comparison; medians are reported.
const (
	rounds     = 7
	roundLoad  = 4 * time.Second
	warmupLoad = time.Second
)

// compareThroughput measures the same hello handler served by plain
// net/http and by a launcher-managed worker, alternating A/B so that
// machine noise hits both alike, and prints the median rates and ratio.
func compareThroughput(ctx context.Context, r *rig.Rig, cfg config, w io.Writer) error {
	plainAddr, err := rig.FreeAddr()
	if err != nil {
		return err
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
		return err
	}
	defer func() { plain.Process.Signal(syscall.SIGTERM); plain.Wait() }()
	sup, err := r.Start(ctx, rig.Options{Version: "v1", Wrap: serverCPU})
	if err != nil {
		return err
	}
	defer sup.Stop()

	st, err := sup.Status(ctx)
	if err != nil || len(st.Generations) == 0 || len(st.Generations[0].PIDs) == 0 {
		return fmt.Errorf("launcher's worker: %v", err)
	}
	worker := st.Generations[0].PIDs[0]

	wrkPath, _ := exec.LookPath("wrk")
	clients := []struct {
		name string
		run  func(addr string, d time.Duration) (round, error)
	}{{"loadgen keepalive", func(addr string, d time.Duration) (round, error) {
		res, err := loadgen.Run(ctx, loadgen.Config{Addr: addr, Mode: loadgen.KeepAlive, Workers: cfg.clients, Duration: d})
		if err != nil {
			return round{}, err
		}
		if res.Failures() > 0 {
			return round{}, fmt.Errorf("%d failed requests", res.Failures())
		}
		return round{rate: float64(res.Requests) / res.Elapsed.Seconds(), requests: res.Requests}, nil
	}}}
	if wrkPath != "" {
		clients = append([]struct {
			name string
			run  func(addr string, d time.Duration) (round, error)
		}{{"wrk", func(addr string, d time.Duration) (round, error) {
			return runWrk(ctx, clientCPU, wrkPath, addr, cfg.clients, d)
		}}}, clients...)
	} else {
		fmt.Fprintln(w, "(wrk not installed: apt-get install wrk to add it to the comparison)")
	}
	pinned := "not pinned"
	if serverCPU != nil {
		pinned = "servers on CPU 0, wrk on CPU 1; loadgen not pinned"
	}
	fmt.Fprintf(w, "== throughput: same handler, plain net/http vs launcher (%d rounds of %s, A/B alternating, medians; %s) ==\n", rounds, roundLoad, pinned)
	fmt.Fprintln(w, "req/s is what the client got; req/CPU-s is requests per second of the server process's own CPU time (utime + stime), which the machine's other jobs do not take from it")
	for _, c := range clients {
		if _, err := c.run(plainAddr, warmupLoad); err != nil {
			return fmt.Errorf("%s warm-up: %w", c.name, err)
		}
		if _, err := c.run(sup.Addr, warmupLoad); err != nil {
			return fmt.Errorf("%s warm-up: %w", c.name, err)
		}
		var a, b, ratios, ea, eb, eratios []float64
		for i := 0; i < rounds; i++ {
			pa, err := measureRound(plain.Process.Pid, func() (round, error) { return c.run(plainAddr, roundLoad) })
			if err != nil {
				return fmt.Errorf("%s on plain: %w", c.name, err)
			}
			pb, err := measureRound(worker, func() (round, error) { return c.run(sup.Addr, roundLoad) })
			if err != nil {
				return fmt.Errorf("%s on launcher: %w", c.name, err)
			}
			a, b, ratios = append(a, pa.rate), append(b, pb.rate), append(ratios, pb.rate/pa.rate)
			ea, eb, eratios = append(ea, pa.perCPU()), append(eb, pb.perCPU()), append(eratios, pb.perCPU()/pa.perCPU())
		}
		fmt.Fprintf(w, "%-18s plain %8.0f req/s   launcher %8.0f req/s   ratio %.1f%% (per round: %s)\n",
			c.name, med(a), med(b), 100*med(ratios), pct(ratios))
		fmt.Fprintf(w, "%-18s plain %8.0f req/CPU-s launcher %8.0f req/CPU-s ratio %.1f%% (per round: %s)\n",
			"", med(ea), med(eb), 100*med(eratios), pct(eratios))
	}
	fmt.Fprintln(w)
	return nil
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
	before, err := procCPU(pid)
	if err != nil {
		return round{}, err
	}
	r, err := run()
	if err != nil {
		return r, err
	}
	after, err := procCPU(pid)
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

func med(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
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
