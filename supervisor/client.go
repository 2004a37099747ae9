package supervisor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/launcherd/launcher/internal/control"
	"golang.org/x/sys/unix"
)

// ErrNotRunning is returned by [Client] methods when no supervisor serves
// the state directory.
var ErrNotRunning = errors.New("no supervisor running")

// ErrNoResult is returned by [Client] methods when the supervisor closes
// the connection before its result: the command may or may not have taken
// effect.
var ErrNoResult = errors.New("the supervisor closed the connection before its result")

// Client sends commands to the supervisor of StateDir over its control
// socket; it is what `launcher upgrade`, `rollback`, `stop` and `status`
// use. A failed command is returned as an error carrying the supervisor's
// message.
//
// The supervisor may be older than the client (after a package upgrade the
// running one keeps its binary): the steps of one that sends only text
// come as [Progress] values with Line set and Step empty.
type Client struct {
	StateDir string
	// FirstReply is how long a command waits for a supervisor whose
	// process is stopped (SIGSTOP), and status for a silent one, before it
	// fails naming the supervisor's pid (zero: [FirstReplyWithin]).
	FirstReply time.Duration
}

// Status returns the supervisor's status.
func (c Client) Status(ctx context.Context) (Status, error) {
	var st Status
	m, err := c.call(ctx, "status", "", false, nil)
	if err != nil {
		return st, err
	}
	if len(m.Data) == 0 {
		return st, errors.New("status: the supervisor sent no status")
	}
	if err := json.Unmarshal(m.Data, &st); err != nil {
		return st, fmt.Errorf("status: %w", err)
	}
	return st, nil
}

// Upgrade starts a new generation of arg ("" re-resolves the start command,
// a VERSION is looked up in the releases directory, a path, which must be
// absolute, is used as is). It
// passes each step to progress (may be nil) and returns the summary once
// the new generation serves, or with wait once the old one has exited.
func (c Client) Upgrade(ctx context.Context, arg string, wait bool, progress func(Progress)) (Progress, error) {
	return c.progressCall(ctx, "upgrade", arg, wait, progress)
}

// UpgradeWith is [Client.Upgrade] with options (a canary). A supervisor
// older than the canary ignores opts.Canary: check its steps.
func (c Client) UpgradeWith(ctx context.Context, arg string, opts UpgradeOptions, progress func(Progress)) (Progress, error) {
	if err := checkCanary(opts.Canary, opts.CanaryInterval); err != nil {
		return Progress{}, fmt.Errorf("upgrade: %w", err)
	}
	hello := control.Message{Type: control.TypeHello, Version: control.Version, Role: control.RoleClient, Cmd: "upgrade", Arg: arg,
		Wait: opts.Wait, Canary: opts.Canary, CanaryMS: opts.CanaryInterval.Milliseconds()}
	var each func(control.Message)
	if progress != nil {
		each = func(m control.Message) { progress(decodeProgress(m)) }
	}
	m, err := c.callHello(ctx, hello, each)
	if err != nil {
		return Progress{}, err
	}
	return decodeProgress(m), nil
}

// Promote ends the running canary: all new connections go to the new
// generation and its probation begins. progress (may be nil) receives the
// step ([StepCanary] with Weight 100).
func (c Client) Promote(ctx context.Context, progress func(Progress)) (Progress, error) {
	return c.progressCall(ctx, "promote", "", false, progress)
}

// Rollback goes back to the previous release (during a probation: to the
// standby generation), as [Client.Upgrade] does.
func (c Client) Rollback(ctx context.Context, wait bool, progress func(Progress)) (Progress, error) {
	return c.progressCall(ctx, "rollback", "", wait, progress)
}

// Stop drains every generation and stops the supervisor. progress receives
// each step and, last, the supervisor's summary ([StepStopped], or the line
// "stopped" from an older supervisor).
//
// A connection that ends without a result is an error wrapping
// [ErrNoResult]: the stop was sent, but whether the supervisor has drained
// is unknown. A supervisor that flushes its reply before it exits never
// causes it.
func (c Client) Stop(ctx context.Context, progress func(Progress)) error {
	var last string
	sum, err := c.progressCall(ctx, "stop", "", false, func(p Progress) {
		last = p.String()
		if progress != nil {
			progress(p)
		}
	})
	if errors.Is(err, ErrNoResult) {
		return fmt.Errorf("%w; the stop was sent: the supervisor may still be draining, or have exited (see launcher status)", err)
	}
	if err != nil {
		return err
	}
	// A supervisor may send its last step both as progress and as the
	// result: deliver it once.
	if s := sum.String(); s != "" && s != last && progress != nil {
		progress(sum)
	}
	return nil
}

// progressCall runs a command that streams progress and returns the
// result's summary.
func (c Client) progressCall(ctx context.Context, cmd, arg string, wait bool, progress func(Progress)) (Progress, error) {
	var each func(control.Message)
	if progress != nil {
		each = func(m control.Message) { progress(decodeProgress(m)) }
	}
	m, err := c.call(ctx, cmd, arg, wait, each)
	if err != nil {
		return Progress{}, err
	}
	return decodeProgress(m), nil
}

// decodeProgress returns the Progress a progress or result message
// carries: its Data, or for an older supervisor, which sends only text,
// Line.
func decodeProgress(m control.Message) Progress {
	var p Progress
	if len(m.Data) > 0 && json.Unmarshal(m.Data, &p) == nil && p.Step != "" {
		return p
	}
	return Progress{Line: m.Text}
}

// call sends one command and returns its result message, passing each
// progress message to progress (may be nil). A supervisor older than this
// client refuses its hello naming the version it speaks: the client then
// says hello again at that version (see package control).
func (c Client) call(ctx context.Context, cmd, arg string, wait bool, progress func(control.Message)) (control.Message, error) {
	return c.callHello(ctx, control.Message{Type: control.TypeHello, Version: control.Version, Role: control.RoleClient, Cmd: cmd, Arg: arg, Wait: wait}, progress)
}

// callHello is call with the whole hello.
func (c Client) callHello(ctx context.Context, hello control.Message, progress func(control.Message)) (control.Message, error) {
	for {
		m, err := c.send(ctx, hello, progress)
		if v, ok := control.Fallback(m, hello.Version); ok && err != nil {
			hello.Version = v // terminates: Fallback only goes down
			continue
		}
		return m, err
	}
}

// send sends hello on a new connection and reads progress until the
// result.
func (c Client) send(ctx context.Context, hello control.Message, progress func(control.Message)) (control.Message, error) {
	cmd := hello.Cmd
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	nc, err := d.DialContext(dctx, "unix", ControlSocket(c.StateDir))
	cancel()
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) {
			if orphans := servingOrphans(c.StateDir); orphans != "" {
				return control.Message{}, fmt.Errorf("%s: %w on %s, but the workers of its %s: launcher start --state-dir %s with the same --listen and COMMAND adopts them",
					cmd, ErrNotRunning, c.StateDir, orphans, c.StateDir)
			}
			return control.Message{}, fmt.Errorf("%s: %w on %s (start one with: launcher start --state-dir %s ...)", cmd, ErrNotRunning, c.StateDir, c.StateDir)
		}
		return control.Message{}, fmt.Errorf("connect to supervisor: %w", err)
	}
	defer nc.Close()
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	conn := control.NewConn(nc)
	if err := conn.Write(hello); err != nil {
		// A supervisor that refuses a peer says why before it closes: the
		// reason is worth more than the broken pipe.
		if m, rerr := conn.Read(time.Now().Add(time.Second)); rerr == nil && m.Type == control.TypeResult && m.Error != "" {
			return m, errors.New(m.Error)
		}
		return control.Message{}, fmt.Errorf("send %s: %w", cmd, err)
	}
	// A supervisor that does not answer is watched on the side (reads
	// keep no deadline: a timeout mid-line would lose what was read).
	first := c.FirstReply
	if first <= 0 {
		first = FirstReplyWithin
	}
	answered := make(chan struct{})
	var gaveUp atomic.Pointer[string]
	wctx, endWatch := context.WithCancel(ctx)
	defer endWatch()
	go watchSilence(wctx, c.StateDir, cmd, first, answered, func(why string) { // owned by send: ends with wctx
		gaveUp.Store(&why)
		nc.Close()
	})
	for {
		m, err := conn.Read(time.Time{})
		if err != nil {
			if ctx.Err() != nil {
				return control.Message{}, fmt.Errorf("%s: %w", cmd, ctx.Err())
			}
			if why := gaveUp.Load(); why != nil {
				return control.Message{}, errors.New(*why)
			}
			// Killed (kill -9, the OOM killer), the supervisor leaves
			// its workers serving: say how to find them and take them
			// back. (A stop adds its own hint: see Stop.)
			if cmd == "stop" {
				return control.Message{}, fmt.Errorf("%s: %w: %w", cmd, ErrNoResult, err)
			}
			return control.Message{}, fmt.Errorf("%s: %w: %w (if it was killed, its workers serve on: launcher status says what serves, and launcher start with the same flags adopts them)", cmd, ErrNoResult, err)
		}
		select {
		case <-answered:
		default:
			close(answered)
		}
		switch m.Type {
		case control.TypeProgress:
			if progress != nil {
				progress(m)
			}
		case control.TypeResult:
			if !m.OK {
				return m, errors.New(m.Error)
			}
			return m, nil
		}
	}
}

// FirstReplyWithin is the default of [Client.FirstReply].
const FirstReplyWithin = 10 * time.Second

// watchSilence gives up on cmd, calling giveUp with why, when the
// supervisor of dir has been stopped (SIGSTOP: state T in /proc/PID/stat,
// proc(5)) for first, or, for status, which every supervisor answers at
// once, when it has not answered (answered not closed) within first: it
// is stuck. Other commands may wait long for a step (a stop for its
// drains, a canary for its schedule), and supervisors before this client
// send no step before a stop's end. It returns when ctx ends.
func watchSilence(ctx context.Context, dir, cmd string, first time.Duration, answered <-chan struct{}, giveUp func(why string)) {
	pid := readPID(PIDFile(dir))
	start := time.Now()
	var stoppedSince time.Time
	tick := time.NewTicker(min(first/10, time.Second))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			if processStopped(pid) {
				if stoppedSince.IsZero() {
					stoppedSince = now
				}
			} else {
				stoppedSince = time.Time{}
			}
			read := false
			select {
			case <-answered:
				read = true
			default:
			}
			silent := !read && cmd == "status" && now.Sub(start) >= first
			switch {
			case !stoppedSince.IsZero() && (now.Sub(stoppedSince) >= first || silent):
				what := "once it runs again (kill -CONT %d) it drops the command, unless it had read it already"
				if read {
					what = "it has read the command, and carries it on once it runs again (kill -CONT %d)"
				}
				giveUp(fmt.Sprintf("%s: the supervisor (pid %d) has been stopped (kill -STOP) for %s; "+what, cmd, pid, first, pid))
				return
			case silent:
				giveUp(fmt.Sprintf("%s: the supervisor%s has not answered in %s: is it stuck?", cmd, pidNote(pid), first))
				return
			}
		}
	}
}

// processStopped reports whether pid is stopped by a signal or a tracer
// (state T or t in /proc/PID/stat, proc(5)); false for 0 or no such pid.
func processStopped(pid int) bool {
	s := processState(pid)
	return s == 'T' || s == 't'
}

// processState returns pid's state letter from /proc/PID/stat (proc(5):
// R running, S sleeping, D uninterruptible sleep, Z zombie, T stopped, t
// stopped by a tracer, …), or 0 for 0 or no such pid.
func processState(pid int) byte {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The state follows the command's closing parenthesis.
	if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) {
		return b[i+2]
	}
	return 0
}

// pidNote names pid as " (pid N)", or "" when it is not known.
func pidNote(pid int) string {
	if pid <= 0 {
		return ""
	}
	return fmt.Sprintf(" (pid %d)", pid)
}

// Call sends one command to the supervisor of stateDir and returns its
// result, passing each progress line to progress. A failed command is
// returned as an error with the supervisor's message.
//
// Deprecated: use [Client], whose methods return typed results.
func Call(ctx context.Context, stateDir, cmd, arg string, wait bool, progress func(string)) (control.Message, error) {
	var each func(control.Message)
	if progress != nil {
		each = func(m control.Message) { progress(m.Text) }
	}
	return Client{StateDir: stateDir}.call(ctx, cmd, arg, wait, each)
}

// GetStatus returns the status of the supervisor of stateDir.
//
// Deprecated: use [Client.Status].
func GetStatus(ctx context.Context, stateDir string) (Status, error) {
	return Client{StateDir: stateDir}.Status(ctx)
}

// servingOrphans describes the workers a killed supervisor left running
// on dir, from its state file: each generation with live processes (the
// active one first; a pid counts while it is still that worker: see
// stillWorker), as "generation 2 (v2) still serve (pids 11, 12)";
// empty when none is left.
func servingOrphans(dir string) string {
	st, err := loadState(dir)
	if err != nil || st == nil {
		return ""
	}
	var gens []savedGen // the active one first
	for _, g := range st.Gens {
		if g.Num == st.Active {
			gens = append([]savedGen{g}, gens...)
		} else {
			gens = append(gens, g)
		}
	}
	var parts []string
	for _, g := range gens {
		var pids []int
		for _, w := range g.Workers {
			if stillWorker(w, g.Release.Path) {
				pids = append(pids, w.PID)
			}
		}
		if len(pids) == 0 {
			continue
		}
		// A draining generation (a stop under way when the supervisor
		// died) no longer accepts: it runs, finishing what it has.
		state, verb := "", "serve"
		if g.Num != st.Active || g.State != StateActive {
			state = ", " + g.State
		}
		if g.State == StateDraining {
			verb = "run"
		}
		if len(parts) == 0 {
			parts = append(parts, fmt.Sprintf("generation %d (%s%s) still %s (pids %s)", g.Num, g.Release.Version, state, verb, joinInts(pids)))
		} else {
			parts = append(parts, fmt.Sprintf("those of generation %d (%s%s) too (pids %s)", g.Num, g.Release.Version, state, joinInts(pids)))
		}
	}
	return strings.Join(parts, ", and ")
}

// stillWorker reports whether w's pid is still that worker: the token in
// its environment, as adoption checks it (a release that is a script, or a
// file replaced since, runs at another path), or where the environment is
// not readable, its executable being the release's.
func stillWorker(w savedWorker, path string) bool {
	if fd, ok := ourProcess(w.PID, w.Token); ok {
		unix.Close(fd)
		return true
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", w.PID))
	return err == nil && exe == path
}

// joinInts writes ns as "1, 2, 3".
func joinInts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ", ")
}
