// Package rig builds the launcher and releases of the hello service and
// runs a real supervisor process, for the demo and the upgrade benchmark:
// the same steps an operator takes, driven from Go.
package rig

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
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

// Build compiles the launcher and one hello release per version into dir,
// with "go build" from the module this package belongs to.
func Build(ctx context.Context, dir string, versions ...string) (*Rig, error) {
	root, err := moduleRoot(ctx)
	if err != nil {
		return nil, err
	}
	r := &Rig{Dir: dir, Launcher: filepath.Join(dir, "launcher"), Releases: filepath.Join(dir, "releases")}
	jobs := [][]string{{"build", "-o", r.Launcher, "./cmd/launcher"}}
	for _, v := range versions {
		jobs = append(jobs, []string{"build", "-ldflags", "-X main.version=" + v, "-o", r.Release(v), "./cmd/hello"})
	}
	// Build in parallel: the link steps dominate and use one core each.
	errs := make([]error, len(jobs))
	var wg sync.WaitGroup
	for i, args := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.CommandContext(ctx, "go", args...)
			cmd.Dir = root
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Run(); err != nil {
				errs[i] = fmt.Errorf("go %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return r, nil
}

// Release returns the path of version's hello binary.
func (r *Rig) Release(version string) string {
	return filepath.Join(r.Releases, version, "hello")
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
		return "", errors.New("not inside the launcher repository: run from its checkout (go run ./cmd/launcher demo)")
	}
	return filepath.Dir(gomod), nil
}

// FreeAddr returns a loopback address whose port is free right now.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Options for [Rig.Start].
type Options struct {
	Version  string   // release to start with
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

// Supervisor is a running `launcher start`.
type Supervisor struct {
	Addr     string
	StateDir string
	cmd      *exec.Cmd
	done     chan struct{}
	err      error
	mu       sync.Mutex
	pids     map[int]bool
}

// Start runs `launcher start` on a free loopback port and waits until it
// serves. Stop it with [Supervisor.Stop].
func (r *Rig) Start(ctx context.Context, o Options) (*Supervisor, error) {
	addr, state := o.Addr, o.StateDir
	var err error
	if addr == "" {
		if addr, err = FreeAddr(); err != nil {
			return nil, err
		}
	}
	if state == "" {
		if state, err = os.MkdirTemp("", "lr"); err != nil {
			return nil, err
		}
	}
	s := &Supervisor{Addr: addr, StateDir: state, done: make(chan struct{}), pids: map[int]bool{}}
	args := []string{"start", "--listen", addr, "--state-dir", state, "--releases", r.Releases}
	if o.Workers > 0 {
		args = append(args, "--workers", fmt.Sprint(o.Workers))
	}
	if o.Handover != "" {
		args = append(args, "--handover", o.Handover)
	}
	args = append(args, o.Extra...)
	args = append(args, "--", r.Release(o.Version))
	argv := append(append([]string(nil), o.Wrap...), r.Launcher)
	argv = append(argv, args...)
	s.cmd = exec.Command(argv[0], argv[1:]...)
	if o.Log == nil {
		o.Log = io.Discard
	}
	s.cmd.Stdout, s.cmd.Stderr = o.Log, o.Log
	// Workers share its stdout: once it is killed, Wait must not wait for
	// them to close it.
	s.cmd.WaitDelay = 2 * time.Second
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { s.err = s.cmd.Wait(); close(s.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := supervisor.GetStatus(ctx, state)
		if err == nil && len(st.Generations) > 0 && st.Generations[len(st.Generations)-1].State == supervisor.StateActive {
			s.remember(st)
			return s, nil
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("launcher start exited: %v", s.err)
		case <-ctx.Done():
			s.Stop()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, errors.New("launcher start: not serving after 30s")
		}
	}
}

func (s *Supervisor) remember(st supervisor.Status) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range st.Generations {
		for _, p := range g.PIDs {
			s.pids[p] = true
		}
	}
}

// Status returns the supervisor's status.
func (s *Supervisor) Status(ctx context.Context) (supervisor.Status, error) {
	st, err := supervisor.GetStatus(ctx, s.StateDir)
	if err == nil {
		s.remember(st)
	}
	return st, err
}

// Timing of one upgrade.
type Timing struct {
	Serving time.Duration // command → new generation serving
	OldGone time.Duration // command → old generation exited
}

// Upgrade runs `launcher upgrade --wait VERSION` through the control
// socket and times it; progress lines go to progress (may be nil).
func (s *Supervisor) Upgrade(ctx context.Context, version string, progress func(string)) (Timing, error) {
	var t Timing
	start := time.Now()
	_, err := supervisor.Call(ctx, s.StateDir, "upgrade", version, true, func(line string) {
		if strings.Contains(line, " serves;") {
			t.Serving = time.Since(start)
		}
		if progress != nil {
			progress(line)
		}
	})
	t.OldGone = time.Since(start)
	if t.Serving == 0 {
		t.Serving = t.OldGone
	}
	if st, err := s.Status(ctx); err == nil {
		s.remember(st)
	}
	return t, err
}

// Kill kills the supervisor with SIGKILL, as a crash would, and waits for
// it; its workers serve on, and its state dir stays for another Start.
func (s *Supervisor) Kill() {
	s.cmd.Process.Kill()
	<-s.done
}

// Stop stops the supervisor gracefully, then kills whatever is left.
func (s *Supervisor) Stop() error {
	defer os.RemoveAll(s.StateDir)
	s.cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case <-s.done:
		err = s.err
	case <-time.After(20 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
		err = errors.New("supervisor did not stop within 20s")
	}
	s.mu.Lock()
	for p := range s.pids {
		syscall.Kill(p, syscall.SIGKILL)
	}
	s.mu.Unlock()
	return err
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
