// Command websocket is a WebSocket echo service run by the launcher: at
// /echo it echoes JSON messages stamped with its generation and version,
// and when its generation drains it closes every socket with 1001 "going
// away", so that clients reconnect to the new generation (see package
// echo, and cmd/wsclient for a client that follows it without losing a
// message).
//
//	go build -ldflags "-X main.version=v1" -o releases/v1/wsecho .
//	launcher start --listen 127.0.0.1:8080 --releases releases -- releases/v1/wsecho
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net/http"

	"github.com/launcherd/launcher/examples/websocket/echo"
	"github.com/launcherd/launcher/launcher"
)

// version is set at build time with -ldflags "-X main.version=v2".
var version = "dev"

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address when no supervisor runs the service")
	flag.Parse()

	app, err := launcher.New(launcher.Options{Addr: *addr})
	if err != nil {
		log.Fatal(err)
	}
	v := app.Version() // the supervisor's release label
	if v == "" {
		v = version
	}
	srv := echo.NewServer(app.Generation(), v, app.Logger())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The socket set: owned by this goroutine, which closes every socket
	// with 1001 once Stopping is closed; it ends when main returns.
	go srv.Run(ctx, app.Stopping())

	mux := http.NewServeMux()
	mux.Handle("/echo", srv)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "websocket echo %s, generation %d: connect to /echo\n", v, app.Generation())
	})
	if err := app.Run(ctx, mux); err != nil { // returns once drained: every socket closed
		log.Fatal(err)
	}
}
