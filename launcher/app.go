package launcher

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/launcherd/launcher/drain"
	"github.com/launcherd/launcher/internal/control"
	"github.com/launcherd/launcher/internal/ticketkeys"
	"github.com/launcherd/launcher/metrics"
	"github.com/launcherd/launcher/reuseport"
)

// ErrNotListening is returned by [App.Ready] before [App.Listen] succeeded.
var ErrNotListening = errors.New("launcher: Ready before Listen")

// ErrNotSupported is returned, wrapped, by [New] and [App.Listen] on
// systems other than Linux: the launcher steers the kernel's reuseport
// group and reads its accept queues, which only Linux offers. The package
// builds on macOS and Windows so that an app importing it builds on a
// developer's laptop; test with errors.Is. It is [reuseport.ErrNotSupported].
var ErrNotSupported = reuseport.ErrNotSupported

// App is one process of a service run by the launcher (or alone). Create
// it with [New]; it is safe for concurrent use.
type App struct {
	opts       Options
	log        *slog.Logger
	generation int
	version    string
	worker     int
	addrs      []string
	adminPath  string
	handoff    bool // started by a standalone parent's SIGHUP
	// serving: Run or Serve was called (an App serves once); guarded by mu.
	serving bool

	tracker *drain.Tracker
	metrics *metrics.Worker
	reg     *prometheus.Registry

	grants   chan control.Message // grant or fail from the supervisor
	stopping chan struct{}        // closed once the listeners are released
	stopOnce sync.Once
	// drainTimeout in ms, set by the supervisor's release message.
	drainTimeout atomic.Int64
	readerEnd    chan struct{}  // closed when the control reader returns
	closing      chan struct{}  // closed by Close: stops dialing a lost supervisor again
	controlPath  string         // the supervisor's control socket, "" standalone
	token        string         // proves to the supervisor that this is its worker
	sigpipe      chan os.Signal // SIGPIPE caught, never read: see New

	// collected is closed when the supervisor has read the final metrics
	// (control.TypeCollected).
	collected     chan struct{}
	collectedOnce sync.Once

	mu      sync.Mutex
	ctl     *control.Conn // nil when standalone or between supervisors
	ctlLost chan struct{} // closed once ctl is lost
	// supCaps is what the supervisor on ctl does (its welcome's Caps).
	supCaps    []string
	supervised bool // started by a supervisor, even if it is gone
	lns        []*net.TCPListener
	// early: lns were bound at the welcome, which granted the listen
	// (control.CapWelcomeGrant), and Listen has not handed them out yet;
	// earlyErr is that listen's error, for Listen to return.
	early    bool
	earlyErr error
	// handshakes under way on each listener's port when it was first
	// quiesced or released, i.e. steered away from; see quietOptions.
	handshakes map[*net.TCPListener]*reuseport.Handshakes
	released   bool      // the listeners are closed: the drain has begun
	stoppedAt  time.Time // when Stopping was closed: the drain deadline counts from then
	admin      io.Closer
	ready      bool
	// checkedReady: a healthy ready went out to a standalone parent that
	// is handing over; if that parent then goes away, this process takes
	// the port over (see serveControl).
	checkedReady bool
	closed       bool
	// caught, when Serve reports ready before it catches the signals,
	// is closed once it has caught them (see readyAndCatch).
	caught chan struct{}
	// pidFileOwned: this process wrote the pid file and has not handed it
	// on to a new process by a SIGHUP handover; see removePIDFile.
	pidFileOwned bool
	// tickets are the TLS session-ticket keys (the supervisor's, or this
	// process's own when standalone), applied to ticketCfgs.
	tickets    ticketkeys.Ring
	ticketCfgs []*tls.Config
}

// New returns an App configured from opts and, under a supervisor, from
// the environment it set. Under a supervisor it connects to the control
// socket at once, so a broken setup fails here. On systems other than
// Linux it returns [ErrNotSupported].
func New(opts Options) (*App, error) {
	if err := checkPlatform("New"); err != nil {
		return nil, err
	}
	opts.setDefaults()
	a := &App{
		opts:      opts,
		version:   os.Getenv(control.EnvVersion),
		adminPath: os.Getenv(control.EnvAdmin),
		handoff:   os.Getenv(control.EnvHandoff) == "1",
		tracker:   drain.NewTracker(),
		grants:    make(chan control.Message, 1),
		stopping:  make(chan struct{}),
		readerEnd: make(chan struct{}),
		closing:   make(chan struct{}),
		collected: make(chan struct{}),
		token:     os.Getenv(control.EnvToken),
	}
	if a.version == "" {
		a.version = opts.Version
	}
	a.generation, _ = strconv.Atoi(os.Getenv(control.EnvGeneration))
	if a.generation == 0 {
		a.generation = 1 // standalone: the first process is generation 1
	}
	a.worker, _ = strconv.Atoi(os.Getenv(control.EnvWorker))
	listen := os.Getenv(control.EnvListen)
	if listen == "" {
		listen = opts.Addr
	}
	for _, s := range strings.Split(listen, ",") {
		if s = strings.TrimSpace(s); s != "" {
			a.addrs = append(a.addrs, s)
		}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	a.log = log.With("generation", a.generation, "version", a.version, "worker", a.worker, "pid", os.Getpid())
	a.metrics = metrics.NewWorker(a.tracker)
	a.reg = prometheus.NewRegistry()
	a.reg.MustRegister(a.metrics)

	// The admin socket is set up while the hello makes its round trip
	// through the supervisor: both are on a new worker's way to serving,
	// and neither needs the other.
	type adminResult struct {
		closer io.Closer
		err    error
	}
	var admin chan adminResult
	if a.adminPath != "" {
		admin = make(chan adminResult, 1)
		go func() { // owned by New: read below before it returns
			closer, err := a.serveAdmin(a.adminPath)
			admin <- adminResult{closer, err}
		}()
	}
	if path := os.Getenv(control.EnvControl); path != "" {
		a.controlPath = path
		// stderr is a pipe to the supervisor. Should it be killed, a
		// write there must fail (EPIPE) rather than kill this process
		// with SIGPIPE: the workers serve on without a supervisor.
		a.sigpipe = make(chan os.Signal, 1)
		// The hello's codec built, and SIGPIPE caught, while the hello
		// is dialed: both are first-use costs of a fresh process
		// (encoding/json builds a type's codec at its first use; the
		// first signal caught starts the runtime's signal thread, with a
		// round trip to it), and the dial is another one. The codec
		// first: the hello's encoding waits for it right after the dial,
		// while SIGPIPE need only be caught before connect returns.
		warm := make(chan struct{})
		go func() { // owned by New: connect waits for it
			defer close(warm)
			control.Warm()
			signal.Notify(a.sigpipe, syscall.SIGPIPE)
		}()
		if err := a.connect(path, warm); err != nil {
			if admin != nil {
				if r := <-admin; r.closer != nil {
					r.closer.Close()
				}
			}
			return nil, err
		}
	} else {
		close(a.readerEnd)
		a.makeTicketKeys()
	}
	// After connect: the supervisor's keys may be in already.
	a.shareTicketKeys(opts.TLS)
	if admin != nil {
		r := <-admin
		if r.err != nil {
			a.Close()
			return nil, r.err
		}
		a.mu.Lock()
		a.admin = r.closer
		a.mu.Unlock()
	}
	return a, nil
}

// Supervised reports whether a supervisor (or a standalone parent handing
// over) runs this process.
func (a *App) Supervised() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.supervised
}

// Generation returns the generation number: the supervisor's, or when
// standalone 1 for the first process and one more after each SIGHUP
// handoff.
func (a *App) Generation() int { return a.generation }

// Version returns the release label the supervisor gave, or standalone
// [Options.Version].
func (a *App) Version() string { return a.version }

// Logger returns the App's logger, with generation, version and pid fields.
func (a *App) Logger() *slog.Logger { return a.log }

// Tracker returns the tracker counting this process's requests and
// connections; use it to build a drain.Server or drain.Listener.
func (a *App) Tracker() *drain.Tracker { return a.tracker }

// Observer returns the request-path metrics, for drain.Server.Observer.
func (a *App) Observer() drain.Observer { return a.metrics }

// connect dials the control socket and says hello, again at an older
// version if the supervisor speaks only that (see [control.Negotiate]).
// It waits for warm to close before it returns: nothing may write to
// stderr (a pipe to the supervisor) before SIGPIPE is caught.
func (a *App) connect(path string, warm <-chan struct{}) error {
	defer func() { <-warm }()
	var ctl *control.Conn
	m, err := control.Negotiate(a.hello(), func(hello control.Message) (control.Message, error) {
		c, err := net.DialTimeout("unix", path, 5*time.Second)
		if err != nil {
			return control.Message{}, fmt.Errorf("connect to supervisor at %s: %w", path, err)
		}
		conn := control.NewConn(c)
		var m control.Message
		err = conn.Write(hello)
		if err == nil {
			m, err = conn.Read(time.Now().Add(10 * time.Second))
		}
		if err != nil || m.Type != control.TypeWelcome {
			c.Close()
			if err != nil {
				err = fmt.Errorf("handshake with supervisor: %w", err)
			}
			return m, err
		}
		ctl = conn
		return m, nil
	})
	if err == nil && m.Type != control.TypeWelcome {
		err = fmt.Errorf("handshake with supervisor: refused: %s", m.Error)
	}
	if err != nil {
		return fmt.Errorf("launcher: %w", err)
	}
	a.setCtl(ctl, m)
	a.supervised = true
	if control.HasCap(m.Caps, control.CapWelcomeGrant) {
		a.listenAtWelcome(ctl)
	}
	<-warm
	go a.readControl(ctl) // owned by the App: ends when Close closes the connection
	return nil
}

// listenAtWelcome binds every listen address at once, the welcome having
// granted it (control.CapWelcomeGrant): the supervisor holds every other
// change of the reuseport group until this one is reported, so it is not
// left for the app's call of Listen, which may come late. The sockets get
// no connection before they are ready and steered to; Listen hands them
// out, or returns the error.
func (a *App) listenAtWelcome(ctl *control.Conn) {
	lns, err := a.bind(context.Background())
	if err != nil {
		ctl.Write(control.Message{Type: control.TypeFail, Error: err.Error()})
	} else if werr := ctl.Write(control.Message{Type: control.TypeListening}); werr != nil {
		err = fmt.Errorf("report listening: %w", werr)
	}
	a.mu.Lock()
	a.lns, a.early, a.earlyErr = lns, true, err
	a.mu.Unlock()
}

// bind listens on every listen address with SO_REUSEPORT, or on none.
func (a *App) bind(ctx context.Context) ([]*net.TCPListener, error) {
	var lns []*net.TCPListener
	for _, addr := range a.addrs {
		ln, err := reuseport.Listen(ctx, addr)
		if err != nil {
			for _, ln := range lns {
				ln.Close()
			}
			return nil, err
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// setCtl makes ctl, welcomed by welcome, the connection to the supervisor.
// The caller holds a.mu once other goroutines run.
func (a *App) setCtl(ctl *control.Conn, welcome control.Message) {
	a.ctl, a.ctlLost, a.supCaps = ctl, make(chan struct{}), welcome.Caps
}

// dropCtl forgets ctl, if it is still the connection to the supervisor.
// The caller holds a.mu.
func (a *App) dropCtl(ctl *control.Conn) {
	if a.ctl == ctl && ctl != nil {
		a.ctl = nil
		close(a.ctlLost)
	}
}

// hello is this worker's handshake at the first version to try: the
// newest, or handoffVersion when a standalone parent started this process.
// The caller holds a.mu once other goroutines run.
func (a *App) hello() control.Message {
	v := control.Version
	if a.handoff {
		v = handoffVersion
	}
	return control.Message{
		Type: control.TypeHello, Version: v, Role: control.RoleWorker,
		Generation: a.generation, Worker: a.worker, PID: os.Getpid(),
		Token: a.token, Caps: control.WorkerCaps(),
	}
}

// Listen binds every listen address with SO_REUSEPORT. Under a supervisor
// it first waits for the supervisor's grant, so that the supervisor knows
// each socket's place in the kernel's reuseport group (a standalone parent
// handing over grants it in its welcome: control.CapListenFree). A
// supervisor that grants it with its welcome (control.CapWelcomeGrant)
// had the sockets bound in New then, steered away from until ready:
// Listen returns them, or the error of that listen. A process
// started alone steers each group to its own socket (reuseport.Steer), so
// that a process a SIGHUP starts later gets no connection before the
// handover. On systems other than Linux it returns [ErrNotSupported].
func (a *App) Listen(ctx context.Context) ([]net.Listener, error) {
	if err := checkPlatform("Listen"); err != nil {
		return nil, err
	}
	a.mu.Lock()
	ctl, handoff, alone := a.ctl, a.handoff, a.ctl == nil && !a.supervised
	ask := ctl != nil && !control.HasCap(a.supCaps, control.CapListenFree)
	if a.early {
		// Bound at the welcome, which granted the listen.
		lns, err := a.lns, a.earlyErr
		a.early, a.earlyErr = false, nil
		a.mu.Unlock()
		if err != nil {
			return nil, fmt.Errorf("launcher: %w", err)
		}
		return a.handOut(lns, true, handoff), nil
	}
	if len(a.lns) > 0 || a.earlyErr != nil {
		a.mu.Unlock()
		return nil, errors.New("launcher: Listen called twice")
	}
	a.mu.Unlock()
	if ask {
		if err := ctl.Write(control.Message{Type: control.TypeListen}); err != nil {
			return nil, fmt.Errorf("launcher: ask to listen: %w", err)
		}
		select {
		case m := <-a.grants:
			if m.Type != control.TypeGrant {
				return nil, fmt.Errorf("launcher: listen refused: %s", m.Error)
			}
		case <-a.readerEnd:
			return nil, errors.New("launcher: supervisor went away before granting listen")
		case <-ctx.Done():
			return nil, fmt.Errorf("launcher: wait for listen grant: %w", ctx.Err())
		}
	}
	lns, err := a.bind(ctx)
	if err != nil {
		if ctl != nil {
			ctl.Write(control.Message{Type: control.TypeFail, Error: err.Error()})
		}
		return nil, err
	}
	if alone {
		// Alone on the port: steer the group to this socket, so that a
		// process a later SIGHUP starts gets no connection before it is
		// ready and steered to (the kernel's hash would give it its share
		// from its listen on, and its kill, if it fails, would reset them).
		for _, ln := range lns {
			if err := reuseport.Steer(ln, []int{0}); err != nil {
				a.log.Warn("steer to this process", "err", err)
			}
		}
	}
	a.mu.Lock()
	a.lns = lns
	a.mu.Unlock()
	if ctl != nil {
		if err := ctl.Write(control.Message{Type: control.TypeListening}); err != nil {
			return nil, fmt.Errorf("launcher: report listening: %w", err)
		}
	}
	return a.handOut(lns, ctl != nil, handoff), nil
}

// handOut returns lns as Listen does, and logs them.
func (a *App) handOut(lns []*net.TCPListener, supervised, handoff bool) []net.Listener {
	out := make([]net.Listener, len(lns))
	for i, ln := range lns {
		out[i] = ln
	}
	// A process started by a standalone parent's SIGHUP talks to that
	// parent, not to a supervisor.
	a.log.Info("listening", "addrs", a.addrs, "supervised", supervised && !handoff, "handoff", handoff)
	return out
}

// Ready tells the supervisor this process serves; call it after Listen and
// any warm-up. Under a supervisor it runs Options.Health first and reports
// a failure with the ready, and the supervisor does not steer to this
// generation. Standalone, it writes the pid file.
func (a *App) Ready() error {
	a.mu.Lock()
	if len(a.lns) == 0 || a.early {
		a.mu.Unlock()
		return ErrNotListening
	}
	a.ready = true
	ctl, handoff, supervised, caps := a.ctl, a.handoff, a.supervised, a.supCaps
	a.mu.Unlock()
	if supervised && ctl == nil && !handoff {
		return errors.New("launcher: the supervisor went away before this process was ready")
	}
	if ctl != nil || handoff {
		ready := control.Message{Type: control.TypeReady}
		// The supervisor takes this ready as checked: check first, as
		// /healthz would (a failure ends the upgrade, as there).
		if h := a.opts.Health; h != nil && (control.HasCap(caps, control.CapReadyHealth) || ctl == nil) {
			if err := h(); err != nil {
				ready.Error = err.Error()
			}
		}
		err := errors.New("the connection is gone")
		if ctl != nil {
			err = ctl.Write(ready)
		}
		if err == nil {
			if !handoff || ready.Error != "" {
				return nil
			}
			// The parent may have gone since: the control reader, which
			// saw it, left the takeover to this (under a.mu, one of the
			// two sees the other).
			a.mu.Lock()
			a.checkedReady = true
			gone := a.ctl != ctl
			a.mu.Unlock()
			if gone {
				a.log.Warn("the process handing over went away; serving alone")
				go a.serveAlone() // ends once the signals are caught (readyAndCatch) and the pid file written
			}
			return nil
		}
		if !handoff {
			return fmt.Errorf("launcher: report ready: %w", err)
		}
		// The process handing over died before this one was ready: it
		// serves alone once healthy, the port being its own now.
		if ready.Error != "" {
			return fmt.Errorf("launcher: the process handing over went away, and this one fails its health check: %s", ready.Error)
		}
		a.log.Warn("the process handing over went away before this one was ready; serving alone", "err", err)
		go a.serveAlone() // ends once the signals are caught (readyAndCatch) and the pid file written
		return nil
	}
	if !handoff {
		return a.writePIDFile()
	}
	return nil
}

// Stopping returns a channel closed when this process has stopped
// accepting (its listeners are released, lossless) and must drain: finish
// in-flight work and exit.
func (a *App) Stopping() <-chan struct{} { return a.stopping }

// Close releases the App's control connection and admin socket. It does
// not close listeners still open, a drain does, except those bound at the
// supervisor's welcome that Listen never handed out.
func (a *App) Close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	ctl, admin := a.ctl, a.admin
	var unused []*net.TCPListener // bound at the welcome, never handed out
	if a.early {
		unused, a.lns, a.early = a.lns, nil, false
	}
	a.mu.Unlock()
	for _, ln := range unused {
		ln.Close()
	}
	close(a.closing)
	if ctl != nil {
		ctl.Close()
	}
	if admin != nil {
		admin.Close()
	}
	<-a.readerEnd
	return nil
}

func (a *App) markStopping() {
	a.stopOnce.Do(func() {
		a.mu.Lock()
		a.stoppedAt = time.Now()
		a.mu.Unlock()
		close(a.stopping)
	})
}

func (a *App) listeners() []*net.TCPListener {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*net.TCPListener(nil), a.lns...)
}

// writePIDFile writes the pid file atomically, so a reader never sees a
// half-written pid.
func (a *App) writePIDFile() error {
	if a.opts.PIDFile == "" {
		return nil
	}
	tmp := a.opts.PIDFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return fmt.Errorf("launcher: pid file: %w", err)
	}
	if err := os.Rename(tmp, a.opts.PIDFile); err != nil {
		return fmt.Errorf("launcher: pid file: %w", err)
	}
	a.mu.Lock()
	a.pidFileOwned = true
	a.mu.Unlock()
	return nil
}

// disownPIDFile marks the pid file as the new process's: a SIGHUP
// handover calls it before it tells that process the port is its own,
// whereupon the new process rewrites the file.
func (a *App) disownPIDFile() {
	a.mu.Lock()
	a.pidFileOwned = false
	a.mu.Unlock()
}

// removePIDFile removes the pid file at the end of a clean drain if this
// process wrote it, did not hand it on, and it still holds this process's
// pid: a stale pid would leave kill -HUP $(cat PIDFILE) to a dead process
// or, once the kernel reuses the pid, to another one. The contents are
// checked too, since anyone (another instance, an operator) may have
// written the file since. A handover cannot complete once this process
// has stopped accepting (its listeners are closed), so none races this.
func (a *App) removePIDFile() {
	a.mu.Lock()
	owned := a.pidFileOwned
	a.mu.Unlock()
	if !owned || a.opts.PIDFile == "" {
		return
	}
	b, err := os.ReadFile(a.opts.PIDFile)
	if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(os.Getpid()) {
		return
	}
	if err := os.Remove(a.opts.PIDFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		a.log.Warn("remove pid file", "err", err)
	}
}
