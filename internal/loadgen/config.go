package loadgen

import (
	"errors"
	"fmt"
	"net"
	"time"
)

// Mode selects how requests use connections and which path they ask for.
type Mode string

// The load modes.
const (
	// NewConn dials a fresh TCP connection per request and sends
	// "Connection: close"; the request goes to /.
	NewConn Mode = "new-conn"
	// KeepAlive reuses each worker's connection for many requests to /.
	KeepAlive Mode = "keepalive"
	// Long reuses connections like KeepAlive, but each request goes to
	// /sleep?d=X with X random in [Config.SleepMin, Config.SleepMax].
	Long Mode = "long"
)

// Defaults applied by Run to zero fields of Config.
const (
	DefaultWorkers  = 32
	DefaultDuration = 10 * time.Second
	DefaultTimeout  = 10 * time.Second
	DefaultSleepMin = 1 * time.Second
	DefaultSleepMax = 5 * time.Second
	DefaultMethod   = "GET"
)

// Limits of the compact records.
const (
	// MaxRequestsLimit is the largest (and the default) MaxRequests: the
	// records of a run take at most 8 bytes times this (256 MiB).
	MaxRequestsLimit = 1 << 25
	// MaxDuration is the longest Duration: record start offsets are
	// 32-bit microseconds.
	MaxDuration = time.Hour
)

// postBody is the body sent with Method "POST".
const postBody = "hello"

// Config describes one load run. The zero value of every field except Addr
// means its default.
type Config struct {
	// Addr is the service's host:port, e.g. "127.0.0.1:8080". Required.
	Addr string
	// Mode is NewConn, KeepAlive or Long. Default KeepAlive.
	Mode Mode
	// Method is "GET" (default) or "POST"; POST sends the 5-byte body
	// "hello" with Content-Length.
	Method string
	// Workers is the number of concurrent clients, each with at most one
	// connection. Default DefaultWorkers.
	Workers int
	// Duration: no request starts after this much time. Default
	// DefaultDuration, at most MaxDuration.
	Duration time.Duration
	// MaxRequests: no more than this many requests start in total.
	// Default and maximum MaxRequestsLimit.
	MaxRequests int64
	// Stop, if not nil, ends the run early once closed, as Duration's end
	// does: no request starts after it, those in flight finish (each
	// within Timeout) and none is cut, unlike a cancelled context. For a
	// caller that cannot know beforehand how long the load must last
	// (until its upgrades are done) and needs every request answered.
	Stop <-chan struct{}
	// Timeout bounds each request from its start (dial included) to the
	// end of its response body. In Long mode the requested sleep is added.
	// Default DefaultTimeout.
	Timeout time.Duration
	// SleepMin and SleepMax bound the sleep asked for in Long mode
	// (uniform, millisecond steps). Defaults DefaultSleepMin and
	// DefaultSleepMax. Ignored in other modes.
	SleepMin, SleepMax time.Duration
	// Seed seeds the sleep choice of Long mode; 0 picks a random seed.
	Seed uint64
}

// withDefaults returns c with defaults applied, or an error when c is
// invalid.
func (c Config) withDefaults() (Config, error) {
	if c.Addr == "" {
		return c, errors.New("loadgen: Config.Addr is required")
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return c, fmt.Errorf("loadgen: Config.Addr: %w", err)
	}
	if c.Mode == "" {
		c.Mode = KeepAlive
	}
	switch c.Mode {
	case NewConn, KeepAlive, Long:
	default:
		return c, fmt.Errorf("loadgen: unknown mode %q (want %q, %q or %q)", c.Mode, NewConn, KeepAlive, Long)
	}
	if c.Method == "" {
		c.Method = DefaultMethod
	}
	if c.Method != "GET" && c.Method != "POST" {
		return c, fmt.Errorf("loadgen: method %q: want GET or POST", c.Method)
	}
	if c.Workers == 0 {
		c.Workers = DefaultWorkers
	}
	if c.Duration == 0 {
		c.Duration = DefaultDuration
	}
	if c.MaxRequests == 0 {
		c.MaxRequests = MaxRequestsLimit
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.SleepMin == 0 {
		c.SleepMin = DefaultSleepMin
	}
	if c.SleepMax == 0 {
		c.SleepMax = max(DefaultSleepMax, c.SleepMin)
	}
	switch {
	case c.Workers < 0:
		return c, fmt.Errorf("loadgen: Workers %d < 0", c.Workers)
	case c.Duration < 0 || c.Duration > MaxDuration:
		return c, fmt.Errorf("loadgen: Duration %v outside (0, %v]", c.Duration, MaxDuration)
	case c.MaxRequests < 0 || c.MaxRequests > MaxRequestsLimit:
		return c, fmt.Errorf("loadgen: MaxRequests %d outside (0, %d]", c.MaxRequests, MaxRequestsLimit)
	case c.Timeout < 0:
		return c, fmt.Errorf("loadgen: Timeout %v < 0", c.Timeout)
	case c.SleepMin < 0 || c.SleepMax < c.SleepMin:
		return c, fmt.Errorf("loadgen: sleep range [%v, %v] is invalid", c.SleepMin, c.SleepMax)
	}
	return c, nil
}
