package launcher

import (
	"context"
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
// that does not use Run calls it from its own signal handling.
func (a *App) Stop() {
	a.release(0, false, false)
	a.markStopping()
}

// Run serves h on every listen address until the process is told to stop
// (the supervisor releases it, a signal, or ctx ends), then drains and
// returns. It listens, reports ready, and handles signals: SIGTERM and
// SIGINT drain and return; SIGHUP, when no supervisor runs the process,
// starts the executable again and hands the port over to it.
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
func (a *App) Run(ctx context.Context, h http.Handler) error {
	defer a.Close()
	lns, err := a.Listen(ctx)
	if err != nil {
		return err
	}
	srv := &drain.Server{
		HTTP: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 30 * time.Second,
			ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
		},
		Tracker:   a.tracker,
		IdleGrace: a.opts.IdleGrace,
		Observer:  a.metrics,
	}
	serveErr := make(chan error, len(lns))
	if a.opts.TLS != nil {
		srv.HTTP.TLSConfig = a.opts.TLS
	}
	if a.opts.H2C {
		// net/http's documented switch for h2c with prior knowledge; the
		// drain package serves such connections with its own GOAWAY.
		p := new(http.Protocols)
		p.SetHTTP1(true)
		p.SetHTTP2(true)
		p.SetUnencryptedHTTP2(true)
		srv.HTTP.Protocols = p
	}
	for _, ln := range lns {
		go func() {
			if a.opts.TLS != nil {
				serveErr <- srv.ServeTLS(ln, "", "")
				return
			}
			serveErr <- srv.Serve(ln)
		}()
	}
	if err := a.Ready(); err != nil {
		return err
	}

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	handover := make(chan error, 1)
	handing := false
	served := 0
	done := ctx.Done()
loop:
	for {
		select {
		case <-a.Stopping():
			break loop
		case <-done:
			done = nil
			go a.Stop()
		case sig := <-sigs:
			switch {
			case sig != syscall.SIGHUP:
				a.log.Info("signal: draining", "signal", sig.String())
				go a.Stop()
			case a.Supervised():
				a.log.Info("SIGHUP ignored: the supervisor upgrades (launcher upgrade)")
			case handing:
				a.log.Info("SIGHUP ignored: a handover is in progress")
			default:
				handing = true
				go func() { handover <- a.handover(ctx) }()
			}
		case err := <-handover:
			handing = false
			if err != nil {
				a.log.Error("handover failed; still serving", "err", err)
			}
		case err := <-serveErr:
			served++
			if err != nil {
				return fmt.Errorf("launcher: serve: %w", err)
			}
		}
	}
	timeout := a.opts.DrainTimeout
	if ms := a.drainTimeout.Load(); ms > 0 {
		timeout = time.Duration(ms) * time.Millisecond
	}
	start := time.Now()
	st := a.tracker.Stats()
	a.log.Info("draining", "inflight", st.InflightRequests, "connections", st.OpenConnections, "timeout", timeout)
	dctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err = srv.Drain(dctx)
	for ; served < len(lns); served++ {
		<-serveErr
	}
	if err != nil && !errors.Is(err, drain.ErrCut) {
		return fmt.Errorf("launcher: drain: %w", err)
	}
	var cut *drain.CutError
	if errors.As(err, &cut) {
		a.log.Warn("drain cut at its deadline", "requests_cut", cut.Requests, "connections_cut", cut.Connections)
		a.reportDrained(control.Message{Type: control.TypeDrained, Cut: cut.Requests, Error: "drain deadline"})
		return nil
	}
	a.log.Info("drained", "after", time.Since(start).Round(time.Millisecond))
	a.reportDrained(control.Message{Type: control.TypeDrained})
	return nil
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
