package drain_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/launcherd/launcher/drain"
)

const body = "hello\n"

// safety bounds every wait of a handler or client, so that a broken drain
// fails the test instead of hanging it.
const safety = 10 * time.Second

// helloHandler answers every request with body.
var helloHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	io.WriteString(w, body)
})

// startServer serves s on a fresh 127.0.0.1 listener and returns its
// address. Cleanup closes the server and checks that Serve returned nil.
func startServer(t *testing.T, s *drain.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.HTTP.Close()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("Serve = %v; want nil", err)
			}
		case <-time.After(safety):
			t.Errorf("Serve did not return within %s of Close", safety)
		}
	})
	return ln.Addr().String()
}

// startDrain runs s.Drain with a context ending after timeout and returns
// the start time and a channel receiving Drain's result.
func startDrain(s *drain.Server, timeout time.Duration) (time.Time, <-chan error) {
	start := time.Now()
	errc := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		errc <- s.Drain(ctx)
	}()
	return start, errc
}

// waitErr waits for a drain's result.
func waitErr(t *testing.T, errc <-chan error, within time.Duration) error {
	t.Helper()
	select {
	case err := <-errc:
		return err
	case <-time.After(within):
		t.Fatalf("Drain did not return within %s", within)
		return nil
	}
}

// eventually polls cond every 5ms until it holds, or fails t after timeout.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// client is a raw HTTP/1.1 keep-alive connection, so a test controls
// exactly which request goes on which connection.
type client struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, safety)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{t: t, c: c, br: bufio.NewReader(c)}
}

// get sends GET path on the connection and reads the whole response.
func (c *client) get(path string) (*http.Response, string, error) {
	c.c.SetDeadline(time.Now().Add(safety))
	if _, err := fmt.Fprintf(c.c, "GET %s HTTP/1.1\r\nHost: test\r\n\r\n", path); err != nil {
		return nil, "", err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

// mustGet is get that fails the test unless the answer is 200 with body.
func (c *client) mustGet(path string) *http.Response {
	c.t.Helper()
	resp, b, err := c.get(path)
	if err != nil {
		c.t.Fatalf("GET %s: %v", path, err)
	}
	if resp.StatusCode != http.StatusOK || b != body {
		c.t.Fatalf("GET %s = %d %q; want 200 %q", path, resp.StatusCode, b, body)
	}
	return resp
}

// waitClosed waits until the peer closes the connection and returns when
// that was seen. Data read meanwhile is an error.
func (c *client) waitClosed(within time.Duration) time.Time {
	c.t.Helper()
	c.c.SetReadDeadline(time.Now().Add(within))
	b, err := c.br.ReadByte()
	switch {
	case err == nil:
		c.t.Fatalf("read %q; want the connection closed", b)
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.t.Fatalf("connection still open after %s", within)
	}
	return time.Now() // io.EOF or a reset: closed by the server
}

// TestDrainConnectionClose: during a drain, a response on an existing
// keep-alive connection carries "Connection: close", and the server then
// closes that connection, so the client reconnects elsewhere.
func TestDrainConnectionClose(t *testing.T) {
	tr := drain.NewTracker()
	s := &drain.Server{HTTP: &http.Server{Handler: helloHandler}, Tracker: tr, IdleGrace: 5 * time.Second}
	addr := startServer(t, s)
	c := dial(t, addr)

	// http.ReadResponse removes the Connection header and sets resp.Close
	// when it says "close" (the only way a HTTP/1.1 response sets it).
	resp := c.mustGet("/")
	if resp.Close {
		t.Fatalf("before drain: resp.Close = true; want false (keep-alive)")
	}
	if got, want := tr.Stats().OpenConnections, int64(1); got != want {
		t.Fatalf("OpenConnections = %v; want %v", got, want)
	}

	_, drained := startDrain(s, safety)
	eventually(t, time.Second, "tracker draining", tr.IsDraining)
	resp = c.mustGet("/") // idle for milliseconds only: well within IdleGrace
	if !resp.Close {
		t.Errorf("during drain: resp.Close = false; want true (Connection: close)")
	}
	c.waitClosed(2 * time.Second)
	if err := waitErr(t, drained, 2*time.Second); err != nil {
		t.Fatalf("Drain = %v; want nil", err)
	}
	if got, want := tr.Stats(), (drain.Stats{}); got != want {
		t.Fatalf("Stats after drain = %+v; want %+v", got, want)
	}
}

// TestDrainIdleGrace: an idle keep-alive connection is closed by a drain
// only once it has been idle for IdleGrace, never before, and soon after.
func TestDrainIdleGrace(t *testing.T) {
	const grace = 600 * time.Millisecond
	tr := drain.NewTracker()
	s := &drain.Server{HTTP: &http.Server{Handler: helloHandler}, Tracker: tr, IdleGrace: grace}
	addr := startServer(t, s)
	c := dial(t, addr)

	sent := time.Now() // the connection cannot be idle before this
	c.mustGet("/")
	start, drained := startDrain(s, safety)

	time.Sleep(grace / 3)
	if got, want := tr.Stats().OpenConnections, int64(1); got != want {
		t.Fatalf("OpenConnections %s into the drain = %v; want %v", time.Since(start), got, want)
	}
	closed := c.waitClosed(safety)
	if idle := closed.Sub(sent); idle < grace {
		t.Errorf("idle connection closed after %s; want >= IdleGrace %s", idle, grace)
	}
	if late := closed.Sub(start); late > grace+time.Second {
		t.Errorf("idle connection closed %s after drain start; want about IdleGrace %s", late, grace)
	}
	if err := waitErr(t, drained, 2*time.Second); err != nil {
		t.Fatalf("Drain = %v; want nil", err)
	}
}

// TestDrainInflightCompletes: a request in flight when the drain starts
// completes normally, and Drain waits for it.
func TestDrainInflightCompletes(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		close(started)
		select {
		case <-release:
		case <-time.After(safety):
		}
		io.WriteString(w, body)
	})
	tr := drain.NewTracker()
	s := &drain.Server{HTTP: &http.Server{Handler: mux}, Tracker: tr, IdleGrace: 100 * time.Millisecond}
	addr := startServer(t, s)
	c := dial(t, addr)

	type answer struct {
		resp *http.Response
		body string
		err  error
	}
	answers := make(chan answer, 1)
	go func() {
		resp, b, err := c.get("/slow")
		answers <- answer{resp, b, err}
	}()
	<-started
	_, drained := startDrain(s, safety)

	time.Sleep(300 * time.Millisecond) // well past IdleGrace
	select {
	case err := <-drained:
		t.Fatalf("Drain returned %v with a request in flight; want it to wait", err)
	default:
	}
	if got, want := tr.Stats().InflightRequests, int64(1); got != want {
		t.Fatalf("InflightRequests during drain = %v; want %v", got, want)
	}
	close(release)

	a := <-answers
	if a.err != nil {
		t.Fatalf("request in flight: %v; want it to complete", a.err)
	}
	if a.resp.StatusCode != http.StatusOK || a.body != body {
		t.Errorf("request in flight = %d %q; want 200 %q", a.resp.StatusCode, a.body, body)
	}
	if err := waitErr(t, drained, 2*time.Second); err != nil {
		t.Fatalf("Drain = %v; want nil", err)
	}
}

// TestDrainDeadlineCutsHungRequest: when the drain's context ends first, a
// hung request is cut (its connection closed) and the error wraps ErrCut
// and the context's error.
func TestDrainDeadlineCutsHungRequest(t *testing.T) {
	started := make(chan struct{})
	hung := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		select {
		case <-r.Context().Done(): // the connection was closed
		case <-time.After(safety):
		}
	})
	tr := drain.NewTracker()
	s := &drain.Server{HTTP: &http.Server{Handler: hung}, Tracker: tr}
	addr := startServer(t, s)
	c := dial(t, addr)
	clientErr := make(chan error, 1)
	go func() {
		_, _, err := c.get("/")
		clientErr <- err
	}()
	<-started

	const deadline = 300 * time.Millisecond
	start, drained := startDrain(s, deadline)
	err := waitErr(t, drained, safety)
	took := time.Since(start)
	if !errors.Is(err, drain.ErrCut) {
		t.Errorf("Drain = %v; want an error wrapping drain.ErrCut", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Drain = %v; want an error wrapping context.DeadlineExceeded", err)
	}
	if err != nil && !strings.Contains(err.Error(), "1 requests in flight") {
		t.Errorf("Drain = %v; want the cut request counted", err)
	}
	if took < deadline || took > deadline+2*time.Second {
		t.Errorf("Drain returned after %s; want about its deadline %s", took, deadline)
	}
	select {
	case err := <-clientErr:
		if err == nil {
			t.Errorf("hung request got an answer; want its connection cut")
		}
	case <-time.After(2 * time.Second):
		t.Fatalf("hung request still waiting 2s after the cut")
	}
	eventually(t, 2*time.Second, "no request nor connection left", func() bool {
		st := tr.Stats()
		return st.InflightRequests == 0 && st.OpenConnections == 0
	})
}

// countObserver counts finished requests by code.
type countObserver struct{ ok, other atomic.Int64 }

func (o *countObserver) ObserveRequest(code int, _ time.Duration) {
	if code == http.StatusOK {
		o.ok.Add(1)
	} else {
		o.other.Add(1)
	}
}

// hijackServer serves /ws, which hijacks the connection and echoes lines
// on it. When closeOnDrain is set the app closes it as soon as
// Tracker.Draining is closed; drainSeen receives when that happened.
func hijackServer(t *testing.T, closeOnDrain bool) (s *drain.Server, addr string, drainSeen <-chan time.Time) {
	t.Helper()
	tr := drain.NewTracker()
	seen := make(chan time.Time, 1)
	ws := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("Hijack through the drain wrapper: %v", err)
			return
		}
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		go func() { // the app's watcher of the drain
			select {
			case <-tr.Draining():
				seen <- time.Now()
				if closeOnDrain {
					conn.Close()
				}
			case <-time.After(safety):
			}
		}()
		go func() { // the echo loop, until the connection closes
			defer conn.Close()
			for {
				line, err := brw.ReadString('\n')
				if err != nil {
					return
				}
				brw.WriteString(line)
				if brw.Flush() != nil {
					return
				}
			}
		}()
	})
	s = &drain.Server{HTTP: &http.Server{Handler: ws}, Tracker: tr, IdleGrace: 50 * time.Millisecond, Observer: &countObserver{}}
	return s, startServer(t, s), seen
}

// upgrade sends the /ws request and reads the 101 head.
func (c *client) upgrade() {
	c.t.Helper()
	c.c.SetDeadline(time.Now().Add(safety))
	fmt.Fprintf(c.c, "GET /ws HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	status, err := c.br.ReadString('\n')
	if err != nil || !strings.HasPrefix(status, "HTTP/1.1 101 ") {
		c.t.Fatalf("upgrade: %q, %v; want 101", status, err)
	}
	for {
		line, err := c.br.ReadString('\n')
		if err != nil {
			c.t.Fatalf("upgrade head: %v", err)
		}
		if line == "\r\n" {
			return
		}
	}
}

// echo sends a line on a hijacked connection and checks it comes back.
func (c *client) echo(line string) error {
	c.c.SetDeadline(time.Now().Add(safety))
	if _, err := io.WriteString(c.c, line+"\n"); err != nil {
		return err
	}
	got, err := c.br.ReadString('\n')
	if err != nil {
		return err
	}
	if got != line+"\n" {
		return fmt.Errorf("echo %q: got %q", line, got)
	}
	return nil
}

// TestDrainHijacked: a hijacked connection is not closed by the idle grace;
// Tracker.Draining() is closed when the drain starts so the app can finish
// it, and if the app does not, the connection stays open until the drain
// deadline, where it is cut.
func TestDrainHijacked(t *testing.T) {
	t.Run("kept until deadline", func(t *testing.T) {
		s, addr, seen := hijackServer(t, false)
		c := dial(t, addr)
		c.upgrade()
		if err := c.echo("ping"); err != nil {
			t.Fatal(err)
		}
		if got, want := s.Tracker.Stats(), (drain.Stats{OpenConnections: 1, Hijacked: 1}); got != want {
			t.Fatalf("Stats after hijack = %+v; want %+v", got, want)
		}

		const deadline = 800 * time.Millisecond
		start, drained := startDrain(s, deadline)
		select {
		case at := <-seen:
			if d := at.Sub(start); d > deadline/2 {
				t.Errorf("Draining() closed %s after drain start; want at once", d)
			}
		case <-time.After(deadline):
			t.Fatalf("Draining() not closed %s after drain start", deadline)
		}
		time.Sleep(200 * time.Millisecond) // 4 × IdleGrace
		if err := c.echo("still there"); err != nil {
			t.Fatalf("hijacked connection %s into the drain: %v; want it open until the deadline", time.Since(start), err)
		}
		closed := c.waitClosed(safety)
		if d := closed.Sub(start); d < deadline {
			t.Errorf("hijacked connection closed %s after drain start; want >= deadline %s", d, deadline)
		}
		err := waitErr(t, drained, 2*time.Second)
		if !errors.Is(err, drain.ErrCut) {
			t.Errorf("Drain = %v; want an error wrapping drain.ErrCut", err)
		}
		if got, want := s.Tracker.Stats(), (drain.Stats{}); got != want {
			t.Errorf("Stats after the cut = %+v; want %+v", got, want)
		}
	})
	t.Run("closed by the app", func(t *testing.T) {
		s, addr, seen := hijackServer(t, true)
		c := dial(t, addr)
		c.upgrade()
		if err := c.echo("ping"); err != nil {
			t.Fatal(err)
		}
		start, drained := startDrain(s, safety)
		<-seen
		c.waitClosed(2 * time.Second)
		if err := waitErr(t, drained, 2*time.Second); err != nil {
			t.Fatalf("Drain = %v; want nil once the app closed its hijacked connection", err)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("Drain took %s; want it to end soon after the app closed the connection", took)
		}
		if got, want := s.Tracker.Stats(), (drain.Stats{}); got != want {
			t.Fatalf("Stats after drain = %+v; want %+v", got, want)
		}
	})
}

// echoServer is a plain TCP line-echo server on a drain.Listener. It marks
// each connection idle while it waits for a line.
func echoServer(t *testing.T, tr *drain.Tracker) (*drain.Listener, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dl := drain.NewListener(ln, tr)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := dl.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				dc, ok := c.(*drain.Conn)
				if !ok {
					t.Errorf("Accept returned %T; want *drain.Conn", c)
					return
				}
				br := bufio.NewReader(c)
				for {
					dc.SetIdle(true)
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					dc.SetIdle(false)
					if _, err := io.WriteString(c, line); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		dl.Close()
		<-done
	})
	return dl, ln.Addr().String()
}

// TestListenerPlainTCP: drain.Listener counts a plain TCP server's open
// connections, and its Drain stops accepting, keeps a connection that
// stays busy, closes each once idle for the grace, and then returns.
func TestListenerPlainTCP(t *testing.T) {
	tr := drain.NewTracker()
	dl, addr := echoServer(t, tr)
	open := func(want int64) {
		t.Helper()
		eventually(t, 2*time.Second, fmt.Sprintf("%d open connections", want), func() bool {
			return tr.Stats().OpenConnections == want
		})
	}

	cs := make([]*client, 3)
	for i := range cs {
		cs[i] = dial(t, addr)
		if err := cs[i].echo(fmt.Sprint("hello ", i)); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := tr.Stats().OpenConnections, int64(3); got != want {
		t.Fatalf("OpenConnections = %v; want %v", got, want)
	}
	cs[0].c.Close()
	open(2)

	const grace = 500 * time.Millisecond
	busy, idle := cs[1], cs[2]
	idleSent := time.Now() // idle cannot be idle before this
	if err := idle.echo("last words"); err != nil {
		t.Fatal(err)
	}
	busyErr := make(chan error, 1)
	busyUntil := make(chan time.Time, 1)
	go func() { // busy sends a line every 50ms for 1.5s, then goes quiet
		end := time.Now().Add(1500 * time.Millisecond)
		var last time.Time
		for i := 0; time.Now().Before(end); i++ {
			if err := busy.echo(fmt.Sprint("busy ", i)); err != nil {
				busyErr <- err
				return
			}
			last = time.Now()
			time.Sleep(50 * time.Millisecond)
		}
		busyUntil <- last
		busyErr <- nil
	}()

	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), safety)
	defer cancel()
	drained := make(chan error, 1)
	go func() { drained <- dl.Drain(ctx, grace) }()

	eventually(t, time.Second, "listener closed", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	idleClosed := idle.waitClosed(safety)
	if d := idleClosed.Sub(idleSent); d < grace {
		t.Errorf("idle connection closed after %s idle; want >= grace %s", d, grace)
	}
	if d := idleClosed.Sub(start); d > grace+time.Second {
		t.Errorf("idle connection closed %s after drain start; want about the grace %s", d, grace)
	}
	if err := <-busyErr; err != nil {
		t.Fatalf("busy connection during drain: %v; want it served", err)
	}
	quiet := <-busyUntil
	busyClosed := busy.waitClosed(safety)
	// quiet is when the client saw its last echo; the server went idle
	// when it wrote it, a moment before.
	if d := busyClosed.Sub(quiet); d < grace-50*time.Millisecond {
		t.Errorf("busy connection closed %s after it went quiet; want >= grace %s", d, grace)
	}
	select {
	case err := <-drained:
		if err != nil {
			t.Fatalf("Listener.Drain = %v; want nil", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatalf("Listener.Drain did not return 2s after the last connection closed")
	}
	if got, want := tr.Stats(), (drain.Stats{}); got != want {
		t.Fatalf("Stats after drain = %+v; want %+v", got, want)
	}
	if !tr.IsDraining() {
		t.Errorf("IsDraining = false after Listener.Drain; want true")
	}
}

// TestDrainInflightResponseConnectionClose: Drain's documentation says
// "Responses from now on carry Connection: close", but the header is only
// set when a request starts, so the response of a request in flight when
// the drain begins keeps the connection alive; the client learns nothing
// and may race with the idle close.
func TestDrainInflightResponseConnectionClose(t *testing.T) {
	for _, observer := range []drain.Observer{nil, &countObserver{}} {
		t.Run(fmt.Sprintf("observer=%T", observer), func(t *testing.T) {
			started, release := make(chan struct{}), make(chan struct{})
			slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				close(started)
				<-release
				io.WriteString(w, body)
			})
			s := &drain.Server{HTTP: &http.Server{Handler: slow}, Tracker: drain.NewTracker(), Observer: observer}
			c := dial(t, startServer(t, s))
			resps := make(chan *http.Response, 1)
			go func() {
				resp, _, _ := c.get("/")
				resps <- resp
			}()
			<-started
			_, drained := startDrain(s, safety)
			eventually(t, time.Second, "tracker draining", s.Tracker.IsDraining)
			close(release)
			if resp := <-resps; resp == nil || !resp.Close {
				t.Errorf("response written during the drain: resp.Close = false; want true (Connection: close)")
			}
			if err := waitErr(t, drained, safety); err != nil {
				t.Fatalf("Drain = %v; want nil", err)
			}
		})
	}
}

// TestServerDrainClosesListeners: Drain's documentation says it closes any
// listener left open, but it only does so (through http.Server.Shutdown)
// after every connection is gone, so meanwhile new connections are
// accepted, and a steady stream of them keeps the drain from ending.
func TestServerDrainClosesListeners(t *testing.T) {
	s := &drain.Server{HTTP: &http.Server{Handler: helloHandler}, Tracker: drain.NewTracker(), IdleGrace: time.Second}
	addr := startServer(t, s)
	c := dial(t, addr)
	c.mustGet("/") // keeps the drain going for IdleGrace
	_, drained := startDrain(s, safety)
	eventually(t, time.Second, "tracker draining", s.Tracker.IsDraining)
	time.Sleep(100 * time.Millisecond)
	if c2, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c2.Close()
		t.Errorf("dial 100ms into the drain succeeded; want the listener closed")
	}
	if err := waitErr(t, drained, safety); err != nil {
		t.Fatalf("Drain = %v; want nil", err)
	}
}

// TestListenerUnmarkedConnIsBusy: Conn's documentation says that for a
// plain TCP server "every connection counts as busy unless the server
// marks it idle with SetIdle", but Listener.Accept marks each new
// connection idle, so a drain closes a busy connection of a server that
// never calls SetIdle after the grace, as if it were idle.
func TestListenerUnmarkedConnIsBusy(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tr := drain.NewTracker()
	dl := drain.NewListener(ln, tr)
	go func() { // a server that reads forever and never calls SetIdle
		for {
			c, err := dl.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(io.Discard, c)
			}()
		}
	}()
	dial(t, ln.Addr().String())
	eventually(t, time.Second, "connection accepted", func() bool { return tr.Stats().OpenConnections == 1 })
	const deadline = 500 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	start := time.Now()
	err = dl.Drain(ctx, 50*time.Millisecond)
	if !errors.Is(err, drain.ErrCut) {
		t.Errorf("Listener.Drain after %s = %v; want the busy connection kept until the deadline (ErrCut)", time.Since(start), err)
	}
}

// lateListener reports Accept's error only after a while, as a Serve loop
// that the scheduler has not run yet since its listener was closed.
type lateListener struct{ net.Listener }

func (l lateListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		time.Sleep(300 * time.Millisecond)
	}
	return c, err
}

// TestDrainAfterListenerClosed: the launcher closes its listeners (after
// emptying their accept queues) and then calls Drain. If Serve has not yet
// returned, http.Server.Shutdown closes the listener a second time and
// Drain returns "use of closed network connection", which launcher.Run
// reports as a failed drain (the worker exits 1). Seen in about 1% of
// close-then-Drain sequences under -race without the delay used here.
func TestDrainAfterListenerClosed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &drain.Server{HTTP: &http.Server{Handler: helloHandler}, Tracker: drain.NewTracker()}
	served := make(chan error, 1)
	go func() { served <- s.Serve(lateListener{ln}) }()
	c := dial(t, ln.Addr().String())
	c.mustGet("/")
	c.c.Close()
	eventually(t, 2*time.Second, "connection closed", func() bool { return s.Tracker.Stats().OpenConnections == 0 })

	ln.Close() // as reuseport.Drain does, before the app drains
	if err := s.Drain(context.Background()); err != nil {
		t.Errorf("Drain after the listener was closed = %v; want nil", err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve = %v; want nil", err)
	}
}

// TestKeepAlivesDisabledAndEnabledAgain: with keep-alives disabled every
// response says Connection: close while the listener keeps accepting, and
// enabling them again restores keep-alive, as a generation on standby
// needs when traffic comes back to it.
func TestKeepAlivesDisabledAndEnabledAgain(t *testing.T) {
	tr := drain.NewTracker()
	s := &drain.Server{HTTP: &http.Server{Handler: helloHandler}, Tracker: tr, IdleGrace: 5 * time.Second}
	addr := startServer(t, s)
	steps := []struct {
		enabled   bool
		wantClose bool
	}{
		{true, false},
		{false, true},
		{true, false},
	}
	for i, st := range steps {
		tr.SetKeepAlivesEnabled(st.enabled)
		c := dial(t, addr) // a new connection each step: the listener still accepts
		if resp := c.mustGet("/"); resp.Close != st.wantClose {
			t.Errorf("step %d (keep-alives enabled %v): resp.Close = %v; want %v", i, st.enabled, resp.Close, st.wantClose)
		}
		if st.wantClose {
			c.waitClosed(2 * time.Second)
		}
	}
	if tr.IsDraining() {
		t.Errorf("disabling keep-alives started a drain")
	}
}

// TestSwitchingProtocolsKeepsConnectionUpgrade: a handler that answers an
// upgrade with WriteHeader(101) and then hijacks (as coder/websocket's
// Accept does) must send "Connection: Upgrade" also on a generation on
// standby (keep-alives disabled) or draining, for a request on a
// connection accepted before: "Connection: close" in its place makes a
// WebSocket client fail the handshake (RFC 6455, section 4.1), so that the
// app cannot even tell it 1001 "going away".
func TestSwitchingProtocolsKeepsConnectionUpgrade(t *testing.T) {
	for _, phase := range []string{"serving", "standby", "draining"} {
		t.Run(phase, func(t *testing.T) {
			ws := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Connection", "Upgrade")
				w.Header().Set("Upgrade", "echo")
				w.WriteHeader(http.StatusSwitchingProtocols)
				conn, brw, err := http.NewResponseController(w).Hijack()
				if err != nil {
					t.Errorf("Hijack after 101: %v", err)
					return
				}
				brw.Flush()
				conn.Close() // at once, so that a drain ends
			})
			s := &drain.Server{HTTP: &http.Server{Handler: ws}, Tracker: drain.NewTracker(), IdleGrace: safety}
			c := dial(t, startServer(t, s))
			eventually(t, time.Second, "connection accepted", func() bool { return s.Tracker.Stats().OpenConnections == 1 })
			var drained <-chan error
			switch phase {
			case "standby":
				s.Tracker.SetKeepAlivesEnabled(false)
			case "draining":
				_, drained = startDrain(s, safety)
				eventually(t, time.Second, "tracker draining", s.Tracker.IsDraining)
			}
			c.c.SetDeadline(time.Now().Add(safety))
			fmt.Fprintf(c.c, "GET /ws HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
			head, err := c.br.ReadString('\n')
			for err == nil && !strings.HasSuffix(head, "\r\n\r\n") {
				var line string
				line, err = c.br.ReadString('\n')
				head += line
			}
			if err != nil {
				t.Fatalf("upgrade: %q, %v", head, err)
			}
			if !strings.HasPrefix(head, "HTTP/1.1 101 ") || !strings.Contains(head, "\r\nConnection: Upgrade\r\n") {
				t.Errorf("response head:\n%s\nwant 101 with Connection: Upgrade", head)
			}
			if drained != nil {
				if err := waitErr(t, drained, safety); err != nil {
					t.Errorf("Drain = %v; want nil", err)
				}
			}
		})
	}
}

// observed records what a Server reports to its Observer.
type observed struct {
	mu    sync.Mutex
	codes []int
	durs  []time.Duration
}

func (o *observed) ObserveRequest(code int, d time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.codes, o.durs = append(o.codes, code), append(o.durs, d)
}

// TestObserverGetsStatusAndDuration: each request is reported once with
// its status (200 when the handler wrote none) and how long its handler
// took, from the tracker's clock.
func TestObserverGetsStatusAndDuration(t *testing.T) {
	const sleep = 30 * time.Millisecond
	obs := &observed{}
	s := &drain.Server{HTTP: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(sleep)
		if r.URL.Path == "/teapot" {
			w.WriteHeader(http.StatusTeapot)
		}
	})}, Tracker: drain.NewTracker(), Observer: obs}
	addr := startServer(t, s)
	for _, path := range []string{"/", "/teapot"} {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if !slices.Equal(obs.codes, []int{200, 418}) {
		t.Errorf("codes %v; want [200 418]", obs.codes)
	}
	for _, d := range obs.durs {
		if d < sleep || d > 5*time.Second {
			t.Errorf("duration %s; want the handler's %s or a little more", d, sleep)
		}
	}
}

// codeObserver passes each finished request's code on.
type codeObserver chan int

func (o codeObserver) ObserveRequest(code int, _ time.Duration) { o <- code }

// TestUnansweredRequestsAreNotCountedAsOK: a request whose handler
// returns without a word because its connection is gone is counted as
// StatusClientClosed (499) when its client closed it, StatusCut (503)
// when the drain's deadline cut it; not as the 200 net/http would have
// sent, which made a drain's cuts look like successes on dashboards (a
// new user's trial).
func TestUnansweredRequestsAreNotCountedAsOK(t *testing.T) {
	for _, tc := range []struct {
		name string
		want int
	}{{"client closed", drain.StatusClientClosed}, {"cut by the drain", drain.StatusCut}} {
		t.Run(tc.name, func(t *testing.T) {
			codes := make(codeObserver, 4)
			started := make(chan struct{}, 1)
			wait := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				started <- struct{}{}
				select { // as a handler of a long request does
				case <-r.Context().Done():
				case <-time.After(safety):
				}
			})
			s := &drain.Server{HTTP: &http.Server{Handler: wait}, Observer: codes}
			addr := startServer(t, s)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			<-started
			if tc.want == drain.StatusClientClosed {
				c.Close()
			} else {
				_, drained := startDrain(s, 100*time.Millisecond)
				if err := waitErr(t, drained, safety); !errors.Is(err, drain.ErrCut) {
					t.Errorf("Drain = %v; want ErrCut", err)
				}
			}
			select {
			case code := <-codes:
				if code != tc.want {
					t.Errorf("counted as %d; want %d", code, tc.want)
				}
			case <-time.After(safety):
				t.Fatal("the request was not counted")
			}
		})
	}
}

// TestPanickingHandlerCountedAsAServerError: a handler that panics
// (net/http recovers it and closes the connection, the client gets no
// answer) is reported once, as a 500, and its in-flight count ends; the
// panic still reaches net/http, which logs it and closes the
// connection. Before, it was not reported at all, and a release whose
// handlers panicked passed its probation unjudged: "no requests" (a new
// user's trial).
func TestPanickingHandlerCountedAsAServerError(t *testing.T) {
	codes := make(codeObserver, 4)
	var logged strings.Builder
	var logMu sync.Mutex
	tr := drain.NewTracker()
	s := &drain.Server{HTTP: &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/panic" {
				panic("handler panic")
			}
		}),
		ErrorLog: log.New(writerFunc(func(p []byte) (int, error) {
			logMu.Lock()
			defer logMu.Unlock()
			return logged.Write(p)
		}), "", 0),
	}, Tracker: tr, Observer: codes}
	addr := startServer(t, s)
	if _, err := http.Get("http://" + addr + "/panic"); err == nil {
		t.Error("GET /panic answered; want the connection closed without an answer")
	}
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for _, want := range []int{http.StatusInternalServerError, http.StatusOK} {
		select {
		case got := <-codes:
			if got != want {
				t.Errorf("observed %d; want %d", got, want)
			}
		case <-time.After(safety):
			t.Fatalf("no request observed; want %d", want)
		}
	}
	if n := tr.Stats().InflightRequests; n != 0 {
		t.Errorf("%d request(s) in flight after the panic; want 0", n)
	}
	logMu.Lock()
	defer logMu.Unlock()
	if !strings.Contains(logged.String(), "panic serving") || !strings.Contains(logged.String(), "handler panic") {
		t.Errorf("net/http's log: %q; want its panic line, with the panic's value", logged.String())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestKeepAlivesEnabledSaysAHandOver: a server of its own protocol can
// tell that its generation hands its clients over (the launcher's worker
// disables keep-alives on standby), as it can tell a drain.
func TestKeepAlivesEnabledSaysAHandOver(t *testing.T) {
	tr := drain.NewTracker()
	if !tr.KeepAlivesEnabled() {
		t.Error("a new tracker: keep-alives disabled; want enabled")
	}
	tr.SetKeepAlivesEnabled(false)
	if tr.KeepAlivesEnabled() {
		t.Error("after SetKeepAlivesEnabled(false): enabled; want disabled")
	}
	tr.SetKeepAlivesEnabled(true)
	if !tr.KeepAlivesEnabled() {
		t.Error("after SetKeepAlivesEnabled(true): disabled; want enabled")
	}
}
