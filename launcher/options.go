package launcher

import (
	"crypto/tls"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Options configure an [App]. The zero value is usable: defaults are given
// on each field.
type Options struct {
	// Addr is the TCP address to listen on when no supervisor runs the app
	// (under one, its --listen addresses win). Several addresses may be
	// given comma-separated. Default ":8080".
	Addr string

	// Version labels this release in the App's log lines and
	// [App.Version] when no supervisor runs the app (under one, the
	// supervisor's label, the release directory's name, wins), so that
	// the logs of a standalone SIGHUP handover tell the old process from
	// the new. Typically set at build time (-ldflags "-X main.version=v2").
	Version string

	// PIDFile, when set and no supervisor runs the app, receives this
	// process's pid once it serves, so that kill -HUP $(cat PIDFILE)
	// reaches the current process after every handover. At the end of a
	// drain that is not a handover's (SIGTERM, SIGINT, ctx ending) the
	// file is removed if it still holds this process's pid; after a
	// handover it is the new process's.
	PIDFile string

	// DrainTimeout bounds a standalone drain; under a supervisor its
	// --drain-timeout applies. Default 30s.
	DrainTimeout time.Duration

	// ReadyTimeout bounds how long a standalone handover waits for the new
	// process to be ready. Default 30s.
	ReadyTimeout time.Duration

	// IdleGrace is how long a keep-alive connection must be idle during a
	// drain before it is closed. Default drain.DefaultIdleGrace.
	IdleGrace time.Duration

	// Registry holds the app's own metrics; they are served beside the
	// launcher's on the admin socket and keep working across upgrades.
	Registry *prometheus.Registry

	// Health, if set, is called by Ready under a supervisor (which then
	// need not ask) and by /healthz on the admin socket; an error makes
	// the supervisor refuse to hand traffic to this generation.
	Health func() error

	// TLS, if set, makes Run serve HTTPS (and HTTP/2) with this config on
	// every address; TLS sits above the tracked connections, so drains see
	// every connection.
	//
	// Its session-ticket keys are the supervisor's (or, standalone, this
	// process's, handed on at a SIGHUP handover), set by New and after
	// every rotation with SetSessionTicketKeys, so that clients resume
	// their sessions on the next generation. Unless WrapSession or
	// UnwrapSession is set, New sets both to encrypt and decrypt tickets
	// with this config's keys: the clones http.Server serves then follow
	// every rotation too.
	TLS *tls.Config

	// H2C, without TLS, makes Run serve HTTP/2 over cleartext with prior
	// knowledge (RFC 9113, section 3.3) beside HTTP/1.1 on the same
	// port: a connection that starts with the HTTP/2 preface is HTTP/2.
	// The Upgrade: h2c dance of RFC 7540 is not offered. Drains give its
	// connections the two-phase GOAWAY that TLS ones get. [App.Serve]
	// ignores it: set the server's Protocols instead.
	H2C bool

	// Logger receives the launcher's log lines. Default: text to stderr.
	Logger *slog.Logger
}

func (o *Options) setDefaults() {
	if o.Addr == "" {
		o.Addr = ":8080"
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = 30 * time.Second
	}
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = 30 * time.Second
	}
}
