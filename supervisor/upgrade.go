package supervisor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/launcherd/launcher/internal/control"
	"github.com/launcherd/launcher/internal/ticketkeys"
)

// ErrUpgradeInProgress is returned when an upgrade or rollback is asked
// for while another one starts.
var ErrUpgradeInProgress = errors.New("upgrade in progress")

// upgradeOp is the upgrade under way: its new generation starting, until
// all its workers are ready (then it serves) or one fails (then it is
// killed and the previous generation serves on untouched).
type upgradeOp struct {
	req       *opRequest
	g         *generation
	old       *generation // the active generation when it began; nil for the first
	start     time.Time
	stopTimer func()
	err       error // set once it failed; it ends when g's workers are gone
	failedAt  time.Time
	result    string
	first     bool // the start's first generation: Run tells systemd
	activated bool // its generation is the active one; the steer is under way
	opts      UpgradeOptions
	// rollback: launcher rollback started the previous release again. The
	// release rolled back from then neither stands by behind it nor stays
	// a step a later rollback goes back to.
	rollback bool
}

// cmdUpgrade asks for a new generation of rel.
type cmdUpgrade struct {
	rel      release
	req      *opRequest
	rollback bool // a rollback that starts the previous release again
	// why, for a rollback, says why no standby worker took traffic back
	// (those killed as stopped or hung); "" otherwise.
	why string
	// ticketFile is --tls-ticket-key-file read again for this upgrade;
	// nil without one.
	ticketFile *ticketkeys.Ring
	opts       UpgradeOptions
}

// refuse ends c's request with err, changing nothing but --current,
// which names what serves again (see realignCurrent).
func (c cmdUpgrade) refuse(l *loop, err error) {
	l.realignCurrent()
	c.req.finish(Progress{}, err)
}

func (c cmdUpgrade) apply(l *loop) {
	switch {
	case l.stop != nil:
		c.refuse(l, errors.New("upgrade: the supervisor is stopping"))
		return
	case !l.started:
		// Asked while the first generation starts, or workers are
		// adopted: held, in the order asked. Each caller waited for the
		// start, then all raced to post, and the last one asked started
		// (a new user's recheck, 7 of 7).
		l.early = append(l.early, c)
		return
	case l.op != nil:
		c.refuse(l, fmt.Errorf("upgrade to %s: %w: generation %d (%s) is starting", c.rel.Version, ErrUpgradeInProgress, l.op.g.num, l.op.g.release.Version))
		return
	}
	draining, standby := 0, 0
	for _, g := range l.gens {
		// A standby generation drains as soon as this upgrade goes on.
		if g.hasLive() {
			switch g.state {
			case StateDraining:
				draining++
			case StateStandby:
				standby++
			}
		}
	}
	if l.active != nil && draining+standby+1 > l.cfg.MaxDraining {
		l.m.Upgrades.WithLabelValues("refused").Inc()
		// Say what would drain: those draining now, a standby one (its
		// probation ends with this upgrade) and the active one.
		what := fmt.Sprintf("%d draining now", draining)
		if standby > 0 {
			what += fmt.Sprintf(", %d on standby", standby)
		}
		c.refuse(l, fmt.Errorf("upgrade refused: it would leave %d generation(s) draining at once (%s, and generation %d, active now), and --max-draining is %d (wait, or raise it)",
			draining+standby+1, what, l.active.num, l.cfg.MaxDraining))
		return
	}
	if p := l.active.runningProbation(); p != nil && !c.rollback && c.rel.Path == l.active.release.Path {
		// A restart of the release under judgement would drain its
		// standby and leave nothing to roll back to: a `kill -HUP` out of
		// habit (or logrotate's) during a canary, --current now pointing
		// at the new release, did just that.
		l.m.Upgrades.WithLabelValues("refused").Inc()
		phase, how := "probation", "wait for its end, or launcher rollback first"
		if p.weight < 100 {
			phase = fmt.Sprintf("canary (at %d%% of new connections)", p.weight)
			how = "launcher promote, then wait for the probation's end; or launcher rollback first"
		}
		c.refuse(l, fmt.Errorf("upgrade refused: generation %d already runs %s (%s), in its %s with generation %d (%s) standing by; restarting it now would drain generation %d and leave nothing to roll back to (%s)",
			l.active.num, c.rel.Path, c.rel.Version, phase, p.standby.num, p.standby.release.Version, p.standby.num, how))
		return
	}
	if len(c.opts.Canary) > 0 {
		switch {
		case l.active == nil:
			c.refuse(l, errors.New("upgrade --canary: no active generation to share traffic with"))
			return
		case l.cfg.Handover != HandoverSteer:
			c.refuse(l, fmt.Errorf("upgrade --canary: needs --handover %s (the weights are a steering program)", HandoverSteer))
			return
		}
	}
	if c.ticketFile != nil {
		l.setTicketFile(*c.ticketFile)
	}
	if c.rollback {
		c.req.emit(Progress{Step: StepRollingBack, Version: c.rel.Version, Reason: c.why})
	}
	l.fx.notify(reloading()...)
	l.beginUpgrade(c.rel, c.req, c.opts)
	if op := l.op; op != nil && op.req == c.req {
		op.rollback = c.rollback
	}
}

// beginUpgrade starts a generation of rel, with the active one (if any)
// serving on until it is ready; a canary or probation running meanwhile
// goes on until then (see activate).
func (l *loop) beginUpgrade(rel release, req *opRequest, opts UpgradeOptions) {
	// Numbers are never reused, even those of generations forgotten since
	// (and, across an adoption, those the state file leaves out).
	l.lastGen++
	g := &generation{num: l.lastGen, release: rel, state: StateStarting, started: time.Now()}
	l.gens = append(l.pruned(), g)
	// Its times count from the command: the request's making, which
	// an upgrade asked for while the first generation started waited
	// behind (a new user's recheck: its report and the duration metric
	// counted from the end of that wait).
	start := time.Now()
	if l.started && req != nil && !req.start.IsZero() && req.start.Before(start) {
		start = req.start
	}
	op := &upgradeOp{req: req, g: g, old: l.active, start: start, first: !l.started, opts: opts}
	l.op = op
	l.newReport(g, op.old, op.start, opts)
	// The same file holding the same build: one replaced in place since
	// (a new label) is another release.
	same := l.active != nil && l.active.release == rel
	l.genLog(g).Info("starting generation", "path", rel.Path, "workers", l.cfg.Workers, "same_release", same)
	req.emit(Progress{Step: StepStarting, Generation: g.num, Version: rel.Version, Path: rel.Path, Workers: l.cfg.Workers, Same: same})
	first := l.cfg.Workers
	if l.cfg.StartInTurn {
		first = 1 // the others follow in startNextInTurn
	}
	for i := 0; i < first; i++ {
		w, err := l.startWorker(g, i)
		if err != nil {
			l.failOp(err)
			return
		}
		g.workers = append(g.workers, w)
	}
	op.stopTimer = l.after(l.cfg.ReadyTimeout, evFunc(func(l *loop) {
		if l.op == op && op.err == nil {
			for _, w := range g.workers {
				if !w.ready {
					l.failOp(fmt.Errorf("%s not ready within --ready-timeout %s%s%s", w, l.cfg.ReadyTimeout, w.hangNote(), stderrTail(w.tail.last(3))))
					return
				}
			}
			if n := len(g.workers); n < l.cfg.Workers {
				l.failOp(fmt.Errorf("worker %d not started within --ready-timeout %s (--start-in-turn: worker %d said no hello)", n, l.cfg.ReadyTimeout, n-1))
			}
		}
	}))
}

// startNextInTurn starts the next worker of a generation started in turn
// (Config.StartInTurn) once w, the last one started, has said hello.
func (l *loop) startNextInTurn(w *worker) {
	op := l.op
	if op == nil || op.err != nil || op.g != w.gen || !l.cfg.StartInTurn {
		return
	}
	g := op.g
	if n := len(g.workers); n >= l.cfg.Workers || g.workers[n-1] != w {
		return
	}
	next, err := l.startWorker(g, len(g.workers))
	if err != nil {
		l.failOp(err)
		return
	}
	g.workers = append(g.workers, next)
}

// checkOp hands traffic to the starting generation once all its workers
// are ready.
func (l *loop) checkOp() {
	op := l.op
	if op == nil || op.err != nil || op.activated || len(op.g.workers) < l.cfg.Workers {
		return
	}
	for _, w := range op.g.workers {
		if !w.ready {
			return
		}
	}
	l.activate(op)
}

// failOp kills the starting generation. Its sockets were appended last and
// never steered to, so the running generation is untouched. The upgrade
// ends, with err, once its workers are gone (endFailedOp).
func (l *loop) failOp(err error) {
	op := l.op
	if op == nil || op.err != nil {
		return
	}
	op.err, op.failedAt = err, time.Now()
	op.result = "failed"
	if l.stop != nil {
		op.result = "aborted"
	}
	if op.stopTimer != nil {
		op.stopTimer()
	}
	op.g.state = StateFailed
	for _, w := range op.g.workers {
		w.stopping = true
		if !w.exited {
			l.kill(w)
		}
	}
	l.markDirty()
	l.endFailedOp()
}

// endFailedOp reports a failed upgrade once its generation has no process
// left, so that the next upgrade never meets them.
func (l *loop) endFailedOp() {
	op := l.op
	if op == nil || op.err == nil || op.g.hasLive() {
		return
	}
	l.op = nil
	l.m.Upgrades.WithLabelValues(op.result).Inc()
	g, rel := op.g, op.g.release
	l.forgetIfOver(g)
	l.realignCurrent()
	// What serves on is the active generation now: the one the command
	// found may have been rolled back from meanwhile (its canary's judge).
	var err error
	if a := l.active; a == nil {
		err = fmt.Errorf("generation %d (%s): %w", g.num, rel.Version, op.err)
	} else {
		if l.stop != nil {
			l.genLog(g).Warn("generation failed: stopped while it started", "err", op.err)
		} else {
			l.genLog(g).Error("generation failed; the previous one serves on", "err", op.err, "serving_generation", a.num)
		}
		what := "upgrade" // a rollback that starts a release says so
		if op.rollback {
			what = "rollback"
		}
		err = fmt.Errorf("%s to %s: %w; generation %d (%s) serves on", what, rel.Version, op.err, a.num, a.release.Version)
		if l.stop != nil {
			err = fmt.Errorf("%s to %s: %w; generation %d (%s) drains with the rest", what, rel.Version, op.err, a.num, a.release.Version)
		}
		if r := g.report; r != nil {
			r.From, r.FromVersion = a.num, a.release.Version
		}
	}
	if !op.first {
		l.fx.notify("READY=1", "STATUS="+l.statusLine())
	}
	if rep := l.decide(g, nil, VerdictFailed, op.err.Error()); rep != nil {
		// Decided when it failed; reported once its processes are gone,
		// which a process asleep in state D can make much later.
		rep.VerdictAfter = op.failedAt.Sub(rep.Command)
		rep.gone(nil)
		op.req.emitReport(rep)
	}
	op.req.finish(Progress{}, err)
	l.checkStop()
}

// workerFailed ends the upgrade whose generation w belongs to, if w fails
// before it is ready.
func (l *loop) workerFailed(w *worker, err error) {
	if l.op != nil && l.op.g == w.gen && l.op.err == nil && !l.op.activated {
		l.failOp(fmt.Errorf("worker %d (pid %d): %w", w.index, w.pid, err))
		return
	}
	// Once its generation is active, a failure is a crash like any
	// other: a restarted worker that fails its health check at its ready
	// is killed, and restarted with the back-off (its exit is an active
	// worker's). It was left running, steered to by nothing, and said
	// nothing: its generation served on at part of its capacity (a new
	// user's trial, 3 of 3).
	if !w.ready && !w.exited && !w.killed && !w.stopping && w.gen == l.active && w.gen.state == StateActive {
		l.workerLog(w).Warn("restarted worker failed before it served: killed, and restarted with the back-off", "err", err)
		l.kill(w)
	}
}

// activate makes op's generation the active one: on disk first, then
// steered to; the previous generation stands by (probation) or drains.
func (l *loop) activate(op *upgradeOp) {
	op.activated = true
	op.stopTimer()
	// Ready first: it is what ends a running canary or probation below.
	readyAfter := time.Since(op.g.started)
	op.req.emit(Progress{Step: StepReady, Generation: op.g.num, Version: op.g.release.Version, ReadyAfter: readyAfter})
	if op.g.report != nil {
		op.g.report.ReadyAfter = time.Since(op.start)
	}
	// Moving on ends a running canary or probation, only now that the new
	// generation is ready (one that fails leaves it as it was): its
	// standby generation is retired, the active one becomes the one to
	// come back to. That one may have changed since the command (a
	// rollback meanwhile).
	if a := l.active; a != nil && a.runningProbation() != nil {
		standby, weight := a.probation.standby, a.probation.weight
		cause := probationSuperseded
		if op.rollback {
			cause = probationRolledBackAnew
		}
		l.endProbation(a, cause)
		op.req.emit(Progress{Step: StepSuperseded, Generation: standby.num, Version: standby.release.Version, Weight: weight})
	}
	if op.old != l.active && l.active != nil {
		op.old = l.active
		if r := op.g.report; r != nil {
			r.From, r.FromVersion = op.old.num, op.old.release.Version
		}
	}
	g, old := op.g, op.old
	l.active = g
	g.state = StateActive
	if op.rollback && old != nil {
		l.forgetRelease(old.release)
	}
	// A restart of the same release is no step to roll back over.
	if n := len(l.history); n == 0 || l.history[n-1] != g.release {
		l.history = append(l.history, g.release)
	}
	if len(l.history) > keepHistory {
		l.history = l.history[len(l.history)-keepHistory:]
	}
	var p *probation
	if old != nil {
		// A standby needs every old worker ready: traffic may come back.
		// A breached generation is no rollback target, nor one rolled
		// back from: it drains.
		canary := len(op.opts.Canary) > 0
		if (l.cfg.Probation > 0 || canary) && canStandBy(old.workers) && !old.breached && !op.rollback {
			p = l.startProbation(g, old, op.opts)
		} else {
			switch {
			case canary && old.breached:
				l.genLog(g).Warn("no canary: the previous generation breached its judged upgrade and does not stand by; all new connections go to the new one")
			case canary:
				l.genLog(g).Warn("no canary: the previous generation cannot stand by (a worker is not ready or listening); all new connections go to the new one")
			}
			if old.state != StateFailed { // a crash loop's stays failed
				old.state = StateDraining
			}
		}
	}
	// On disk before traffic moves: a supervisor restarted from any point
	// on adopts this generation as the active one, and steers to it.
	if err := l.flushState(); err != nil {
		op.req.emit(Progress{Step: StepWarning, Generation: g.num, Version: g.release.Version,
			Reason: fmt.Sprintf("state file not written (%v): should the supervisor be killed, a new one could not adopt generation %d; free the state dir's filesystem", err, g.num)})
	}
	l.resteer(func(l *loop, err error) {
		if err != nil {
			l.genLog(g).Warn("steer to new generation", "err", err)
		}
		l.served(op, p, readyAfter)
	})
}

// releaseEarly applies the upgrades held while the first generation
// started, in the order they were asked for, once it serves (or the
// supervisor stops): after the event that made it serve.
func (l *loop) releaseEarly() {
	if len(l.early) == 0 {
		return
	}
	l.after(0, evFunc(func(l *loop) {
		held := l.early
		l.early = nil
		for _, c := range held {
			c.apply(l)
		}
	}))
}

// served reports the upgrade as served: new connections reach the new
// generation. With wait, the request follows the probation and the drain.
func (l *loop) served(op *upgradeOp, p *probation, readyAfter time.Duration) {
	g, old, req := op.g, op.old, op.req
	l.op = nil
	l.started = true
	l.releaseEarly()
	l.repoint(g.release, req)
	// launcher_upgrade_duration_seconds counts successful upgrades: with
	// a probation, observed once it passes (see endProbation).
	servedAfter := time.Since(op.start)
	if p != nil {
		p.servedAfter = servedAfter
	}
	l.genLog(g).Info("generation active", "ready_ms", readyAfter.Milliseconds())
	if !op.first {
		l.fx.notify("READY=1", "STATUS="+l.statusLine())
	}
	sum := Progress{Step: StepServes, Generation: g.num, Version: g.release.Version, ReadyAfter: readyAfter}
	req.sum = sum
	req.emit(sum)
	// Without wait the caller hears how the previous generation is left
	// (standby or draining), not how that ends.
	switch {
	case l.stop != nil:
		// A stop came while the steer was under way: it drains everything.
		req.finish(Progress{}, nil)
	case p != nil:
		follower := req
		if req.wait {
			p.follower = req
		}
		if p.weight < 100 {
			// A canary: the old generation keeps its keep-alive clients
			// and its share of new connections until the last step.
			step := Progress{Step: StepCanary, Generation: g.num, Version: g.release.Version, Weight: p.weight,
				Interval: p.interval, Other: old.num, OtherVersion: old.release.Version}
			l.genLog(g).Info("canary step", "weight_percent", p.weight, "for", p.interval,
				"standby_generation", old.num, "standby_version", old.release.Version)
			follower.emit(step)
			if !follower.wait {
				follower.finish(step, nil)
			}
			break
		}
		for _, w := range p.workers {
			l.send(w, control.Message{Type: control.TypeStandby})
		}
		l.countInflight(old, func(l *loop, n int64) {
			follower.emit(Progress{Step: StepStandby, Generation: old.num, Version: old.release.Version, Probation: l.cfg.Probation, Inflight: n, Other: g.num, Judged: p.judge != nil})
			if !follower.wait {
				follower.finish(Progress{}, nil)
			}
		})
	case old != nil:
		l.m.Upgrades.WithLabelValues("success").Inc()
		l.m.UpgradeDuration.Observe(servedAfter.Seconds())
		workers := old.live()
		follower := req
		why := "no probation"
		if old.breached {
			why = fmt.Sprintf("no probation: generation %d breached its judged upgrade and stands by for none", old.num)
		}
		rep := l.decide(g, nil, VerdictPassed, why)
		// The count of requests in flight is for the draining line only:
		// the release does not wait for its round trip to the workers,
		// but the drained line waits for the draining one.
		var drained func(*loop)
		counted := false
		if len(workers) == 0 {
			// Nothing left of it (a crash loop): no drain to speak of.
			counted = true
			if !follower.wait {
				follower.finish(Progress{}, nil)
			}
		} else {
			l.countInflight(old, func(l *loop, n int64) {
				follower.emit(Progress{Step: StepDraining, Generation: old.num, Version: old.release.Version, Inflight: n})
				if !follower.wait {
					follower.finish(Progress{}, nil)
				}
				counted = true
				if drained != nil {
					drained(l)
				}
			})
		}
		old.followers = append(old.followers, follower)
		l.retire(old, workers, func(l *loop, d time.Duration) {
			drained = func(l *loop) {
				step := drainedStep(old, d)
				if len(workers) == 0 {
					step.Reason = "no worker of it was left to drain"
				}
				follower.emit(step)
				rep.gone(old)
				follower.emitReport(rep)
				follower.finish(Progress{}, nil)
			}
			if counted {
				drained(l)
			}
		})
	default:
		l.m.Upgrades.WithLabelValues("success").Inc()
		l.m.UpgradeDuration.Observe(servedAfter.Seconds())
		req.finish(Progress{}, nil)
	}
	l.checkStop()
}

// countInflight reads the requests in flight on g's connected workers,
// within a second, and applies then to the sum on the loop.
func (l *loop) countInflight(g *generation, then func(*loop, int64)) {
	l.sumInflight(g.live(), then)
}

// sumInflight reads the requests in flight on those of workers that are
// running, off the loop and within a second, and applies then to the sum
// on the loop. A worker that cannot answer (stopped, frozen, asleep in
// state D, hung, killed) counts what it had at its last count: a drain cut
// at --drain-timeout cuts them too. One that has exited counts 0.
func (l *loop) sumInflight(workers []*worker, then func(*loop, int64)) {
	var ask []*worker
	var admins []string
	var procs []process
	for _, w := range workers {
		// One found stopped or hung would take the whole second, for a
		// count it cannot give.
		if !w.exited && w.conn != nil && !w.paused && !w.killed {
			ask = append(ask, w)
			admins = append(admins, w.admin)
			procs = append(procs, w.proc)
		}
	}
	fx := l.fx
	async(l, func() runningCounts { return countRunning(fx, procs, admins, true) }, func(l *loop, r runningCounts) {
		for i, w := range ask {
			if r.counted[i] {
				w.inflight = r.counts[i].InflightRequests
			}
		}
		var n int64
		for _, w := range workers {
			if !w.exited {
				n += w.inflight
			}
		}
		then(l, n)
	})
}

// keepFinished is how many exited or failed generations status still
// shows, and keepHistory how many releases rollback remembers: older ones
// are forgotten so memory stays flat over many upgrades.
const (
	keepFinished = 5
	keepHistory  = 20
)

// pruned returns l.gens without the oldest finished generations: no
// process left and not the active one.
func (l *loop) pruned() []*generation {
	finishedGen := func(g *generation) bool {
		return (g.state == StateExited || g.state == StateFailed) && g != l.active && !g.hasLive()
	}
	finished := 0
	for _, g := range l.gens {
		if finishedGen(g) {
			finished++
		}
	}
	out := l.gens[:0]
	for _, g := range l.gens {
		if finished > keepFinished && finishedGen(g) {
			finished--
			continue
		}
		out = append(out, g)
	}
	return out
}

// startWorker starts process index of g.
func (l *loop) startWorker(g *generation, index int) (*worker, error) {
	w := &worker{gen: g, index: index, token: newToken(), admin: l.adminSocket(g.num, index), tail: newTailBuffer(20)}
	env := append(workerEnv(os.Environ()),
		control.EnvGeneration+"="+strconv.Itoa(g.num),
		control.EnvVersion+"="+g.release.Version,
		control.EnvListen+"="+strings.Join(l.cfg.Listen, ","),
		control.EnvControl+"="+ControlSocket(l.stateDir),
		control.EnvAdmin+"="+w.admin,
		control.EnvWorker+"="+strconv.Itoa(index),
		control.EnvToken+"="+w.token,
	)
	proc, err := l.fx.start(procSpec{dir: l.cfg.Dir, gen: g.num, index: index, path: g.release.Path, args: l.cfg.Command[1:], env: env, tail: w.tail})
	if err != nil {
		return nil, err
	}
	l.watch(w, proc)
	return w, nil
}

// watch registers w, run by proc, and posts its exit to the loop.
func (l *loop) watch(w *worker, proc process) {
	w.proc, w.pid = proc, proc.pid()
	l.byToken[w.token] = w
	l.markDirty()
	l.procs.Add(1)
	go func() { // owned by the process: ends when it has exited
		defer l.procs.Done()
		<-proc.done()
		l.post(evExited{w})
	}()
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

// statusLine is the one-line status for systemd.
func (l *loop) statusLine() string {
	g := l.active
	switch {
	case g == nil:
		return "no active generation"
	case g.state == StateFailed:
		return fmt.Sprintf("not serving: generation %d (%s) failed in a crash loop", g.num, g.release.Version)
	case len(g.notRestarted) > 0:
		return fmt.Sprintf("serving %s (generation %d, %d of %d workers: %d not restarted after a crash loop)", g.release.Version, g.num, len(g.live()), len(g.workers), len(g.notRestarted))
	}
	return fmt.Sprintf("serving %s (generation %d, %d workers)", g.release.Version, g.num, len(g.live()))
}

// reloading is systemd's notice that an upgrade began, with the
// monotonic time it wants.
func reloading() []string {
	return []string{"RELOADING=1", "MONOTONIC_USEC=" + strconv.FormatInt(monotonicUsec(), 10), "STATUS=upgrading"}
}

// realignCurrent points --current back at the active generation's
// release after an upgrade that did not happen (refused, or failed before
// it served): an operator who repointed current and sent SIGHUP, the
// article's habit, left it naming a release that does not serve, and the
// supervisor's next start ran that one (a new user's trial: a restart
// after a refused upgrade failed, and nothing served). An upgrade under
// way repoints at its own end, to its release if it serves; until then
// what serves is the active generation, refused "in progress" included
// (a recheck: current named the refused release for the 10 s of another
// upgrade's warm-up).
func (l *loop) realignCurrent() {
	g := l.active
	if g == nil && l.op != nil && l.op.first {
		// The first start: its release is what a restart runs again (a
		// recheck: a refusal then left current on the refused release,
		// and a restart in that window failed to start at all).
		g = l.op.g
	}
	if g == nil {
		return
	}
	l.repoint(g.release) // a no-op without --current
	l.genLog(g).Debug("current points at the serving release after an upgrade that did not happen")
}

// repoint points --current at rel's directory, if set, and reports
// whether it did (or had nothing to do). A failure is logged and said to
// reqs (the commands that moved traffic, a stop), which go on: the
// service serves, but a restart would not run rel.
func (l *loop) repoint(rel release, reqs ...*opRequest) bool {
	err := l.fx.repoint(rel)
	if err == nil {
		return true
	}
	l.log.Warn("repoint current symlink", "err", err)
	for _, r := range reqs {
		r.emit(Progress{Step: StepWarning, Version: rel.Version, Reason: fmt.Sprintf("not repointed to %s: %v; a restart of the supervisor would not run %s", filepath.Dir(rel.Path), err, rel.Version)})
	}
	return false
}
