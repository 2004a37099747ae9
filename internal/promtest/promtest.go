package promtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Job is the job name under which [Start] scrapes its targets, the one the
// shipped alerting rules and dashboard select on.
const Job = "launcher"

const (
	defaultScrapeInterval = time.Second
	readyTimeout          = 30 * time.Second
	stopTimeout           = 10 * time.Second
	// startAttempts bounds the retries when prometheus exits at start, most
	// likely because another process took the free port between our probe
	// and its bind.
	startAttempts = 3
	logTailBytes  = 4 << 10
)

// errExited reports that prometheus exited before it became ready.
var errExited = errors.New("prometheus exited before it was ready")

// Option changes how [Start] runs Prometheus.
type Option func(*options)

type options struct {
	binary   string
	interval time.Duration
}

// WithBinary runs the prometheus binary at path instead of looking it up on
// PATH and in /usr/bin.
func WithBinary(path string) Option {
	return func(o *options) { o.binary = path }
}

// WithScrapeInterval sets the scrape and rule evaluation interval; the
// default is one second. The scrape timeout equals the interval.
func WithScrapeInterval(d time.Duration) Option {
	return func(o *options) { o.interval = d }
}

// Server is a running Prometheus started by [Start]. Its methods are safe
// for concurrent use.
type Server struct {
	url     string
	client  *http.Client
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when cmd has been waited for
}

// URL returns the base URL of the server, such as "http://127.0.0.1:41234".
func (s *Server) URL() string { return s.url }

// Start runs a Prometheus server that scrapes targets (each "host:port",
// path /metrics, job [Job]) and waits until it is ready. The server listens
// on a free 127.0.0.1 port and keeps its data in a temporary directory of t;
// it is stopped (SIGTERM, then SIGKILL after 10 seconds) when t ends, and
// its log is printed if t failed.
//
// If the prometheus binary cannot be found, Start skips t, or fails it when
// the environment variable CI is true. Any other problem fails t.
func Start(t testing.TB, targets []string, opts ...Option) *Server {
	t.Helper()
	o := options{interval: defaultScrapeInterval}
	for _, opt := range opts {
		opt(&o)
	}
	bin, err := findBinary("prometheus", o.binary)
	if err != nil {
		skipOrFail(t, err)
	}
	if o.interval < time.Millisecond {
		t.Fatalf("promtest: scrape interval %v is below 1ms", o.interval)
	}
	cfg, err := config(targets, o.interval)
	if err != nil {
		t.Fatalf("promtest: %v", err)
	}
	// TempDir before Cleanup: cleanups run last-in first-out, so prometheus
	// is stopped before its data directory is removed.
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		t.Fatalf("promtest: writing config: %v", err)
	}
	for attempt := 1; ; attempt++ {
		s, err := launch(bin, cfgPath, filepath.Join(dir, strconv.Itoa(attempt)))
		if err == nil {
			t.Cleanup(func() { s.stop(t) })
			t.Logf("promtest: prometheus ready at %s, scraping %v every %v", s.url, targets, o.interval)
			return s
		}
		if !errors.Is(err, errExited) || attempt == startAttempts {
			t.Fatalf("promtest: %v", err)
		}
	}
}

// Promtool returns the path of the promtool binary (on PATH, or
// /usr/bin/promtool). If it cannot be found, Promtool skips t, or fails it
// when the environment variable CI is true.
func Promtool(t testing.TB) string {
	t.Helper()
	path, err := findBinary("promtool", "")
	if err != nil {
		skipOrFail(t, err)
	}
	return path
}

// skipOrFail ends t because a binary is missing.
func skipOrFail(t testing.TB, err error) {
	t.Helper()
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
		t.Fatalf("promtest: %v (failing rather than skipping because CI is set; install Debian's prometheus package)", err)
	}
	t.Skipf("promtest: %v; skipping (apt-get install prometheus to run this test)", err)
}

// findBinary returns path if it is set, else looks name up on PATH and then
// in /usr/bin, where Debian installs it.
func findBinary(name, path string) (string, error) {
	if path != "" {
		p, err := exec.LookPath(path)
		if err != nil {
			return "", fmt.Errorf("%s binary: %w", name, err)
		}
		return p, nil
	}
	p, err := exec.LookPath(name)
	if err == nil {
		return p, nil
	}
	if p, err2 := exec.LookPath(filepath.Join("/usr/bin", name)); err2 == nil {
		return p, nil
	}
	return "", fmt.Errorf("%s not found on PATH or in /usr/bin: %w", name, err)
}

// config returns a Prometheus configuration scraping targets under [Job].
func config(targets []string, interval time.Duration) ([]byte, error) {
	quoted := make([]string, len(targets))
	for i, target := range targets {
		if _, _, err := net.SplitHostPort(target); err != nil {
			return nil, fmt.Errorf("target %q is not host:port: %w", target, err)
		}
		// A Go-quoted ASCII string is a valid YAML double-quoted scalar.
		quoted[i] = strconv.Quote(target)
	}
	d := fmt.Sprintf("%dms", interval.Milliseconds())
	var b bytes.Buffer
	fmt.Fprintf(&b, "global:\n  scrape_interval: %s\n  scrape_timeout: %s\n  evaluation_interval: %s\n", d, d, d)
	fmt.Fprintf(&b, "scrape_configs:\n  - job_name: %s\n    static_configs:\n      - targets: [%s]\n",
		Job, strings.Join(quoted, ", "))
	return b.Bytes(), nil
}

// launch starts prometheus with its data and log under dir and waits until
// it is ready. On failure it leaves no process behind.
func launch(bin, cfgPath, dir string) (*Server, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data directory: %w", err)
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "prometheus.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("creating log file: %w", err)
	}
	defer logFile.Close() // the child keeps its own descriptor

	cmd := exec.Command(bin,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	s := &Server{
		url:     "http://" + addr,
		client:  &http.Client{Transport: &http.Transport{}, Timeout: 30 * time.Second},
		cmd:     cmd,
		logPath: logPath,
		done:    make(chan struct{}),
	}
	go func() {
		_ = cmd.Wait() // the exit status of a stopped server is of no interest
		close(s.done)
	}()
	if err := s.waitReady(); err != nil {
		s.kill()
		return nil, fmt.Errorf("%w\n%s", err, s.logTail())
	}
	return s, nil
}

// freeAddr returns a 127.0.0.1 address with a port that was free a moment
// ago.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("finding a free port: %w", err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		return "", fmt.Errorf("finding a free port: %w", err)
	}
	return addr, nil
}

// waitReady polls /-/ready until it answers 200, the process exits, or
// readyTimeout passes.
func (s *Server) waitReady() error {
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/-/ready", nil)
		if err != nil {
			return fmt.Errorf("building readiness request: %w", err)
		}
		if resp, err := s.client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-s.done:
			return fmt.Errorf("%w (listening on %s)", errExited, s.url)
		case <-ctx.Done():
			return fmt.Errorf("prometheus at %s not ready after %v: %w", s.url, readyTimeout, ctx.Err())
		case <-tick.C:
		}
	}
}

// stop ends the server gracefully, then forcibly, and waits for it.
func (s *Server) stop(t testing.TB) {
	t.Helper()
	s.client.CloseIdleConnections()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err == nil {
		select {
		case <-s.done:
		case <-time.After(stopTimeout):
			t.Logf("promtest: prometheus did not stop within %v of SIGTERM; killing it", stopTimeout)
			s.kill()
		}
	} else {
		s.kill()
	}
	if t.Failed() {
		t.Logf("promtest: %s", s.logTail())
	}
}

// kill ends the process at once and waits for it.
func (s *Server) kill() {
	_ = s.cmd.Process.Kill() // fails only if it has already exited
	<-s.done
}

// logTail returns the end of the server's log, for failure messages.
func (s *Server) logTail() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return fmt.Sprintf("prometheus log unreadable: %v", err)
	}
	if len(b) > logTailBytes {
		b = b[len(b)-logTailBytes:]
	}
	return fmt.Sprintf("prometheus log (%s), last %d bytes:\n%s", s.logPath, len(b), b)
}
