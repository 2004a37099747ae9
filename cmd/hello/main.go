// Command hello is the example service of the article the launcher grew
// from: GET / answers "hello from VERSION", GET /sleep?d=DURATION sleeps
// that long first. Build a release with
//
//	go build -ldflags "-X main.version=v2" -o releases/v2/hello ./cmd/hello
//
// Run it under the supervisor (launcher start -- releases/v1/hello) or
// alone (hello -addr :8080 -pidfile hello.pid; kill -HUP $(cat hello.pid)).
// With -tls-cert FILE -tls-key FILE it serves HTTPS, HTTP/2 included;
// with -h2c, HTTP/2 over cleartext (prior knowledge) beside HTTP/1.1.
// To show a bad release to a canary upgrade, -fail-ratio R answers 500 to
// that fraction of requests and -delay D adds D to each.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"math"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/launcherd/launcher/launcher"
)

// version is set at build time with -ldflags "-X main.version=v2".
var version = "dev"

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address when run without a supervisor")
	pidfile := flag.String("pidfile", "", "write the serving process's pid here (standalone)")
	plain := flag.Bool("plain", false, "serve with plain net/http, without the launcher (a baseline for benchmarks)")
	unhealthy := flag.Bool("unhealthy", false, "fail the supervisor's health check (shows a refused upgrade)")
	tlsCert := flag.String("tls-cert", "", "serve HTTPS (and HTTP/2) with this PEM certificate chain; needs -tls-key")
	tlsKey := flag.String("tls-key", "", "the PEM private key of -tls-cert")
	h2c := flag.Bool("h2c", false, "serve HTTP/2 over cleartext with prior knowledge (h2c) beside HTTP/1.1")
	failRatio := flag.Float64("fail-ratio", 0, "answer 500 to this fraction of requests, evenly spread (a bad release, for canary upgrades)")
	delay := flag.Duration("delay", 0, "add this latency to every request (a slow release)")
	warmup := flag.Duration("warmup", 0, "pass the health check only this long after start: the ready a supervisor or a handing-over process waits for comes that late (a release that loads a cache first)")
	flag.Parse()
	if (*tlsCert == "") != (*tlsKey == "") {
		fmt.Fprintln(os.Stderr, "hello: -tls-cert and -tls-key go together")
		os.Exit(2)
	}
	if *h2c && *tlsCert != "" {
		fmt.Fprintln(os.Stderr, "hello: -h2c is HTTP/2 without TLS; with -tls-cert HTTP/2 is negotiated by TLS already")
		os.Exit(2)
	}
	if *plain && (*h2c || *tlsCert != "" || *unhealthy || *warmup > 0) {
		fmt.Fprintln(os.Stderr, "hello: -plain is a bare net/http baseline over HTTP/1: -h2c, -tls-cert, -unhealthy and -warmup need the launcher")
		os.Exit(2)
	}
	if *failRatio < 0 || *failRatio > 1 || *delay < 0 || *warmup < 0 {
		fmt.Fprintln(os.Stderr, "hello: -fail-ratio wants 0..1, and -delay and -warmup 0 or more")
		os.Exit(2)
	}
	bad := fault{ratio: *failRatio, delay: *delay}

	if *plain {
		// The same server settings as launcher.App.Run, so a benchmark
		// compares the launcher, not the settings.
		srv := &http.Server{Addr: *addr, Handler: bad.wrap(newMux(version, nil)), ReadHeaderTimeout: 30 * time.Second}
		if err := srv.ListenAndServe(); err != nil {
			fmt.Fprintln(os.Stderr, "hello:", err)
			os.Exit(1)
		}
		return
	}

	// The app's own metrics, registered the usual client_golang way; the
	// supervisor serves them with generation and version labels.
	reg := prometheus.NewRegistry()
	slept := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "hello_slept_seconds_total",
		Help: "Time slept by /sleep requests.",
	})
	reg.MustRegister(slept)

	opts := launcher.Options{Addr: *addr, PIDFile: *pidfile, Registry: reg, H2C: *h2c, Version: version}
	if *tlsCert != "" {
		// Loaded once at start: a new certificate ships with the next
		// release or restart, as any other configuration.
		cert, err := tls.LoadX509KeyPair(*tlsCert, *tlsKey)
		if err != nil {
			fmt.Fprintln(os.Stderr, "hello:", err)
			os.Exit(1)
		}
		opts.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	warm := time.Now().Add(*warmup)
	if *unhealthy || *warmup > 0 {
		opts.Health = func() error {
			time.Sleep(time.Until(warm)) // at once once warm
			if *unhealthy {
				return errors.New("database unreachable (-unhealthy)")
			}
			return nil
		}
	}
	app, err := launcher.New(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hello:", err)
		os.Exit(1)
	}
	onSleep := func(d time.Duration) { slept.Add(d.Seconds()) }
	if err := app.Run(context.Background(), bad.wrap(newMux(version, onSleep))); err != nil {
		fmt.Fprintln(os.Stderr, "hello:", err)
		os.Exit(1)
	}
}

// newMux returns the article's two handlers; onSleep, if set, is told of
// each completed sleep.
func newMux(version string, onSleep func(time.Duration)) *http.ServeMux {
	body := "hello from " + version + "\n"
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		reply(w, body)
	})
	mux.HandleFunc("/sleep", func(w http.ResponseWriter, r *http.Request) {
		d, err := time.ParseDuration(r.FormValue("d"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
		if onSleep != nil {
			onSleep(d)
		}
		reply(w, body)
	})
	return mux
}

func reply(w http.ResponseWriter, s string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte(s))
}

// fault makes a release bad on purpose: a fraction of 500s, added latency.
type fault struct {
	ratio float64
	delay time.Duration
	n     atomic.Uint64
}

// wrap returns h with f's faults. The n-th request fails when
// floor(n·ratio) steps up, so exactly that fraction fails, evenly spread.
func (f *fault) wrap(h http.Handler) http.Handler {
	if f.ratio == 0 && f.delay == 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f.delay > 0 {
			select {
			case <-time.After(f.delay):
			case <-r.Context().Done():
				return
			}
		}
		if n := float64(f.n.Add(1)); math.Floor(n*f.ratio) > math.Floor((n-1)*f.ratio) {
			http.Error(w, "failing on purpose (-fail-ratio)", http.StatusInternalServerError)
			return
		}
		h.ServeHTTP(w, r)
	})
}
