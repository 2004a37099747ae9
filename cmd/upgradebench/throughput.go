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

	wrkPath, _ := exec.LookPath("wrk")
	clients := []struct {
		name string
		run  func(addr string, d time.Duration) (float64, error)
	}{{"loadgen keepalive", func(addr string, d time.Duration) (float64, error) {
		res, err := loadgen.Run(ctx, loadgen.Config{Addr: addr, Mode: loadgen.KeepAlive, Workers: cfg.clients, Duration: d})
		if err != nil {
			return 0, err
		}
		if res.Failures() > 0 {
			return 0, fmt.Errorf("%d failed requests", res.Failures())
		}
		return float64(res.Requests) / res.Elapsed.Seconds(), nil
	}}}
	if wrkPath != "" {
		clients = append([]struct {
			name string
			run  func(addr string, d time.Duration) (float64, error)
		}{{"wrk", func(addr string, d time.Duration) (float64, error) {
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
	for _, c := range clients {
		if _, err := c.run(plainAddr, warmupLoad); err != nil {
			return fmt.Errorf("%s warm-up: %w", c.name, err)
		}
		if _, err := c.run(sup.Addr, warmupLoad); err != nil {
			return fmt.Errorf("%s warm-up: %w", c.name, err)
		}
		var a, b, ratios []float64
		for i := 0; i < rounds; i++ {
			pa, err := c.run(plainAddr, roundLoad)
			if err != nil {
				return fmt.Errorf("%s on plain: %w", c.name, err)
			}
			pb, err := c.run(sup.Addr, roundLoad)
			if err != nil {
				return fmt.Errorf("%s on launcher: %w", c.name, err)
			}
			a, b, ratios = append(a, pa), append(b, pb), append(ratios, pb/pa)
		}
		fmt.Fprintf(w, "%-18s plain %8.0f req/s   launcher %8.0f req/s   ratio %.1f%% (per round: %s)\n",
			c.name, med(a), med(b), 100*med(ratios), pct(ratios))
	}
	fmt.Fprintln(w)
	return nil
}

var wrkRate = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
var wrkErrors = regexp.MustCompile(`Socket errors: (.*)|Non-2xx or 3xx responses: (\d+)`)

func runWrk(ctx context.Context, wrap []string, wrk, addr string, conns int, d time.Duration) (float64, error) {
	threads := "-t2"
	if len(wrap) > 0 {
		threads = "-t1" // pinned to one CPU
	}
	argv := append(append([]string(nil), wrap...), wrk, threads, fmt.Sprintf("-c%d", conns), fmt.Sprintf("-d%ds", int(d.Seconds())), "http://"+addr+"/")
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("wrk: %w: %s", err, out)
	}
	if m := wrkErrors.FindSubmatch(out); m != nil {
		return 0, fmt.Errorf("wrk reported errors: %s", m[0])
	}
	m := wrkRate.FindSubmatch(out)
	if m == nil {
		return 0, errors.New("wrk: no Requests/sec in output")
	}
	return strconv.ParseFloat(string(m[1]), 64)
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
