// Command tableflip is the hello service upgraded the fork-based way,
// with github.com/cloudflare/tableflip: the same handler ("hello from
// VERSION"), SIGHUP starts the executable at the same path again, hands it
// the listening socket, and the old process stops accepting and shuts
// down once the new one is ready. It is the peer upgradebench --peers
// measures the launcher against, and --handover tableflip's load runs
// (with /sleep?d=DURATION, hello's long request); a module of its own so that the
// launcher's module does not depend on tableflip. Built with -tags
// metrics it also links the Prometheus client and serves /metrics, as
// hello does, so that the two binaries start alike (the client's package
// initialisation is a millisecond of a start).
//
//	go build -ldflags "-X main.version=v2" -o releases/v2/hello-tableflip .
//	hello-tableflip -addr 127.0.0.1:8080 -pidfile hello.pid; kill -HUP $(cat hello.pid)
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cloudflare/tableflip"
)

// version is set at build time with -ldflags "-X main.version=v2".
var version = "dev"

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	pidfile := flag.String("pidfile", "", "write the serving process's pid here once it is ready")
	flag.Parse()
	if err := run(*addr, *pidfile); err != nil {
		fmt.Fprintln(os.Stderr, "hello-tableflip:", err)
		os.Exit(1)
	}
}

func run(addr, pidfile string) error {
	upg, err := tableflip.New(tableflip.Options{PIDFile: pidfile})
	if err != nil {
		return err
	}
	defer upg.Stop()

	// Owned by main's lifetime: each SIGHUP asks for an upgrade; it ends
	// with the process.
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGHUP)
		for range sig {
			if err := upg.Upgrade(); err != nil {
				fmt.Fprintln(os.Stderr, "hello-tableflip: upgrade:", err)
			}
		}
	}()

	ln, err := upg.Listen("tcp", addr)
	if err != nil {
		return err
	}
	body := "hello from " + version + "\n"
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte(body))
	}
	mux.Handle("/", instrument(mux, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reply(w) })))
	// hello's long request, which upgradebench's long mode sends: the
	// answer after the duration d.
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
		reply(w)
	})
	// The same server settings as hello's.
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 30 * time.Second}
	// Owned by run: ends when Shutdown closes the listener.
	go srv.Serve(ln)

	if err := upg.Ready(); err != nil {
		return err
	}
	<-upg.Exit()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return srv.Shutdown(ctx)
}
