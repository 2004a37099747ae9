package launcher

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/launcherd/launcher/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// serveAdmin serves /metrics, /counts and /healthz on a unix socket at path. It is
// private to the supervisor: a scrape of the shared port would reach a
// random generation.
func (a *App) serveAdmin(path string) (io.Closer, error) {
	os.Remove(path) // a stale socket of a dead worker with the same name
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("launcher: admin socket: %w", err)
	}
	os.Chmod(path, 0o600)
	gatherers := prometheus.Gatherers{a.reg}
	if a.opts.Registry != nil {
		gatherers = append(gatherers, a.opts.Registry)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(gatherers, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	mux.Handle(metrics.CountsPath, metrics.CountsHandler(a.tracker))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if h := a.opts.Health; h != nil {
			if err := h(); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		io.WriteString(w, "ok\n")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln) // ends when Close closes srv
	return srv, nil
}
