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
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/launcherd/launcher/internal/control"
	"github.com/launcherd/launcher/metrics"
	"github.com/launcherd/launcher/reuseport"
)

// ErrUpgradeInProgress is returned when an upgrade, rollback or stop is
// asked for while another one runs.
var ErrUpgradeInProgress = errors.New("upgrade in progress")

// Supervisor runs generations of one service. Create it with [New] and
// call [Supervisor.Run].
type Supervisor struct {
	cfg          Config
	log          *slog.Logger
	dir          *stateDir
	exeName      string // file name of Command's target: Releases/VERSION/exeName
	releasesReal string // --releases, absolute and with symlinks followed
	releasesAbs  string // --releases, absolute
	metrics      *metrics.Supervisor
	registry     *prometheus.Registry
	notify       *notifier

	opMu     sync.Mutex // one upgrade, rollback or stop at a time
	spawnMu  sync.Mutex // guards spawned: a reaper must not reap a worker
	spawned  map[int]bool
	listenMu sync.Mutex // serialises listen grants, group changes and steering

	mu             sync.Mutex
	ctx            context.Context // the Run context, for restarts
	gens           []*generation
	lastGen        int // the newest generation's number
	active         *generation
	history        []release // releases that became active, oldest first
	workersByToken map[string]*worker
	group          reuseport.Group[*worker] // guarded by listenMu
	steered        bool                     // a program is attached; guarded by listenMu
	stopping       bool
	opCancel       context.CancelFunc // cancels the running upgrade
	stopped        chan struct{}
	restarts       map[*generation]*backoff
	started        chan struct{} // closed once the first generation serves or is adopted
	dirty          chan struct{} // the state file needs writing
	stateMu        sync.Mutex    // one snapshot-and-write of the state file at a time
	stateClosed    bool          // everything stopped: no state file any more
}

// New checks cfg and takes the state directory. Close it with Run's return
// or, if Run is never called, with [Supervisor.Close].
func New(cfg Config) (*Supervisor, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	for _, a := range cfg.Listen {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("--listen %q: %w", a, err)
		}
	}
	s := &Supervisor{
		cfg:            cfg,
		log:            cfg.Logger.With("supervisor", os.Getpid()),
		workersByToken: make(map[string]*worker),
		stopped:        make(chan struct{}),
		restarts:       make(map[*generation]*backoff),
		registry:       prometheus.NewRegistry(),
		notify:         newNotifier(),
		spawned:        make(map[int]bool),
		dirty:          make(chan struct{}, 1),
		started:        make(chan struct{}),
	}
	if cfg.Releases != "" {
		r, err := filepath.EvalSymlinks(cfg.Releases)
		if err != nil {
			return nil, fmt.Errorf("--releases %s: %w", cfg.Releases, err)
		}
		s.releasesReal, _ = filepath.Abs(r)
		s.releasesAbs, _ = filepath.Abs(cfg.Releases)
	}
	first, err := s.resolvePath(cfg.Command[0], "")
	if err != nil {
		return nil, fmt.Errorf("command: %w", err)
	}
	s.exeName = filepath.Base(first.Path)
	s.metrics = metrics.NewSupervisor(cfg.Handover, s.generationInfo)
	s.registry.MustRegister(s.metrics)
	if s.dir, err = openStateDir(cfg.StateDir); err != nil {
		return nil, err
	}
	return s, nil
}

// Close releases the state directory. Run calls it on return.
func (s *Supervisor) Close() { s.dir.close() }

// Run starts the first generation, serves the control socket and metrics,
// and returns when the supervisor has stopped (after [Supervisor.Stop] or
// when ctx ends: both drain every generation first). It returns an error if
// the first generation cannot start.
func (s *Supervisor) Run(ctx context.Context) error {
	defer s.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.mu.Lock()
	s.ctx = ctx
	s.mu.Unlock()

	ln, err := net.Listen("unix", ControlSocket(s.dir.path))
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	os.Chmod(ControlSocket(s.dir.path), 0o600)
	var wg sync.WaitGroup
	// Cancel before waiting: the actors below end with ctx.
	defer func() { cancel(); wg.Wait() }()
	defer ln.Close()
	wg.Add(1)
	go func() { defer wg.Done(); s.serveControl(ctx, ln) }()

	if s.cfg.MetricsAddr != "" {
		msrv, err := s.serveMetrics()
		if err != nil {
			s.stopAll(context.Background())
			return err
		}
		defer msrv.Close()
	}

	wg.Add(1)
	go func() { defer wg.Done(); s.notify.keepAlive(ctx) }()
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
	wg.Add(1)
	go func() { defer wg.Done(); reaper{s}.run(ctx) }()
	wg.Add(1)
	go func() { defer wg.Done(); s.saveState(ctx) }()

	// Upgrades wait for the start: the control socket already serves.
	s.opMu.Lock()
	adopted, err := s.adopt()
	if err != nil {
		s.opMu.Unlock()
		// Leave the state file: the workers it names still serve.
		return fmt.Errorf("start: %w", err)
	}
	if !adopted {
		if _, _, err := s.upgrade(ctx, "", func(string) {}); err != nil {
			s.opMu.Unlock()
			s.stopAll(context.Background())
			s.closeState()
			return fmt.Errorf("start: %w", err)
		}
	}
	s.opMu.Unlock()
	close(s.started)
	migrate, _ := reuseport.MigrateReq()
	s.log.Info("serving", "listen", s.cfg.Listen, "handover", s.cfg.Handover, "workers", s.cfg.Workers,
		"probation", s.cfg.Probation, "tcp_migrate_req", migrate)
	if err := s.notify.send("READY=1", "STATUS="+s.statusLine(), "MAINPID="+strconv.Itoa(os.Getpid())); err != nil {
		s.log.Warn("notify systemd", "err", err)
	}
	select {
	case <-ctx.Done():
		s.Stop(context.Background())
	case <-s.stopped:
	}
	return nil
}

// statusLine is the one-line status for systemd.
func (s *Supervisor) statusLine() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active == nil {
		return "no active generation"
	}
	return fmt.Sprintf("serving %s (generation %d, %d workers)", s.active.release.Version, s.active.num, len(s.active.workers))
}

// serveMetrics serves the supervisor's and all workers' series.
func (s *Supervisor) serveMetrics() (*http.Server, error) {
	ln, err := net.Listen("tcp", s.cfg.MetricsAddr)
	if err != nil {
		return nil, fmt.Errorf("--metrics %s: %w", s.cfg.MetricsAddr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		// Stay within Prometheus's scrape timeout, so one hung worker costs
		// its own series, never the whole scrape.
		budget := metrics.DefaultScrapeTimeout
		if secs, err := strconv.ParseFloat(r.Header.Get("X-Prometheus-Scrape-Timeout-Seconds"), 64); err == nil && secs > 0 {
			budget = min(budget, time.Duration(secs*0.7*float64(time.Second)))
		}
		g := prometheus.Gatherers{s.registry, metrics.WorkerGatherer{Targets: s.scrapeTargets, Errors: s.metrics.ScrapeErrors, Timeout: budget}}
		promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}).ServeHTTP(w, r)
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		ok := s.active != nil && s.active.state == StateActive
		s.mu.Unlock()
		if !ok {
			http.Error(w, "no active generation", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln) // ends when Run closes srv
	return srv, nil
}

// scrapeTargets lists the admin sockets of live workers with their labels.
func (s *Supervisor) scrapeTargets() []metrics.Target {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []metrics.Target
	for _, g := range s.gens {
		for _, w := range g.workers {
			if w.conn == nil || w.exitErr != nil || isClosed(w.exited) {
				continue
			}
			out = append(out, metrics.Target{Socket: w.admin, Generation: g.num, Version: g.release.Version, Worker: w.index})
		}
	}
	return out
}

// generationInfo reports each generation's state for the metrics.
func (s *Supervisor) generationInfo() []metrics.GenerationInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]metrics.GenerationInfo, 0, len(s.gens))
	for _, g := range s.gens {
		out = append(out, metrics.GenerationInfo{Generation: g.num, Version: g.release.Version, State: g.state})
	}
	return out
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// onExit records a reaped worker: its sockets left the reuseport group,
// and an unexpected exit of an active worker is restarted with back-off.
func (s *Supervisor) onExit(w *worker, err error) {
	s.mu.Lock()
	if err == nil {
		err = errors.New("exited with status 0")
	}
	w.exitErr = err
	delete(s.workersByToken, w.token)
	g := w.gen
	crash := !w.stopping && g.state == StateActive && !s.stopping
	if p := g.probation; crash && p != nil && p.standbyReady() && p.end(probationCrashed) {
		// Within its probation: no restart, traffic goes back to the
		// standby generation (watchProbation).
		p.crash = fmt.Sprintf("worker %d (pid %d) %v; stderr: %s", w.index, w.pid, err, w.tail.last(3))
		crash = false
	}
	allGone := true
	for _, o := range g.workers {
		if o != w && !isClosed(o.exited) {
			allGone = false
		}
	}
	if allGone && (g.state == StateDraining || (g.state == StateActive && s.stopping)) {
		g.state = StateExited
	}
	s.mu.Unlock()
	// Close exited before taking listenMu: an upgrade holding it may be
	// waiting for this worker's answer, and must learn of the exit.
	close(w.exited)
	os.Remove(w.admin)

	s.listenMu.Lock()
	left := w.listening
	if left {
		s.group.Leave(w)
		w.listening = false
	}
	s.listenMu.Unlock()
	s.markDirty()

	// The kernel moved the group's last socket into the freed slot.
	if left {
		s.resteer()
	}
	if crash {
		s.log.Warn("worker exited; restarting", "generation", g.num, "version", g.release.Version,
			"worker", w.index, "pid", w.pid, "err", err, "stderr", w.tail.last(3))
		s.scheduleRestart(g, w.index)
	}
}

// resteer points the reuseport groups at the ready workers of the active
// generation. It is a no-op for the close strategy.
func (s *Supervisor) resteer() error {
	if s.cfg.Handover != HandoverSteer {
		return nil
	}
	s.listenMu.Lock()
	defer s.listenMu.Unlock()
	return s.resteerLocked()
}

func (s *Supervisor) resteerLocked() error {
	s.mu.Lock()
	active := s.active
	slots := s.group.Slots(func(w *worker) bool { return w.gen == active && w.ready })
	s.mu.Unlock()
	if len(slots) == 0 {
		return nil
	}
	switch err := s.steerLocked(slots); {
	case errors.Is(err, errNoAgent):
		return nil
	case err != nil:
		return fmt.Errorf("steer to %v: %w", slots, err)
	}
	s.steered = true
	s.log.Debug("steered", "slots", slots, "group", s.group.Len())
	return nil
}

// errNoAgent: no worker of the group is connected to carry a steer.
var errNoAgent = errors.New("no connected worker in the reuseport group")

// steerLocked attaches a program steering to slots, through a connected
// member of the group: one of the active generation when there is one.
// The caller holds listenMu.
func (s *Supervisor) steerLocked(slots []int) error {
	s.mu.Lock()
	var agent *worker
	for _, w := range s.group.Members() {
		if w.conn != nil && (agent == nil || w.gen == s.active) {
			agent = w
		}
	}
	s.mu.Unlock()
	if agent == nil {
		return errNoAgent
	}
	return s.request(agent, control.Message{Type: control.TypeSteer, Slots: slots}, control.TypeSteered, 5*time.Second)
}

// request sends m to w and waits for its reply of type want.
func (s *Supervisor) request(w *worker, m control.Message, want string, timeout time.Duration) error {
	s.mu.Lock()
	conn := w.conn
	s.mu.Unlock()
	if conn == nil {
		return fmt.Errorf("worker %d of generation %d is not connected", w.index, w.gen.num)
	}
	// Drop a stale reply left by an earlier request that timed out.
	select {
	case <-w.replies:
	default:
	}
	if err := conn.Write(m); err != nil {
		return err
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r := <-w.replies:
		if r.Type != want {
			return fmt.Errorf("worker answered %s, want %s", r.Type, want)
		}
		if r.Error != "" {
			return errors.New(r.Error)
		}
		return nil
	case <-w.exited:
		return fmt.Errorf("worker %d (pid %d) exited", w.index, w.pid)
	case <-t.C:
		return fmt.Errorf("worker %d (pid %d) did not answer %s within %s", w.index, w.pid, m.Type, timeout)
	}
}

// signalAll sends sig to every live worker.
func (s *Supervisor) signalAll(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range s.gens {
		for _, w := range g.workers {
			w.signal(sig)
		}
	}
}
