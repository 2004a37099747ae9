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

// serveControl accepts control connections until ctx ends.
func (s *Supervisor) serveControl(ctx context.Context, ln net.Listener) {
	var wg sync.WaitGroup
	defer wg.Wait()
	go func() { <-ctx.Done(); ln.Close() }()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			stop := context.AfterFunc(ctx, func() { c.Close() })
			defer stop()
			s.handleConn(ctx, c)
		}()
	}
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

func (s *Supervisor) handleConn(ctx context.Context, c net.Conn) {
	conn := control.NewConn(c)
	if err := peerAllowed(c); err != nil {
		s.log.Warn("control: refused peer", "err", err)
		conn.Write(control.Message{Type: control.TypeResult, Error: "refused: " + err.Error()})
		return
	}
	m, err := conn.Read(time.Now().Add(helloTimeout))
	if err != nil {
		return
	}
	if m.Type != control.TypeHello || m.Version != control.Version {
		conn.Write(control.Message{Type: control.TypeResult, Error: fmt.Sprintf("protocol: want hello version %d", control.Version)})
		return
	}
	switch m.Role {
	case control.RoleWorker:
		s.handleWorker(conn, m)
	case control.RoleClient:
		s.handleClient(ctx, conn, m)
	default:
		conn.Write(control.Message{Type: control.TypeResult, Error: "protocol: unknown role"})
	}
}

// handleWorker serves one worker's connection for its whole life.
func (s *Supervisor) handleWorker(conn *control.Conn, hello control.Message) {
	s.mu.Lock()
	w := s.workersByToken[hello.Token]
	switch {
	case w == nil || w.conn != nil:
		w = nil
	case !hello.Rejoin:
		w.conn = conn
	}
	if w != nil {
		w.caps = hello.Caps
	}
	s.mu.Unlock()
	if w == nil {
		conn.Write(control.Message{Type: control.TypeResult, Error: "unknown worker"})
		return
	}
	defer func() {
		s.mu.Lock()
		if w.conn == conn {
			w.conn = nil
		}
		s.mu.Unlock()
	}()
	if hello.Rejoin {
		if err := s.rejoinWorker(w, conn, hello); err != nil {
			s.log.Warn("worker rejoin", "generation", w.gen.num, "worker", w.index, "pid", w.pid, "err", err)
			return
		}
		if w.gen == s.activeGen() {
			// Not here: the reply comes through the loop below.
			go func() { // bounded by the steer request's timeout
				if err := s.resteer(); err != nil {
					s.log.Warn("steer after a worker rejoined", "err", err)
				}
			}()
		}
	} else if err := conn.Write(control.Message{Type: control.TypeWelcome, Version: control.Version}); err != nil {
		return
	}
	for {
		m, err := conn.Read(time.Time{})
		if err != nil {
			return
		}
		switch m.Type {
		case control.TypeListen:
			if err := s.grantListen(w, conn); err != nil {
				s.log.Warn("listen grant", "generation", w.gen.num, "worker", w.index, "pid", w.pid, "err", err)
				return
			}
		case control.TypeReady:
			go s.onReady(w)
		case control.TypeFail:
			select {
			case w.readyErr <- errors.New(m.Error):
			default:
			}
		case control.TypeDrained:
			if m.Error != "" {
				s.drainCut(w, m.Cut)
			}
		case control.TypeSteered, control.TypeReleased, control.TypeQuiesced:
			select {
			case w.replies <- m:
			default:
			}
		}
	}
}

// grantListen lets w bind its sockets while nobody else does, so the group
// model knows their index: the kernel appends each socket at listen().
func (s *Supervisor) grantListen(w *worker, conn *control.Conn) error {
	s.listenMu.Lock()
	defer s.listenMu.Unlock()
	if err := conn.Write(control.Message{Type: control.TypeGrant}); err != nil {
		return err
	}
	m, err := conn.Read(time.Now().Add(10 * time.Second))
	if err != nil {
		return err
	}
	switch m.Type {
	case control.TypeListening:
		s.mu.Lock()
		w.listening = true
		s.group.Join(w)
		s.mu.Unlock()
		s.markDirty()
	case control.TypeFail:
		select {
		case w.readyErr <- errors.New(m.Error):
		default:
		}
	default:
		return fmt.Errorf("after grant: unexpected %s", m.Type)
	}
	return nil
}

// onReady checks a worker's health on its admin socket, then marks it
// ready. A restarted worker of the active generation is steered to at once.
func (s *Supervisor) onReady(w *worker) {
	if err := checkHealth(w.admin); err != nil {
		select {
		case w.readyErr <- fmt.Errorf("health check: %w", err):
		default:
		}
		return
	}
	s.mu.Lock()
	if w.ready {
		s.mu.Unlock()
		return
	}
	w.ready = true
	rejoin := w.gen == s.active && w.gen.state == StateActive
	s.mu.Unlock()
	s.markDirty()
	close(w.readyCh)
	if rejoin {
		if err := s.resteer(); err != nil {
			s.log.Warn("steer to restarted worker", "err", err)
		}
	}
}

// activeGen returns the active generation.
func (s *Supervisor) activeGen() *generation {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.active
}

// checkHealth asks the worker's admin socket for /healthz.
func checkHealth(socket string) error {
	client := unixClient(socket, 2*time.Second)
	defer client.CloseIdleConnections()
	resp, err := client.Get("http://worker/healthz")
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

// handleClient runs one CLI command and streams its progress.
func (s *Supervisor) handleClient(ctx context.Context, conn *control.Conn, m control.Message) {
	progress := func(text string) {
		conn.Write(control.Message{Type: control.TypeProgress, Text: text})
	}
	result := control.Message{Type: control.TypeResult, OK: true}
	var err error
	switch m.Cmd {
	case "status":
		var b []byte
		b, err = json.Marshal(s.Status(ctx))
		result.Data = b
	case "upgrade":
		var sum string
		sum, err = s.Upgrade(ctx, m.Arg, m.Wait, progress)
		result.Text = sum
	case "rollback":
		var sum string
		sum, err = s.Rollback(ctx, m.Wait, progress)
		result.Text = sum
	case "stop":
		err = s.Stop(ctx)
		result.Text = "stopped"
	default:
		err = fmt.Errorf("unknown command %q", m.Cmd)
	}
	if err != nil {
		result.OK, result.Error = false, err.Error()
	}
	conn.Write(result)
}
