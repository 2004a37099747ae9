package supervisor

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/launcherd/launcher/internal/control"
)

// Listen grants and listener closes both change the kernel's reuseport
// group: the kernel appends a socket at listen() and moves the last one
// into the slot a close frees. The loop lets one of them happen at a time,
// in the order it records them, so the group model knows every slot.

// grantTimeout bounds a worker's listen() after its grant.
const grantTimeout = 10 * time.Second

// askListen queues w's request to listen. A worker whose welcome granted
// it (grantAtWelcome) has it: it is granted again, not queued behind
// itself.
func (l *loop) askListen(w *worker) {
	if l.granting == w {
		w.conn.send(control.Message{Type: control.TypeGrant})
		return
	}
	l.grantQ = append(l.grantQ, w)
	l.nextGrant()
}

// nextGrant grants the next queued worker the right to listen, unless a
// grant or a close is under way.
func (l *loop) nextGrant() {
	for l.granting == nil && l.releasing == nil && len(l.grantQ) > 0 {
		w := l.grantQ[0]
		l.grantQ = l.grantQ[1:]
		if w.exited || w.conn == nil {
			continue
		}
		w.conn.send(control.Message{Type: control.TypeGrant})
		l.grant(w)
	}
}

// grant makes w's listen the change of the group under way, until w
// reports listening or fails, or grantTimeout passes.
func (l *loop) grant(w *worker) {
	l.granting = w
	conn := w.conn
	l.after(grantTimeout, evFunc(func(l *loop) {
		if l.granting == w {
			l.workerLog(w).Warn("listen grant: no answer; dropping its connection", "timeout", grantTimeout)
			conn.close()
			l.endGrant(w)
		}
	}))
}

// grantAtWelcome grants w's listen with its welcome, and reports whether
// it did: where its TypeListen would be granted at once (no grant or
// close under way or queued) and w listens at its welcome
// (control.CapWelcomeGrant). That saves a round trip on a new worker's
// way to serving. Only where a steering program is in place (an active
// generation, --handover steer): w's library listens before its app
// asks, and such a program gives its sockets no connection before they
// are ready, whatever the app does meanwhile.
func (l *loop) grantAtWelcome(w *worker) bool {
	if !w.can(control.CapWelcomeGrant) || w.listening || w.exited ||
		l.cfg.Handover != HandoverSteer || l.active == nil || l.adopting != nil ||
		l.granting != nil || l.releasing != nil || len(l.grantQ) > 0 {
		return false
	}
	l.grant(w)
	return true
}

// endGrant ends w's grant, if it has one, and lets the next change of the
// group go ahead.
func (l *loop) endGrant(w *worker) {
	if l.granting != w {
		return
	}
	l.granting = nil
	l.nextGrant()
	l.nextRelease()
}

// listening records that w's sockets joined the group at its grant.
func (l *loop) listening(w *worker) {
	if l.granting != w {
		l.workerLog(w).Warn("listening without a grant: ignored")
		return
	}
	w.listening = true
	l.group.Join(w)
	l.markDirty()
	l.endGrant(w)
}

// steerState serialises steering: one program change in flight at a
// time, the next computed from the state as it is when it goes out.
type steerState struct {
	inflight bool
	again    bool
	next     []func(*loop, error) // wait for a steer computed after they asked
	// silent is the worker that answered no steer in time (hung, not
	// stopped: see wakeStandby): the next steers go through another, if
	// any is left.
	silent  *worker
	timeout time.Duration // for a worker's answer to a steer: steerTimeout
}

// steerTimeout bounds the wait for a worker's answer to a steer: an
// attach takes microseconds, so a worker silent this long is stopped or
// hung.
const steerTimeout = 5 * time.Second

// errNoAgent: no worker of the group is connected to carry a steer.
var errNoAgent = errors.New("no connected worker in the reuseport group")

// resteer points the reuseport groups at the ready workers of the active
// generation (or, while a quiesced worker's listeners close, at those of
// them whose slots the close does not move). then, if not nil, is applied
// once a program computed after this call is in place, or failed. It is a
// no-op for the other handovers.
func (l *loop) resteer(then func(*loop, error)) {
	if l.cfg.Handover != HandoverSteer {
		if then != nil {
			then(l, nil)
		}
		return
	}
	if then != nil {
		l.steer.next = append(l.steer.next, then)
	}
	if l.steer.inflight {
		l.steer.again = true
		return
	}
	l.issueSteer()
}

func (l *loop) issueSteer() {
	waiters := l.steer.next
	l.steer.next, l.steer.again = nil, false
	done := func(l *loop, err error) {
		for _, f := range waiters {
			f(l, err)
		}
	}
	slots := l.desiredSlots()
	if len(slots) == 0 {
		done(l, errors.New("no ready socket of the active generation to steer to"))
		return
	}
	// A member of the active generation carries it when one can: the
	// program is the group's, whoever attaches it.
	var agent *worker
	for _, w := range l.group.Members() {
		if w.conn != nil && !w.exited && !w.killed && !w.paused && (agent == nil || agent == l.steer.silent || w.gen == l.active && w != l.steer.silent) {
			agent = w
		}
	}
	if agent == nil {
		done(l, errNoAgent)
		return
	}
	l.steer.inflight = true
	group := l.group.Len()
	l.request(agent, control.Message{Type: control.TypeSteer, Slots: slots}, control.TypeSteered, l.steer.timeout, func(l *loop, _ control.Message, err error) {
		l.steer.inflight = false
		if err == nil && agent == l.steer.silent {
			l.steer.silent = nil
		}
		if errors.Is(err, errNoAnswer) {
			l.silentAgent(agent)
		}
		if errors.Is(err, errNoAnswer) && l.steer.silent != agent {
			// Once more through another worker, if one is left, and
			// without this one's sockets. The waiters wait for that
			// program: this one is not in place (a rollback retired the
			// generation it rolled back from while the program still
			// named only it).
			l.workerLog(agent).Warn("worker answered no steer: steering through another", "err", err)
			l.steer.silent = agent
			l.steer.next = append(waiters, l.steer.next...)
			l.issueSteer()
			return
		}
		if err != nil {
			err = fmt.Errorf("steer to %v: %w", slots, err)
		} else {
			l.log.Debug("steered", "slots", slots, "group", group)
		}
		done(l, err)
		if l.steer.again || len(l.steer.next) > 0 {
			l.issueSteer()
		}
	})
}

// silentAgent steers away from w, which answered no steer within
// steer.timeout: a worker silent that long is hung or stopped (its steer
// takes microseconds), as watchPaused and watchStandby would find it after
// hungReads of their reads, and its sockets would take new connections
// that nobody accepts. They steer to it again once it answers.
func (l *loop) silentAgent(w *worker) {
	w.silentReads = max(w.silentReads, hungReads)
	if w.paused || w.exited || w.killed || !w.ready {
		return
	}
	if p := l.active.runningProbation(); w.gen != l.active && (p == nil || w.gen != p.standby) {
		return // in no program: nothing to steer away from
	}
	w.paused = true
	l.workerLog(w).Warn("worker " + whySilentSteer + ": steered away from until it answers again")
}

// desiredSlots are the slots new connections should go to now: the
// active generation's, or during a canary step its weight's share of them
// and the rest to the standby generation's (see weightedSlots).
func (l *loop) desiredSlots() []int {
	active := l.active
	slots := func(keep func(*worker) bool) []int {
		if l.quick != nil {
			return l.group.StableSlots(l.quick.leaving, keep)
		}
		return l.group.Slots(keep)
	}
	ready := func(w *worker) bool { return w.gen == active && w.ready && !w.exited && !w.killed }
	cur := slots(func(w *worker) bool { return ready(w) && !w.paused })
	if len(cur) == 0 {
		// Every ready worker is stopped: the program keeps them, as
		// there is nowhere else to send new connections.
		cur = slots(ready)
	}
	p := active.runningProbation()
	if p == nil || p.weight >= 100 {
		return cur
	}
	standby := p.standby
	prev := slots(func(w *worker) bool {
		return w.gen == standby && w.ready && w.listening && !w.exited && !w.killed && !w.stopping && !w.paused
	})
	return weightedSlots(cur, prev, p.weight)
}

// releaseJob is one worker's release: it empties its accept queues and
// closes its listeners, then drains.
type releaseJob struct {
	w        *worker
	quiesced bool // its queues stayed empty for --settle already
	// handshakesDone: the handshakes under way on the port when its
	// generation was steered away from are waited for already.
	handshakesDone bool
	then           func(*loop)
}

// releaseRun is a run of quiesced workers' releases under one program:
// it steers to the slots that none of their closes moves (see
// Group.StableSlots), so the closes go one after the other with no steer
// between them, and the model stays exact since they are still serial.
// While a run lasts, desiredSlots names only those slots: a worker that
// becomes ready meanwhile is steered to once the run ends.
type releaseRun struct {
	leaving []*worker // released or to be, in the group still
}

// activeReady reports whether w is a ready worker of the active
// generation: the sockets a release steers to.
func (l *loop) activeReady(w *worker) bool {
	return w.gen == l.active && w.ready && !w.killed && !w.paused
}

// quickSettle is how long a quiesced worker's accept queue must stay empty
// before it closes, for a worker that does not know control.Message.Quick
// (which makes a worker close at its first look at an empty queue):
// nothing is steered to it by then (the program that avoids it is in place
// before the release goes out) and the handshakes under way were waited
// for by the quiesce, so one more look at the queue is enough (a library
// that polls every 2 ms looks at its next poll). The releases go one after
// the other, so this adds up over the workers.
const quickSettle = time.Millisecond

// The default --settle. A worker that waits for the handshakes in flight
// on its port (control.CapHandshakes) needs the settle only to see a
// connection that completed its handshake enter the accept queue, which
// the kernel does in the same softirq that removes the request socket:
// microseconds, so handshakeSettle is one of the worker's 2 ms polls
// (it was 5 ms, a few polls, for no case that needed them: its snapshot
// of the handshakes is taken a round trip after the steer is in place,
// when a SYN that met the old program has long made its request socket).
// For a worker of an older library the settle is all the wait there is
// for those handshakes, so it stays at the round trip of a distant client.
const (
	handshakeSettle = 2 * time.Millisecond
	legacySettle    = 50 * time.Millisecond
)

// settleFor is the settle of w's quiesce or release: --settle, or its
// default for w's library.
func (l *loop) settleFor(w *worker) time.Duration {
	switch {
	case l.cfg.Settle > 0:
		return l.cfg.Settle
	case w.can(control.CapHandshakes):
		return handshakeSettle
	}
	return legacySettle
}

// drainKillGrace is how long after --drain-timeout the supervisor kills an
// old worker that has not exited: the worker cuts its own drain at the
// timeout and reports it, which takes a moment.
const drainKillGrace = time.Second

// retire releases workers of g and watches their drain; then (if not nil)
// gets the drain's duration once they have all exited.
//
// When another generation is active and steered to, the wait for empty
// queues (--settle) runs for all of them at once first (quiesce); then
// each close needs only a short settle, with the program pointed for that
// moment at the slots the close does not move (Group.StableSlots), so that
// no connection meets a listener about to close. The TCP handshakes still
// under way on the port when the generation was steered away from are
// the same for all its workers: one worker's quiesce waits for them
// (control.CapHandshakes), the others' and every release after it only
// for their queues, so the port's sockets are listed once, not by each.
func (l *loop) retire(g *generation, workers []*worker, then func(*loop, time.Duration)) {
	if g.state != StateFailed {
		g.state = StateDraining
	}
	for _, w := range workers {
		w.stopping = true
		if w.proc.stopped() {
			// It would answer no quiesce or release: waiting for them
			// only keeps what its listeners still take waiting in its
			// queues until killStuck.
			l.killStuck(w, whyStopped, nil)
		}
	}
	l.markDirty()
	var todo []*worker
	if l.cfg.Handover == HandoverSteer && len(workers) >= 2 && l.active != g {
		for _, w := range workers {
			if w.conn != nil && w.listening && w.canQuiesce() && !w.killed {
				todo = append(todo, w)
			}
		}
	}
	quiesced := map[*worker]bool{}
	// handshakesBy is the worker whose quiesce waits for the port's
	// handshakes in flight; handshakesDone, that it did.
	var handshakesBy *worker
	for _, w := range todo {
		if w.can(control.CapHandshakes) {
			handshakesBy = w
			break
		}
	}
	handshakesDone := false
	left := len(todo)
	// A stop retires the active generation once this one's releases are
	// queued (see retireAll).
	stop := l.stop
	counted := left > 0 && stop != nil
	if counted {
		stop.quiescing++
	}
	enqueue := func(l *loop) {
		if counted {
			defer stop.quiesced(l)
		}
		remaining := len(workers)
		dw := l.watchDrain(g, workers, then)
		if remaining == 0 {
			// Nothing of g is left to release (its workers crashed and
			// wait for a restart that no longer comes): its drain is
			// over now, unless an earlier retire's releases are under
			// way (they start its clock).
			if len(dw.workers) == 0 {
				l.startDrainClock(dw)
			}
			return
		}
		for _, w := range workers {
			l.releaseQ = append(l.releaseQ, &releaseJob{w: w, quiesced: quiesced[w], handshakesDone: handshakesDone && quiesced[w], then: func(l *loop) {
				if remaining--; remaining == 0 {
					l.startDrainClock(dw)
				}
			}})
		}
		l.nextRelease()
	}
	if left == 0 {
		enqueue(l)
		return
	}
	for _, w := range todo {
		msg := control.Message{Type: control.TypeQuiesce, SettleMS: l.settleFor(w).Milliseconds(),
			HandshakesDone: handshakesBy != nil && w != handshakesBy}
		l.request(w, msg, control.TypeQuiesced, l.answerWithin(l.settleFor(w)+10*time.Second), func(l *loop, _ control.Message, err error) {
			switch {
			case err == nil:
				quiesced[w] = true
				handshakesDone = handshakesDone || w == handshakesBy
			case w.exited:
			case errors.Is(err, errNoAnswer):
				l.killStuck(w, whyNoAnswer, err)
			default:
				l.workerLog(w).Warn("quiesce worker; it will settle on release", "err", err)
			}
			if left--; left == 0 {
				enqueue(l)
			}
		})
	}
}

// nextRelease starts the next queued release, unless a grant or another
// close is under way. A quiesced worker's release starts a run with the
// quiesced releases queued behind it (releaseRun), or goes on with the
// run it belongs to.
func (l *loop) nextRelease() {
	if l.releasing != nil || l.granting != nil || len(l.releaseQ) == 0 {
		return
	}
	job := l.releaseQ[0]
	l.releaseQ = l.releaseQ[1:]
	l.releasing = job
	w := job.w
	msg := control.Message{
		Type: control.TypeRelease, SettleMS: l.settleFor(w).Milliseconds(),
		DrainMS: l.cfg.DrainTimeout.Milliseconds(), Naive: l.cfg.Handover != HandoverSteer,
		HandshakesDone: job.handshakesDone,
	}
	if !job.quiesced {
		l.sendRelease(job, msg)
		return
	}
	if l.quick != nil && slices.Contains(l.quick.leaving, w) {
		msg.SettleMS, msg.Quick = quickSettle.Milliseconds(), true
		l.sendRelease(job, msg)
		return
	}
	run := l.newRun(job)
	if run == nil {
		l.sendRelease(job, msg)
		return
	}
	l.quick = run
	l.resteer(func(l *loop, err error) {
		if err != nil {
			l.log.Debug("no stable steering for a quick release; full settle", "worker", w.index, "err", err)
			l.quick = nil
		} else {
			msg.SettleMS, msg.Quick = quickSettle.Milliseconds(), true
		}
		l.sendRelease(job, msg)
	})
}

// newRun returns the longest run of quiesced releases, job's and those
// queued right behind it, whose program keeps at least half of the active
// generation's ready sockets: the longer a run, the fewer the sockets no
// close of it moves (with k old and k new workers, a run of m keeps k-m
// of the new ones), and while it lasts they take every new connection.
// Half keeps two runs for any even k (one steer between the closes)
// without leaving one worker of many to take all. Failing that, job's
// release alone, if it leaves one socket to steer to; else nil.
func (l *loop) newRun(job *releaseJob) *releaseRun {
	leaving := []*worker{job.w}
	for _, next := range l.releaseQ {
		if !next.quiesced || !next.w.listening {
			break
		}
		leaving = append(leaving, next.w)
	}
	need := max(1, len(l.group.Slots(l.activeReady))/2)
	for ; len(leaving) > 1; leaving = leaving[:len(leaving)-1] {
		if len(l.group.StableSlots(leaving, l.activeReady)) >= need {
			return &releaseRun{leaving: leaving}
		}
	}
	if len(l.group.StableSlots(leaving, l.activeReady)) > 0 {
		return &releaseRun{leaving: leaving}
	}
	return nil
}

func (l *loop) sendRelease(job *releaseJob, msg control.Message) {
	w := job.w
	l.request(w, msg, control.TypeReleased, l.answerWithin(15*time.Second), func(l *loop, _ control.Message, err error) {
		switch {
		case err == nil:
			w.released = true
		case w.exited:
		case errors.Is(err, errNoAnswer):
			l.killStuck(w, whyNoAnswer, err)
		default:
			l.workerLog(w).Warn("release worker", "err", err)
			w.proc.signal(syscall.SIGTERM)
		}
		// Released or exited, its sockets have left the group either way.
		// A worker that exited before its reply was read (nothing to
		// drain: it exits at once) closed the same sockets, and moved the
		// same slots.
		left := w.listening && (err == nil || w.exited)
		if left {
			l.group.Leave(w)
			w.listening = false
		}
		l.releasing = nil
		l.markDirty()
		l.endRunFor(w, left)
		job.then(l)
		l.nextGrant()
		l.nextRelease()
	})
}

// endRunFor takes w out of the run once its sockets have left (left), and
// ends the run when none is left to close or its program may no longer
// hold: w's sockets may still be in the group, or a grant is to come
// (which appends a socket). Ending a run steers to every slot, unless the
// next release starts a run of its own at once: its steer replaces the
// program, and one in between would only add a round trip.
func (l *loop) endRunFor(w *worker, left bool) {
	run := l.quick
	if run == nil {
		l.resteer(nil)
		return
	}
	run.leaving = slices.DeleteFunc(run.leaving, func(o *worker) bool { return o == w })
	if left && len(run.leaving) > 0 && l.granting == nil && len(l.grantQ) == 0 &&
		len(l.releaseQ) > 0 && l.releaseQ[0].w == run.leaving[0] {
		return // the program stays exact for the rest of the run
	}
	l.quick = nil
	if !(left && l.nextStartsRun()) {
		l.resteer(nil)
	}
}

// nextStartsRun reports whether nextRelease will start the queued
// release next, with a steer to the slots its run does not move.
func (l *loop) nextStartsRun() bool {
	if l.granting != nil || len(l.grantQ) > 0 || len(l.releaseQ) == 0 || !l.releaseQ[0].quiesced {
		return false
	}
	return l.newRun(l.releaseQ[0]) != nil
}

// drainWatch follows a generation's drain: its released workers exit, or
// are killed at --drain-timeout.
type drainWatch struct {
	g         *generation
	workers   []*worker
	start     time.Time
	stopTimer func()
	then      []func(*loop, time.Duration)
	clock     bool // its workers are released: the drain runs
	finished  bool
}

// watchDrain follows workers of g until they have all exited; then gets
// how long that took from the end of their release.
func (l *loop) watchDrain(g *generation, workers []*worker, then func(*loop, time.Duration)) *drainWatch {
	dw := g.drain
	if dw == nil || dw.finished {
		dw = &drainWatch{g: g}
		g.drain = dw
	}
	dw.workers = append(dw.workers, workers...)
	if then != nil {
		dw.then = append(dw.then, then)
	}
	return dw
}

// startDrainClock starts the drain's clock and deadline once its workers
// are released.
func (l *loop) startDrainClock(dw *drainWatch) {
	if dw.clock {
		return
	}
	dw.clock = true
	dw.start = time.Now()
	dw.stopTimer = l.after(l.cfg.DrainTimeout+drainKillGrace, evFunc(func(l *loop) {
		if !dw.finished {
			l.drainDeadline(dw.g)
		}
	}))
	l.checkDrain(dw.g)
}

// checkDrain finishes g's drain if no worker of it is left.
func (l *loop) checkDrain(g *generation) {
	dw := g.drain
	if dw == nil || dw.finished || !dw.clock {
		return
	}
	for _, w := range dw.workers {
		if !w.exited {
			return
		}
	}
	dw.finished = true
	if dw.stopTimer != nil {
		dw.stopTimer()
	}
	d := time.Since(dw.start)
	if len(dw.workers) > 0 { // a drain of none (a crash loop's generation) is none
		l.m.DrainDuration.Observe(d.Seconds())
	}
	if g.state != StateFailed {
		g.state = StateExited
	}
	l.markDirty()
	if len(g.deaths) > 0 || len(g.cuts) > 0 {
		l.genLog(g).Warn("generation gone: not every worker drained", "after_ms", d.Milliseconds(), "deaths", len(g.deaths), "cuts", len(g.cuts))
	} else {
		l.genLog(g).Info("generation drained", "after_ms", d.Milliseconds())
	}
	l.forgetIfOver(g)
	for _, f := range dw.then {
		f(l, d)
	}
	l.checkStop()
}

// drainDeadline kills what is left of g's drain at --drain-timeout (and
// the grace after it). Each worker cuts its own drain at the timeout and
// reports what it cut; what it did not report is counted here.
func (l *loop) drainDeadline(g *generation) {
	dw := g.drain
	var unreported []*worker
	left := false
	for _, w := range dw.workers {
		if w.drained && !w.cut && !w.exited && !w.killed {
			// It said its drain ended, cutting nothing: what keeps it
			// is the app's code after Run (a shutdown hook), which has
			// no request left to cut.
			l.workerLog(w).Warn("worker drained but had not exited by --drain-timeout: killed", "drain_timeout", l.cfg.DrainTimeout)
			g.lateExits = append(g.lateExits, fmt.Sprintf("worker %d (pid %d) drained, but had not exited by --drain-timeout %s (the app's code after Run returned): killed", w.index, w.pid, l.cfg.DrainTimeout))
			l.kill(w)
			continue
		}
		if !w.cut {
			unreported = append(unreported, w)
		}
		left = left || !w.exited && !w.killed
	}
	if !left {
		return // those still there were killed as stuck, and counted then
	}
	l.sumInflight(unreported, func(l *loop, cut int64) {
		l.countDrainTimeout(g)
		l.m.DrainCutRequests.Add(float64(cut))
		l.genLog(g).Warn("drain timeout: killing what is left", "requests_cut", cut)
		var killed []string
		for _, w := range dw.workers {
			if !w.exited {
				if !w.killed { // one killed as stuck is named already
					killed = append(killed, fmt.Sprintf("%d (pid %d)", w.index, w.pid))
				}
				l.kill(w)
			}
		}
		if len(killed) > 0 {
			g.cuts = append(g.cuts, fmt.Sprintf("worker(s) %s killed after --drain-timeout %s: %d request(s) in flight cut", strings.Join(killed, ", "), l.cfg.DrainTimeout, cut))
		}
	})
}

// answerWithin bounds the wait for an old worker's answer to a quiesce or
// release, d normally, by --drain-timeout and the second of grace after
// it: a worker that answers nothing within them is stuck (stopped with
// SIGSTOP, hung), and the drain promises to be over by then.
func (l *loop) answerWithin(d time.Duration) time.Duration {
	return min(d, l.cfg.DrainTimeout+time.Second)
}

// killStuck kills w, a worker being retired that answers nothing (why;
// err, if not nil, is the request it did not answer): it serves nothing
// any more, and waiting for it would hold its generation's drain, and the
// releases queued behind it, past --drain-timeout. What it held is cut,
// and its drain says so.
func (l *loop) killStuck(w *worker, why string, err error) {
	if w.killed {
		return // its release, sent before its exit was seen, timed out too
	}
	l.workerLog(w).Warn("worker being retired answers nothing: killed as stuck", "why", why, "err", err, "requests_cut", w.inflight)
	l.countDrainTimeout(w.gen)
	// Its requests at its last count are cut here, and counted once:
	// the drain's deadline leaves it out (cut).
	w.cut = true
	l.m.DrainCutRequests.Add(float64(w.inflight))
	held := "what it held cut"
	if w.inflight > 0 {
		held = fmt.Sprintf("what it held cut (%d request(s) in flight at its last count)", w.inflight)
	}
	w.gen.cuts = append(w.gen.cuts, fmt.Sprintf("worker %d (pid %d) %s: killed, %s", w.index, w.pid, why, held))
	l.kill(w)
}

// countDrainTimeout counts g's drain as cut at --drain-timeout, once.
func (l *loop) countDrainTimeout(g *generation) {
	if !g.drainCut {
		g.drainCut = true
		l.m.DrainTimeouts.Inc()
	}
}

// drainCut records a worker's report that its own drain deadline cut n
// requests and conns connections (0 from a library that does not count
// them) before the supervisor had to kill it.
func (l *loop) drainCut(w *worker, n, conns int64) {
	w.cut = true
	l.countDrainTimeout(w.gen)
	l.m.DrainCutRequests.Add(float64(n))
	what := fmt.Sprintf("%d request(s)", n)
	if conns > 0 {
		what += fmt.Sprintf(" and %d connection(s)", conns)
	}
	w.gen.cuts = append(w.gen.cuts, fmt.Sprintf("worker %d cut its drain at --drain-timeout %s: %s cut", w.index, l.cfg.DrainTimeout, what))
	l.workerLog(w).Warn("drain cut at --drain-timeout", "requests_cut", n, "connections_cut", conns)
}
