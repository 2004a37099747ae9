// Command chi serves a chi router under the launcher, with an http.Server
// of its own (timeouts) through App.Serve.
package main

import (
	"context"
	"flag"
	"log"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/launcherd/launcher/launcher"
)

func main() {
	flag.Parse() // no flags of its own; -h prints the usage
	r := chi.NewRouter()
	r.Get("/", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("hello\n")) })

	app, err := launcher.New(launcher.Options{Addr: "127.0.0.1:8080"})
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{
		Handler:           r, // chi.Mux is an http.Handler
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	if err := app.Serve(context.Background(), srv); err != nil {
		log.Fatal(err)
	}
}
