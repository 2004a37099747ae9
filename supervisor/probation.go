package supervisor

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/launcherd/launcher/internal/control"
)

// Why a probation ended. A crash, a rollback request or a judged breach
// gives traffic back to the generation on standby; the others retire it
// (a breach too when no standby worker is left: see serveOnBreached).
const (
	probationPassed     = "passed"
	probationCrashed    = "crashed"
	probationRolledBack = "rollback requested"
	probationJudged     = "judged"
	probationBreached   = "breached"
	probationSuperseded = ReasonSuperseded
	// probationRolledBackAnew: launcher rollback with no standby worker
	// left to give traffic back to started the previous release again,
	// which ended the probation once ready.
	probationRolledBackAnew = "rollback requested: no worker of the standby generation was left, so the previous release started again"
	probationStopped        = "stopped"
)

// probation keeps the previous generation listening, steered away from and
// ready, for a while after an upgrade: if the new generation crashes in
// that time, traffic goes back to it at once, with no restart and no cold
// start.
type probation struct {
	standby   *generation
	workers   []*worker // the standby's workers, all ready when it began
	until     time.Time
	stopTimer func()
	cause     string     // "" while it runs
	crash     string     // what crashed, or the judge's reason, for the log and the error
	breach    string     // breachErrors or breachLatency when judged
	figures   string     // both generations' figures when judged
	follower  *opRequest // an `upgrade --wait` following it, or nil
	woken     []string   // standby workers killed as stopped (see wakeStandby)
	// steeredBack, if set, is applied once a rollback's program is back
	// on the standby generation: `launcher rollback` answers then.
	steeredBack func(*loop)
	// requester is a `rollback --wait` that ended it, answered once the
	// generation rolled back from has exited; nil otherwise.
	requester *opRequest

	// A canary: the weights asked for, how many have begun, the current
	// one (percent of new connections to the new generation; 100 once the
	// canary is over, or without one) and how long each holds.
	canary      []int
	step        int
	weight      int
	interval    time.Duration
	canaryStart time.Time // when the first step began
	judge       *judge    // nil when judging is off
	// looking is set while lastLook reads both generations once more for
	// the report; afterLook runs when it is done, in order.
	looking   bool
	afterLook []func(*loop)
	// servedAfter is the time from the upgrade command to the new
	// generation serving, for launcher_upgrade_duration_seconds.
	servedAfter time.Duration
}

// phase names where p stands, for messages: "probation", or "canary (10%
// of new connections)".
func (p *probation) phase() string {
	if p.weight < 100 {
		return fmt.Sprintf("canary (%d%% of new connections)", p.weight)
	}
	return "probation"
}

// canStandBy reports whether workers can take traffic back at once: each
// runs, listens and is ready, and none is being released.
func canStandBy(workers []*worker) bool {
	for _, w := range workers {
		if w.exited || w.killed || !w.ready || !w.listening || w.stopping {
			return false
		}
	}
	return len(workers) > 0
}

// takeBack returns those of workers that can take traffic back at once:
// running, listening, ready and neither being released nor killed. A
// standby generation that lost a worker still takes traffic back on the
// others: fewer workers of a known release beat a release judged or seen
// failing.
func takeBack(workers []*worker) []*worker {
	var out []*worker
	for _, w := range workers {
		if !w.exited && !w.killed && w.ready && w.listening && !w.stopping {
			out = append(out, w)
		}
	}
	return out
}

// unpaused returns those of workers not paused: neither found stopped nor
// hung (see watchStandby and watchPaused).
func unpaused(workers []*worker) []*worker {
	var out []*worker
	for _, w := range workers {
		if !w.paused {
			out = append(out, w)
		}
	}
	return out
}

// wakeStandby returns the workers of p's standby generation that can take
// traffic back now, as takeBack, after killing those that could not: one
// whose process is stopped (SIGSTOP, a tracer, a frozen cgroup: see
// process.stopped) or that watchStandby found hung. Such a worker answers
// nothing: steered back to, its new connections would wait in its accept
// queue, and a steer it carried would hang. Killed, it leaves the program
// at once, and its generation restarts it once it serves again (its exit
// is an active worker's). Each kill is noted in p.woken for the
// rollback's messages. It runs only when traffic is about to go back (a
// rollback, a crash, the judge's breach): until then a stopped standby
// worker is only steered away from (see watchStandby), so a short stop
// costs no standby worker.
func (l *loop) wakeStandby(p *probation) []*worker {
	for _, w := range takeBack(p.workers) {
		var why string
		switch {
		case w.proc.stopped():
			why = whyStopped
		case w.silentReads >= hungReads:
			why = whyHung
		default:
			continue
		}
		l.workerLog(w).Warn("worker of the standby generation "+why+": killed, not steered to", "silent_reads", w.silentReads)
		cut := ""
		if w.inflight > 0 { // its requests at its last count (see watchStandby)
			cut = fmt.Sprintf(" (%d request(s) in flight at its last count cut)", w.inflight)
		}
		p.woken = append(p.woken, fmt.Sprintf("worker %d (pid %d) of generation %d %s: killed%s", w.index, w.pid, w.gen.num, why, cut))
		l.kill(w)
	}
	return takeBack(p.workers)
}

// Why a worker that answers nothing is killed or steered away from.
const (
	whyStopped = "was stopped (SIGSTOP, a tracer or a frozen cgroup)"
	whyHung    = "answered nothing on its admin socket for 2 s (hung)"
	// whySilentSteer: a worker left a steer it carried unanswered (see
	// silentAgent).
	whySilentSteer = "answered no steer within its timeout (hung or stopped)"
	// whyNoAnswer: a worker being retired left a quiesce or a release
	// unanswered.
	whyNoAnswer = "answered nothing (stopped or stuck)"
)

// hungReads is how many of watchStandby's reads in a row a standby worker
// leaves unanswered before it is taken for hung: its admin socket answers
// in microseconds, so two seconds without a word is no slow moment. A
// process in uninterruptible sleep (state D: a freezer of cgroup v1, a
// hung mount) is hung so, and even a kill takes effect only once it wakes.
const hungReads = 2

// watchStandby looks at p's standby workers (g's probation's) every
// standbyWatchEvery while p runs, and steers away from those that could
// not take traffic (paused): during a canary they take new connections,
// which would wait in their accept queues. A stopped or frozen one is seen
// at once; a hung one, whose process looks like any other, by its admin
// socket answering no count (each read within a second) hungReads times in
// a row. One that runs, or answers, again is steered to again. None is
// killed here: only when traffic is about to go back (wakeStandby).
func (l *loop) watchStandby(g *generation, p *probation) {
	if g.runningProbation() != p {
		return
	}
	ws := takeBack(p.workers)
	admins := make([]string, len(ws))
	procs := make([]process, len(ws))
	for i, w := range ws {
		admins[i], procs[i] = w.admin, w.proc
	}
	fx := l.fx
	async(l, func() runningCounts { return countRunning(fx, procs, admins, false) }, func(l *loop, lk runningCounts) {
		if g.runningProbation() != p {
			return
		}
		changed := false
		for i, w := range ws {
			why := w.look(lk, i)
			if w.exited || w.killed {
				continue
			}
			if paused := why != ""; paused != w.paused {
				w.paused, changed = paused, true
				if paused {
					l.workerLog(w).Warn("worker of the standby generation " + why + ": steered away from until it runs again (killed if traffic goes back to its generation first)")
				} else {
					l.workerLog(w).Info("worker of the standby generation runs again: steered to")
				}
			}
		}
		if changed && p.weight < 100 { // only a canary's program names them
			l.resteer(nil)
		}
		l.after(standbyWatchEvery, evFunc(func(l *loop) { l.watchStandby(g, p) }))
	})
}

// standbyWatchEvery is how often watchStandby looks.
const standbyWatchEvery = time.Second

// wokenNote is "; " and p's notes of standby workers killed as stopped or
// hung, as traffic goes back to their generation, which restarts them;
// "" for none.
func (p *probation) wokenNote() string {
	var b strings.Builder
	for _, n := range p.woken {
		b.WriteString("; " + n + ", and restarted once its generation serves")
	}
	return b.String()
}

// runningProbation returns g's probation if it has not ended.
func (g *generation) runningProbation() *probation {
	if g == nil || g.probation == nil || g.probation.cause != "" {
		return nil
	}
	return g.probation
}

// startProbation puts old on standby behind g for --probation; old's
// workers are about to be steered away from. With a canary, g gets the
// first weight now and the probation begins after the last (see
// nextCanaryStep).
func (l *loop) startProbation(g, old *generation, opts UpgradeOptions) *probation {
	p := &probation{
		standby: old,
		workers: append([]*worker(nil), old.workers...),
		until:   time.Now().Add(l.cfg.Probation),
		weight:  100,
		canary:  opts.Canary,
	}
	old.state = StateStandby
	g.probation = p
	rep := l.report(g)
	if len(p.canary) > 0 {
		p.interval = opts.CanaryInterval
		if p.interval <= 0 {
			p.interval = DefaultCanaryInterval
		}
		p.weight, p.step, p.canaryStart = p.canary[0], 1, time.Now()
		p.stopTimer = l.after(p.nextStepIn(), evFunc(func(l *loop) { l.nextCanaryStep(g, p) }))
	} else {
		p.stopTimer = l.after(l.cfg.Probation, evFunc(func(l *loop) { l.passProbation(g, p) }))
	}
	rep.stepAt(p.weight, time.Since(rep.Command))
	if l.cfg.MaxErrorRatio >= 0 || l.cfg.MaxLatencyRatio > 0 {
		l.startJudge(g, old, p)
	}
	l.after(standbyWatchEvery, evFunc(func(l *loop) { l.watchStandby(g, p) }))
	return p
}

// passProbation ends p, g's probation, as passed once the judge, if any,
// has read both generations one last time and found no breach: the
// verdict and the report cover the whole probation.
func (l *loop) passProbation(g *generation, p *probation) {
	if g.runningProbation() != p {
		return
	}
	if p.judge == nil || !p.judge.began {
		l.endProbation(g, probationPassed)
		return
	}
	p.judge.last1 = true
	l.readJudge(g, p)
}

// endProbation ends g's probation for cause, unless it has already ended,
// and carries out the outcome. It reports whether it ended it.
func (l *loop) endProbation(g *generation, cause string) bool {
	p := g.runningProbation()
	if p == nil {
		return false
	}
	p.cause = cause
	p.stopTimer()
	p.stopJudge()
	req := p.follower
	switch cause {
	case probationCrashed, probationRolledBack, probationJudged:
		l.rollBackTo(g, p)
	case probationBreached:
		l.serveOnBreached(g, p)
	case probationStopped:
		// Stop drains every generation, the standby one too.
		// The upgrade did not complete: its report says so, and
		// `upgrade --wait` exits 1.
		// current goes back to the release standing by: a restart runs
		// the last one that passed, not one whose trial was cut short.
		phase := p.phase()
		var stops []*opRequest
		if l.stop != nil {
			stops = l.stop.reqs
		}
		repointed := l.repoint(p.standby.release, append([]*opRequest{req}, stops...)...)
		rep := l.decide(g, p, VerdictStopped, "the supervisor stopped during the "+phase)
		restart := ""
		if l.cfg.Current != "" && repointed {
			restart = fmt.Sprintf(", and a restart runs %s (--current points at it again)", p.standby.release.Version)
		}
		end := func(*loop) {
			req.emitReport(rep)
			req.finish(Progress{}, fmt.Errorf("upgrade to %s: the supervisor stopped during the %s of generation %d; every generation drains%s", g.release.Version, phase, g.num, restart))
		}
		// The report counts up to the stop, not to the judge's last
		// reading (a second before, at most): the stop's drain begins
		// once both generations are read (see cmdStop).
		l.lastLook(g, p, rep)
		l.afterLook(p, end)
	default:
		l.genLog(g).Info("probation over: retiring the previous generation", "outcome", cause,
			"standby_generation", p.standby.num, "standby_version", p.standby.release.Version)
		step := Progress{Step: StepProbationPassed, Generation: g.num, Version: g.release.Version, Probation: l.cfg.Probation,
			Other: p.standby.num, OtherVersion: p.standby.release.Version}
		verdict, why := VerdictPassed, "probation passed"
		switch j := p.judge; {
		case j == nil || j.reason == "":
		case j.judged:
			why += ", judged " + j.reason
		default:
			why += "; " + j.reason
		}
		var err error
		switch cause {
		case probationPassed:
			l.m.Upgrades.WithLabelValues("success").Inc()
			l.m.UpgradeDuration.Observe(p.servedAfter.Seconds())
		case probationRolledBackAnew:
			// Its generation drains behind the rollback's (see activate).
			step.Step, step.Reason = StepProbationEnded, cause
			step.Weight = p.weight
			verdict, why = VerdictRolledBack, cause
			l.m.Rollbacks.WithLabelValues("requested").Inc()
			l.m.Upgrades.WithLabelValues("rolled_back").Inc()
			err = fmt.Errorf("upgrade to %s: rolled back on request during its %s; no worker of generation %d was left standing by, so its release (%s) started again",
				g.release.Version, p.phase(), p.standby.num, p.standby.release.Version)
		default:
			step.Step, step.Reason = StepProbationEnded, cause
			step.Weight = p.weight
			verdict, why = VerdictSuperseded, cause
			l.m.Upgrades.WithLabelValues("success").Inc()
			l.m.UpgradeDuration.Observe(p.servedAfter.Seconds())
		}
		req.emit(step)
		rep := l.decide(g, p, verdict, why)
		if cause != probationPassed {
			l.lastLook(g, p, rep) // passed: its last reading was just taken
		}
		l.retireStandby(p, rep, err)
	}
	return true
}

// afterLook runs f once p's last look (see lastLook) is in, at once if
// none is under way.
func (l *loop) afterLook(p *probation, f func(*loop)) {
	if p.looking {
		p.afterLook = append(p.afterLook, f)
		return
	}
	f(l)
}

// retireStandby drains p's standby generation, whose upgrade ended with
// the report rep, and then ends `upgrade --wait` (p's follower) with err.
func (l *loop) retireStandby(p *probation, rep *UpgradeReport, err error) {
	req, old := p.follower, p.standby
	gone := func(l *loop, d time.Duration) {
		req.emit(drainedStep(old, d))
		// Gone now, but final (its JSON kept as is) only once emitted: the
		// report may wait for its last figures (lastLook).
		var goneAfter time.Duration
		if rep != nil {
			goneAfter = time.Since(rep.Command)
		}
		end := func(*loop) {
			if rep != nil && rep.GoneAfter == 0 {
				rep.GoneAfter, rep.Drain = goneAfter, old.drainNote()
			}
			req.emitReport(rep)
			req.finish(Progress{}, err)
		}
		l.afterLook(p, end)
	}
	if live := old.live(); len(live) > 0 {
		old.followers = append(old.followers, req)
		l.retire(old, live, gone)
	} else {
		// Its workers all died on standby: nothing to drain.
		old.state = StateExited
		l.markDirty()
		l.forgetIfOver(old)
		gone(l, 0)
	}
}

// crashInProbation reports whether w's exit ends a probation of its
// generation: a standby ready to take traffic back. It then rolls back.
func (l *loop) crashInProbation(w *worker) bool {
	g := w.gen
	p := g.runningProbation()
	if p == nil || l.active != g {
		return false
	}
	p.crash = fmt.Sprintf("worker %d (pid %d) %v%s", w.index, w.pid, w.exitErr, stderrTail(w.tail.last(3)))
	if len(l.wakeStandby(p)) == 0 {
		// No standby worker left to give traffic back to: g serves on
		// (the caller restarts w), but its upgrade failed, as a judged
		// breach with no standby does; it passed its probation before.
		p.breach = breachCrashed
		l.endProbation(g, probationBreached)
		return false
	}
	return l.endProbation(g, probationCrashed)
}

// forgetRelease takes rel off the end of the rollback history, if it is
// there, and reports whether it was: a release rolled back from, or
// judged in breach, is no step a later rollback goes back to.
func (l *loop) forgetRelease(rel release) bool {
	if n := len(l.history); n > 0 && l.history[n-1] == rel {
		l.history = l.history[:n-1]
		return true
	}
	return false
}

// rollBackTo gives traffic back to the generation on standby behind g and
// drains what is left of g.
func (l *loop) rollBackTo(g *generation, p *probation) {
	old := p.standby
	l.active = old
	old.state = StateActive
	g.state = StateDraining
	failed := p.cause == probationCrashed || p.cause == probationJudged
	if failed {
		g.state = StateFailed
	}
	for _, w := range g.workers {
		w.stopping = true
	}
	// The release rolled back from, crashed, judged or rejected on
	// request, is forgotten: the next rollback goes to the release before
	// the restored one, not forward to it again.
	if !l.forgetRelease(g.release) {
		l.history = append(l.history, old.release)
	}
	// Steer at once: every moment counts while a crashed worker's slot may
	// be taken by whatever the kernel moved into it. The state file first
	// (a small write), so a restarted supervisor steers the same way.
	l.flushState()
	// g is retired once the program is back on old (retireG, below): a
	// quiesce that began while new connections still met g's sockets
	// would wait for them, and one that timed out would cut them.
	//
	// The commands hear that old serves again once the program is back
	// on it, as an upgrade's "serves" comes once the program is on the
	// new generation: a request sent once `launcher rollback` returned
	// met generation g still (a test saw it, on a loaded machine).
	phase := p.phase()
	why := "rollback requested during the " + phase
	switch p.cause {
	case probationCrashed:
		why = fmt.Sprintf("generation %d (%s) crashed during its %s (%s)", g.num, g.release.Version, phase, p.crash)
	case probationJudged:
		why = fmt.Sprintf("generation %d (%s) breached its judged %s: %s", g.num, g.release.Version, phase, p.crash)
	}
	announce := func(l *loop) {
		// Its keep-alive clients are handed over now, as a standby's
		// are: their next answer carries Connection: close, and they
		// reconnect to old. They were answered by g, keep-alive, until
		// its drain began (a new user's recheck).
		for _, w := range g.live() {
			l.send(w, control.Message{Type: control.TypeStandby})
		}
		// `upgrade --wait` hears of it now, not only once g has drained
		// (it printed nothing for the seconds between: a new user's
		// trial took it for hung).
		p.follower.emit(Progress{Step: StepRolledBack, Generation: old.num, Version: old.release.Version,
			Reason: why + p.wokenNote(), Other: g.num, OtherVersion: g.release.Version})
		if p.steeredBack != nil {
			p.steeredBack(l)
		}
	}
	steered := false
	var retireG func(*loop)
	l.resteer(func(l *loop, err error) {
		if err != nil {
			l.genLog(old).Warn("steer back to the standby generation", "err", err)
		}
		steered = true
		announce(l)
		if retireG != nil {
			retireG(l)
		}
	})
	for _, w := range p.workers {
		l.send(w, control.Message{Type: control.TypeResume})
		// A standby worker is not restarted when it dies (see evExited);
		// the generation it belongs to serves again, so it is now.
		if w.exited && !w.stopping {
			l.workerLog(w).Warn("worker of the restored generation died on standby; restarting", "err", w.exitErr)
			l.scheduleRestart(old, w.index)
		}
	}
	var rep *UpgradeReport
	var err error
	switch p.cause {
	case probationCrashed:
		l.log.Error(fmt.Sprintf("ROLLED BACK: generation %d (%s) crashed during its %s; generation %d (%s) serves again", g.num, g.release.Version, phase, old.num, old.release.Version),
			"generation", g.num, "version", g.release.Version, "crash", p.crash,
			"restored_generation", old.num, "restored_version", old.release.Version)
		l.m.Rollbacks.WithLabelValues("crashed").Inc()
		rep = l.decide(g, p, VerdictRolledBack, "crashed: "+p.crash)
		err = fmt.Errorf("upgrade to %s: generation %d crashed during its %s (%s); rolled back: generation %d (%s) serves again%s",
			g.release.Version, g.num, phase, p.crash, old.num, old.release.Version, p.wokenNote())
		// The figures up to the crash, read now: the judge's last
		// reading can be a second old, before any traffic (a new user's
		// trial: "no requests" for a generation that had served 556),
		// and they name the worker whose figures died with it.
		l.lastLook(g, p, rep)
	case probationJudged:
		l.log.Error(fmt.Sprintf("ROLLED BACK: generation %d (%s) breached its judged %s: %s; generation %d (%s) serves again", g.num, g.release.Version, phase, p.crash, old.num, old.release.Version),
			"generation", g.num, "version", g.release.Version, "breach", p.breach, "figures", p.figures,
			"restored_generation", old.num, "restored_version", old.release.Version)
		l.m.Rollbacks.WithLabelValues(p.breach).Inc()
		rep = l.decide(g, p, VerdictRolledBack, p.breach+": "+p.crash)
		err = fmt.Errorf("upgrade to %s: rolled back during its %s: %s; generation %d (%s) serves again%s; figures: %s",
			g.release.Version, phase, p.crash, old.num, old.release.Version, p.wokenNote(), p.figures)
	default:
		l.log.Warn(fmt.Sprintf("rolled back on request: generation %d (%s) serves again", old.num, old.release.Version),
			"generation", g.num, "version", g.release.Version)
		l.m.Rollbacks.WithLabelValues("requested").Inc()
		rep = l.decide(g, p, VerdictRolledBack, "rollback requested during the "+phase)
		err = fmt.Errorf("upgrade to %s: rolled back on request; generation %d (%s) serves again%s", g.release.Version, old.num, old.release.Version, p.wokenNote())
		// The judge's last reading can be a second old (a whole canary
		// step missing): the report counts up to the rollback, read
		// before the generation rolled back from drains (see retireG).
		l.lastLook(g, p, rep)
	}
	l.m.Upgrades.WithLabelValues("rolled_back").Inc()
	l.repoint(old.release, p.follower, p.requester)
	l.fx.notify("STATUS=" + l.statusLine())
	// `upgrade --wait` (and `rollback --wait`) follow the generation
	// rolled back from to its exit, as they follow the old one otherwise:
	// the report then says when it was gone.
	gone := func(l *loop, d time.Duration) {
		rep.gone(g)
		p.follower.emitReport(rep)
		p.follower.finish(Progress{}, err)
		p.requester.emit(drainedStep(g, d))
		p.requester.finish(Progress{}, nil)
	}
	retireG = func(l *loop) {
		// Once the report's last look is in (a rollback on request):
		// the generation rolled back from is read before it drains.
		l.afterLook(p, func(l *loop) {
			if live := g.live(); len(live) > 0 {
				g.followers = append(g.followers, p.follower, p.requester)
				l.retire(g, live, gone)
			} else {
				gone(l, 0)
			}
		})
	}
	if steered { // at once: no steer to wait for (another handover, no socket)
		retireG(l)
	}
}

// cmdRollback asks to go back: to the standby generation during a
// probation, else to the release active before the current one.
type cmdRollback struct {
	req *opRequest
}

func (c cmdRollback) apply(l *loop) {
	switch {
	case l.stop != nil:
		c.req.finish(Progress{}, errors.New("rollback: the supervisor is stopping"))
		return
	}
	if g := l.active; g != nil {
		// A canary or probation goes on while a newer upgrade starts (it
		// ends only once that one is ready), and so can be rolled back.
		p := g.runningProbation()
		if p != nil && len(l.wakeStandby(p)) == 0 {
			// Those it killed leave a canary's program now, not at their
			// exit: a kill waits for a process in state D.
			l.resteer(nil)
			p = nil // no standby worker: the previous release starts again
		}
		if p != nil {
			// The previous generation is still listening: no restart.
			old := p.standby
			back := Progress{Step: StepRolledBack, Generation: old.num, Version: old.release.Version,
				Reason: "it was on standby, traffic went straight back" + p.wokenNote(), Other: g.num, OtherVersion: g.release.Version}
			// Said once the program is back on old (see rollBackTo).
			p.steeredBack = func(l *loop) {
				c.req.emit(back)
				c.req.sum = back
				if !c.req.wait {
					c.req.finish(back, nil)
				}
			}
			if c.req.wait {
				// Answered once g has exited (see rollBackTo), as a
				// rollback that starts a release waits for the drain.
				p.requester = c.req
			}
			l.endProbation(g, probationRolledBack)
			return
		}
	}
	if l.op != nil {
		c.req.finish(Progress{}, fmt.Errorf("rollback: %w", ErrUpgradeInProgress))
		return
	}
	// The release before the active one: the history's last but one, or
	// its last when the active release left the history (a breached one:
	// see serveOnBreached).
	var prev release
	if n := len(l.history); n >= 1 && l.active != nil && l.history[n-1] != l.active.release {
		prev = l.history[n-1]
	} else if n >= 2 {
		prev = l.history[n-2]
	}
	if prev.Path == "" {
		c.req.finish(Progress{}, fmt.Errorf("rollback: no previous release to go back to"))
		return
	}
	// It starts again from its file: one gone (pruned) or replaced since
	// would start something else, or fail as a generation (a new user's
	// trial: a pruned release made a failed generation and a report). A
	// refusal changes nothing, as an upgrade's does.
	if err := checkExecutable(prev.Path); err != nil {
		l.m.Upgrades.WithLabelValues("refused").Inc()
		c.req.finish(Progress{}, fmt.Errorf("rollback refused: %w: the release before, %s, cannot start again: %s: %w", ErrBadRelease, prev.Version, prev.Path, err))
		return
	}
	if now, changed := prev.replaced(); changed {
		l.m.Upgrades.WithLabelValues("refused").Inc()
		c.req.finish(Progress{}, fmt.Errorf("rollback refused: %w: the release before, %s, was replaced since: %s holds %s now; upgrade to it by path if that is what should run", ErrBadRelease, prev.Version, prev.Path, now))
		return
	}
	why := ""
	if p := l.active.runningProbation(); p != nil && len(p.woken) > 0 {
		// Its generation serves no more: a new one of its release does.
		why = "no standby worker could take traffic back: " + strings.Join(p.woken, "; ")
	}
	cmdUpgrade{rel: prev, req: c.req, rollback: true, why: why}.apply(l)
}
