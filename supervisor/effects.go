package supervisor

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/launcherd/launcher/metrics"
)

// effects are the supervisor's effects on the operating system, behind
// one small interface so that the state machine is tested without
// processes (see fakeEffects in the tests). The loop calls them; none
// blocks for long: a start returns once the process has been executed, a
// state write is one small file.
type effects interface {
	// start runs a worker process: spec's release with spec's environment,
	// in a process tree of its own (see tree).
	start(spec procSpec) (process, error)
	// adopt returns the process pid if it is still the worker that token
	// names (a pid alone could be reused by now), a worker of generation
	// gen, with its tree.
	adopt(pid int, token string, gen int) (process, bool)
	// removeGeneration lets go of what holds generation gen's processes
	// (its cgroup) once none is left and none will start.
	removeGeneration(gen int)
	// usage reads what generation gen's processes cost; false where it has
	// no cgroup to tell.
	usage(gen int) (metrics.GenerationUsage, bool)
	// health asks a ready worker's admin socket for /healthz.
	health(ctx context.Context, admin string) error
	// counts reads a worker's in-flight requests and open connections.
	counts(ctx context.Context, admin string) (metrics.Counts, error)
	// scrape reads a worker's metrics on its admin socket.
	scrape(ctx context.Context, admin string) (map[string]*dto.MetricFamily, error)
	// saveState writes the state file; removeState deletes it.
	saveState(st savedState) error
	removeState()
	loadState() (*savedState, error)
	// repoint points the --current symlink at rel's directory.
	repoint(rel release) error
	// notify sends sd_notify assignments to systemd, if it listens.
	notify(assignments ...string)
	// removeAdmin removes a worker's admin socket once it has exited.
	removeAdmin(path string)
	// listened returns the first of addrs that something already accepts
	// connections on, or "".
	listened(addrs []string) string
}

// procSpec is what a worker process is started with.
type procSpec struct {
	dir   string // working directory, resolved by the kernel at the start
	gen   int    // its generation
	index int    // its index in the generation
	path  string
	args  []string
	env   []string
	tail  *tailBuffer // receives its stderr
}

// process is a running worker: a child, or one adopted from a killed
// supervisor.
type process interface {
	pid() int
	// signal sends sig to the process alone, unless it has been reaped.
	signal(sig syscall.Signal)
	// kill ends the process and every process of its tree with SIGKILL.
	// Whatever the tree still holds when the process exits is killed
	// then, before done is closed.
	kill()
	// done is closed once the process has exited; exitErr then says how.
	done() <-chan struct{}
	exitErr() error
	// stopped reports whether the process is stopped by a signal
	// (SIGSTOP, SIGTSTP) or by a tracer (state T or t in /proc/PID/stat,
	// proc(5)), or frozen with its cgroup (cgroup.freeze in v2, or the
	// v1 freezer's freezer.state, whose tasks read D). It answers
	// nothing until SIGCONT or a thaw.
	stopped() bool
	// state is the process's state letter in /proc/PID/stat (proc(5)),
	// e.g. 'D' for an uninterruptible sleep, which not even SIGKILL ends
	// until it wakes; 0 once it has exited.
	state() byte
	// release lets go of a process this supervisor will not watch.
	release()
}

// osEffects are the real effects.
type osEffects struct {
	dir      *stateDir
	current  string // --current, "" if unset
	notifier *notifier
	cg       *cgroups
	state    *stateFile // written by the loop alone
	log      *slog.Logger
}

func newOSEffects(dir *stateDir, current string, log *slog.Logger) *osEffects {
	cg := openCgroups(dir.path, os.Getenv(EnvProcessGroups) == "1", log)
	return &osEffects{dir: dir, current: current, notifier: newNotifier(), cg: cg, state: newStateFile(statePath(dir.path)), log: log}
}

// close removes the supervisor's cgroup, if it is empty.
func (fx *osEffects) close() { fx.cg.close() }

func (fx *osEffects) removeGeneration(gen int) { fx.cg.removeGeneration(gen) }

func (fx *osEffects) usage(gen int) (metrics.GenerationUsage, bool) { return fx.cg.usage(gen) }

func (fx *osEffects) health(ctx context.Context, admin string) error { return checkHealth(ctx, admin) }

func (fx *osEffects) counts(ctx context.Context, admin string) (metrics.Counts, error) {
	return metrics.ReadCounts(ctx, admin)
}

func (fx *osEffects) scrape(ctx context.Context, admin string) (map[string]*dto.MetricFamily, error) {
	return metrics.Scrape(ctx, admin)
}

func (fx *osEffects) saveState(st savedState) error {
	st.CreatedDir = fx.dir.created.Load()
	b, err := marshalState(st)
	if err != nil {
		return err
	}
	return fx.state.write(b)
}

func (fx *osEffects) removeState() {
	os.Remove(statePath(fx.dir.path))
	os.Remove(statePath(fx.dir.path) + swapSuffix)
}

// loadState reads the state file; one written by a supervisor that made
// the directory makes this one its maker too (see stateDir.created).
func (fx *osEffects) loadState() (*savedState, error) {
	st, err := loadState(fx.dir.path)
	if st != nil && st.CreatedDir {
		fx.dir.created.Store(true)
	}
	return st, err
}

func (fx *osEffects) removeAdmin(path string) { os.Remove(path) }

// listened dials each address (an unspecified host as loopback) for at
// most 300 ms: a connection accepted there means a listener this
// supervisor knows nothing of.
func (fx *osEffects) listened(addrs []string) string {
	for _, a := range addrs {
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			continue
		}
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			host = "127.0.0.1"
			if ip != nil && ip.To4() == nil {
				host = "::1"
			}
		}
		c, err := net.DialTimeout("tcp", net.JoinHostPort(host, port), 300*time.Millisecond)
		if err == nil {
			// A dial to a free port of the ephemeral range can connect to
			// itself (TCP simultaneous open, RFC 9293 §3.5): no listener.
			self := c.LocalAddr().String() == c.RemoteAddr().String()
			c.Close()
			if !self {
				return a
			}
		}
	}
	return ""
}

func (fx *osEffects) notify(assignments ...string) {
	if err := fx.notifier.send(assignments...); err != nil {
		fx.log.Warn("notify systemd", "err", err)
	}
}

// repoint points --current at the release directory, atomically.
func (fx *osEffects) repoint(rel release) error {
	if fx.current == "" {
		return nil
	}
	target := filepath.Dir(rel.Path)
	// A relative link survives moving or bind-mounting the tree; an
	// operator's absolute one stays absolute.
	if old, err := os.Readlink(fx.current); err != nil || !filepath.IsAbs(old) {
		if abs, err := filepath.Abs(filepath.Dir(fx.current)); err == nil {
			if r, err := filepath.Rel(abs, target); err == nil {
				target = r
			}
		}
	}
	// What an operator put at LINK since the start (a directory, a file)
	// is theirs: the rename would replace a file, and fail on a directory
	// after the temporary link was made.
	if fi, err := os.Lstat(fx.current); err == nil && fi.Mode()&os.ModeSymlink == 0 {
		what := "a file"
		if fi.IsDir() {
			what = "a directory"
		}
		return fmt.Errorf("--current %s is %s now, not a symlink: left as it is", fx.current, what)
	}
	// A name of its own: LINK.tmp may be a deploy script's (the
	// `ln -s …; mv -T` idiom) or an operator's file.
	tmp := filepath.Join(filepath.Dir(fx.current), fmt.Sprintf(".%s.launcher-%d-%s", filepath.Base(fx.current), os.Getpid(), newToken()[:8]))
	if err := os.Symlink(target, tmp); err != nil {
		return fmt.Errorf("--current %s: %w", fx.current, err)
	}
	if err := os.Rename(tmp, fx.current); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("--current %s: %w", fx.current, err)
	}
	return nil
}
