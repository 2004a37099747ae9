package supervisor

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/launcherd/launcher/internal/ticketkeys"
	"github.com/launcherd/launcher/reuseport"
)

// Handover strategies, chosen with --handover.
const (
	// HandoverSteer steers new connections to the new generation with a
	// classic BPF program and empties the old accept queues before closing:
	// lossless and unprivileged.
	HandoverSteer = "steer"
	// HandoverClose closes the old listeners at once (what naive
	// SO_REUSEPORT servers do); kept to show the difference.
	HandoverClose = "close"
	// HandoverMigrate closes the old listeners at once and relies on the
	// kernel to move their queued connections to the new ones: it needs
	// net.ipv4.tcp_migrate_req=1 in the supervisor's network namespace
	// (Linux ≥ 5.14, set by the operator; the launcher never changes it).
	HandoverMigrate = "migrate"
)

// DefaultProbation is Config.Probation's default.
const DefaultProbation = 5 * time.Second

// NoProbation as Config.Probation releases the previous generation as
// soon as the new one serves.
const NoProbation time.Duration = -1

// DefaultKeepExited is Config.KeepExited's default: a few scrape
// intervals of common setups (15 s to 1 min) and more.
const DefaultKeepExited = 5 * time.Minute

// NoKeepExited as Config.KeepExited drops a worker's series when it exits.
const NoKeepExited time.Duration = -1

// Config configures a [Supervisor]. Zero values get the defaults given.
type Config struct {
	// Command is the service to run: an executable path (possibly a
	// "current" symlink, re-resolved on each upgrade) and its arguments.
	Command []string
	// Dir is the workers' working directory, and what a relative Command
	// is resolved against. It is kept as given (symlinks not followed),
	// and the kernel resolves it again at every start: started from inside
	// a `current` symlink, the supervisor runs each new generation from
	// the release `current` then names. Default: the logical working
	// directory, $PWD when it names the current directory (as a shell
	// sets it; see os.Getwd), else the kernel's.
	Dir string
	// Listen are the TCP addresses every worker binds with SO_REUSEPORT.
	Listen []string
	// StateDir holds the pid file, control socket and worker admin sockets.
	StateDir string
	// MetricsAddr, if set, is where the supervisor serves /metrics.
	MetricsAddr string
	// Releases is the directory of releases: Releases/VERSION/NAME, where
	// NAME is the file name of Command's target.
	Releases string
	// Current, if set, is a symlink repointed to the release directory
	// after every good upgrade.
	Current string
	// Workers is the number of processes per generation. Default 1.
	Workers int
	// ReadyTimeout bounds how long a new generation may take to be ready.
	// Default 30s.
	ReadyTimeout time.Duration
	// DrainTimeout bounds an old generation's drain; what is left is
	// killed. Default 30s.
	DrainTimeout time.Duration
	// Handover is HandoverSteer (default), HandoverMigrate or
	// HandoverClose.
	Handover string
	// MaxDraining is how many generations may drain at once; an upgrade
	// that would make more is refused. Default 4.
	MaxDraining int
	// Settle is how long an old listener's accept queue must stay empty
	// before it closes, once the handshakes in flight on it are done.
	// Zero (the default) means 2ms for workers that wait for those
	// handshakes themselves (control.CapHandshakes) and 50ms for older
	// ones, for which the settle is all the wait there is; raise it for
	// small backlogs.
	Settle time.Duration
	// StartInTurn starts a new generation's workers one after the other,
	// each once the one before has said hello (its process has started
	// and initialised), instead of all at once: their cold starts do not
	// pile onto the cores the serving generation needs.
	StartInTurn bool
	// Probation is how long the previous generation stays on standby
	// after an upgrade: steered away from, listening and ready, so that if
	// the new generation crashes in that time traffic goes straight back.
	// Zero means DefaultProbation; NoProbation (any negative value)
	// disables it. Only the steer handover has it.
	Probation time.Duration
	// MaxErrorRatio is how far the new generation's ratio of 5xx answers
	// may exceed the previous generation's, over the same window, during
	// a canary or probation (0.05: by 5 percentage points); beyond it
	// traffic goes back at once. Zero means DefaultMaxErrorRatio; NoJudge
	// (any negative value) turns the check off.
	MaxErrorRatio float64
	// MaxLatencyRatio is how many times the previous generation's p99
	// latency the new generation's may be (both counted as at least 10 ms).
	// Zero means DefaultMaxLatencyRatio; NoJudge (negative) turns it off.
	MaxLatencyRatio float64
	// MinRequests is how many requests the new generation must have served
	// in the window before it is judged. Zero means DefaultMinRequests.
	MinRequests int
	// JudgeEvery is how often the judge reads both generations' metrics.
	// Zero means DefaultJudgeEvery.
	JudgeEvery time.Duration
	// KeepExited is how long /metrics keeps serving the series of a worker
	// that has exited, frozen at their final values (counters, histograms
	// and summaries; gauges go at once), so that scrapes see the requests
	// it served last. The worker's library reports its drain and waits for
	// the supervisor to read them. Zero means DefaultKeepExited;
	// NoKeepExited (any negative value) drops them at exit. Only with
	// MetricsAddr.
	KeepExited time.Duration
	// TicketRotate is how often the supervisor makes a new TLS
	// session-ticket key for its workers (see package
	// internal/ticketkeys); at least a second. Default
	// ticketkeys.DefaultRotate (24h), as crypto/tls's own keys.
	TicketRotate time.Duration
	// TicketLifetime is how long a ticket key is accepted: older ones are
	// dropped. At least TicketRotate. Default ticketkeys.DefaultLifetime
	// (7 days), as crypto/tls's own keys.
	TicketLifetime time.Duration
	// TicketKeyFile, if set, is the operator's ticket keys (the format of
	// ticketkeys.ParseFile), used instead of made ones and never rotated
	// by the supervisor: it is read again at every upgrade. New refuses a
	// file that group or others may access, or a malformed one.
	TicketKeyFile string
	// Logger receives the supervisor's log. Default: text on stderr.
	Logger *slog.Logger

	// ticketFile is TicketKeyFile as read by New.
	ticketFile ticketkeys.Ring
}

// collectsFinal reports whether the supervisor reads the final metrics of
// drained workers: only to serve them.
func (c *Config) collectsFinal() bool { return c.MetricsAddr != "" && c.KeepExited > 0 }

func (c *Config) check() error {
	if len(c.Command) == 0 {
		return errors.New("no command: launcher start [flags] -- COMMAND [ARGS...]")
	}
	if len(c.Listen) == 0 {
		return errors.New("no listen address: give --listen ADDR")
	}
	seen := map[string]bool{}
	for _, a := range c.Listen {
		if err := checkListen(a); err != nil {
			return err
		}
		if seen[a] {
			return fmt.Errorf("--listen %q given twice", a)
		}
		seen[a] = true
	}
	if c.Dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return fmt.Errorf("working directory: %w", err)
		}
		c.Dir = wd
	}
	// Resolved against the logical directory once, here: later the
	// kernel's working directory may no longer be the one $PWD names.
	if cmd := c.Command[0]; strings.Contains(cmd, "/") && !filepath.IsAbs(cmd) {
		c.Command = append([]string{filepath.Join(c.Dir, cmd)}, c.Command[1:]...)
	}
	if c.StateDir == "" {
		return errors.New("no state directory: give --state-dir or LAUNCHER_STATE_DIR")
	}
	if c.Workers == 0 {
		c.Workers = 1
	}
	if c.Workers < 1 || c.Workers > 256 {
		return fmt.Errorf("--workers %d: want 1..256", c.Workers)
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = 30 * time.Second
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = 30 * time.Second
	}
	if c.ReadyTimeout < 0 {
		return fmt.Errorf("--ready-timeout %s: want more than 0", c.ReadyTimeout)
	}
	if c.DrainTimeout < 0 {
		return fmt.Errorf("--drain-timeout %s: want more than 0", c.DrainTimeout)
	}
	if c.Settle < 0 {
		return fmt.Errorf("--settle %s: want 0 (the default) or more", c.Settle)
	}
	if c.MetricsAddr != "" {
		_, port, err := net.SplitHostPort(c.MetricsAddr)
		if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 0 || n > 65535 {
			return fmt.Errorf("--metrics %q: want HOST:PORT with a port from 0 to 65535", c.MetricsAddr)
		}
	}
	if c.MaxDraining == 0 {
		c.MaxDraining = 4
	}
	if c.MaxDraining < 1 {
		return fmt.Errorf("--max-draining %d: want at least 1", c.MaxDraining)
	}
	switch {
	case c.Probation == 0:
		c.Probation = DefaultProbation
	case c.Probation < 0:
		c.Probation = 0
	}
	switch {
	case c.MaxErrorRatio == 0:
		c.MaxErrorRatio = DefaultMaxErrorRatio
	case c.MaxErrorRatio < 0:
		c.MaxErrorRatio = NoJudge
	case c.MaxErrorRatio > 1:
		return fmt.Errorf("--max-error-ratio %g: want a fraction from 0 to 1 (0.05: 5 points more 5xx than the old generation)", c.MaxErrorRatio)
	}
	switch {
	case c.MaxLatencyRatio == 0:
		c.MaxLatencyRatio = DefaultMaxLatencyRatio
	case c.MaxLatencyRatio < 0:
		c.MaxLatencyRatio = NoJudge
	case c.MaxLatencyRatio < 1:
		return fmt.Errorf("--max-latency-ratio %g: want 1 or more (2: twice the old generation's p99)", c.MaxLatencyRatio)
	}
	if c.MinRequests == 0 {
		c.MinRequests = DefaultMinRequests
	}
	if c.MinRequests < 0 {
		return fmt.Errorf("--min-requests %d: want 1 or more", c.MinRequests)
	}
	if c.JudgeEvery == 0 {
		c.JudgeEvery = DefaultJudgeEvery
	}
	if c.JudgeEvery < 0 {
		return fmt.Errorf("judge interval %s: want more than 0", c.JudgeEvery)
	}
	switch {
	case c.KeepExited == 0:
		c.KeepExited = DefaultKeepExited
	case c.KeepExited < 0:
		c.KeepExited = 0
	}
	switch c.Handover {
	case "":
		c.Handover = HandoverSteer
	case HandoverSteer, HandoverClose:
	case HandoverMigrate:
		if err := CheckMigrateReq(); err != nil {
			return err
		}
	default:
		return fmt.Errorf("--handover %q: want %s, %s or %s", c.Handover, HandoverSteer, HandoverMigrate, HandoverClose)
	}
	if c.Handover != HandoverSteer {
		// Without steering a standby generation's listeners would keep
		// taking new connections.
		c.Probation = 0
	}
	if c.TicketRotate == 0 {
		c.TicketRotate = ticketkeys.DefaultRotate
	}
	if c.TicketLifetime == 0 {
		c.TicketLifetime = ticketkeys.DefaultLifetime
	}
	if c.TicketRotate < time.Second {
		return fmt.Errorf("--tls-ticket-rotate %s: want 1s or more", c.TicketRotate)
	}
	if c.TicketLifetime < c.TicketRotate {
		return fmt.Errorf("--tls-ticket-lifetime %s: want at least --tls-ticket-rotate (%s)", c.TicketLifetime, c.TicketRotate)
	}
	if c.TicketKeyFile != "" {
		r, err := ticketkeys.ParseFile(c.TicketKeyFile, time.Now())
		if err != nil {
			return fmt.Errorf("--tls-ticket-key-file: %w", err)
		}
		c.ticketFile = r
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// hostnameRE is a DNS name (RFC 1123 labels).
var hostnameRE = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$`)
})

// checkListen refuses a --listen address no worker could bind, before
// anything starts: HOST:PORT with a port of 1 to 65535 (every worker must
// bind the same one, so 0 will not do) and a host that is empty, an IP
// address or a host name.
func checkListen(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--listen %q: %w", addr, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("--listen %q: port %q: want a number from 1 to 65535", addr, port)
	}
	// All digits and dots is meant as an IPv4 address (256.1.1.1 is not one).
	if host != "" && net.ParseIP(host) == nil && (!hostnameRE().MatchString(host) || strings.Trim(host, "0123456789.") == "") {
		return fmt.Errorf("--listen %q: host %q is neither an IP address nor a host name", addr, host)
	}
	return nil
}

// ConfigError is a Config that New refuses: a bad value of one of
// `launcher start`'s flags. Its message names the flag.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// CheckMigrateReq returns nil if --handover migrate can work in this
// process's network namespace (net.ipv4.tcp_migrate_req is 1, Linux ≥
// 5.14), else an error that says how to set it: the launcher never does.
func CheckMigrateReq() error {
	on, err := reuseport.MigrateReq()
	if err != nil {
		return fmt.Errorf("--handover migrate: %w", err)
	}
	if !on {
		return errors.New("--handover migrate needs net.ipv4.tcp_migrate_req=1 in this network namespace (sysctl -w net.ipv4.tcp_migrate_req=1; the launcher does not change it)")
	}
	return nil
}
