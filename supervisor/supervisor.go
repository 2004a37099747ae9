package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/launcherd/launcher/internal/ticketkeys"
	"github.com/launcherd/launcher/metrics"
	"github.com/launcherd/launcher/reuseport"
)

// Supervisor runs generations of one service. Create it with [New] and
// call [Supervisor.Run]. Its methods are safe for concurrent use: each
// posts a request to the one goroutine that owns the state, and waits for
// the answer.
type Supervisor struct {
	cfg          Config
	log          *slog.Logger
	dir          *stateDir
	exeName      string // file name of Command's target: Releases/VERSION/exeName
	releasesReal string // --releases, absolute and with symlinks followed
	releasesAbs  string // --releases, absolute
	metrics      *metrics.Supervisor
	registry     *prometheus.Registry
	metricsLn    net.Listener // --metrics, bound by New; nil without it
	// scrapeCache serves a live worker's last counters in a scrape of
	// /metrics it misses (metrics.WorkerGatherer.Cache); owned by the
	// gatherer, which locks it.
	scrapeCache metrics.ScrapeCache
	fx          effects
	os          *osEffects // nil in tests that fake the effects
	loop        *loop
	first       release       // what the first generation runs
	started     chan struct{} // closed once the first generation serves or is adopted
	ran         chan struct{} // closed when Run has returned
	runOnce     sync.Once
}

// New checks cfg, takes the state directory and binds [Config.MetricsAddr]
// (an address in use is an error: `--metrics ADDR: listen tcp …`). Close it
// with Run's return or, if Run is never called, with [Supervisor.Close].
func New(cfg Config) (*Supervisor, error) {
	return newSupervisor(cfg, nil)
}

// newSupervisor is New with the effects given (nil: the real ones).
func newSupervisor(cfg Config, fx effects) (*Supervisor, error) {
	if err := cfg.check(); err != nil {
		return nil, &ConfigError{Err: err}
	}
	s := &Supervisor{
		cfg:      cfg,
		log:      cfg.Logger.With("supervisor", os.Getpid()),
		registry: prometheus.NewRegistry(),
		started:  make(chan struct{}),
		ran:      make(chan struct{}),
	}
	if cfg.Releases != "" {
		r, err := filepath.EvalSymlinks(cfg.Releases)
		if err != nil {
			return nil, &ConfigError{Err: fmt.Errorf("--releases %s: %w", cfg.Releases, err)}
		}
		if fi, err := os.Stat(r); err == nil && !fi.IsDir() {
			return nil, &ConfigError{Err: fmt.Errorf("--releases %s: not a directory", cfg.Releases)}
		}
		s.releasesReal, _ = filepath.Abs(r)
		s.releasesAbs, _ = filepath.Abs(cfg.Releases)
	}
	first, err := s.resolvePath(cfg.Command[0], "")
	if err != nil {
		return nil, fmt.Errorf("command: %w", err)
	}
	s.first = first
	s.exeName = filepath.Base(first.Path)
	if s.dir, err = openStateDir(cfg.StateDir); err != nil {
		return nil, err
	}
	if cfg.MetricsAddr != "" {
		// Bound before anything runs or logs: an address in use is bad
		// input, refused in one line and with nothing started.
		if s.metricsLn, err = net.Listen("tcp", cfg.MetricsAddr); err != nil {
			s.dir.close()
			return nil, fmt.Errorf("--metrics %s: %w", cfg.MetricsAddr, err)
		}
	}
	if fx == nil {
		s.os = newOSEffects(s.dir, cfg.Current, s.log)
		fx = s.os
	}
	s.fx = fx
	lcfg := cfg
	lcfg.Logger = s.log
	s.loop = newLoop(lcfg, fx, nil, s.dir.path, s.dir.adminSocket)
	s.metrics = metrics.NewSupervisor(cfg.Handover, func() []metrics.GenerationInfo {
		v, _ := ask(context.Background(), s.loop, (*loop).generationInfo)
		return v
	})
	s.loop.m = s.metrics
	memory := metrics.MemoryRSS
	if s.os != nil && s.os.cg.memory {
		memory = metrics.MemoryCurrent
	}
	s.registry.MustRegister(s.metrics, metrics.NewUsage(memory, s.usage))
	return s, nil
}

// Close releases the state directory, and removes the supervisor's
// cgroup if nothing is left in it. Run calls it on return.
func (s *Supervisor) Close() {
	if s.os != nil {
		s.os.close()
	}
	if s.metricsLn != nil {
		s.metricsLn.Close() // Run never served it; else closed already
	}
	s.dir.close()
}

// teardownWait bounds how long Run waits, once everything has stopped,
// for CLI connections to be answered (the stop's own reply among them).
const teardownWait = 5 * time.Second

// Run starts the first generation (or adopts the workers of a killed
// supervisor), serves the control socket and metrics, and returns when the
// supervisor has stopped: after [Supervisor.Stop], a `launcher stop`, or
// when ctx ends; each drains every generation first. It returns an error
// if the first generation cannot start. Every goroutine it starts has
// returned when it returns.
func (s *Supervisor) Run(ctx context.Context) (err error) {
	defer close(s.ran)
	defer s.Close()
	ln, err := net.Listen("unix", ControlSocket(s.dir.path))
	if err != nil {
		return fmt.Errorf("start: control socket: %w", err)
	}
	os.Chmod(ControlSocket(s.dir.path), 0o600)

	var actors sync.WaitGroup
	actorCtx, stopActors := context.WithCancel(context.Background())
	loopDone := make(chan struct{})
	actors.Add(1)
	go func() { defer actors.Done(); defer close(loopDone); s.loop.run(actorCtx) }()
	srv := &server{s: s, l: s.loop}
	actors.Add(1)
	go func() { defer actors.Done(); srv.serve(actorCtx, ln) }()
	defer func() {
		// Teardown, in order: no new connections; the answers of the
		// last commands (a stop's among them) written; then the rest.
		ln.Close()
		answered := make(chan struct{})
		go func() { srv.wg.Wait(); close(answered) }()
		select {
		case <-answered:
		case <-time.After(teardownWait):
		}
		stopActors()
		srv.wg.Wait()
		actors.Wait()
		s.loop.procs.Wait()
	}()
	if s.cfg.MetricsAddr != "" {
		defer s.serveMetrics().Close()
	}
	if s.os != nil {
		actors.Add(2)
		go func() { defer actors.Done(); s.os.notifier.keepAlive(actorCtx) }()
		// Orphans of the workers' children come to us, as to PID 1 in a
		// container: reap them.
		switch err := becomeSubreaper(); {
		case os.Getpid() == 1:
			s.log.Info("running as PID 1: reaping orphaned processes")
		case err != nil:
			s.log.Warn("cannot become a child subreaper; orphans go to init", "err", err)
		default:
			s.log.Info("child subreaper: reaping orphans of the workers' children")
		}
		r := reaper{log: s.log, notWorkers: func(pids []int) []int {
			out, _ := ask(actorCtx, s.loop, func(l *loop) []int { return l.notWorkers(pids) })
			return out
		}}
		go func() { defer actors.Done(); r.run(actorCtx) }()
	}

	req := newRequest(false)
	if !s.loop.post(cmdStart{first: s.first, req: req}) {
		return errStopped
	}
	if _, err := req.await(context.Background(), loopDone, nil); err != nil {
		s.stopLoop()
		if errors.Is(err, errAbortedByStop) || errors.Is(err, errStopped) {
			// Stopped while it started or adopted (launcher stop,
			// SIGTERM): a stop, which exits 0, or systemd's
			// Restart=on-failure would start again what the operator
			// just stopped.
			s.log.Info("stopped before serving")
			return nil
		}
		return fmt.Errorf("start: %w", err)
	}
	close(s.started)
	migrate, _ := reuseport.MigrateReq()
	s.log.Info("serving", "listen", s.cfg.Listen, "handover", s.cfg.Handover, "workers", s.cfg.Workers,
		"probation", s.cfg.Probation, "tcp_migrate_req", migrate)
	s.fx.notify("READY=1", "STATUS="+s.statusLine(), "MAINPID="+strconv.Itoa(os.Getpid()))
	select {
	case <-ctx.Done():
		s.stopLoop()
	case <-loopDone:
	}
	return nil
}

// stopLoop stops everything and waits for the loop to return.
func (s *Supervisor) stopLoop() {
	req := newRequest(false)
	if s.loop.post(cmdStop{req}) {
		<-s.loop.done
	}
}

// statusLine is the one-line status for systemd.
func (s *Supervisor) statusLine() string {
	line, err := ask(context.Background(), s.loop, (*loop).statusLine)
	if err != nil {
		return "stopped"
	}
	return line
}

// waitStarted waits until the supervisor has started or adopted its first
// generation: an upgrade asked for meanwhile is not "in progress" yet.
func (s *Supervisor) waitStarted(ctx context.Context) error {
	select {
	case <-s.started:
		return nil
	case <-s.loop.done:
		return errStopped
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Upgrade starts a new generation of the release named by arg ("" re-
// resolves the start command, a VERSION is looked up in Releases, a path is
// used as is), hands traffic to it once all its workers are ready, and
// tells the old generation to drain (after the probation, if any). It
// returns the [StepServes] step once the new generation serves; with wait,
// it returns once the probation has passed and the old generation has
// exited, or with an error if the new generation crashed in its probation
// and was rolled back. progress (if not nil) receives each step. On
// failure the old generation serves on untouched. A refused release wraps
// [ErrBadRelease]; an upgrade while another starts is
// [ErrUpgradeInProgress].
func (s *Supervisor) Upgrade(ctx context.Context, arg string, wait bool, progress func(Progress)) (Progress, error) {
	return s.UpgradeWith(ctx, arg, UpgradeOptions{Wait: wait}, progress)
}

// UpgradeWith is [Supervisor.Upgrade] with options: a canary (the new
// generation gets opts.Canary percent of new connections in turn, each
// for opts.CanaryInterval, before all of them and the probation). Bad
// canary options wrap [ErrBadCanary] and change nothing. Without
// opts.Wait a canary upgrade returns at its first step ([StepCanary]).
func (s *Supervisor) UpgradeWith(ctx context.Context, arg string, opts UpgradeOptions, progress func(Progress)) (Progress, error) {
	if err := checkCanary(opts.Canary, opts.CanaryInterval); err != nil {
		return Progress{}, fmt.Errorf("upgrade: %w", err)
	}
	// Resolved when asked, not once the first start is over: by then
	// --current points at the first generation's release again, and a
	// SIGHUP sent after repointing it to another would start that one
	// (a new user's trial).
	rel, err := s.resolve(arg)
	if err != nil {
		s.metrics.Upgrades.WithLabelValues("refused").Inc()
		s.realignCurrent()
		return Progress{}, fmt.Errorf("upgrade: %w", err)
	}
	// Posted at once: the loop holds an upgrade asked for before the
	// first generation serves, in the order asked (see releaseEarly).
	cmd := cmdUpgrade{rel: rel, req: newRequest(opts.Wait), opts: opts}
	if s.cfg.TicketKeyFile != "" {
		// Read here, off the loop: an operator rotates the keys by editing
		// the file, and a bad one refuses the upgrade, changing nothing.
		r, err := ticketkeys.ParseFile(s.cfg.TicketKeyFile, time.Now())
		if err != nil {
			s.metrics.Upgrades.WithLabelValues("refused").Inc()
			s.realignCurrent()
			return Progress{}, fmt.Errorf("upgrade: --tls-ticket-key-file: %w", err)
		}
		cmd.ticketFile = &r
	}
	if !s.loop.post(cmd) {
		return Progress{}, errStopped
	}
	return cmd.req.await(ctx, s.loop.done, progress)
}

// realignCurrent has the loop point --current at what serves again after
// an upgrade refused before it reached the loop: the operator may have
// repointed it to the refused release (see loop.realignCurrent).
func (s *Supervisor) realignCurrent() {
	s.loop.post(evFunc(func(l *loop) { l.realignCurrent() }))
}

// Rollback goes back to the release that was active before the current
// one. During a probation it gives traffic back to the standby generation
// at once ([StepRolledBack]); otherwise it is an upgrade to that release.
func (s *Supervisor) Rollback(ctx context.Context, wait bool, progress func(Progress)) (Progress, error) {
	if err := s.waitStarted(ctx); err != nil {
		return Progress{}, err
	}
	req := newRequest(wait)
	if !s.loop.post(cmdRollback{req}) {
		return Progress{}, errStopped
	}
	return req.await(ctx, s.loop.done, progress)
}

// Promote ends the running canary: all new connections go to the new
// generation, and its probation begins. It is an error when no canary
// runs.
func (s *Supervisor) Promote(ctx context.Context) (Progress, error) {
	if err := s.waitStarted(ctx); err != nil {
		return Progress{}, err
	}
	req := newRequest(false)
	if !s.loop.post(cmdPromote{req}) {
		return Progress{}, errStopped
	}
	return req.await(ctx, s.loop.done, nil)
}

// Stop drains every generation (an upgrade that is starting is aborted)
// and makes Run return. It returns once Run has returned, with every
// goroutine the supervisor started. If ctx ends first, whatever is still
// draining is killed and Stop returns ctx's error once it is gone.
func (s *Supervisor) Stop(ctx context.Context) error {
	err := s.stopAndWait(ctx, nil)
	if err != nil && ctx.Err() != nil {
		s.loop.post(evKillAll{})
	}
	<-s.ran
	return err
}

// stopAndWait asks the loop to stop and waits until everything has
// drained, not for Run's teardown: a CLI stop is answered in between.
func (s *Supervisor) stopAndWait(ctx context.Context, progress func(Progress)) error {
	req := newRequest(false)
	if !s.loop.post(cmdStop{req}) {
		return nil // already stopped
	}
	_, err := req.await(ctx, s.loop.done, progress)
	if errors.Is(err, errStopped) {
		return nil
	}
	return err
}

// serveMetrics serves the supervisor's and all workers' series.
func (s *Supervisor) serveMetrics() *http.Server {
	ln := s.metricsLn
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		// Stay within Prometheus's scrape timeout, so one hung worker costs
		// its own series, never the whole scrape.
		budget := metrics.DefaultScrapeTimeout
		if secs, err := strconv.ParseFloat(r.Header.Get("X-Prometheus-Scrape-Timeout-Seconds"), 64); err == nil && secs > 0 {
			budget = min(budget, time.Duration(secs*0.7*float64(time.Second)))
		}
		// The workers first: a scrape of them that fails is counted in
		// launcher_scrape_errors_total of this same answer, not the next.
		g := prometheus.Gatherers{s.workerGatherer(budget), s.registry}
		promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}).ServeHTTP(w, r)
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		ok, _ := ask(r.Context(), s.loop, func(l *loop) bool { return l.active != nil && l.active.state == StateActive })
		if !ok {
			http.Error(w, "no active generation", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln) // ends when Run closes srv
	return srv
}

// workerGatherer gathers the series of live workers, scraped within
// timeout, and the final series of exited ones.
func (s *Supervisor) workerGatherer(timeout time.Duration) metrics.WorkerGatherer {
	return metrics.WorkerGatherer{
		Targets: func() []metrics.Target {
			t, _ := ask(context.Background(), s.loop, (*loop).scrapeTargets)
			return t
		},
		Errors:  s.metrics.ScrapeErrors,
		Timeout: timeout,
		Scrape:  s.fx.scrape,
		Cache:   &s.scrapeCache,
	}
}
