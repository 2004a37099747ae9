package launcher

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/launcherd/launcher/drain"
	"github.com/launcherd/launcher/internal/control"
)

// Stop stops accepting without losing a queued connection (each
// listener's accept queue is emptied first; keep accepting meanwhile) and
// closes [App.Stopping], so the app drains. Run calls it on SIGTERM; an app
// that does not use Run calls it from its own signal handling, or lets
// [App.Wait] do so.
func (a *App) Stop() {
	a.release(0, false, false)
	a.markStopping()
}

// Run serves h on every listen address until the process is told to stop
// (the supervisor releases it, a signal, or ctx ends), then drains and
// returns. It listens, reports ready, and handles signals: SIGTERM and
// SIGINT drain and return; SIGHUP, when no supervisor runs the process,
// starts the executable again and hands the port over to it. It serves
// HTTPS when [Options.TLS] is set.
//
// Run returns nil once the drain is over, also when the drain was cut at
// its deadline (the supervisor's --drain-timeout, else
// [Options.DrainTimeout]): the connections left are closed, and the
// [drain.ErrCut] is not returned but logged with its counts and reported
// to the supervisor, which adds them to launcher_drain_cut_requests_total.
// Under a supervisor that serves the final metrics of exited workers, Run
// returns once it has read them after the drain, at most 2 s later.
// Run returns an error when listening, reporting ready or serving fails,
// or when the drain fails otherwise.
//
// Run is [App.Serve] with an http.Server that has h, a 30 s
// ReadHeaderTimeout, Options.TLS and, with Options.H2C, h2c; use Serve to
// set more.
func (a *App) Run(ctx context.Context, h http.Handler) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 30 * time.Second,
		TLSConfig:         a.opts.TLS,
	}
	if a.opts.H2C {
		// net/http's documented switch for h2c with prior knowledge; the
		// drain package serves such connections with its own GOAWAY.
		p := new(http.Protocols)
		p.SetHTTP1(true)
		p.SetHTTP2(true)
		p.SetUnencryptedHTTP2(true)
		srv.Protocols = p
	}
	return a.Serve(ctx, srv)
}

// Serve is [App.Run] with a server the caller configured: its Handler,
// timeouts, ErrorLog (nil means the App's logger, at level WARN), TLSConfig
// (when set, Serve serves TLS, and HTTP/2 unless TLSConfig.NextProtos
// says otherwise; it must hold the certificate: Certificates or
// GetCertificate), ConnContext, BaseContext and so on are kept. Its Addr
// is not used: the App's listen addresses are. Serve wraps the server's
// Handler and ConnState to count requests and connections (as
// [drain.Server] does), so srv must not be started elsewhere or reused.
// Options.TLS and Options.H2C are Run's and do not apply to Serve: set
// srv.TLSConfig, or srv.Protocols with SetUnencryptedHTTP2 for h2c; the
// drain gives those connections the same two-phase GOAWAY.
//
// It listens, reports ready, handles signals as Run does, drains the
// server when the process must stop, reports the drain, and returns;
// its errors are Run's.
func (a *App) Serve(ctx context.Context, srv *http.Server) error {
	a.mu.Lock()
	twice := a.serving
	a.serving = true
	a.mu.Unlock()
	if twice {
		// Not Close's: the first call's listeners serve on (and
		// "Listen called twice" named a call the app never made).
		return errors.New("launcher: Run or Serve called twice: an App serves once")
	}
	defer a.Close()
	if srv.ErrorLog == nil {
		srv.ErrorLog = slog.NewLogLogger(a.log.Handler(), slog.LevelWarn)
	}
	tlsConfig := a.tlsConfigFor(srv)
	lns, err := a.Listen(ctx)
	if err != nil {
		return err
	}
	ds := &drain.Server{
		HTTP:      srv,
		Tracker:   a.tracker,
		IdleGrace: a.opts.IdleGrace,
		Observer:  a.metrics,
	}
	serveErr := make(chan error, len(lns))
	for _, ln := range lns {
		go func() { // owned by Serve: ends when the drain closes ln, and is waited for below
			if tlsConfig != nil {
				serveErr <- ds.ServeTLS(ln, "", "")
				return
			}
			serveErr <- ds.Serve(ln)
		}()
	}
	sigs, err := a.readyAndCatch()
	if sigs != nil {
		defer signal.Stop(sigs)
	}
	if err != nil {
		return err
	}
	served, err := a.wait(ctx, sigs, serveErr)
	if err != nil {
		return fmt.Errorf("launcher: serve: %w", err)
	}

	start := time.Now()
	st := a.tracker.Stats()
	dctx, cancel := a.DrainContext(context.Background())
	defer cancel()
	deadline, _ := dctx.Deadline()
	a.log.Info("draining", "inflight", st.InflightRequests, "connections", st.OpenConnections, "timeout", time.Until(deadline).Round(time.Millisecond))
	err = ds.Drain(dctx)
	for ; served < len(lns); served++ {
		<-serveErr
	}
	if err != nil && !errors.Is(err, drain.ErrCut) {
		return fmt.Errorf("launcher: drain: %w", err)
	}
	a.drainEnded(err, time.Since(start))
	return nil
}

// drainEnded reports the end of a drain whose Drain returned err (nil, or
// a *drain.CutError) after d (0: not timed): logged, told to the
// supervisor, and the pid file removed.
func (a *App) drainEnded(err error, d time.Duration) {
	var cut *drain.CutError
	switch {
	case errors.As(err, &cut):
		a.log.Warn("drain cut at its deadline", "requests_cut", cut.Requests, "connections_cut", cut.Connections)
		a.reportDrained(control.Message{Type: control.TypeDrained, Cut: cut.Requests, CutConns: int64(cut.Connections), Error: "drain deadline"})
	case err != nil:
		// Not a cut: what it lost is not known here; said, not counted.
		a.log.Warn("drain ended with an error", "err", err)
		a.reportDrained(control.Message{Type: control.TypeDrained})
	default:
		if d > 0 {
			a.log.Info("drained", "after", d.Round(time.Millisecond))
		} else {
			a.log.Info("drained")
		}
		a.reportDrained(control.Message{Type: control.TypeDrained})
	}
	a.removePIDFile()
}

// ReportDrain is [App.Drained] for the result of a [drain.Listener]'s or
// [drain.Server]'s Drain: nil reports a drain that cut nothing; a
// [*drain.CutError] (errors.Is(err, drain.ErrCut)) reports the requests
// and the connections it cut at the deadline, as Run does, which
// Drained(cut) cannot (a new user's trial: 4 connections cut, 0 requests,
// reported as a clean drain). Another error is logged and reported as a
// drain that cut nothing. Call it once, instead of Drained.
func (a *App) ReportDrain(err error) { a.drainEnded(err, 0) }

// readyAndCatch reports ready and catches the signals wait handles, in
// the order that keeps the ready off the signals' path: catching them
// takes a round trip to the runtime's signal thread for each (0.1-0.3 ms
// in all on a fresh process).
//
// Alone, the signals are caught first: Ready writes the pid file, and a
// kill -HUP by a script that read it must not meet SIGHUP's default action
// (exit) in the moment before wait. Under a supervisor, or a standalone
// parent handing over, the ready goes out first; nobody signals such a
// process before it was steered to, and the pid file that a handover
// leaves it is written once these signals are caught (finishHandoff
// waits for it).
func (a *App) readyAndCatch() (chan os.Signal, error) {
	if !a.Supervised() {
		sigs := notifySignals()
		return sigs, a.Ready()
	}
	a.mu.Lock()
	caught := make(chan struct{})
	a.caught = caught
	a.mu.Unlock()
	defer close(caught)
	if err := a.Ready(); err != nil {
		return nil, err
	}
	return notifySignals(), nil
}

// tlsConfigFor returns the TLS config srv is to serve with, nil for plain
// HTTP. It is the single place where the App adds to a server's TLS
// config: the supervisor's shared session-ticket keys go in here.
func (a *App) tlsConfigFor(srv *http.Server) *tls.Config {
	if srv.TLSConfig == nil {
		return nil
	}
	a.shareTicketKeys(srv.TLSConfig)
	return srv.TLSConfig
}

// Wait handles signals as [App.Run] does until this process must drain,
// for a server that is not Run's: SIGTERM and SIGINT, or ctx ending, call
// [App.Stop]; SIGHUP, when no supervisor runs the process, starts the
// executable again and hands the listeners over to it. It returns when
// [App.Stopping] is closed (the supervisor released the listeners, or
// Stop or a handover did); the server then drains within
// [App.DrainContext] and reports with [App.Drained]. Call it right after
// [App.Ready]: until Wait runs, the signals keep their default actions.
func (a *App) Wait(ctx context.Context) {
	sigs := notifySignals()
	defer signal.Stop(sigs)
	a.wait(ctx, sigs, nil)
}

// notifySignals returns a channel that receives the signals wait handles;
// the caller stops it (signal.Stop) when done.
func notifySignals() chan os.Signal {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	return sigs
}

// wait is Wait on sigs, returning early with the first error from
// serveErr (a nil error counts as a server that returned, as its listener
// closed). It returns how many values it took from serveErr.
func (a *App) wait(ctx context.Context, sigs <-chan os.Signal, serveErr <-chan error) (served int, err error) {
	handover := make(chan error, 1)
	handing := false
	// A handover under way when this process stops is given up: its new
	// process (and what that started) is killed, and its files removed,
	// before wait returns and the process drains and exits; otherwise they
	// outlived it.
	hctx, giveUp := context.WithCancel(ctx)
	defer func() {
		giveUp()
		if handing {
			if err := <-handover; err != nil {
				a.log.Info("handover given up: this process stops", "err", err)
			}
		}
	}()
	// Once told to stop, the process stops: a handover under way is given
	// up at once (else its new process, ready within milliseconds, would
	// outlive a SIGTERM sent right after a SIGHUP, serving on), and a
	// SIGHUP that comes after is ignored, whatever order the two signals
	// are taken in.
	stopping := false
	stop := func() {
		if !stopping {
			stopping = true
			giveUp()
			go a.Stop() // ends with Stopping closed
		}
	}
	done := ctx.Done()
	for {
		select {
		case <-a.Stopping():
			return served, nil
		case <-done:
			done = nil
			stop()
		case sig := <-sigs:
			switch {
			case sig != syscall.SIGHUP:
				a.log.Info("signal: draining", "signal", sig.String())
				stop()
			case a.Supervised():
				a.log.Info("SIGHUP ignored: the supervisor upgrades (launcher upgrade)")
			case stopping:
				a.log.Info("SIGHUP ignored: this process is stopping")
			case handing:
				a.log.Info("SIGHUP ignored: a handover is in progress")
			default:
				handing = true
				go func() { handover <- a.handover(hctx) }() // bounded by ReadyTimeout and hctx; read by this loop, or when it returns
			}
		case err := <-handover:
			handing = false
			switch {
			case err != nil && stopping:
				a.log.Info("handover given up: this process stops", "err", err)
			case err != nil:
				a.log.Error("handover failed; still serving", "err", err)
			}
		case err := <-serveErr:
			served++
			if err != nil {
				return served, err
			}
		}
	}
}

// DrainContext returns a context, derived from ctx, that ends at this
// process's drain deadline: the supervisor's --drain-timeout (else
// [Options.DrainTimeout]) after [App.Stopping] was closed, or after now
// if it is not yet. A server that is not Run's drains within it (a gRPC
// server calls GracefulStop, and Stop when the context ends), and then
// reports what it had to cut with [App.Drained].
func (a *App) DrainContext(ctx context.Context) (context.Context, context.CancelFunc) {
	timeout := a.opts.DrainTimeout
	if ms := a.drainTimeout.Load(); ms > 0 {
		timeout = time.Duration(ms) * time.Millisecond
	}
	a.mu.Lock()
	from := a.stoppedAt
	a.mu.Unlock()
	if from.IsZero() {
		from = time.Now()
	}
	return context.WithDeadline(ctx, from.Add(timeout))
}

// Drained reports that this process's drain is over, for a server that is
// not Run's: cut is how many requests (calls, streams, connections busy
// with a request) were cut at the drain deadline, 0 when none was. The
// supervisor adds cut to launcher_drain_cut_requests_total and logs it.
// Under a supervisor that collects the final metrics of exited workers,
// Drained returns once it has read them, at most 2 s later, so that the
// counts of the last requests outlive the process; call it after the last
// request finished or was cut and before [App.Close]. Standalone, it logs
// and removes [Options.PIDFile] if it still holds this process's pid.
// Call it once.
func (a *App) Drained(cut int64) {
	var err error
	if cut > 0 {
		err = &drain.CutError{Requests: cut}
	}
	a.drainEnded(err, 0)
}

// reportDrained tells the supervisor, if any, that the drain is over:
// nothing is in flight any more, so the counters are final. When the
// supervisor collects final metrics (control.CapFinalMetrics in its
// welcome), it waits until the supervisor has read them on the admin
// socket (control.TypeCollected), at most control.CollectWait, and not
// once the connection is lost: the supervisor serves them after this
// process exits, so that no scrape misses its last requests.
func (a *App) reportDrained(m control.Message) {
	a.mu.Lock()
	ctl, lost := a.ctl, a.ctlLost
	wait := control.HasCap(a.supCaps, control.CapFinalMetrics)
	a.mu.Unlock()
	if ctl == nil || ctl.Write(m) != nil || !wait {
		return
	}
	t := time.NewTimer(control.CollectWait)
	defer t.Stop()
	select {
	case <-a.collected:
	case <-lost:
	case <-t.C:
		a.log.Warn("the supervisor did not collect the final metrics; exiting", "waited", control.CollectWait)
	}
}
