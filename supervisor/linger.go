package supervisor

import (
	"fmt"
	"slices"
	"time"
)

// SIGKILL ends a process at once, unless it sleeps uninterruptibly (state
// D in /proc/PID/stat: a cgroup v1 freezer, a hung NFS mount or device),
// when the signal waits until that wakes (signal(7): a process in D is
// not interrupted). A killed worker that has not exited after killLinger
// is named, with its state, in the log and to every command waiting for
// its generation (`upgrade --wait`, `rollback --wait`, `stop`), which
// would otherwise wait without a word: killLinger after the kill, then
// again after twice the last wait each time (2, 4, 8 … s later), at most
// lingerEvery apart.
const (
	killLinger  = 2 * time.Second
	lingerEvery = time.Minute
)

// kill kills w's process tree: an exit the supervisor asked for, not a
// crash. If the process has not gone after killLinger, the commands that
// wait for its generation are told why (see lingering).
func (l *loop) kill(w *worker) {
	if !w.killed {
		w.killedAt = time.Now()
		l.after(l.killLinger, evFunc(func(l *loop) { l.lingering(w, l.killLinger) }))
	}
	w.killed = true
	w.proc.kill()
}

// lingering looks, off the loop, at the state of w's process, killed and
// not gone yet, and says so; then again after twice wait (at most
// lingerEvery), until it exits.
func (l *loop) lingering(w *worker, wait time.Duration) {
	if w.exited {
		return
	}
	p := w.proc
	async(l, p.state, func(l *loop, st byte) {
		if w.exited {
			return
		}
		ago := time.Since(w.killedAt).Round(100 * time.Millisecond)
		l.workerLog(w).Warn("killed worker has not exited", "after", ago, "state", procStateName(st))
		note := fmt.Sprintf("worker %d (pid %d) of generation %d, killed %s ago, has not exited: %s", w.index, w.pid, w.gen.num, ago, whyLingering(st))
		for _, r := range l.waitingFor(w.gen) {
			r.emit(Progress{Step: StepWaiting, Generation: w.gen.num, Version: w.gen.release.Version, Reason: note})
		}
		next := min(2*wait, lingerEvery)
		l.after(next, evFunc(func(l *loop) { l.lingering(w, next) }))
	})
}

// waitingFor returns the commands still waiting for something of g: a
// stop, the upgrade starting it, those following its drain.
func (l *loop) waitingFor(g *generation) []*opRequest {
	var out []*opRequest
	add := func(r *opRequest) {
		if r != nil && !r.done && !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	if l.op != nil && l.op.g == g {
		add(l.op.req)
	}
	for _, r := range g.followers {
		add(r)
	}
	if l.stop != nil {
		for _, r := range l.stop.reqs {
			add(r)
		}
	}
	return out
}

// procStateName renders a state letter for the log: "D", or "gone" for 0.
func procStateName(st byte) string {
	if st == 0 {
		return "gone"
	}
	return string(rune(st))
}

// whyLingering says why a killed process with state st has not gone.
func whyLingering(st byte) string {
	switch st {
	case 'D':
		return "its process sleeps uninterruptibly (state D: a frozen cgroup v1 freezer, a hung NFS mount or device), and SIGKILL takes effect only once that wakes; its generation is gone then"
	case 'Z':
		return "its process is a zombie (state Z) not reaped yet"
	case 0:
		return "its process has exited, but a process it started still runs in its cgroup or process group (killed too, see its state in /proc)"
	default:
		return fmt.Sprintf("its process is in state %c (proc(5))", st)
	}
}
