package supervisor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/launcherd/launcher/internal/control"
)

// What workers and their processes tell the loop.

// evHello: a worker said hello on wc. The loop answers on reply with the
// worker its token names, or a nil worker to refuse it.
type evHello struct {
	wc    *workerConn
	hello control.Message
	reply chan<- helloAnswer
}

// helloAnswer is the loop's answer to a worker's hello: the worker, and
// whether its welcome grants its listen (control.CapWelcomeGrant).
type helloAnswer struct {
	w     *worker
	grant bool
}

func (e evHello) apply(l *loop) {
	w := l.byToken[e.hello.Token]
	if w == nil || w.conn != nil || w.exited {
		e.reply <- helloAnswer{}
		return
	}
	w.conn = e.wc
	w.protocol = e.hello.Version
	w.caps = e.hello.Caps
	// Queued now, sent after the welcome: the connection's writer starts
	// once the welcome is out.
	l.ticketsJoin(w, e.hello)
	grant := !e.hello.Rejoin && l.grantAtWelcome(w)
	e.reply <- helloAnswer{w: w, grant: grant}
	l.startNextInTurn(w)
}

// evRejoined: a worker that lost its supervisor dialed again and was
// welcomed; its hello says where it stands.
type evRejoined struct {
	w     *worker
	hello control.Message
}

func (e evRejoined) apply(l *loop) {
	w, h := e.w, e.hello
	if w.exited {
		return
	}
	if h.Released {
		w.stopping, w.released = true, true
	}
	if h.Ready {
		w.ready = true
	}
	left := w.listening && !h.Listening
	if left {
		l.group.Leave(w)
		w.listening = false
	}
	w.rejoined = true
	l.markDirty()
	l.workerLog(w).Info("worker rejoined", "listening", h.Listening, "released", h.Released)
	if l.adopting != nil {
		l.checkAdoption()
	} else if left || w.gen == l.active {
		l.resteer(nil)
	}
}

// evConnClosed: a worker's control connection ended.
type evConnClosed struct {
	w  *worker
	wc *workerConn
}

func (e evConnClosed) apply(l *loop) {
	w := e.w
	if w.conn != e.wc {
		return
	}
	w.conn = nil
	l.failPending(w, fmt.Errorf("%s: connection lost", w))
	l.endGrant(w)
	if w.exitSeen && !w.exited {
		evExited{w}.apply(l) // its exit, held until now
	}
}

// evWorkerMsg: a worker sent m.
type evWorkerMsg struct {
	w  *worker
	wc *workerConn
	m  control.Message
}

func (e evWorkerMsg) apply(l *loop) {
	w, m := e.w, e.m
	if w.conn != e.wc || w.exited {
		return
	}
	switch m.Type {
	case control.TypeListen:
		l.askListen(w)
	case control.TypeListening:
		l.listening(w)
	case control.TypeFail:
		l.endGrant(w)
		l.workerFailed(w, errors.New(m.Error))
	case control.TypeReady:
		switch {
		case !w.can(control.CapReadyHealth):
			l.checkReady(w)
		case m.Error != "":
			l.workerFailed(w, fmt.Errorf("health check: %s", m.Error))
		case !w.ready && !w.checking:
			l.becameReady(w)
		}
	case control.TypeDrained:
		w.drained = true
		if m.Error != "" {
			l.drainCut(w, m.Cut, m.CutConns)
		}
		l.collectFinal(w)
	case control.TypeSteered, control.TypeReleased, control.TypeQuiesced:
		l.reply(w, m)
	}
}

// checkReady checks the health of a worker that reported ready, on its
// admin socket, before it counts as ready: a worker of a library that does
// not check itself before its ready (control.CapReadyHealth).
func (l *loop) checkReady(w *worker) {
	if w.ready || w.checking {
		return
	}
	w.checking = true
	fx, admin := l.fx, w.admin
	async(l, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		return fx.health(ctx, admin)
	}, func(l *loop, err error) {
		w.checking = false
		if w.exited {
			return
		}
		if err != nil {
			l.workerFailed(w, fmt.Errorf("health check: %w", err))
			return
		}
		l.becameReady(w)
	})
}

// becameReady counts w as ready: it said so, and its health check passed.
func (l *loop) becameReady(w *worker) {
	w.ready = true
	l.markDirty()
	// A restarted worker of the active generation is steered to here;
	// the last worker of a starting one makes it active (checkOp), which
	// steers to all of them: once is enough.
	restarted := w.gen == l.active && w.gen.state == StateActive
	l.checkOp()
	if restarted {
		l.resteer(nil)
	}
}

// evExited: w's process has exited. Its sockets left the reuseport group;
// an unexpected exit of an active worker is restarted with back-off, or,
// during its generation's probation, rolls back.
type evExited struct{ w *worker }

func (e evExited) apply(l *loop) {
	w := e.w
	// An adopted worker's exit says nothing of how it ended: its drain's
	// end is its TypeDrained, which its connection may not have brought
	// yet (the exit's pidfd and the connection race; a new user's
	// recheck, 1 of 12: a clean drain read as a death). Judged once the
	// connection has closed, after every message it sent, or a second
	// on at most.
	if w.conn != nil && w.stopping && !w.drained && !w.exitSeen && errors.Is(w.proc.exitErr(), errAdoptedExit) {
		w.exitSeen = true
		l.after(time.Second, evFunc(func(l *loop) {
			if !w.exited {
				evExited{w}.apply(l)
			}
		}))
		return
	}
	w.exited = true
	w.exitErr = w.proc.exitErr()
	// A retired worker's death is judged first: failing its pending
	// requests below runs their callbacks, and a release's may end its
	// generation's drain, which must know of the death by then (a CI run:
	// "generation drained", then "worker died during its drain").
	l.judgeRetiredExit(w)
	delete(l.byToken, w.token)
	l.fx.removeAdmin(w.admin)
	if w.conn != nil {
		w.conn.close()
		w.conn = nil
	}
	l.failPending(w, fmt.Errorf("%s exited", w))
	l.endGrant(w)
	l.expireKept(w.final)
	// The kernel moved the group's last socket into the freed slot.
	if w.listening {
		l.group.Leave(w)
		w.listening = false
		l.resteer(nil)
	}
	l.markDirty()
	g := w.gen
	if l.op != nil && l.op.g == g && !l.op.activated {
		when := "before ready"
		if w.ready {
			when = "before its generation served"
		}
		l.workerFailed(w, fmt.Errorf("%v %s%s", w.exitErr, when, stderrTail(w.tail.last(5))))
		l.endFailedOp()
	}
	// A standby worker the supervisor killed (see wakeStandby) is
	// restarted as its generation serves again, but did not crash.
	crash := !w.stopping && g.state == StateActive && l.stop == nil
	if crash && !w.killed {
		l.m.WorkerCrashes.WithLabelValues(StateActive).Inc()
	}
	switch {
	case crash && !w.killed && l.crashInProbation(w):
	case crash:
		l.restartCrashed(w)
	case !w.stopping && g.state == StateStandby && l.stop == nil:
		// Not restarted: it would only stand by. A rollback to its
		// generation starts it again (see rollBackTo).
		l.m.WorkerCrashes.WithLabelValues(StateStandby).Inc()
		l.workerLog(w).Warn("worker of the standby generation exited; not restarted while it stands by", "err", w.exitErr, "stderr", w.tail.last(3))
	}
	if !g.hasLive() && (g.state == StateDraining || (g.state == StateActive && l.stop != nil)) {
		g.state = StateExited
	}
	l.checkDrain(g)
	l.forgetIfOver(g)
	if l.adopting != nil {
		l.checkAdoption()
	}
	l.checkStop()
}

// judgeRetiredExit says what the exit of w, a worker being retired
// (stopping), means: a failed generation's worker dying before its
// release, or a death during its drain, which its generation's drain
// then names. A clean exit, a kill of ours or a cut drain is neither.
func (l *loop) judgeRetiredExit(w *worker) {
	if !w.stopping || !w.ready || w.killed || !diedDraining(w) {
		return
	}
	g := w.gen
	switch {
	case g.state == StateFailed && !w.released:
		// A release rolled back from (it crashed, or the judge found it
		// worse) whose worker dies before its release is answered: the
		// same release failing again, as when it crashes in all its
		// workers at once, not a drain's loss.
		// It crashed as an active worker (the rollback came a moment
		// before, at another worker's crash).
		l.m.WorkerCrashes.WithLabelValues(StateActive).Inc()
		l.workerLog(w).Warn("worker of a failed generation exited before its release", "err", w.exitErr, "stderr", w.tail.last(3))
	case !w.cut:
		// Only a worker that got ready served: one that exits before is
		// its upgrade's failure, reported as such.
		l.m.WorkerCrashes.WithLabelValues(StateDraining).Inc()
		g.deaths = append(g.deaths, fmt.Sprintf("worker %d (pid %d) died during its drain (%v): what it still served was cut", w.index, w.pid, w.exitErr))
		l.workerLog(w).Warn("worker died during its drain: what it still served was cut", "err", w.exitErr, "stderr", w.tail.last(3))
	}
}

// diedDraining reports whether w, released, exited before its drain was
// over: a child of ours that exited other than 0, or an adopted worker
// (whose exit status is not ours to know) that had dialed again and never
// said its drain ended (TypeDrained, sent before a clean exit).
func diedDraining(w *worker) bool {
	if errors.Is(w.exitErr, errAdoptedExit) {
		return w.rejoined && !w.drained
	}
	return !errors.Is(w.exitErr, errExitedZero)
}

// forgetIfOver lets go of what held g's processes (its cgroup) once g is
// over: none of its processes left, and none to start (exited or failed).
func (l *loop) forgetIfOver(g *generation) {
	if g.forgotten || g.hasLive() || (g.state != StateExited && g.state != StateFailed) {
		return
	}
	g.forgotten = true
	l.fx.removeGeneration(g.num)
}

// scheduleRestart starts worker index of g again after the back-off, if g
// is still the active generation then and no stop has begun. It reports
// false, the generation failed, when that is a crash loop.
func (l *loop) scheduleRestart(g *generation, index int) bool {
	b := g.backoffs[index]
	if b == nil {
		if g.backoffs == nil {
			g.backoffs = map[int]*backoff{}
		}
		b = &backoff{}
		g.backoffs[index] = b
	}
	wait, ok := b.next(time.Now(), l.restarts)
	if ok {
		g.restarts.restarts++
	}
	if !ok {
		if others := g.goingOn(index); others > 0 {
			// The others serve, or restart from a crash of their own: a
			// generation that answers is no failed one (it said so, and
			// /healthz took it out of service while it answered; and one
			// whose other worker waited for its restart then was never
			// restarted). The one that loops stays down.
			g.notRestarted = append(g.notRestarted, index)
			l.markDirty()
			l.genLog(g).Error(fmt.Sprintf("crash loop: worker %d not restarted; the generation goes on with %d of its %d workers, %d serving (upgrade or rollback to recover)", index, others, len(g.workers), len(g.readyLive())),
				"worker", index, "crashes", l.restarts.loop)
			l.fx.notify("STATUS=" + l.statusLine())
			return false
		}
		g.state = StateFailed
		g.notRestarted = append(g.notRestarted, index)
		l.markDirty()
		l.genLog(g).Error("crash loop: not restarting; the generation has failed (upgrade or rollback to recover)",
			"worker", index, "crashes", l.restarts.loop)
		l.fx.notify("STATUS=" + l.statusLine())
		l.forgetIfOver(g)
		return false
	}
	l.after(wait, evFunc(func(l *loop) { l.restart(g, index) }))
	return true
}

// restartCrashed logs the crash of w, an active worker, and starts it
// again unless that is a crash loop: then the crash loop's line is the
// one (it said "restarting" and "not restarting" in the same millisecond).
func (l *loop) restartCrashed(w *worker) {
	what := "worker exited"
	if w.killed { // the supervisor killed it, and said why then
		what = "worker the supervisor killed exited"
	}
	if l.scheduleRestart(w.gen, w.index) {
		l.workerLog(w).Warn(what+"; restarting", "err", w.exitErr, "stderr", w.tail.last(3))
	} else {
		l.workerLog(w).Error("worker exited: a crash loop, not restarted", "err", w.exitErr, "stderr", w.tail.last(3))
	}
}

func (l *loop) restart(g *generation, index int) {
	if l.stop != nil || l.active != g || g.state != StateActive {
		return
	}
	w, err := l.startWorker(g, index)
	if err != nil {
		l.genLog(g).Error("restart worker", "worker", index, "err", err)
		l.scheduleRestart(g, index)
		return
	}
	replaced := false
	for i, o := range g.workers {
		if o.index == index {
			g.workers[i] = w
			replaced = true
		}
	}
	if !replaced { // gone before an adoption
		g.workers = append(g.workers, w)
	}
	l.workerLog(w).Info("worker restarted")
	if now, changed := g.release.replaced(); changed {
		// Started from the path, as every worker is: the file there now.
		// Said, so that the label is not taken for what runs (a new
		// user's trial: a file replaced in place, a worker killed).
		l.workerLog(w).Warn("worker restarted from a file replaced since its generation started: it runs another build than its generation's label says", "path", g.release.Path, "now", now)
	}
	// Not ready by --ready-timeout (hung in its start, or in its health
	// check): killed, and restarted with the back-off. It was kept for
	// good, steered to by nothing, and the next upgrade's old generation
	// could not stand by for its probation (a new user's recheck).
	l.after(l.cfg.ReadyTimeout, evFunc(func(l *loop) {
		if !w.ready && !w.exited && !w.killed && !w.stopping && w.gen == l.active && w.gen.state == StateActive {
			l.workerFailed(w, fmt.Errorf("not ready within --ready-timeout %s%s", l.cfg.ReadyTimeout, w.hangNote()))
		}
	}))
}
