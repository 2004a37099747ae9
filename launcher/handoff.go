package launcher

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/launcherd/launcher/internal/control"
)

// handoffVersion is the version a process started by a standalone parent
// says hello at. Its parent is the previous release, whose library may
// accept exactly version 1 and hang up on anything else without a refusal
// to fall back from; the handoff uses no message version 2 changed.
const handoffVersion = 1

// handover is the standalone SIGHUP flow: start this program's path again
// (a "current" symlink resolves to the new release), let the new process
// bind the same addresses with SO_REUSEPORT, wait until it is ready, steer
// new connections to it, empty and close our listeners, and tell it the
// port is its own. On any failure before the steer, or when ctx ends
// first (this process was told to stop), the new process is killed with
// every process it started (its process group: a release may be a script
// that runs the app without exec) and this one serves on untouched, or
// goes on stopping.
func (a *App) handover(ctx context.Context) error {
	exe, err := selfPath()
	if err != nil {
		return err
	}
	args, err := selfArgs()
	if err != nil {
		return err
	}
	argsJSON, err := json.Marshal(args)
	if err != nil {
		return fmt.Errorf("handover: %w", err)
	}
	dir, err := os.MkdirTemp("", "launcher-handoff-")
	if err != nil {
		return fmt.Errorf("handover: %w", err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "control.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		return fmt.Errorf("handover: %w", err)
	}
	defer l.Close()
	token := randomToken()

	cmd := exec.Command(exe, args...)
	cmd.Env = append(control.WithoutLauncherEnv(os.Environ()),
		control.EnvControl+"="+sock,
		control.EnvHandoff+"=1",
		// A release may be a script that execs the app at a path of
		// its own (releases/3/hello): the next SIGHUP must start what
		// this one started, the symlink, not that path.
		control.EnvExec+"="+exe,
		control.EnvExecArgs+"="+string(argsJSON), // and the flags a script adds stay its own
		control.EnvToken+"="+token,
		control.EnvListen+"="+strings.Join(a.addrs, ","),
		control.EnvGeneration+"="+strconv.Itoa(a.generation+1),
	)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	ownProcessGroup(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("handover: start %s: %w", exe, err)
	}
	a.log.Info("handover: started new process", "path", exe, "child", cmd.Process.Pid)
	exited := watchExit(cmd)

	ctx, cancel := context.WithTimeout(ctx, a.opts.ReadyTimeout)
	defer cancel()
	child, err := acceptChild(ctx, l, token, exited, a.handoffTicketKeys())
	// The socket served the child's one connection. Remove it now, not in
	// a deferred call: after a handover the drain may end at once, and
	// the process exit before this goroutine got to its defers (about one
	// handover in three left the directory in TMPDIR).
	l.Close()
	os.RemoveAll(dir)
	if err == nil {
		defer child.Close()
		err = a.awaitChildReady(ctx, child, exited)
	}
	if err != nil {
		killProcessGroup(cmd)
		<-exited.done
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w (%s, ReadyTimeout)", err, a.opts.ReadyTimeout)
		}
		return fmt.Errorf("handover to %s: %w; the new process was killed", exe, err)
	}
	// The group is [this process, child] on every address: steer to slot 1.
	if err := a.steer([]int{1}); err != nil {
		killProcessGroup(cmd)
		<-exited.done
		return fmt.Errorf("handover: %w", err)
	}
	if err := a.release(0, false, false); err != nil {
		a.log.Warn("handover: release", "err", err)
	}
	a.disownPIDFile() // the child writes it once told
	if err := child.Write(control.Message{Type: control.TypeHandoffDone}); err != nil {
		a.log.Warn("handover: tell new process", "err", err)
	}
	a.markStopping()
	a.log.Info("handover: new process serves; draining", "child", cmd.Process.Pid)
	return nil
}

// exitWatch tells any number of waiters that a process has exited. (A
// channel receiving cmd.Wait's error tells one: after a new process that
// exited at start was seen to, the kill's wait for it blocked forever, and
// with it every later SIGHUP.)
type exitWatch struct {
	done chan struct{} // closed once the process is reaped
	err  error         // cmd.Wait's error, set before done is closed
}

// status says how the process ended, once done is closed: cmd.Wait's
// error, or "exit status 0" for a clean exit (which Wait reports as nil).
func (w *exitWatch) status() string {
	if w.err == nil {
		return "exit status 0"
	}
	return w.err.Error()
}

func watchExit(cmd *exec.Cmd) *exitWatch {
	w := &exitWatch{done: make(chan struct{})}
	go func() { w.err = cmd.Wait(); close(w.done) }() // ends when the process is reaped
	return w
}

// acceptChild waits for the new process's handshake, and hands it the
// TLS session-ticket keys if its library takes them, so that tickets this
// process issued resume there.
func acceptChild(ctx context.Context, l net.Listener, token string, exited *exitWatch, keys []control.TicketKey) (*control.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	got := make(chan result, 1)
	go func() {
		c, err := l.Accept()
		got <- result{c, err}
	}()
	var r result
	select {
	case r = <-got:
	case <-exited.done:
		l.Close()
		return nil, fmt.Errorf("new process exited before connecting: %s", exited.status())
	case <-ctx.Done():
		l.Close()
		return nil, fmt.Errorf("new process did not connect: %w", ctx.Err())
	}
	if r.err != nil {
		return nil, r.err
	}
	c := control.NewConn(r.c)
	m, err := c.Read(time.Now().Add(10 * time.Second))
	switch {
	case err != nil:
	case m.Type != control.TypeHello || m.Token != token:
		err = errors.New("bad handshake")
	case !control.Accepts(m.Version):
		c.Write(control.Refusal(control.Version))
		err = fmt.Errorf("bad handshake: hello version %d", m.Version)
	default:
		// Speak the child's version: it may be an older release. A child
		// of this library checks its health before its ready and says
		// how it went (an older one is handed over unchecked, as before),
		// and listens without asking: it is the only one to order (an
		// older one asks, and is granted at once).
		err = c.Write(control.Message{Type: control.TypeWelcome, Version: m.Version, Caps: []string{control.CapReadyHealth, control.CapListenFree}})
		if err == nil && len(keys) > 0 && control.HasCap(m.Caps, control.CapTicketKeys) {
			err = c.Write(control.Message{Type: control.TypeTicketKeys, TicketKeys: keys})
		}
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// awaitChildReady grants the child's listen, if it asks, and waits for
// its ready.
func (a *App) awaitChildReady(ctx context.Context, c *control.Conn, exited *exitWatch) error {
	msgs := make(chan control.Message)
	errc := make(chan error, 1)
	go func() {
		for {
			deadline, _ := ctx.Deadline()
			m, err := c.Read(deadline)
			if err != nil {
				errc <- err
				return
			}
			select {
			case msgs <- m:
			case <-ctx.Done():
				return
			}
			if m.Type == control.TypeReady {
				return
			}
		}
	}()
	for {
		select {
		case m := <-msgs:
			switch m.Type {
			case control.TypeListen:
				if err := c.Write(control.Message{Type: control.TypeGrant}); err != nil {
					return err
				}
			case control.TypeFail:
				return fmt.Errorf("new process failed: %s", m.Error)
			case control.TypeReady:
				if m.Error != "" {
					return fmt.Errorf("new process failed its health check: %s", m.Error)
				}
				return nil
			}
		case err := <-errc:
			return fmt.Errorf("new process: %w", err)
		case <-exited.done:
			return fmt.Errorf("new process exited before ready: %s", exited.status())
		case <-ctx.Done():
			return fmt.Errorf("new process not ready: %w", ctx.Err())
		}
	}
}

// selfPath is the path this program was started by, not the file it
// resolves to, so that a "current" symlink repointed to a new release is
// followed on the next start: $LAUNCHER_EXEC if set (see
// control.EnvExec), else argv[0].
func selfPath() (string, error) {
	p := os.Getenv(control.EnvExec)
	if p == "" {
		p = os.Args[0]
	}
	if !strings.Contains(p, "/") {
		lp, err := exec.LookPath(p)
		if err != nil {
			return "", fmt.Errorf("handover: find own executable %q: %w", p, err)
		}
		p = lp
	}
	return filepath.Abs(p)
}

// selfArgs are the arguments this program was started with by the
// process that handed over to it ($LAUNCHER_EXEC_ARGS, see
// control.EnvExecArgs), else its own: a release script may have added
// flags for its release, which the next release must not get.
func selfArgs() ([]string, error) {
	v, ok := os.LookupEnv(control.EnvExecArgs)
	if !ok {
		return os.Args[1:], nil
	}
	var args []string
	if err := json.Unmarshal([]byte(v), &args); err != nil {
		return nil, fmt.Errorf("handover: %s: %w", control.EnvExecArgs, err)
	}
	return args, nil
}

func randomToken() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}
