package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// profileLoad is the length of --profile's wrk run.
const profileLoad = 5 * time.Second

// profileWorker records process pid with perf (perf record -g, its
// default event and frequency) while load runs for profileLoad, and
// prints the share of its samples in the launcher's own code (see
// [attribute]) and the ten functions of the launcher with the most. A
// share of samples within one process over one interval does not
// depend on how fast the machine was meanwhile, unlike the throughput
// ratio. Without perf it prints one line and returns nil.
func profileWorker(ctx context.Context, w io.Writer, pid int, load func(time.Duration) error) (*profileJSON, error) {
	perf, err := exec.LookPath("perf")
	if err != nil {
		fmt.Fprintln(w, "--profile: skipped, perf is not installed (Debian package linux-perf)")
		return nil, nil
	}
	dir, err := os.MkdirTemp("", "upgradebench-perf-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	data := filepath.Join(dir, "perf.data")
	var stderr bytes.Buffer
	rec := exec.CommandContext(ctx, perf, "record", "-g", "-p", strconv.Itoa(pid), "-o", data)
	rec.Stderr = &stderr
	if err := rec.Start(); err != nil {
		return nil, fmt.Errorf("perf record: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- rec.Wait() }() // ends when perf does: SIGINT below, ctx, or its own error
	// perf writes its file's header once it has attached to the process.
	for deadline := time.Now().Add(5 * time.Second); ; {
		if fi, err := os.Stat(data); err == nil && fi.Size() > 0 {
			break
		}
		select {
		case err := <-exited:
			return nil, fmt.Errorf("perf record: %v: %s", err, firstLine(stderr.String()))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			rec.Process.Kill()
			<-exited
			return nil, fmt.Errorf("perf record did not start: %s", firstLine(stderr.String()))
		}
	}
	loadErr := load(profileLoad)
	rec.Process.Signal(syscall.SIGINT)
	if err := <-exited; err != nil && ctx.Err() == nil && !isSignal(err, syscall.SIGINT) {
		return nil, fmt.Errorf("perf record: %w: %s", err, firstLine(stderr.String()))
	}
	if loadErr != nil {
		return nil, fmt.Errorf("wrk: %w", loadErr)
	}
	out, err := exec.CommandContext(ctx, perf, "script", "-i", data, "-F", "ip,sym,dso").Output()
	if err != nil {
		return nil, fmt.Errorf("perf script: %w", err)
	}
	a := attribute(parsePerfScript(bytes.NewReader(out)))
	if a.total == 0 {
		return nil, fmt.Errorf("perf recorded no sample of process %d", pid)
	}
	fmt.Fprintf(w, "the launcher's own code: %.2f%% of the worker's CPU (%d of %d perf samples over %s of wrk: a sample counts when the first frame from its leaf up that is not the runtime's, the kernel's, vdso's, sync's, sync/atomic's, time's or the Prometheus client's is in the launcher's drain, metrics or launcher package)\n",
		100*float64(a.own)/float64(a.total), a.own, a.total, profileLoad)
	res := &profileJSON{OwnShare: float64(a.own) / float64(a.total), Own: a.own, Total: a.total, Top: map[string]float64{}}
	for _, f := range a.top(10) {
		fmt.Fprintf(w, "  %6.2f%%  %s\n", 100*float64(f.samples)/float64(a.total), f.name)
		res.Top[f.name] = float64(f.samples) / float64(a.total)
	}
	return res, nil
}

func isSignal(err error, sig syscall.Signal) bool {
	ee, ok := err.(*exec.ExitError)
	if !ok {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && (ws.Signaled() && ws.Signal() == sig || ws.Exited() && ws.ExitStatus() == 128+int(sig))
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return line
}

// frame is one line of a perf script call chain: a symbol and the
// object it is in ("[kernel.kallsyms]", "[vdso]", a binary's path).
type frame struct{ sym, dso string }

// parsePerfScript reads the output of perf script -F ip,sym,dso of a
// recording with call chains: per sample one frame a line, leaf first,
// "ip sym (dso)", samples apart by blank lines.
func parsePerfScript(r io.Reader) [][]frame {
	var stacks [][]frame
	var cur []frame
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			if len(cur) > 0 {
				stacks, cur = append(stacks, cur), nil
			}
			continue
		}
		_, rest, _ := strings.Cut(line, " ") // the ip
		var f frame
		f.sym = strings.TrimSpace(rest)
		if i := strings.LastIndex(f.sym, " ("); i >= 0 && strings.HasSuffix(f.sym, ")") {
			f.sym, f.dso = f.sym[:i], f.sym[i+2:len(f.sym)-1]
		}
		cur = append(cur, f)
	}
	if len(cur) > 0 {
		stacks = append(stacks, cur)
	}
	return stacks
}

// attribution counts samples: all of them, those in the launcher's own
// code, and those by the launcher's function they are in.
type attribution struct {
	total, own int
	byFunc     map[string]int
}

type funcSamples struct {
	name    string
	samples int
}

// top returns the n functions with the most samples, most first.
func (a attribution) top(n int) []funcSamples {
	var fs []funcSamples
	for name, s := range a.byFunc {
		fs = append(fs, funcSamples{name, s})
	}
	slices.SortFunc(fs, func(x, y funcSamples) int {
		return cmp.Or(cmp.Compare(y.samples, x.samples), strings.Compare(x.name, y.name))
	})
	return fs[:min(n, len(fs))]
}

// ownPackages are the launcher's packages a worker runs on its request
// path.
var ownPackages = []string{"github.com/launcherd/launcher/drain.", "github.com/launcherd/launcher/metrics.", "github.com/launcherd/launcher/launcher."}

// attribute gives each sample to the first frame, from its leaf up,
// that is not the machinery every server shares: the kernel's and vdso's
// frames, the Go runtime's (and its assembly helpers, which have no
// package), sync, sync/atomic, time, and the Prometheus client's (the
// metrics it calls are the launcher's cost only through the launcher's
// frame that calls them). The sample is the launcher's own when that
// frame is in one of [ownPackages]: time the launcher's code spent, or
// spent in what it called of that machinery. What net/http or the
// handler calls into is theirs, even when the launcher's frames are
// further up the stack.
func attribute(stacks [][]frame) attribution {
	a := attribution{byFunc: map[string]int{}}
	for _, st := range stacks {
		a.total++
		for _, f := range st {
			if shared(f) {
				continue
			}
			for _, p := range ownPackages {
				if strings.HasPrefix(f.sym, p) {
					a.own++
					a.byFunc[f.sym]++
					break
				}
			}
			break
		}
	}
	return a
}

func shared(f frame) bool {
	if f.dso == "[kernel.kallsyms]" || f.dso == "[vdso]" || f.sym == "[unknown]" || !strings.Contains(f.sym, ".") {
		return true
	}
	for _, p := range []string{"runtime.", "internal/runtime/", "internal/bytealg.", "sync.", "sync/atomic.", "time.", "github.com/prometheus/"} {
		if strings.HasPrefix(f.sym, p) {
			return true
		}
	}
	return false
}
