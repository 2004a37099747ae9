package launcher_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/launcherd/launcher/drain"
	"github.com/launcherd/launcher/launcher"
)

// An HTTP service: Run listens (with SO_REUSEPORT), reports ready, serves,
// and drains when the supervisor's next generation serves or on SIGTERM.
// Alone, kill -HUP $(cat hello.pid) starts the program again and hands the
// port over to it.
func ExampleApp_Run() {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "hello")
	})
	app, err := launcher.New(launcher.Options{
		Addr:    "127.0.0.1:8080", // alone; under the supervisor its --listen wins
		PIDFile: "hello.pid",      // alone; for kill -HUP $(cat hello.pid)
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := app.Run(context.Background(), mux); err != nil {
		log.Fatal(err)
	}
}

// The app's own metrics go on its own registry: they are served beside the
// launcher's on the admin socket, and the supervisor adds generation and
// version labels. Health gates the handover to a new generation.
func ExampleOptions() {
	reg := prometheus.NewRegistry()
	greetings := prometheus.NewCounter(prometheus.CounterOpts{Name: "hello_greetings_total", Help: "Greetings sent."})
	reg.MustRegister(greetings)
	var warm atomic.Bool // set once caches are loaded, say

	app, err := launcher.New(launcher.Options{
		Addr:         "127.0.0.1:8080",
		Registry:     reg,
		DrainTimeout: 30 * time.Second, // alone; the supervisor's --drain-timeout wins under it
		Health: func() error {
			if !warm.Load() {
				return errors.New("warming up")
			}
			return nil
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	warm.Store(true)
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		greetings.Inc()
		fmt.Fprintln(w, "hello")
	})
	if err := app.Run(context.Background(), mux); err != nil {
		log.Fatal(err)
	}
}

// A plain TCP server uses the low-level calls: Listen binds (under a
// supervisor, once it grants), Ready reports, and Stopping is closed once
// the listeners are released without losing a queued connection. The
// server then drains its connections, tracked by a drain.Listener on the
// App's tracker (so that the supervisor sees them), and exits.
func ExampleApp_Listen() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	app, err := launcher.New(launcher.Options{Addr: "127.0.0.1:7000"})
	if err != nil {
		log.Fatal(err)
	}
	defer app.Close()

	lns, err := app.Listen(ctx)
	if err != nil {
		log.Fatal(err)
	}
	var tracked []*drain.Listener
	for _, ln := range lns {
		dl := drain.NewListener(ln, app.Tracker())
		tracked = append(tracked, dl)
		go serveEcho(dl, app.Tracker())
	}
	if err := app.Ready(); err != nil {
		log.Fatal(err)
	}

	select {
	case <-app.Stopping(): // a new generation serves; our listeners are released
	case <-ctx.Done(): // alone, on SIGTERM: stop accepting ourselves
		for _, dl := range tracked {
			dl.Close()
		}
	}
	// One tracker counts the connections of every listener: drain once,
	// by the supervisor's --drain-timeout, and report what it cut (the
	// connections too) so that the supervisor counts it.
	dctx, cancel := app.DrainContext(context.Background())
	defer cancel()
	app.ReportDrain(tracked[0].Drain(dctx, drain.DefaultIdleGrace))
}

// serveEcho echoes lines. Each connection is marked idle while it waits for
// a line, so a drain closes it only once it has been quiet for the grace.
// A busy one is never quiet that long: once its generation hands its
// clients over (on standby, or draining) it ends after its answer, at a
// request's end, as HTTP's "Connection: close" does.
func serveEcho(ln *drain.Listener, t *drain.Tracker) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return // closed: released or drained
		}
		go func() {
			defer c.Close()
			dc := c.(*drain.Conn)
			r := bufio.NewReader(c)
			for {
				dc.SetIdle(true)
				line, err := r.ReadString('\n')
				if err != nil {
					return
				}
				dc.SetIdle(false)
				if _, err := c.Write([]byte(line)); err != nil {
					return
				}
				if t.IsDraining() || !t.KeepAlivesEnabled() {
					return // the client reconnects, to the generation that serves
				}
			}
		}()
	}
}

// Drain-aware handlers of long-lived connections select on the tracker's
// Draining channel to finish early, here a server-sent event stream.
func ExampleApp_Tracker() {
	app, err := launcher.New(launcher.Options{Addr: "127.0.0.1:8080"})
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-app.Tracker().Draining():
				fmt.Fprint(w, "event: reconnect\ndata: \n\n") // the client reconnects to the new generation
				return
			case <-r.Context().Done():
				return
			case t := <-tick.C:
				fmt.Fprintf(w, "data: %s\n\n", t.Format(time.RFC3339))
				http.NewResponseController(w).Flush()
			}
		}
	})
	if err := app.Run(context.Background(), mux); err != nil {
		log.Fatal(err)
	}
}
