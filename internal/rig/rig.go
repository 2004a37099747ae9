// Package rig builds the launcher and releases of the hello service and
// runs a real supervisor process, for the demo, the upgrade benchmark and
// the e2e and deploy tests: the same steps an operator takes, driven from
// Go. The tests build with -race ([BuildOptions]) and watch what their
// processes print for the race detector's reports ([RaceDetector]).
package rig

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/launcherd/launcher/supervisor"
)

// Rig is a directory with a launcher binary and hello releases:
// Dir/launcher, Dir/releases/VERSION/hello.
type Rig struct {
	Dir      string
	Launcher string
	Releases string
}

// BuildOptions are the choices of [BuildWith].
type BuildOptions struct {
	// Race builds every binary with the race detector (go build -race),
	// as the tests do: run with GORACE=[GORACE], a process that races
	// prints a report and exits with status 66, which [RaceDetector] and
	// [RaceReport] see. The demo and the benchmark build without it: they
	// measure speed, and the detector slows a process down several times.
	Race bool
}

// Build compiles the launcher and one hello release per version into dir,
// with "go build" from the module this package belongs to.
func Build(ctx context.Context, dir string, versions ...string) (*Rig, error) {
	return BuildWith(ctx, dir, BuildOptions{}, versions...)
}

// BuildWith is [Build] with options.
func BuildWith(ctx context.Context, dir string, o BuildOptions, versions ...string) (*Rig, error) {
	root, err := moduleRoot(ctx)
	if err != nil {
		return nil, err
	}
	r := &Rig{Dir: dir, Launcher: filepath.Join(dir, "launcher"), Releases: filepath.Join(dir, "releases")}
	type job struct {
		args   []string
		static bool
	}
	// The launcher is built as the README's install does, static (see
	// staticEnv); the race detector needs cgo, so not under it. The hello
	// releases stand for an operator's app, built the default way.
	jobs := []job{{o.buildArgs(r.Launcher, "./cmd/launcher"), !o.Race && !raceInGOFLAGS()}}
	for _, v := range versions {
		jobs = append(jobs, job{args: o.buildArgs(r.Release(v), "./cmd/hello", "-ldflags", "-X main.version="+v)})
	}
	// Build in parallel: the link steps dominate and use one core each.
	errs := make([]error, len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Add(1)
		go func() { // ends when its go build does
			defer wg.Done()
			var env []string
			if j.static {
				env = []string{staticBuild}
			}
			errs[i] = goCommand(ctx, root, env, j.args...)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return r, nil
}

// buildArgs returns the arguments of "go build" that compile pkg to out.
func (o BuildOptions) buildArgs(out, pkg string, flags ...string) []string {
	args := []string{"build"}
	if o.Race {
		args = append(args, "-race")
	}
	args = append(args, flags...)
	return append(args, "-o", out, pkg)
}

// staticBuild builds a Go program without cgo, so statically linked: the
// launcher needs no C library, and without the dynamic loader and the C
// library's start a process of it starts sooner (each `launcher upgrade`
// or `status`; see the README's Install).
const staticBuild = "CGO_ENABLED=0"

// raceInGOFLAGS reports whether GOFLAGS asks every build for the race
// detector (as the e2e test of the demo does), which needs cgo.
func raceInGOFLAGS() bool {
	return slices.Contains(strings.Fields(os.Getenv("GOFLAGS")), "-race")
}

// goCommand runs the go command with args in dir and env added to this
// process's environment; its error carries the command's stderr.
func goCommand(ctx context.Context, dir string, env []string, args ...string) error {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// Release returns the path of version's hello binary.
func (r *Rig) Release(version string) string {
	return filepath.Join(r.Releases, version, "hello")
}

// AddScript makes a release of version that is the shell script script
// (its first line "#!/bin/sh"), executable, where Release(version) says.
// A script release stands for a faulty one: one that crashes, fails, or
// wraps a built release with other flags.
func (r *Rig) AddScript(version, script string) error {
	path := r.Release(version)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("release %s: %w", version, err)
	}
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		return fmt.Errorf("release %s: %w", version, err)
	}
	return nil
}

// ErrOutsideRepo is the error of [Build] and [BuildWith] run outside the
// launcher's repository, whose sources they build. A command adds how to
// run it from a checkout.
var ErrOutsideRepo = errors.New("not inside the launcher repository: run from its checkout")

// InRepo returns ErrOutsideRepo when run outside the launcher's
// repository (Build would fail so), nil inside it.
func InRepo(ctx context.Context) error {
	_, err := moduleRoot(ctx)
	return err
}

// moduleRoot finds the directory of this module's go.mod, so Build works
// from anywhere inside the repository.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w (is the Go toolchain installed?)", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", ErrOutsideRepo
	}
	return filepath.Dir(gomod), nil
}

// FreeAddr returns a loopback address whose port is free right now,
// picked at random below the kernel's ephemeral range
// (net.ipv4.ip_local_port_range, 32768–60999 by default): a port the
// kernel handed out (":0") is one it also gives the many outgoing
// connections of a load test as their local port, and one of those can
// take it between this check and the caller's listen, or connect to
// itself there (TCP simultaneous open). Falls back to ":0" where that
// range leaves no room below it.
func FreeAddr() (string, error) {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				low = n
			}
		}
	}
	const from = 10000 // above the well-known and most registered services' ports
	for range 100 {
		if low-from < 1000 {
			break
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(from+rand.IntN(low-from)))
		if l, err := net.Listen("tcp", addr); err == nil {
			l.Close()
			return addr, nil
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Options for [Rig.Start].
type Options struct {
	Version string // release to start with
	// Command, if set, is the COMMAND to start instead of Version's
	// release: a path through a "current" symlink, for SIGHUP upgrades.
	Command  string
	Workers  int      // --workers; 0 means 1
	Handover string   // --handover; "" means the default
	Extra    []string // more flags for launcher start
	Log      io.Writer
	// Wrap, if set, is a command prefix for the supervisor (and so its
	// workers), e.g. taskset -c 0 to pin them to one CPU.
	Wrap []string
	// Addr and StateDir, if set, are used instead of a free port and a
	// new temporary directory: a supervisor started on those of a killed
	// one adopts its workers.
	Addr, StateDir string
}

// Supervisor is a running `launcher start` on Addr.
type Supervisor struct {
	*Proc
	Addr string
}

// Start runs `launcher start` on a free loopback port and waits until it
// serves. Stop it with [Supervisor.Stop]. If it does not serve, the error
// carries its error line, and the state dir Start made is removed.
func (r *Rig) Start(ctx context.Context, o Options) (_ *Supervisor, err error) {
	addr, state := o.Addr, o.StateDir
	if addr == "" {
		if addr, err = FreeAddr(); err != nil {
			return nil, err
		}
	}
	if state == "" {
		if state, err = os.MkdirTemp("", "lr"); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				os.RemoveAll(state) // ours, and no supervisor runs on it
			}
		}()
	}
	args := []string{"start", "--listen", addr, "--state-dir", state, "--releases", r.Releases}
	if o.Workers > 0 {
		args = append(args, "--workers", fmt.Sprint(o.Workers))
	}
	if o.Handover != "" {
		args = append(args, "--handover", o.Handover)
	}
	args = append(args, o.Extra...)
	command := o.Command
	if command == "" {
		command = r.Release(o.Version)
	}
	args = append(args, "--", command)
	argv := append(append([]string(nil), o.Wrap...), r.Launcher)
	p, err := StartProc(ctx, append(argv, args...), nil, state, o.Log)
	if err != nil {
		return nil, err
	}
	return &Supervisor{Proc: p, Addr: addr}, nil
}

// Timing of one upgrade.
type Timing struct {
	Serving time.Duration // command → new generation serving
	OldGone time.Duration // command → old generation exited
	// Steps are the upgrade's progress steps as they arrived, each with
	// the supervisor's time since it received the command.
	Steps []supervisor.Progress
}

// Upgrade runs `launcher upgrade --wait VERSION` through the control
// socket and times it; progress lines go to progress (may be nil).
func (s *Supervisor) Upgrade(ctx context.Context, version string, progress func(string)) (Timing, error) {
	var t Timing
	start := time.Now()
	c := supervisor.Client{StateDir: s.StateDir}
	_, err := c.Upgrade(ctx, version, true, func(p supervisor.Progress) {
		if p.Step == supervisor.StepServes || (p.Step == "" && strings.Contains(p.Line, " serves;")) {
			t.Serving = time.Since(start)
		}
		t.Steps = append(t.Steps, p)
		if progress != nil {
			progress(p.String())
		}
	})
	t.OldGone = time.Since(start)
	if t.Serving == 0 {
		t.Serving = t.OldGone
	}
	s.Status(ctx) // remember the new workers
	return t, err
}

// Stop stops the supervisor gracefully, then kills whatever is left, and
// removes its state dir.
func (s *Supervisor) Stop() error {
	defer os.RemoveAll(s.StateDir)
	return s.Shutdown(20 * time.Second)
}

// LogBuffer collects the output of processes that write concurrently (a
// supervisor and its workers); it is safe for concurrent use.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write implements io.Writer.
func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
