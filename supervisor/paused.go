package supervisor

import "time"

// A worker of the active generation that is stopped (SIGSTOP, a tracer: a
// debugger, or a frozen cgroup; see process.stopped) or hung (its process
// runs, but it answers nothing: a deadlock) accepts nothing, and the
// connections the program sends it wait in its accept queue until it
// runs again. The supervisor looks at the active workers every
// pausedWatchEvery and steers away from a stopped one at once, and from a
// hung one once its admin socket has answered no count hungReads times in
// a row (or it left a steer unanswered: see silentAgent), until it runs or
// answers again, when it is steered to once more: it is not killed, so an
// operator's debugger session and what it has queued survive. With no
// other worker left to steer to, the program keeps it. (A standby
// generation's workers are watched alike, see watchStandby, but one still
// stopped when traffic goes back is killed, see wakeStandby, and one being
// retired at once, see retire: neither has anything to wait for.)

// pausedWatchEvery is how often watchPaused looks.
const pausedWatchEvery = time.Second

// watchPaused looks at the active generation's ready workers, off the
// loop, and steers away from those stopped or hung and back to those that
// run or answer again; it then looks again pausedWatchEvery later, until the stop. It
// also keeps the running ones' counts of requests in flight (a read of
// three counters each): one stopped or frozen later and killed counts
// those as cut (see killStuck).
func (l *loop) watchPaused() {
	if l.stop != nil {
		return
	}
	var ws []*worker
	if g := l.active; g != nil {
		for _, w := range g.workers {
			if w.ready && !w.exited && !w.killed {
				ws = append(ws, w)
			}
		}
	}
	procs := make([]process, len(ws))
	for i, w := range ws {
		procs[i] = w.proc
	}
	admins := make([]string, len(ws))
	for i, w := range ws {
		admins[i] = w.admin
	}
	fx := l.fx
	async(l, func() runningCounts { return countRunning(fx, procs, admins, false) }, func(l *loop, lk runningCounts) {
		why := make([]string, len(ws))
		for i, w := range ws {
			why[i] = w.look(lk, i)
		}
		var changed []*worker
		var whyChanged []string
		for i, w := range ws {
			if paused := why[i] != ""; !w.exited && !w.killed && w.paused != paused {
				w.paused = paused
				changed, whyChanged = append(changed, w), append(whyChanged, why[i])
			}
		}
		kept := len(unpaused(ws)) == 0 // no other worker to steer to
		for i, w := range changed {
			switch {
			case w.paused && kept:
				l.workerLog(w).Warn("worker " + whyChanged[i] + ", as every worker of its generation is: the program keeps them, with nowhere else to steer to")
			case w.paused:
				l.workerLog(w).Warn("worker " + whyChanged[i] + ": steered away from until it runs again")
			default:
				l.workerLog(w).Info("worker runs again: steered to")
			}
		}
		if len(changed) > 0 {
			l.resteer(nil)
		}
		l.after(pausedWatchEvery, evFunc(func(l *loop) { l.watchPaused() }))
	})
}
