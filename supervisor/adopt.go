package supervisor

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/launcherd/launcher/internal/control"
)

// rejoinWait bounds how long adoption waits for the adopted workers to dial
// the control socket again (they retry at least every second).
const rejoinWait = 5 * time.Second

// cmdStart starts the supervisor's service: it adopts the workers a
// killed supervisor left serving on this state directory, as its state
// file describes them, or else starts the first generation.
type cmdStart struct {
	first release
	req   *opRequest
}

// adoption is the wait for adopted workers to dial again.
type adoption struct {
	req       *opRequest
	first     release
	gens      []*generation
	noActive  bool // no generation was active: one that rejoins ready may be
	stopTimer func()
	canary    int // the canary's weight when the previous supervisor died in one, else 0
	// had: each generation's worker indices in the state file, those that
	// died since included; workers is the killed supervisor's --workers
	// (0 in the file of a version before it).
	had     map[int]map[int]bool
	workers int
	// lost is the release of the state file's active generation when none
	// of its workers is left (zero otherwise): a standby behind it serves
	// again, as after a crash in its probation (see restoreStandby).
	// lostGen is that generation's number.
	lost    release
	lostGen int
}

func (c cmdStart) apply(l *loop) {
	l.ticketMetrics()
	l.after(pausedWatchEvery, evFunc(func(l *loop) { l.watchPaused() }))
	l.after(l.recentEvery, evFunc(func(l *loop) { l.watchRecent() }))
	st, err := l.fx.loadState()
	if err != nil {
		l.abandon(c.req, err)
		return
	}
	if st == nil {
		l.removeStaleAdminSockets(nil)
		l.startFirst(c)
		return
	}
	type found struct {
		w    *worker
		proc process
	}
	var gens []*generation
	var live []found
	byToken := map[string]*worker{}
	had := map[int]map[int]bool{}
	for _, sg := range st.Gens {
		g := &generation{num: sg.Num, release: release(sg.Release), state: sg.State, started: sg.Started}
		g.restarts.restarts = sg.Restarts
		had[sg.Num] = map[int]bool{}
		for _, sw := range sg.Workers {
			had[sg.Num][sw.Index] = true
			proc, ok := l.fx.adopt(sw.PID, sw.Token, sg.Num)
			if !ok {
				l.goneMeanwhile(sg, sw)
				continue
			}
			w := &worker{gen: g, index: sw.Index, token: sw.Token, admin: sw.Admin, ready: sw.Ready, tail: newTailBuffer(20)}
			g.workers = append(g.workers, w)
			byToken[w.token] = w
			live = append(live, found{w, proc})
		}
		if len(g.workers) > 0 {
			gens = append(gens, g)
		}
	}
	var keep []*worker
	for _, f := range live {
		keep = append(keep, f.w)
	}
	l.removeStaleAdminSockets(keep)
	if len(live) == 0 {
		l.log.Info("state file of a killed supervisor: none of its workers is left", "supervisor_pid", st.Supervisor)
		// Its history stays: the generation numbers go on, rollback
		// knows the releases before, status the reports.
		l.takeHistory(st)
		l.reportStartsGone(st, gens)
		l.startFirst(c)
		return
	}
	if !slices.Equal(st.Listen, l.cfg.Listen) {
		var pids []int
		for _, f := range live {
			pids = append(pids, f.proc.pid())
			f.proc.release()
		}
		l.abandon(c.req, fmt.Errorf("workers of a killed supervisor still serve %v on %s (pids %v): start with the same --listen to adopt them, or stop them first",
			st.Listen, l.stateDir, pids))
		return
	}
	for _, f := range live {
		l.watch(f.w, f.proc)
	}

	// The kernel's group is as the state file says, minus the sockets
	// closed since; each close moved the last socket into the freed slot.
	// The order of those closes is unknown, so several can make the model
	// a guess: the steering that follows stays safe (it only ever sends
	// connections to listening sockets), and every generation but the
	// active one is released below, after which any order is exact.
	var gone []*worker
	for _, tok := range st.Group {
		w := byToken[tok]
		if w == nil {
			w = &worker{token: tok} // a placeholder for a closed socket
			gone = append(gone, w)
		} else {
			w.listening = true
		}
		l.group.Join(w)
	}
	for _, w := range gone {
		l.group.Leave(w)
	}
	l.gens = gens
	l.takeHistory(st)
	l.reportStartsGone(st, gens)
	for _, g := range gens {
		l.lastGen = max(l.lastGen, g.num)
		if g.num == st.Active && g.state == StateActive {
			l.active = g
		}
		for _, r := range l.reports {
			g.breached = g.breached || (g.num == r.Generation && r.Verdict == VerdictBreached)
		}
	}
	l.markDirty()
	l.adopting = &adoption{req: c.req, first: c.first, gens: gens, noActive: l.active == nil, canary: st.Canary, had: had, workers: st.Workers}
	if l.active == nil {
		for _, sg := range st.Gens {
			if sg.Num == st.Active {
				l.adopting.lost, l.adopting.lostGen = release(sg.Release), sg.Num
			}
		}
	}
	l.adopting.stopTimer = l.after(rejoinWait, evFunc(func(l *loop) { l.finishAdoption() }))
	l.checkAdoption()
}

// goneMeanwhile says what became of a worker of the state file that is
// gone: it exited while no supervisor ran. An active or standby one died
// unasked, and counts as a crash (an active one is restarted, or rolled
// back from: see finishAdoption); a draining one drained or died, which
// its exit status, not ours to read, would have told.
func (l *loop) goneMeanwhile(sg savedGen, sw savedWorker) {
	log := l.log.With("generation", sg.Num, "version", sg.Release.Version, "worker", sw.Index, "pid", sw.PID)
	switch sg.State {
	case StateActive:
		l.m.WorkerCrashes.WithLabelValues(StateActive).Inc()
	case StateStandby:
		l.m.WorkerCrashes.WithLabelValues(StateStandby).Inc()
		log.Warn("worker of the standby generation died while no supervisor ran")
	case StateDraining:
		log.Info("worker of a draining generation gone while no supervisor ran: drained, or died (its exit status is unknown)")
	}
}

// takeHistory takes from a killed supervisor's state file what outlives
// its workers: the last generation number, the release history and the
// upgrade reports.
func (l *loop) takeHistory(st *savedState) {
	l.lastGen = st.LastGen
	for _, r := range st.History {
		l.history = append(l.history, release(r))
	}
	for _, r := range st.Reports[max(len(st.Reports)-keepReports, 0):] {
		l.reports = append(l.reports, &r.UpgradeReport)
	}
}

// reportStartsGone files the report of each upgrade that a killed
// supervisor was starting and whose workers were all gone before this
// one adopted what was left (live: the generations with a live worker):
// failed, as one whose workers still ran is (see finishAdoption). Before,
// such an upgrade got no report at all: status named the one before as
// the last (a new user's recheck, 2 of 2). A first generation's start
// (no active one) is no upgrade.
func (l *loop) reportStartsGone(st *savedState, live []*generation) {
	var from *generation
	for _, sg := range st.Gens {
		if sg.Num == st.Active {
			from = &generation{num: sg.Num, release: release(sg.Release)}
		}
	}
	if from == nil {
		return
	}
	for _, sg := range st.Gens {
		if sg.State != StateStarting || slices.ContainsFunc(live, func(g *generation) bool { return g.num == sg.Num }) {
			continue
		}
		g := &generation{num: sg.Num, release: release(sg.Release)}
		if l.keepAdoptedReport(g, from, VerdictFailed, "the supervisor was killed while it started, and its workers had exited before one adopted what was left") {
			l.m.Upgrades.WithLabelValues("aborted").Inc()
			l.genLog(g).Warn("an upgrade the killed supervisor was starting: its workers are gone; reported as failed")
		}
	}
}

// startFirst starts the first generation, unless something this
// supervisor does not know already listens on a --listen address: a
// second supervisor on the same port (another state dir), or workers left
// without a state file. Its SO_REUSEPORT sockets would share the port,
// and the steering of either would send the other's traffic astray.
func (l *loop) startFirst(c cmdStart) {
	if a := l.fx.listened(l.cfg.Listen); a != "" {
		l.abandon(c.req, fmt.Errorf("--listen %s: something already listens there (another supervisor with another state dir, workers left without a state file, or a server without SO_REUSEPORT): stop it first, or start on its state dir", a))
		return
	}
	l.beginUpgrade(c.first, c.req, UpgradeOptions{})
}

// abandon ends a start that must not touch the state directory's workers:
// the state file stays for a later start.
func (l *loop) abandon(req *opRequest, err error) {
	l.stateClosed = true
	req.finish(Progress{}, err)
	l.exit = true
}

// checkAdoption finishes the adoption once every adopted worker worth
// waiting for has dialed again or exited. A generation still starting
// rejoins only if it was ready: worth waiting for when none is active,
// since it may be the one to adopt.
func (l *loop) checkAdoption() {
	a := l.adopting
	for _, g := range a.gens {
		for _, w := range g.workers {
			if g.state == StateStarting && !a.noActive {
				continue
			}
			if !w.rejoined && !w.exited {
				return
			}
		}
	}
	l.finishAdoption()
}

// finishAdoption ends the adoption: it decides which generation is active
// (rolling back to a standby one when the generation on trial lost
// workers meanwhile), steers to it, then settles the rest (see
// settleAdopted), and restarts the active generation's missing workers.
func (l *loop) finishAdoption() {
	a := l.adopting
	if a == nil {
		return
	}
	l.adopting = nil
	a.stopTimer()
	if l.tickets.ring.Len() > 0 {
		// The ring the adopted workers brought back, merged, to all; with
		// --tls-ticket-key-file the file's keys instead (they win).
		why := "taken over from the adopted workers"
		if l.tickets.fixed {
			why = "from --tls-ticket-key-file, handed to the adopted workers (their own keys are dropped)"
		}
		l.refreshTickets(why, true)
	}
	if a.noActive {
		l.promoteReady(a.gens)
	}
	switch act, sb := l.active, a.standby(); {
	case sb == nil:
	case act == nil:
		l.restoreStandby(a, sb, "every worker")
	case a.lostSome(act):
		// A crash in its probation, while no supervisor ran to see it:
		// rolled back, as it would have been (see crashInProbation).
		act.state = StateFailed
		l.active = nil
		a.lost, a.lostGen = act.release, act.num
		l.restoreStandby(a, sb, "a worker")
	}
	for _, g := range a.gens {
		l.genLog(g).Info("adopted generation", "state", g.state, "pids", pids(g.workers))
	}
	// A generation still starting never had traffic (nothing steered to
	// it): stopped at once, its upgrade died with the previous supervisor;
	// settleAdopted has nothing more to do with it. (A new slice: a.gens
	// shares its array with l.gens.)
	var rest []*generation
	for _, g := range a.gens {
		if g == l.active || g.state != StateStarting {
			rest = append(rest, g)
			continue
		}
		l.genLog(g).Warn("stopping a generation whose upgrade died with the previous supervisor")
		l.m.Upgrades.WithLabelValues("aborted").Inc()
		l.keepAdoptedReport(g, l.active, VerdictFailed, "the supervisor was killed while it started; the one that adopted the workers stopped it")
		g.state = StateFailed
		for _, w := range g.live() {
			w.stopping = true
			l.kill(w)
		}
	}
	a.gens = rest
	if l.stop != nil {
		l.settleAdopted(a)
		l.retireAll()
		a.req.finish(Progress{}, errStopped)
		l.checkStop()
		return
	}
	active := l.active
	if active == nil {
		l.settleAdopted(a)
		l.log.Warn("no active generation left to adopt: starting one")
		l.beginUpgrade(a.first, a.req, UpgradeOptions{})
		return
	}
	// Steered to the active generation first, and only then the others
	// released: the previous supervisor's program may still pick their
	// sockets (a canary's standby has its share; after a rollback here,
	// the generation rolled back from has all of it), and a listener
	// released before the steer lands would be closed with what the
	// kernel queued on it meanwhile.
	l.resteer(func(l *loop, err error) {
		if err != nil {
			l.log.Warn("steer after adoption", "err", err)
		}
		l.settleAdopted(a)
	})
	// Workers that died while no supervisor ran are started again, as any
	// crashed worker is; those a larger --workers asks for, at once.
	for i := 0; i < l.cfg.Workers; i++ {
		switch {
		case active.hasLiveWorker(i):
		case i < a.workers || a.had[active.num][i]:
			l.genLog(active).Warn("worker gone while no supervisor ran; restarting", "worker", i)
			l.scheduleRestart(active, i)
		default:
			l.genLog(active).Info("starting a worker: --workers asks for more than the adopted generation had", "worker", i, "workers", l.cfg.Workers)
			l.restart(active, i)
		}
	}
	// An upgrade that died with the previous supervisor (its generation
	// stopped above, or filed as failed) may have left --current on its
	// release, where an operator pointed it before the SIGHUP: it names
	// what serves again, or the next start would run that release (a new
	// user's recheck).
	l.realignCurrent()
	l.started = true
	l.releaseEarly()
	a.req.finish(Progress{Step: StepServes, Generation: active.num, Version: active.release.Version}, nil)
}

// settleAdopted settles what the killed supervisor left half done, once
// the active generation is steered to: one on standby is retired (its
// probation cannot be judged across the restart), and draining ones are
// watched to their end. (One still starting was stopped already.)
func (l *loop) settleAdopted(a *adoption) {
	for _, g := range a.gens {
		live := g.live()
		switch {
		case g == l.active:
		case g.state == StateStandby:
			l.genLog(g).Info("retiring the standby generation: its " + a.phase() + " ended with the previous supervisor")
			if l.active != nil && l.keepAdoptedReport(l.active, g, VerdictPassed, "its "+a.phase()+" was cut short: the supervisor was killed during it, and the one that adopted the workers cannot judge across the restart") {
				l.m.Upgrades.WithLabelValues("success").Inc()
			}
			l.retire(g, live, nil)
		default:
			// Killed mid-release, the previous supervisor may have left
			// some listening: those are released now. The others drain
			// already, and are watched to their end (a retire of none
			// would have ended the drain at once).
			var unreleased, released []*worker
			for _, w := range live {
				if w.stopping {
					released = append(released, w)
				} else {
					unreleased = append(unreleased, w)
				}
			}
			if g.state != StateFailed {
				g.state = StateDraining
			}
			if len(unreleased) > 0 {
				l.retire(g, unreleased, nil)
			}
			// One whose last worker died since the adoption began ends
			// now, saying so, rather than stay "draining" for good.
			if len(released) > 0 || len(unreleased) == 0 && g.state == StateDraining {
				l.startDrainClock(l.watchDrain(g, released, nil))
			}
		}
	}
	l.markDirty()
}

// promoteReady makes the newest starting generation whose workers all
// rejoined ready the active one. A supervisor killed after its first
// generation got ready, but before it wrote that down, leaves it so; and
// before anything steers, the kernel already gives it connections.
func (l *loop) promoteReady(gens []*generation) {
	for i := len(gens) - 1; i >= 0; i-- {
		g := gens[i]
		if g.state != StateStarting || !g.hasLive() {
			continue
		}
		ready := true
		for _, w := range g.workers {
			ready = ready && w.ready && w.rejoined
		}
		if ready {
			g.state = StateActive
			l.active = g
			l.history = append(l.history, g.release)
			l.genLog(g).Info("adopting a generation that was ready as the active one")
			return
		}
	}
}

// restoreStandby makes a standby generation with live workers the active
// one again: the previous supervisor died during a canary or
// probation, and so did workers of the generation on trial. The
// standby is the release that served before it, still listening (with
// part of the new connections during a canary), so it takes all traffic
// back at once, as after a crash in the probation (see rollBackTo); a
// generation started anew instead would leave the port without a ready
// process while it starts, and retiring the standby meanwhile resets what
// is queued on it.
//
// g is that generation (see adoption.standby); who says which workers of
// the one on trial died: "every worker", or "a worker" when it lives on
// with fewer (it drains).
func (l *loop) restoreStandby(a *adoption, g *generation, who string) {
	g.state = StateActive
	l.active = g
	if a.lost == (release{}) || !l.forgetRelease(a.lost) {
		l.history = append(l.history, g.release)
	}
	lost := "the generation on trial"
	if a.lost != (release{}) {
		lost = a.lost.Version
	}
	l.genLog(g).Error(fmt.Sprintf("ROLLED BACK: %s of %s died during its %s while no supervisor ran; generation %d (%s) serves again", who, lost, a.phase(), g.num, g.release.Version))
	l.m.Rollbacks.WithLabelValues("crashed").Inc()
	l.m.Upgrades.WithLabelValues("rolled_back").Inc()
	// Its report died with the previous supervisor, which had not decided
	// it: status's history says what became of the upgrade.
	l.keepReport(&UpgradeReport{Generation: a.lostGen, Version: lost, From: g.num, FromVersion: g.release.Version,
		Verdict: VerdictRolledBack, Adopted: true,
		Reason: fmt.Sprintf("crashed: %s of it died during its %s while no supervisor ran", who, a.phase())})
	l.repoint(g.release)
	// Standby workers hand their keep-alive connections over (see
	// TypeStandby): they keep them again.
	for _, w := range g.live() {
		l.send(w, control.Message{Type: control.TypeResume})
	}
}

// keepAdoptedReport files a report of g's upgrade from from (may be nil)
// with verdict and reason, unless the history has one of g already: the
// killed supervisor had not decided it, and its report died with it, so
// status's history skipped the upgrade (a new user's trial: 11 kills
// during upgrades, none of them in the history). It reports whether it
// filed one.
func (l *loop) keepAdoptedReport(g, from *generation, verdict, reason string) bool {
	for _, r := range l.reports {
		if r.Generation == g.num {
			return false
		}
	}
	r := &UpgradeReport{Generation: g.num, Version: g.release.Version, Verdict: verdict, Reason: reason, Adopted: true}
	if from != nil {
		r.From, r.FromVersion = from.num, from.release.Version
	}
	l.keepReport(r)
	return true
}

// lostSome reports whether a worker of g the state file named is gone.
func (a *adoption) lostSome(g *generation) bool {
	for i := range a.had[g.num] {
		if !g.hasLiveWorker(i) {
			return true
		}
	}
	return false
}

// standby returns the newest generation on standby with live workers, or
// nil.
func (a *adoption) standby() *generation {
	for i := len(a.gens) - 1; i >= 0; i-- {
		if g := a.gens[i]; g.state == StateStandby && g.hasLive() {
			return g
		}
	}
	return nil
}

// phase names what the killed supervisor was in the middle of: the
// canary at its weight, else the probation.
func (a *adoption) phase() string {
	if a.canary > 0 {
		return fmt.Sprintf("canary (at %d%% of new connections)", a.canary)
	}
	return "probation"
}

// removeStaleAdminSockets removes admin sockets no adopted worker owns.
func (l *loop) removeStaleAdminSockets(keep []*worker) {
	entries, _ := os.ReadDir(filepath.Join(l.stateDir, adminDir))
	for _, e := range entries {
		path := filepath.Join(l.stateDir, adminDir, e.Name())
		if !slices.ContainsFunc(keep, func(w *worker) bool { return w.admin == path }) {
			l.fx.removeAdmin(path)
		}
	}
}

func pids(ws []*worker) []int {
	out := make([]int, 0, len(ws))
	for _, w := range ws {
		out = append(out, w.pid)
	}
	return out
}
