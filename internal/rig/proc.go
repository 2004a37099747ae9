package rig

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/launcherd/launcher/supervisor"
)

// Proc is a running supervisor process, `launcher start` or a command
// that wraps it. It remembers every worker pid its status has shown, so
// that Shutdown leaves nothing behind.
type Proc struct {
	StateDir string // its --state-dir
	cmd      *exec.Cmd
	race     *RaceDetector // on its output, which carries its workers' stderr
	done     chan struct{} // closed once the process is reaped
	err      error         // its exit status, once done is closed

	mu   sync.Mutex
	pids map[int]bool
}

// StartProc runs argv with env added to this process's environment and
// its output to log, and waits until the supervisor of stateDir reports an
// active generation (up to 30 s, or until ctx ends). Its output also goes
// through a [RaceDetector]: see [Proc.RaceReport].
func StartProc(ctx context.Context, argv, env []string, stateDir string, log io.Writer) (*Proc, error) {
	p := &Proc{StateDir: stateDir, done: make(chan struct{}), pids: map[int]bool{}}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Env = append(os.Environ(), env...)
	if log == nil {
		log = io.Discard
	}
	tail := &outputTail{}
	p.race = NewRaceDetector(io.MultiWriter(log, tail))
	p.cmd.Stdout, p.cmd.Stderr = p.race, p.race
	// Workers share its stdout: once it is killed, Wait must not wait for
	// them to close it.
	p.cmd.WaitDelay = 2 * time.Second
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }() // ends when the process is reaped
	deadline := time.Now().Add(30 * time.Second)
	for {
		if st, err := p.Status(ctx); err == nil && active(st) {
			return p, nil
		}
		select {
		case <-p.done:
			if line := tail.errLine(); line != "" {
				return nil, fmt.Errorf("launcher start exited before serving (%v): %s", p.err, line)
			}
			return nil, fmt.Errorf("launcher start exited before serving: %v", p.err)
		case <-ctx.Done():
			p.Shutdown(5 * time.Second)
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.Shutdown(5 * time.Second)
			return nil, errors.New("launcher start: not serving after 30s")
		}
	}
}

// tailBytes of a supervisor's output are kept for the error of one that
// exits before serving.
const tailBytes = 4 << 10

// outputTail keeps the last tailBytes written to it; it is safe for
// concurrent use.
type outputTail struct {
	mu sync.Mutex
	b  []byte
}

func (t *outputTail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > tailBytes {
		t.b = append(t.b[:0], t.b[len(t.b)-tailBytes:]...)
	}
	return len(p), nil
}

// errLine returns the last line that starts "launcher:", the CLI's error
// line (one line on stderr, see README), else the last non-empty line
// (of a wrapper, say), else "".
func (t *outputTail) errLine() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := strings.Split(strings.TrimSpace(string(t.b)), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], "launcher:") {
			return lines[i]
		}
	}
	return strings.TrimSpace(lines[len(lines)-1])
}

func active(st supervisor.Status) bool {
	for _, g := range st.Generations {
		if g.State == supervisor.StateActive {
			return true
		}
	}
	return false
}

// Pid returns the supervisor's pid.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Done is closed once the process has exited; Err then says how.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err returns the exit error once Done is closed.
func (p *Proc) Err() error { return p.err }

// RaceReport returns the first data race report the supervisor or its
// workers wrote on its output (when built with -race), or says that the
// supervisor exited with the race detector's status 66; "" if neither.
// Call it once the process has exited, after [Proc.Shutdown], to see
// everything.
func (p *Proc) RaceReport() string {
	code := -1
	select {
	case <-p.done:
		code = p.cmd.ProcessState.ExitCode()
	default:
	}
	return withExitStatus(p.race.Report(), code)
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) { p.cmd.Process.Signal(sig) }

// Kill kills the process with SIGKILL, as a crash would, and waits for it.
// Its workers serve on, and its state dir stays for another start.
func (p *Proc) Kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// Wait waits up to timeout for the process to exit and returns its exit
// error, or an error saying it still runs.
func (p *Proc) Wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		return fmt.Errorf("launcher still running after %s", timeout)
	}
}

// Status returns the supervisor's status and remembers its workers.
func (p *Proc) Status(ctx context.Context) (supervisor.Status, error) {
	st, err := supervisor.GetStatus(ctx, p.StateDir)
	if err == nil {
		p.Remember(st)
	}
	return st, err
}

// Remember records the worker pids of st, for Shutdown.
func (p *Proc) Remember(st supervisor.Status) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, g := range st.Generations {
		for _, pid := range g.PIDs {
			p.pids[pid] = true
		}
	}
}

// ErrKilled is returned by Shutdown when the supervisor had to be killed.
var ErrKilled = errors.New("supervisor killed: it did not stop")

// Shutdown stops the supervisor gracefully (SIGTERM), kills it if it has
// not exited within timeout, then kills every worker it has seen. It
// returns the exit error, or ErrKilled if it had to kill it.
func (p *Proc) Shutdown(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	p.Status(ctx) // remember the latest workers
	cancel()
	var err error
	select {
	case <-p.done:
		err = p.err
	default:
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
			err = p.err
		case <-time.After(timeout):
			p.cmd.Process.Kill()
			<-p.done
			err = fmt.Errorf("%w within %s of SIGTERM", ErrKilled, timeout)
		}
	}
	p.mu.Lock()
	for pid := range p.pids {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	p.mu.Unlock()
	return err
}
