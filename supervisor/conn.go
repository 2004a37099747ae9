package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/launcherd/launcher/internal/control"
)

// helloTimeout bounds the first message; a slow or silent client is
// dropped without affecting anyone else.
const helloTimeout = 5 * time.Second

// outboxSize bounds the messages queued for one worker. The loop never
// waits for a worker to read: a worker that falls this far behind has its
// connection dropped (it dials again once ready).
const outboxSize = 64

// workerConn is a worker's control connection: a reader that posts what
// the worker says to the loop, and a writer that sends what the loop
// queues, so that the loop never blocks on the socket.
type workerConn struct {
	c      *control.Conn
	out    chan control.Message
	closed chan struct{}
	once   sync.Once
}

func newWorkerConn(c *control.Conn) *workerConn {
	return &workerConn{c: c, out: make(chan control.Message, outboxSize), closed: make(chan struct{})}
}

// send queues m; false if the connection is closed or too far behind.
func (wc *workerConn) send(m control.Message) bool {
	select {
	case <-wc.closed:
		return false
	default:
	}
	select {
	case wc.out <- m:
		return true
	default:
		wc.close()
		return false
	}
}

func (wc *workerConn) close() {
	wc.once.Do(func() {
		close(wc.closed)
		wc.c.Close()
	})
}

// write sends queued messages until the connection closes.
func (wc *workerConn) write() {
	for {
		select {
		case <-wc.closed:
			return
		case m := <-wc.out:
			if err := wc.c.Write(m); err != nil {
				wc.close()
				return
			}
		}
	}
}

// server accepts control connections: workers and CLI clients.
type server struct {
	s  *Supervisor
	l  *loop
	wg sync.WaitGroup // connection actors
}

// serve accepts until ln is closed.
func (sv *server) serve(ctx context.Context, ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		sv.wg.Add(1)
		go func() { // owned by the server: ends when the connection does
			defer sv.wg.Done()
			defer c.Close()
			sv.handle(ctx, c)
		}()
	}
}

// peerGone reports whether the peer has closed c, without reading from
// it: a peek that does not wait finds the end of the stream.
func peerGone(c net.Conn) bool {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return false
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return false
	}
	gone := false
	rc.Control(func(fd uintptr) {
		var b [1]byte
		n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		gone = err == nil && n == 0
	})
	return gone
}

// peerAllowed reports whether the peer runs as our user or root.
func peerAllowed(c net.Conn) error {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return errors.New("not a unix connection")
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var cerr error
	rc.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
	if cerr != nil {
		return cerr
	}
	if cred.Uid != 0 && int(cred.Uid) != os.Getuid() {
		return fmt.Errorf("uid %d is not allowed", cred.Uid)
	}
	return nil
}

func (sv *server) handle(ctx context.Context, c net.Conn) {
	conn := control.NewConn(c)
	if err := peerAllowed(c); err != nil {
		sv.l.log.Warn("control: refused peer", "err", err)
		conn.Write(control.Message{Type: control.TypeResult, Error: "refused: " + err.Error()})
		return
	}
	m, err := conn.Read(time.Now().Add(helloTimeout))
	if err != nil {
		return
	}
	if m.Type != control.TypeHello || !control.Accepts(m.Version) {
		conn.Write(control.Refusal(control.Version))
		return
	}
	switch m.Role {
	case control.RoleWorker:
		sv.handleWorker(ctx, conn, m)
	case control.RoleClient:
		if peerGone(c) {
			// Its client gave up waiting (this supervisor was stopped
			// with SIGSTOP, or stuck) and told its operator the command
			// failed: carrying it out now would do what nobody waits
			// for, and several queued so would each run in turn.
			sv.l.log.Warn("control: command dropped: its client gave up before it was read", "cmd", m.Cmd, "arg", m.Arg)
			return
		}
		sv.handleClient(ctx, conn, m)
	default:
		conn.Write(control.Message{Type: control.TypeResult, Error: "protocol: unknown role"})
	}
}

// handleWorker serves one worker's connection for its whole life.
func (sv *server) handleWorker(ctx context.Context, conn *control.Conn, hello control.Message) {
	wc := newWorkerConn(conn)
	stop := context.AfterFunc(ctx, wc.close)
	defer stop()
	defer wc.close()
	decided := make(chan helloAnswer, 1)
	if !sv.l.post(evHello{wc: wc, hello: hello, reply: decided}) {
		return
	}
	var ans helloAnswer
	select {
	case ans = <-decided:
	case <-sv.l.done: // posted, but the loop returned before applying it
	}
	w := ans.w
	if w == nil {
		conn.Write(control.Message{Type: control.TypeResult, Error: "unknown worker"})
		return
	}
	welcome := control.Message{Type: control.TypeWelcome, Version: hello.Version, Caps: []string{control.CapReadyHealth}}
	if sv.l.cfg.collectsFinal() { // cfg never changes
		welcome.Caps = append(welcome.Caps, control.CapFinalMetrics)
	}
	if ans.grant {
		// The loop made this worker's listen the grant under way: if the
		// welcome is lost, evConnClosed ends it.
		welcome.Caps = append(welcome.Caps, control.CapWelcomeGrant)
	}
	var err error
	if hello.Rejoin && w.adoptedStderr() {
		err = sv.welcomeWithStderr(conn, welcome, w)
	} else {
		err = conn.Write(welcome)
	}
	if err != nil {
		sv.l.post(evConnClosed{w: w, wc: wc})
		return
	}
	sv.wg.Add(1)
	go func() { defer sv.wg.Done(); wc.write() }() // owned by this connection
	if hello.Rejoin {
		sv.l.post(evRejoined{w: w, hello: hello})
	}
	for {
		m, err := conn.Read(time.Time{})
		if err != nil {
			sv.l.post(evConnClosed{w: w, wc: wc})
			return
		}
		if !sv.l.post(evWorkerMsg{w: w, wc: wc, m: m}) {
			return
		}
	}
}

// adoptedStderr reports whether w is adopted: its stderr was a pipe to the
// killed supervisor, so its welcome carries a new one.
func (w *worker) adoptedStderr() bool {
	_, child := w.proc.(*childProc)
	return !child
}

// welcomeWithStderr sends the welcome with a new stderr for w attached
// (SCM_RIGHTS), and copies what w writes there.
func (sv *server) welcomeWithStderr(conn *control.Conn, welcome control.Message, w *worker) error {
	uc, ok := conn.NetConn().(*net.UnixConn)
	if !ok {
		return errors.New("rejoin: not a unix connection")
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	err = control.SendFile(uc, welcome, pw)
	pw.Close()
	if err != nil {
		pr.Close()
		return err
	}
	tail := w.tail // set when adopted, never changed
	go func() {    // owned by the process: ends at its stderr's EOF
		defer pr.Close()
		tail.copyLines(os.Stderr, pr)
	}()
	return nil
}

// handleClient runs one CLI command and streams its progress. The result
// is written before the connection closes, also for a stop: Run waits for
// this handler before it returns.
func (sv *server) handleClient(ctx context.Context, conn *control.Conn, m control.Message) {
	progress := func(p Progress) {
		conn.Write(progressMessage(control.TypeProgress, p))
	}
	result := control.Message{Type: control.TypeResult, OK: true}
	var err error
	switch m.Cmd {
	case "status":
		var st Status
		st, err = sv.s.Status(ctx)
		if err == nil {
			result.Data = mustJSON(st)
		}
	case "upgrade":
		// Every step, the summing-up one too, is streamed: the result
		// carries only the outcome.
		opts := UpgradeOptions{Wait: m.Wait, Canary: m.Canary, CanaryInterval: time.Duration(m.CanaryMS) * time.Millisecond}
		_, err = sv.s.UpgradeWith(ctx, m.Arg, opts, progress)
	case "promote":
		var p Progress
		p, err = sv.s.Promote(ctx)
		if err == nil {
			progress(p)
		}
	case "rollback":
		_, err = sv.s.Rollback(ctx, m.Wait, progress)
	case "stop":
		err = sv.s.stopAndWait(ctx, progress)
		result.Text = "stopped"
	default:
		err = fmt.Errorf("unknown command %q", m.Cmd)
	}
	if err != nil {
		result.OK, result.Error = false, err.Error()
	}
	conn.Write(result)
}

// progressMessage encodes p for the CLI: the rendered line for older
// clients, and p itself.
func progressMessage(typ string, p Progress) control.Message {
	m := control.Message{Type: typ}
	if p.Step != "" {
		m.Text = p.String()
		m.Data = mustJSON(p)
	}
	return m
}

// checkHealth asks the worker's admin socket for /healthz.
func checkHealth(ctx context.Context, socket string) error {
	client := unixClient(socket, 2*time.Second)
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://worker/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// The app's reason, briefly: it is for the operator's error line.
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		if why := strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]); why != "" {
			return fmt.Errorf("/healthz answered %s: %s", resp.Status, why)
		}
		return fmt.Errorf("/healthz answered %s", resp.Status)
	}
	return nil
}

func unixClient(socket string, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		}},
	}
}

// mustJSON encodes v, which is one of the supervisor's own types.
func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("supervisor: encode %T: %v", v, err))
	}
	return b
}
