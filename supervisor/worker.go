package supervisor

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/launcherd/launcher/internal/control"
)

// Generation states, as shown by status and metrics.
const (
	StateStarting = "starting"
	StateActive   = "active"
	// StateStandby is the previous generation during the new one's
	// probation: steered away from, listening and ready to take traffic
	// back.
	StateStandby  = "standby"
	StateDraining = "draining"
	StateExited   = "exited"
	StateFailed   = "failed"
)

// generation is one release running as Workers processes. Its mutable
// fields are guarded by Supervisor.mu.
type generation struct {
	num       int
	release   release
	state     string
	workers   []*worker
	started   time.Time
	drainCut  bool       // its drain hit --drain-timeout (counted once)
	probation *probation // while the previous generation stands by
}

// hasLive reports whether a process of g is still running.
func (g *generation) hasLive() bool {
	for _, w := range g.workers {
		if !isClosed(w.exited) {
			return true
		}
	}
	return false
}

// worker is one process of a generation.
type worker struct {
	gen   *generation
	index int
	token string
	admin string
	cmd   *exec.Cmd
	pid   int
	tail  *tailBuffer

	pidfdMu  sync.Mutex
	pidfd    int           // an adopted worker's pidfd, -1 once closed; spawned ones have cmd
	rejoined chan struct{} // closed when a worker that lost its supervisor dials again
	readyCh  chan struct{} // closed when the worker reports ready and is healthy
	readyErr chan error    // a failure before ready (fail message, failed health check)
	replies  chan control.Message
	exited   chan struct{} // closed after the process is reaped

	// Guarded by Supervisor.mu.
	conn        *control.Conn
	ready       bool
	listening   bool     // its sockets are in the reuseport group model
	stopping    bool     // its exit is expected (drain, stop, abort)
	cutReported bool     // it reported a drain cut at its deadline
	caps        []string // what its library understands (control.Cap*)
	exitErr     error
}

func newToken() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// newWorker returns worker index of g, not yet running.
func newWorker(g *generation, index int, token, admin string) *worker {
	return &worker{
		gen: g, index: index, token: token, admin: admin,
		tail:     newTailBuffer(20),
		readyCh:  make(chan struct{}),
		readyErr: make(chan error, 1),
		replies:  make(chan control.Message, 1),
		exited:   make(chan struct{}),
		rejoined: make(chan struct{}),
		pidfd:    -1,
	}
}

// startWorker starts process index of g. The caller holds no lock.
func (s *Supervisor) startWorker(g *generation, index int) (*worker, error) {
	w := newWorker(g, index, newToken(), s.dir.adminSocket(g.num, index))
	cmd := exec.Command(g.release.Path, s.cfg.Command[1:]...)
	cmd.Env = append(workerEnv(os.Environ()),
		control.EnvGeneration+"="+strconv.Itoa(g.num),
		control.EnvVersion+"="+g.release.Version,
		control.EnvListen+"="+strings.Join(s.cfg.Listen, ","),
		control.EnvControl+"="+ControlSocket(s.dir.path),
		control.EnvAdmin+"="+w.admin,
		control.EnvWorker+"="+strconv.Itoa(index),
		control.EnvToken+"="+w.token,
	)
	cmd.Stdout = os.Stdout
	// An os.Pipe, not StderrPipe: Wait must not wait for the pipe's EOF,
	// which a grandchild holding stderr could delay forever.
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = pw
	// Own process group: a Ctrl-C on the supervisor's terminal must not
	// reach the workers, the supervisor drains them in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	s.mu.Lock()
	s.workersByToken[w.token] = w
	s.mu.Unlock()
	s.spawnMu.Lock()
	err = cmd.Start()
	pw.Close()
	if err != nil {
		s.spawnMu.Unlock()
		pr.Close()
		s.mu.Lock()
		delete(s.workersByToken, w.token)
		s.mu.Unlock()
		return nil, fmt.Errorf("start %s: %w", g.release.Path, err)
	}
	w.cmd, w.pid = cmd, cmd.Process.Pid
	s.spawned[w.pid] = true
	s.spawnMu.Unlock()
	s.markDirty()
	copied := make(chan struct{})
	go func() { // owned by the process: ends at its stderr's EOF
		defer close(copied)
		defer pr.Close()
		w.tail.copyLines(os.Stderr, pr)
	}()
	go func() { // owned by the process: ends when it is reaped
		err := cmd.Wait()
		// Let the last stderr lines in for error messages, but do not wait
		// for an EOF a grandchild may hold back.
		select {
		case <-copied:
		case <-time.After(200 * time.Millisecond):
		}
		s.spawnMu.Lock()
		delete(s.spawned, w.pid)
		s.spawnMu.Unlock()
		s.onExit(w, err)
	}()
	return w, nil
}

// signal sends sig to the worker's process (if it is still running).
func (w *worker) signal(sig syscall.Signal) {
	select {
	case <-w.exited:
	default:
		if w.cmd != nil {
			w.cmd.Process.Signal(sig)
			return
		}
		// Adopted: through its pidfd, which cannot name a reused pid.
		w.pidfdMu.Lock()
		if w.pidfd >= 0 {
			unix.PidfdSendSignal(w.pidfd, sig, nil, 0)
		}
		w.pidfdMu.Unlock()
	}
}

// workerEnv is the supervisor's environment without what belongs to the
// supervisor alone: its LAUNCHER_* settings and systemd's notify, watchdog
// and socket-activation variables.
func workerEnv(env []string) []string {
	var out []string
	for _, kv := range control.WithoutLauncherEnv(env) {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES":
			continue
		}
		out = append(out, kv)
	}
	return out
}

// tailBuffer passes a worker's stderr through and keeps its last lines
// for error messages.
type tailBuffer struct {
	mu    sync.Mutex
	lines []string
	max   int
}

func newTailBuffer(max int) *tailBuffer { return &tailBuffer{max: max} }

func (t *tailBuffer) copyLines(dst io.Writer, src io.Reader) {
	sc := bufio.NewScanner(src)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		fmt.Fprintln(dst, line)
		t.mu.Lock()
		t.lines = append(t.lines, line)
		if len(t.lines) > t.max {
			t.lines = t.lines[len(t.lines)-t.max:]
		}
		t.mu.Unlock()
	}
}

// last returns up to n last lines joined with " | ".
func (t *tailBuffer) last(n int) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	l := t.lines
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, " | ")
}
