package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/launcherd/launcher/drain"
	"github.com/launcherd/launcher/internal/rig"
	"github.com/launcherd/launcher/supervisor"
)

// pollGap is how long the floor's and the idle upgrades' poller waits
// between two refused dials: short against a start of a few ms, long
// enough that the poller leaves the CPUs to the process it waits for.
const pollGap = 200 * time.Microsecond

// execFloor starts release v1 alone (no supervisor) n times and returns
// each start's time from exec to its first 200 OK: the least an upgrade
// that starts a new process can take on this machine now.
func execFloor(ctx context.Context, r *rig.Rig, n int) ([]time.Duration, error) {
	var out []time.Duration
	for i := 0; i < n; i++ {
		addr, err := rig.FreeAddr()
		if err != nil {
			return nil, err
		}
		cmd := exec.Command(r.Release("v1"), "-addr", addr)
		start := time.Now()
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		err = waitOK(ctx, addr, 10*time.Second)
		d := time.Since(start)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		if err != nil {
			return nil, fmt.Errorf("exec floor, start %d: %w", i+1, err)
		}
		out = append(out, d)
	}
	return out, nil
}

// waitOK dials addr until a GET / on a new connection answers 200 OK.
func waitOK(ctx context.Context, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if ok, err := getOK(addr); ok {
			return nil
		} else if time.Now().After(deadline) {
			return fmt.Errorf("no 200 OK from %s within %s: %v", addr, timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pollGap):
		}
	}
}

// getOK sends one GET / with Connection: close.
func getOK(addr string) (bool, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); err != nil {
		return false, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK, nil
}

// idleRun is the upgrades of one --workers value without load.
type idleRun struct {
	label   string // "before" for the --before binaries
	workers int
	conns   int // idle keep-alive connections open on each old generation
	timings []rig.Timing
	// cpu is the supervisor's CPU time (user + system) over the upgrades,
	// rss its resident set at the end and hwm its peak.
	cpu      time.Duration
	rss, hwm int64 // bytes
	// firstAnswer is, per upgrade, the time from the command until the
	// poller (--poll) got its first answer from the new version.
	firstAnswer []time.Duration
	// trace holds, per phase of phases, its duration in each upgrade
	// (with --trace).
	trace [][]time.Duration
}

// idleUpgrades starts a supervisor with workers from each of rigs and
// upgrades each n times with nothing in flight, taking turns (one
// upgrade of the first, one of the second, ...), so that the load of the
// machine meets them alike: for the upgrade's own cost against the exec
// floor, and for a side-by-side comparison with --before.
func idleUpgrades(ctx context.Context, rigs []*rig.Rig, cfg config, workers, n int, stderr io.Writer) ([]idleRun, error) {
	var log io.Writer = io.Discard
	if cfg.verbose {
		log = stderr
	}
	res := make([]idleRun, len(rigs))
	sups := make([]*rig.Supervisor, len(rigs))
	cpu0 := make([]time.Duration, len(rigs))
	logs := make([]*rig.LogBuffer, len(rigs))
	for i, r := range rigs {
		res[i] = idleRun{workers: workers, conns: cfg.idleConns}
		flags, out := cfg.supervisorFlags(), log
		if cfg.trace {
			logs[i] = &rig.LogBuffer{}
			flags, out = append(flags, "-v"), io.MultiWriter(log, logs[i])
		}
		sup, err := r.Start(ctx, rig.Options{Version: "v1", Workers: workers, Log: out, Extra: flags})
		if err != nil {
			return nil, err
		}
		defer sup.Stop()
		sups[i] = sup
		if cpu0[i], err = procCPU(sup.Pid()); err != nil {
			return nil, err
		}
	}
	version := "v1"
	for k := 0; k < n; k++ {
		version = map[string]string{"v1": "v2", "v2": "v1"}[version]
		for i, sup := range sups {
			conns, err := openIdle(sup.Addr, cfg.idleConns)
			if err != nil {
				return nil, fmt.Errorf("idle upgrade %d: %w", k+1, err)
			}
			if len(conns) > 0 {
				// Idle for longer than the drain's idle grace, as a
				// client's pool of idle keep-alive connections is: the
				// drain closes them at once (at its rate), where one
				// just used would have its grace first, and the grace
				// would be what the upgrade measured.
				select {
				case <-time.After(idleConnsRest):
				case <-ctx.Done():
					closeAll(conns)
					return nil, ctx.Err()
				}
			}
			var polled chan time.Time
			stop := make(chan struct{})
			start := time.Now()
			if cfg.poll {
				polled = make(chan time.Time, 1)
				go func() { polled <- pollFor(sup.Addr, version, 10*time.Second, stop) }() // ends with stop
			}
			t, err := sup.Upgrade(ctx, version, nil)
			if polled != nil {
				select {
				case at := <-polled:
					if !at.IsZero() {
						res[i].firstAnswer = append(res[i].firstAnswer, at.Sub(start))
					}
				case <-time.After(time.Second):
				}
			}
			close(stop)
			closeAll(conns)
			if err != nil {
				return nil, fmt.Errorf("idle upgrade %d: %w", k+1, err)
			}
			res[i].timings = append(res[i].timings, t)
			// A pause, so that one upgrade's exits and reaping are over
			// before the next one's starts.
			select {
			case <-time.After(50 * time.Millisecond):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
	for i, sup := range sups {
		cpu1, err := procCPU(sup.Pid())
		if err != nil {
			return nil, err
		}
		res[i].cpu = cpu1 - cpu0[i]
		res[i].rss, res[i].hwm = procMem(sup.Pid())
		if logs[i] != nil {
			res[i].trace = tracePhases(parseLog(strings.NewReader(logs[i].String())))
		}
	}
	return res, nil
}

// idleConnsRest is how long the connections of --idle-conns stay idle
// before the upgrade: past the drain's idle grace.
const idleConnsRest = drain.DefaultIdleGrace + 200*time.Millisecond

// openIdle opens n keep-alive connections to addr, each with one request
// answered, and leaves them idle.
func openIdle(addr string, n int) ([]net.Conn, error) {
	var out []net.Conn
	for i := 0; i < n; i++ {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			closeAll(out)
			return nil, fmt.Errorf("idle connection %d: %w", i+1, err)
		}
		out = append(out, c)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			closeAll(out)
			return nil, err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			closeAll(out)
			return nil, fmt.Errorf("idle connection %d: %w", i+1, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		c.SetDeadline(time.Time{})
	}
	return out, nil
}

func closeAll(cs []net.Conn) {
	for _, c := range cs {
		c.Close()
	}
}

// procCPU returns the CPU time (utime + stime) of process pid so far, from
// /proc/PID/stat (proc(5)), whose clock ticks are USER_HZ: 100 a second
// on Linux.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces: fields count from its ')'.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too short", pid)
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * cpuTick, nil
}

// cpuTick is the clock tick of /proc/PID/stat's times (USER_HZ = 100).
const cpuTick = 10 * time.Millisecond

// procMem returns the resident set and its peak (VmRSS, VmHWM of
// /proc/PID/status) in bytes; 0 when unknown.
func procMem(pid int) (rss, hwm int64) {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			rss = kb << 10
		case "VmHWM":
			hwm = kb << 10
		}
	}
	return rss, hwm
}

// traceSteps are the steps of an upgrade with --probation 0, in order.
var traceSteps = []supervisor.Step{supervisor.StepStarting, supervisor.StepReady, supervisor.StepServes, supervisor.StepDraining, supervisor.StepDrained}

// servingAndGone splits timings into their command → serving and
// command → old generation gone times, in order.
func servingAndGone(timings []rig.Timing) (serve, gone []time.Duration) {
	for _, t := range timings {
		serve = append(serve, t.Serving)
		gone = append(gone, t.OldGone)
	}
	return serve, gone
}

// stepMedians returns, per step of traceSteps, the median of the
// supervisor's time from the command to it over timings.
func stepMedians(timings []rig.Timing) map[supervisor.Step]time.Duration {
	at := map[supervisor.Step][]time.Duration{}
	for _, t := range timings {
		for _, p := range t.Steps {
			at[p.Step] = append(at[p.Step], p.Elapsed)
		}
	}
	out := map[supervisor.Step]time.Duration{}
	for s, ds := range at {
		out[s] = median(ds)
	}
	return out
}

// printFloor writes the floor and the idle upgrades as multiples of it.
// Without a floor (--floor 0) the multiples are "-".
func printFloor(w io.Writer, floor time.Duration, n int, idle []idleRun) {
	if n > 0 {
		fmt.Fprintf(w, "== exec floor: release started alone, exec -> first 200 OK, median of %d: %s ==\n", n, msf(floor))
	}
	if len(idle) == 0 {
		fmt.Fprintln(w)
		return
	}
	of := "as multiples of the floor"
	if floor <= 0 {
		of = "no exec floor (--floor 0)"
	}
	fmt.Fprintf(w, "== upgrades with nothing in flight (--probation 0), medians, %s ==\n", of)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "binaries\tworkers\tidle conns\tupgrades\tfirst answer (poller)\tserving\t× floor\told gone\t× floor\tsupervisor CPU/upgrade\tsupervisor RSS (peak)\tsupervisor's steps (ms since the command)")
	for _, r := range idle {
		serve, gone := servingAndGone(r.timings)
		steps := stepMedians(r.timings)
		trace := ""
		for _, s := range traceSteps {
			if d, ok := steps[s]; ok {
				trace += fmt.Sprintf("%s %.1f  ", s, ms64(d))
			}
		}
		first := "-"
		if len(r.firstAnswer) > 0 {
			first = msf(median(r.firstAnswer))
			if floor > 0 {
				first += fmt.Sprintf(" (%s×)", xFloor(median(r.firstAnswer), floor))
			}
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%.1f MiB (%.1f)\t%s\n", r.label, r.workers, r.conns, len(r.timings), first, msf(median(serve)), xFloor(median(serve), floor),
			msf(median(gone)), xFloor(median(gone), floor), cpuPer(r.cpu, len(r.timings)),
			float64(r.rss)/(1<<20), float64(r.hwm)/(1<<20), trace)
	}
	tw.Flush()
	fmt.Fprintln(w)
}

// cpuPer formats cpu, a CPU time read from /proc/PID/stat, per one of n
// upgrades; below its 10 ms tick it says so rather than 0.0 ms.
func cpuPer(cpu time.Duration, n int) string {
	n = max(n, 1)
	if cpu <= 0 {
		return "< " + msf(cpuTick/time.Duration(n))
	}
	return msf(cpu / time.Duration(n))
}

func ms64(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func msf(d time.Duration) string { return fmt.Sprintf("%.1f ms", ms64(d)) }

// ratio is d as a multiple of floor (0 without a floor).
func ratio(d, floor time.Duration) float64 {
	if floor <= 0 {
		return 0
	}
	return float64(d) / float64(floor)
}

// xFloor formats d as a multiple of floor, "-" without a floor.
func xFloor(d, floor time.Duration) string {
	if floor <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", ratio(d, floor))
}

// median returns the median of xs (durations, ratios), the mean of the
// middle two for an even count; 0 for none.
func median[T ~int64 | ~float64](xs []T) T {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return middle(s)
}
