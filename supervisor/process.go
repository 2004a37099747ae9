package supervisor

import (
	"errors"
	"fmt"
	"log/slog"
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

// Worker processes: the children this supervisor starts, and the workers
// of a killed supervisor it adopts.

// errAdoptedExit is the exit error of an adopted worker: it is not our
// child, so its exit status is not ours to read.
var errAdoptedExit = errors.New("exited (adopted: exit status unknown)")

// errExitedZero is the exit error of a worker that exited with status 0:
// the end of a drain, or, unasked, an app that returned.
var errExitedZero = errors.New("exited with status 0")

// childProc is a worker started by this supervisor.
type childProc struct {
	cmd  *exec.Cmd
	tree tree
	exit chan struct{}
	err  error

	mu     sync.Mutex
	reaped bool // its pid, and its process group's number, may be reused
}

func (p *childProc) pid() int              { return p.cmd.Process.Pid }
func (p *childProc) done() <-chan struct{} { return p.exit }
func (p *childProc) exitErr() error        { <-p.exit; return p.err }
func (p *childProc) release()              {}
func (p *childProc) stopped() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.reaped && pidStopped(p.pid(), p.tree) // once reaped, its pid may name another process
}
func (p *childProc) state() byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reaped {
		return 0
	}
	return processState(p.pid())
}
func (p *childProc) signal(sig syscall.Signal) {
	select {
	case <-p.exit:
	default:
		p.cmd.Process.Signal(sig)
	}
}

func (p *childProc) kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reaped {
		return
	}
	if err := p.tree.kill(); err != nil {
		p.cmd.Process.Kill()
	}
}

func (fx *osEffects) start(spec procSpec) (process, error) {
	dir, fd, err := fx.cg.forStart(spec.gen, spec.index)
	if err != nil {
		fx.cg.disable(err)
	}
	p, err := fx.startIn(spec, dir, fd)
	if fd >= 0 {
		unix.Close(fd)
	}
	if err != nil && dir != "" {
		unix.Rmdir(dir)
		// The cgroup's fault if a start without one works.
		if p, err2 := fx.startIn(spec, "", -1); err2 == nil {
			fx.cg.disable(err)
			return p, nil
		}
	}
	return p, err
}

// startIn starts spec's process in the cgroup dir (opened as fd), or, if
// dir is "", in a process group of its own only.
func (fx *osEffects) startIn(spec procSpec, dir string, fd int) (process, error) {
	cmd := exec.Command(spec.path, spec.args...)
	cmd.Env = spec.env
	cmd.Dir = spec.dir
	cmd.Stdout = os.Stdout
	// An os.Pipe, not StderrPipe: Wait must not wait for the pipe's EOF,
	// which a grandchild holding stderr could delay forever.
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = pw
	// Own process group: a Ctrl-C on the supervisor's terminal must not
	// reach the workers, the supervisor drains them in order. In its
	// cgroup from the start (clone3's CLONE_INTO_CGROUP): no child of it
	// can begin outside.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if dir != "" {
		cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, fd
	}
	err = cmd.Start()
	pw.Close()
	if err != nil {
		pr.Close()
		switch {
		case errors.Is(err, syscall.ENOEXEC):
			// execve(2): neither a binary format the kernel knows nor a #! line.
			return nil, fmt.Errorf("start %s: %w (neither an executable for this machine nor a script with a #! line)", spec.path, err)
		case errors.Is(err, syscall.ELOOP):
			// execve(2): also scripts whose interpreters are scripts, more than 4 deep.
			return nil, fmt.Errorf("start %s: %w (a symlink loop, or #! interpreters that are scripts nested more than 4 deep)", spec.path, err)
		}
		return nil, fmt.Errorf("start %s: %w", spec.path, err)
	}
	var tr tree = pgroupTree{pgid: cmd.Process.Pid}
	if dir != "" {
		tr = cgroupTree{dir: dir}
	}
	p := &childProc{cmd: cmd, tree: tr, exit: make(chan struct{})}
	copied := make(chan struct{})
	go func() { // owned by the process: ends at its stderr's EOF
		defer close(copied)
		defer pr.Close()
		spec.tail.copyLines(os.Stderr, pr)
	}()
	go func() { // owned by the process: ends when it is reaped
		// Exited, not yet reaped: what it left of its tree dies first,
		// while its pid still names its process group.
		waitExited(cmd.Process.Pid)
		if err := tr.finish(); err != nil {
			fx.log.Warn("worker's process tree", "pid", cmd.Process.Pid, "err", err)
		}
		p.mu.Lock()
		p.reaped = true
		p.mu.Unlock()
		p.err = cmd.Wait()
		if p.err == nil {
			p.err = errExitedZero
		}
		// Let the last stderr lines in for error messages, but do not wait
		// for an EOF a grandchild may hold back.
		select {
		case <-copied:
		case <-time.After(200 * time.Millisecond):
		}
		close(p.exit)
	}()
	return p, nil
}

// adoptedProc is a worker a killed supervisor left serving. It is not our
// child: a pidfd tells its exit and signals it without naming a reused
// pid.
type adoptedProc struct {
	id    int
	tree  tree // nil if it leads no process group and has no cgroup of its own
	log   *slog.Logger
	mu    sync.Mutex
	fd    int // -1 once closed
	exit  chan struct{}
	watch sync.Once
}

func (p *adoptedProc) pid() int { return p.id }

// done starts watching the pidfd at the first call.
func (p *adoptedProc) done() <-chan struct{} {
	p.watch.Do(func() { go p.wait() }) // owned by the process: ends when it exits
	return p.exit
}

func (p *adoptedProc) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fd >= 0 {
		unix.Close(p.fd)
		p.fd = -1
	}
}
func (p *adoptedProc) exitErr() error { return errAdoptedExit }
func (p *adoptedProc) stopped() bool {
	select {
	case <-p.exit:
		return false
	default:
		return pidStopped(p.id, p.tree)
	}
}
func (p *adoptedProc) state() byte {
	select {
	case <-p.exit:
		return 0
	default:
		return processState(p.id)
	}
}
func (p *adoptedProc) kill() {
	p.signal(syscall.SIGKILL)
	if p.tree != nil {
		p.tree.kill()
	}
}
func (p *adoptedProc) signal(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fd >= 0 {
		unix.PidfdSendSignal(p.fd, sig, nil, 0)
	}
}

// wait waits for the pidfd to turn readable, the process's exit.
func (p *adoptedProc) wait() {
	for {
		fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, -1)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil || n > 0 {
			break
		}
	}
	p.mu.Lock()
	unix.Close(p.fd)
	p.fd = -1
	p.mu.Unlock()
	if p.tree != nil {
		if err := p.tree.finish(); err != nil {
			p.log.Warn("worker's process tree", "pid", p.id, "err", err)
		}
	}
	close(p.exit)
}

func (fx *osEffects) adopt(pid int, token string, gen int) (process, bool) {
	fd, ok := ourProcess(pid, token)
	if !ok {
		return nil, false
	}
	return &adoptedProc{id: pid, fd: fd, tree: fx.cg.adopted(pid, gen), log: fx.log, exit: make(chan struct{})}, true
}

// ourProcess reports whether pid is still the worker that token names,
// and returns a pidfd for it.
func ourProcess(pid int, token string) (int, bool) {
	if pid <= 0 || token == "" {
		return -1, false
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return -1, false
	}
	// Checked after the pidfd is open, so the answer is about the process
	// the pidfd holds.
	env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	want := control.EnvToken + "=" + token
	found := false
	for _, kv := range strings.Split(string(env), "\x00") {
		found = found || kv == want
	}
	if err != nil || !found {
		unix.Close(fd)
		return -1, false
	}
	return fd, true
}
