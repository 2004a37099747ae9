package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// maxSamples is how many distinct error messages a worker keeps per class.
	maxSamples = 3
	// bodyPeek is how much of a body is kept to find the version; the
	// rest is read and discarded.
	bodyPeek = 128
	// maxVersionLen bounds a version name taken from a body.
	maxVersionLen = 64
)

// errAborted ends a request cut off by the cancellation of Run's context.
var errAborted = errors.New("aborted")

// worker is one client: at most one connection, one request at a time.
// Only its own goroutine touches its fields, except mu-guarded conn
// deadlines and aborted, which the context's AfterFunc also uses.
type worker struct {
	cfg    *Config
	start  time.Time // the run's start; record offsets count from here
	end    time.Time // no request starts at or after end
	issued *atomic.Int64
	rng    *rand.Rand
	dialer net.Dialer

	mu      sync.Mutex
	conn    net.Conn
	aborted bool

	br   *bufio.Reader
	req  []byte // reused request buffer
	peek [bodyPeek]byte

	log        recordLog
	versions   versionTable
	count      [NumClasses]int64
	perVersion [overflowIndex + 1]int64 // OK responses per version index
	abortedN   int64
	samples    [NumClasses][]string
}

func newWorker(cfg *Config, start time.Time, issued *atomic.Int64, seed, id uint64) *worker {
	return &worker{
		cfg:    cfg,
		start:  start,
		end:    start.Add(cfg.Duration),
		issued: issued,
		rng:    rand.New(rand.NewPCG(seed, id)),
		br:     bufio.NewReaderSize(nil, 4096),
	}
}

// run issues requests until the end time, the request budget, Stop or
// ctx.
func (w *worker) run(ctx context.Context) {
	stop := context.AfterFunc(ctx, w.abort)
	defer stop()
	defer w.closeConn()
	for ctx.Err() == nil {
		t0 := time.Now()
		if !t0.Before(w.end) || w.stopped() || w.issued.Add(1) > w.cfg.MaxRequests {
			return
		}
		c, v, err := w.do(ctx, t0)
		lat := time.Since(t0)
		if c != OK && ctx.Err() != nil {
			w.abortedN++ // cut off by cancellation: not the service's fault
			return
		}
		w.count[c]++
		if c == OK {
			w.perVersion[v]++
		} else {
			w.sample(c, err)
		}
		w.log.add(encodeRecord(t0.Sub(w.start), lat, c, v))
	}
}

// stopped reports whether Config.Stop has been closed.
func (w *worker) stopped() bool {
	select {
	case <-w.cfg.Stop:
		return true
	default:
		return false
	}
}

// do performs one request started at t0 and returns its class, the
// version index of an OK answer, and the error of a failure.
func (w *worker) do(ctx context.Context, t0 time.Time) (Class, uint8, error) {
	var sleep time.Duration
	if w.cfg.Mode == Long {
		sleep = w.pickSleep()
	}
	deadline := t0.Add(w.cfg.Timeout + sleep)
	if w.conn == nil {
		w.dialer.Deadline = deadline
		c, err := w.dialer.DialContext(ctx, "tcp", w.cfg.Addr)
		if err != nil {
			return Classify(err), 0, fmt.Errorf("dial: %w", err)
		}
		if !w.setConn(c) {
			return Other, 0, errAborted
		}
		w.br.Reset(c)
	}
	if err := w.arm(deadline); err != nil {
		w.closeConn()
		return Classify(err), 0, err
	}
	w.req = w.appendRequest(w.req[:0], sleep)
	if _, err := w.conn.Write(w.req); err != nil {
		w.closeConn()
		return Classify(err), 0, fmt.Errorf("write request: %w", err)
	}
	resp, err := http.ReadResponse(w.br, nil)
	if err != nil {
		w.closeConn()
		return Classify(err), 0, fmt.Errorf("read response: %w", err)
	}
	n, err := readBody(resp.Body, w.peek[:])
	if err != nil {
		w.closeConn()
		return Classify(err), 0, fmt.Errorf("read body: %w", err)
	}
	if resp.Close || w.cfg.Mode == NewConn {
		w.closeConn() // honored "Connection: close": not a failure
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return Non2xx, 0, fmt.Errorf("status %s", resp.Status)
	}
	return OK, w.versions.lookup(parseVersion(w.peek[:n])), nil
}

// pickSleep returns a sleep in [SleepMin, SleepMax] in millisecond steps.
func (w *worker) pickSleep() time.Duration {
	lo, hi := w.cfg.SleepMin.Milliseconds(), w.cfg.SleepMax.Milliseconds()
	return time.Duration(lo+w.rng.Int64N(hi-lo+1)) * time.Millisecond
}

// appendRequest appends the bytes of the next request to b.
func (w *worker) appendRequest(b []byte, sleep time.Duration) []byte {
	b = append(b, w.cfg.Method...)
	if w.cfg.Mode == Long {
		b = append(b, " /sleep?d="...)
		b = strconv.AppendInt(b, sleep.Milliseconds(), 10)
		b = append(b, "ms"...)
	} else {
		b = append(b, " /"...)
	}
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, w.cfg.Addr...)
	b = append(b, "\r\nUser-Agent: launcher-loadgen\r\n"...)
	if w.cfg.Mode == NewConn {
		b = append(b, "Connection: close\r\n"...)
	}
	if w.cfg.Method == "POST" {
		b = append(b, "Content-Type: text/plain\r\nContent-Length: "...)
		b = strconv.AppendInt(b, int64(len(postBody)), 10)
		b = append(b, "\r\n\r\n"+postBody...)
		return b
	}
	return append(b, "\r\n"...)
}

// setConn installs c unless the run was aborted meanwhile.
func (w *worker) setConn(c net.Conn) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.aborted {
		c.Close()
		return false
	}
	w.conn = c
	return true
}

// arm sets the request deadline unless the run was aborted: abort's
// deadline in the past must not be overwritten.
func (w *worker) arm(deadline time.Time) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.aborted {
		return errAborted
	}
	if err := w.conn.SetDeadline(deadline); err != nil {
		return fmt.Errorf("set deadline: %w", err)
	}
	return nil
}

// abort runs when Run's context is cancelled: it unblocks pending I/O.
func (w *worker) abort() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.aborted = true
	if w.conn != nil {
		w.conn.SetDeadline(time.Unix(1, 0)) // in the past: blocked I/O returns at once
	}
}

func (w *worker) closeConn() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.conn != nil {
		w.conn.Close()
		w.conn = nil
	}
}

// sample keeps the first few distinct error messages of class c.
func (w *worker) sample(c Class, err error) {
	if err == nil || len(w.samples[c]) >= maxSamples {
		return
	}
	msg := err.Error()
	for _, s := range w.samples[c] {
		if s == msg {
			return
		}
	}
	w.samples[c] = append(w.samples[c], msg)
}

// readBody reads body to its end, keeping its first len(buf) bytes in buf.
// It returns nil at a clean end of body.
func readBody(body io.ReadCloser, buf []byte) (int, error) {
	defer body.Close()
	n := 0
	for n < len(buf) {
		m, err := body.Read(buf[n:])
		n += m
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
	_, err := io.Copy(io.Discard, body)
	return n, err
}

// parseVersion returns X from a body "hello from X\n", or nil.
func parseVersion(body []byte) []byte {
	rest, ok := bytes.CutPrefix(body, []byte("hello from "))
	if !ok {
		return nil
	}
	if i := bytes.IndexAny(rest, " \t\r\n"); i >= 0 {
		rest = rest[:i]
	}
	if len(rest) > maxVersionLen {
		rest = rest[:maxVersionLen]
	}
	return rest
}
