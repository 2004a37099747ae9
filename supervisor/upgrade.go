package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/launcherd/launcher/internal/control"
	"github.com/launcherd/launcher/metrics"
)

// Upgrade starts a new generation of the release named by arg ("" re-
// resolves the start command, a VERSION is looked up in Releases, a path is
// used as is), hands traffic to it once all its workers are ready, and
// tells the old generation to drain. It returns when the new generation
// serves, or with wait when the old one has also exited. progress receives
// one line per step. On failure the old generation serves on untouched.
func (s *Supervisor) Upgrade(ctx context.Context, arg string, wait bool, progress func(string)) (string, error) {
	if err := s.waitStarted(ctx); err != nil {
		return "", err
	}
	if !s.opMu.TryLock() {
		return "", ErrUpgradeInProgress
	}
	s.notify.reloading()
	sum, follow, err := s.upgrade(ctx, arg, progress)
	s.notify.send("READY=1", "STATUS="+s.statusLine())
	// Waiting for the probation and the drain holds nothing: another
	// upgrade or a rollback may come meanwhile.
	s.opMu.Unlock()
	return followUp(ctx, sum, follow, err, wait, progress)
}

// waitStarted waits until the supervisor has started or adopted its first
// generation: an upgrade asked for meanwhile is not "in progress" yet.
func (s *Supervisor) waitStarted(ctx context.Context) error {
	select {
	case <-s.started:
		return nil
	case <-s.stopped:
		return errors.New("the supervisor has stopped")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// followUp waits, if asked to, for what follows an upgrade that served:
// the probation, then the previous generation's drain.
func followUp(ctx context.Context, sum string, follow func(context.Context, func(string)) error, err error, wait bool, progress func(string)) (string, error) {
	if err != nil || !wait || follow == nil {
		return sum, err
	}
	progress(sum)
	return "", follow(ctx, progress)
}

// Rollback upgrades to the release that was active before the current one.
// During a probation it gives traffic back to the standby generation.
func (s *Supervisor) Rollback(ctx context.Context, wait bool, progress func(string)) (string, error) {
	if err := s.waitStarted(ctx); err != nil {
		return "", err
	}
	if !s.opMu.TryLock() {
		return "", ErrUpgradeInProgress
	}
	sum, follow, err := s.rollback(ctx, progress)
	s.opMu.Unlock()
	return followUp(ctx, sum, follow, err, wait, progress)
}

// rollback is Rollback under opMu.
func (s *Supervisor) rollback(ctx context.Context, progress func(string)) (string, func(context.Context, func(string)) error, error) {
	s.mu.Lock()
	p := s.probationLocked()
	instant := p != nil && p.standbyReady()
	s.mu.Unlock()
	if instant && s.endProbation(probationRolledBack) {
		// The previous generation is still listening: no restart needed.
		g := s.activeGen()
		return fmt.Sprintf("generation %d (%s) serves again: it was on standby, traffic went straight back", g.num, g.release.Version), nil, nil
	}
	s.mu.Lock()
	var prev release
	if n := len(s.history); n >= 2 {
		prev = s.history[n-2]
	}
	s.mu.Unlock()
	if prev.Path == "" {
		return "", nil, errors.New("rollback: no previous release to go back to")
	}
	progress(fmt.Sprintf("rolling back to %s", prev.Version))
	s.notify.reloading()
	// A closure: the status line must be the one after the upgrade.
	defer func() { s.notify.send("READY=1", "STATUS="+s.statusLine()) }()
	return s.upgradeTo(ctx, prev, progress)
}

func (s *Supervisor) upgrade(ctx context.Context, arg string, progress func(string)) (string, func(context.Context, func(string)) error, error) {
	rel, err := s.resolve(arg)
	if err != nil {
		s.metrics.Upgrades.WithLabelValues("refused").Inc()
		return "", nil, fmt.Errorf("upgrade: %w", err)
	}
	return s.upgradeTo(ctx, rel, progress)
}

// upgradeTo starts rel and hands traffic to it. Once it serves, it returns
// a summary and follow, which waits for the probation and the previous
// generation's drain and reports them.
func (s *Supervisor) upgradeTo(ctx context.Context, rel release, progress func(string)) (sum string, follow func(context.Context, func(string)) error, err error) {
	start := time.Now()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.mu.Lock()
	s.opCancel = cancel // Stop aborts a running upgrade
	if s.stopping {
		s.mu.Unlock()
		return "", nil, errors.New("upgrade: the supervisor is stopping")
	}
	draining := 0
	for _, g := range s.gens {
		// A standby generation drains as soon as this upgrade goes on.
		if (g.state == StateDraining || g.state == StateStandby) && g.hasLive() {
			draining++
		}
	}
	if s.active != nil && draining+1 > s.cfg.MaxDraining {
		s.mu.Unlock()
		s.metrics.Upgrades.WithLabelValues("refused").Inc()
		return "", nil, fmt.Errorf("upgrade refused: %d generation(s) still draining, and --max-draining is %d (wait, or raise it)", draining, s.cfg.MaxDraining)
	}
	s.mu.Unlock()
	// Moving on ends the running probation: its standby generation is
	// retired, the current one becomes the one to come back to.
	if s.endProbation(probationSuperseded) {
		progress("previous probation ended: its standby generation drains")
	}
	s.mu.Lock()
	// Numbers are never reused, even those of generations forgotten
	// since (and, across an adoption, those the state file leaves out).
	s.lastGen++
	num := s.lastGen
	g := &generation{num: num, release: rel, state: StateStarting, started: start}
	s.gens = append(s.pruneLocked(), g)
	old := s.active
	s.mu.Unlock()
	log := s.log.With("generation", g.num, "version", rel.Version)
	log.Info("starting generation", "path", rel.Path, "workers", s.cfg.Workers)
	progress(fmt.Sprintf("generation %d (%s) starting: %d worker(s) of %s", g.num, rel.Version, s.cfg.Workers, rel.Path))

	if err := s.startGeneration(ctx, g); err != nil {
		s.abortGeneration(g)
		result := "failed"
		if ctx.Err() != nil {
			result = "aborted"
		}
		s.metrics.Upgrades.WithLabelValues(result).Inc()
		if old == nil {
			return "", nil, fmt.Errorf("generation %d (%s): %w", g.num, rel.Version, err)
		}
		log.Error("generation failed; the previous one serves on", "err", err)
		return "", nil, fmt.Errorf("upgrade to %s: %w; generation %d (%s) serves on", rel.Version, err, old.num, old.release.Version)
	}
	readyAfter := time.Since(start)
	progress(fmt.Sprintf("generation %d ready after %d ms", g.num, readyAfter.Milliseconds()))

	s.mu.Lock()
	s.active = g
	g.state = StateActive
	s.history = append(s.history, rel)
	if len(s.history) > 20 {
		s.history = s.history[len(s.history)-20:]
	}
	var oldWorkers []*worker
	var p *probation
	if old != nil {
		oldWorkers = append(oldWorkers, old.workers...)
		// A standby needs every old worker ready: traffic may come back.
		if s.cfg.Probation > 0 && canStandBy(oldWorkers) {
			p = s.startProbationLocked(g, old)
		} else {
			old.state = StateDraining
		}
	}
	s.mu.Unlock()
	// On disk before traffic moves: a supervisor restarted from any point
	// on adopts this generation as the active one, and steers to it.
	s.flushState()
	if err := s.resteer(); err != nil {
		log.Warn("steer to new generation", "err", err)
	}
	var done <-chan time.Duration
	switch {
	case p != nil:
		for _, w := range oldWorkers {
			s.write(w, control.Message{Type: control.TypeStandby})
		}
		inflight := s.inflight(ctx, old)
		progress(fmt.Sprintf("generation %d (%s) on standby for the %s probation: %d request(s) in flight there complete; traffic comes back to it if generation %d crashes meanwhile",
			old.num, old.release.Version, s.cfg.Probation, inflight, g.num))
		go s.watchProbation(g, p) // owned by g; ends with its probation
	case old != nil:
		inflight := s.inflight(ctx, old)
		progress(fmt.Sprintf("generation %d (%s) draining: %d request(s) in flight", old.num, old.release.Version, inflight))
		s.releaseWorkers(oldWorkers)
		done = s.watchDrain(old, oldWorkers)
		fallthrough
	default:
		// With a probation, success is counted when it passes.
		s.metrics.Upgrades.WithLabelValues("success").Inc()
	}
	s.metrics.UpgradeDuration.Observe(time.Since(start).Seconds())
	if err := s.repointCurrent(rel); err != nil {
		log.Warn("repoint current symlink", "err", err)
	}
	sum = fmt.Sprintf("generation %d (%s) serves; ready after %d ms", g.num, rel.Version, readyAfter.Milliseconds())
	log.Info("generation active", "ready_ms", readyAfter.Milliseconds())
	if old == nil {
		return sum, nil, nil
	}
	follow = func(ctx context.Context, progress func(string)) error {
		if p != nil {
			select {
			case <-p.done:
			case <-ctx.Done():
				return nil
			}
			s.mu.Lock()
			cause, crash, drained := p.cause, p.crash, p.drained
			s.mu.Unlock()
			switch cause {
			case probationCrashed:
				return fmt.Errorf("upgrade to %s: generation %d crashed during its probation (%s); rolled back: generation %d (%s) serves again",
					rel.Version, g.num, crash, old.num, old.release.Version)
			case probationRolledBack:
				return fmt.Errorf("upgrade to %s: rolled back on request; generation %d (%s) serves again", rel.Version, old.num, old.release.Version)
			case probationStopped:
				return nil
			case probationPassed:
				progress(fmt.Sprintf("generation %d passed its %s probation: generation %d (%s) draining", g.num, s.cfg.Probation, old.num, old.release.Version))
			default:
				progress(fmt.Sprintf("generation %d's probation ended (%s): generation %d (%s) draining", g.num, cause, old.num, old.release.Version))
			}
			done = drained
		}
		select {
		case d := <-done:
			progress(fmt.Sprintf("generation %d drained after %d ms", old.num, d.Milliseconds()))
		case <-ctx.Done():
		}
		return nil
	}
	return sum, follow, nil
}

// keepFinished is how many exited or failed generations status still
// shows; older ones are forgotten so memory stays flat over many upgrades.
const keepFinished = 5

// pruneLocked returns s.gens without the oldest finished generations: no
// process left and not the active one.
func (s *Supervisor) pruneLocked() []*generation {
	done := func(g *generation) bool {
		return (g.state == StateExited || g.state == StateFailed) && g != s.active && !g.hasLive()
	}
	finished := 0
	for _, g := range s.gens {
		if done(g) {
			finished++
		}
	}
	out := s.gens[:0]
	for _, g := range s.gens {
		if finished > keepFinished && done(g) {
			finished--
			delete(s.restarts, g)
			continue
		}
		out = append(out, g)
	}
	return out
}

// startGeneration starts g's workers and waits until all are ready.
func (s *Supervisor) startGeneration(ctx context.Context, g *generation) error {
	for i := 0; i < s.cfg.Workers; i++ {
		w, err := s.startWorker(g, i)
		if err != nil {
			return err
		}
		s.mu.Lock()
		g.workers = append(g.workers, w)
		s.mu.Unlock()
	}
	timeout := time.NewTimer(s.cfg.ReadyTimeout)
	defer timeout.Stop()
	for _, w := range g.workers {
		select {
		case <-w.readyCh:
		case err := <-w.readyErr:
			return fmt.Errorf("worker %d (pid %d): %w", w.index, w.pid, err)
		case <-w.exited:
			s.mu.Lock()
			err := w.exitErr
			s.mu.Unlock()
			return fmt.Errorf("worker %d (pid %d) %v before ready; stderr: %s", w.index, w.pid, err, w.tail.last(5))
		case <-timeout.C:
			return fmt.Errorf("worker %d (pid %d) not ready within --ready-timeout %s", w.index, w.pid, s.cfg.ReadyTimeout)
		case <-ctx.Done():
			return fmt.Errorf("aborted: %w", ctx.Err())
		}
	}
	return nil
}

// abortGeneration kills a generation that never served. Its sockets were
// appended last and never steered to, so the running generation is
// untouched.
func (s *Supervisor) abortGeneration(g *generation) {
	s.mu.Lock()
	g.state = StateFailed
	for _, w := range g.workers {
		w.stopping = true
	}
	workers := append([]*worker(nil), g.workers...)
	s.mu.Unlock()
	for _, w := range workers {
		w.signal(syscall.SIGKILL)
	}
	for _, w := range workers {
		<-w.exited
	}
}

// releaseWorkers asks each worker, one at a time, to stop accepting: it
// empties its accept queues and closes its listeners, and the group is
// re-steered after each close because the kernel moves the last socket
// into the freed slot. Connections that reach a not-yet-released worker
// meanwhile are simply served by it.
//
// When another generation is active and steered to, the wait for empty
// queues (--settle) runs for all of them at once first (quiesce); then
// each close needs only a short settle, with the program pointed for that
// moment at the slots the close does not move (Group.StableSlots), so that
// no connection meets a listener about to close.
func (s *Supervisor) releaseWorkers(workers []*worker) {
	msg := control.Message{
		Type: control.TypeRelease, SettleMS: s.cfg.Settle.Milliseconds(),
		DrainMS: s.cfg.DrainTimeout.Milliseconds(), Naive: s.cfg.Handover != HandoverSteer,
	}
	quiesced := s.quiesce(workers)
	for _, w := range workers {
		s.mu.Lock()
		w.stopping = true
		s.mu.Unlock()
		s.listenMu.Lock()
		m := msg
		if quiesced[w] {
			if err := s.steerStableLocked(w); err != nil {
				s.log.Debug("no stable steering for a quick release; full settle", "worker", w.index, "err", err)
			} else {
				m.SettleMS = quickSettle.Milliseconds()
			}
		}
		err := s.request(w, m, control.TypeReleased, 15*time.Second)
		if err != nil && !isClosed(w.exited) {
			s.log.Warn("release worker", "generation", w.gen.num, "worker", w.index, "pid", w.pid, "err", err)
			w.signal(syscall.SIGTERM)
		}
		// Released or exited, its sockets have left the group either way.
		if w.listening && (err == nil || isClosed(w.exited)) {
			s.group.Leave(w)
			w.listening = false
		}
		s.markDirty()
		if err := s.resteerLocked(); err != nil {
			s.log.Warn("re-steer after release", "err", err)
		}
		s.listenMu.Unlock()
	}
}

// quickSettle is how long a quiesced worker's accept queue must stay empty
// before it closes: nothing is steered to it by then.
const quickSettle = 5 * time.Millisecond

// quiesce asks every worker that can to wait until its accept queues have
// stayed empty for --settle, all at once, and returns those that did. It
// does nothing unless the workers are steered away from: another
// generation is active, with ready workers, and the handover steers.
func (s *Supervisor) quiesce(workers []*worker) map[*worker]bool {
	done := map[*worker]bool{}
	if s.cfg.Handover != HandoverSteer || len(workers) < 2 {
		return done // one worker gains nothing
	}
	s.mu.Lock()
	active := s.active
	var todo []*worker
	for _, w := range workers {
		if w.gen == active {
			todo = nil // a stop: nothing else to steer to
			break
		}
		if w.conn != nil && w.listening && slices.Contains(w.caps, control.CapQuiesce) {
			todo = append(todo, w)
		}
	}
	s.mu.Unlock()
	type result struct {
		w   *worker
		err error
	}
	results := make(chan result, len(todo))
	msg := control.Message{Type: control.TypeQuiesce, SettleMS: s.cfg.Settle.Milliseconds()}
	for _, w := range todo {
		go func() { // bounded by the request's timeout
			results <- result{w, s.request(w, msg, control.TypeQuiesced, s.cfg.Settle+10*time.Second)}
		}()
	}
	for range todo {
		r := <-results
		if r.err == nil {
			done[r.w] = true
		} else if !isClosed(r.w.exited) {
			s.log.Warn("quiesce worker; it will settle on release", "generation", r.w.gen.num, "worker", r.w.index, "pid", r.w.pid, "err", r.err)
		}
	}
	return done
}

// steerStableLocked points the program, for the moment w's sockets close,
// at the active generation's ready sockets whose slots that close does not
// move. The caller holds listenMu.
func (s *Supervisor) steerStableLocked(w *worker) error {
	s.mu.Lock()
	active := s.active
	slots := s.group.StableSlots(w, func(o *worker) bool { return o.gen == active && o.ready })
	s.mu.Unlock()
	if len(slots) == 0 {
		return errors.New("no slot of the active generation stays in place")
	}
	return s.steerLocked(slots)
}

// watchDrain waits for g's workers to exit, kills them at --drain-timeout,
// and reports the drain duration on the returned channel.
func (s *Supervisor) watchDrain(g *generation, workers []*worker) <-chan time.Duration {
	done := make(chan time.Duration, 1)
	start := time.Now()
	go func() { // owned by the generation: ends when its workers are reaped
		// Each worker cuts its own drain at --drain-timeout and reports
		// what it cut; the supervisor kills what is still there a moment
		// later (a stuck app).
		deadline := time.NewTimer(s.cfg.DrainTimeout + drainKillGrace)
		defer deadline.Stop()
		for _, w := range workers {
			select {
			case <-w.exited:
			case <-deadline.C:
				cut := s.unreportedInflight(workers)
				s.countDrainTimeout(g)
				s.metrics.DrainCutRequests.Add(float64(cut))
				s.log.Warn("drain timeout: killing what is left", "generation", g.num, "version", g.release.Version, "requests_cut", cut)
				for _, o := range workers {
					o.signal(syscall.SIGKILL)
				}
				<-w.exited
			}
		}
		for _, w := range workers {
			<-w.exited
		}
		d := time.Since(start)
		s.metrics.DrainDuration.Observe(d.Seconds())
		s.mu.Lock()
		if g.state != StateFailed {
			g.state = StateExited
		}
		s.mu.Unlock()
		s.markDirty()
		s.log.Info("generation drained", "generation", g.num, "version", g.release.Version, "after_ms", d.Milliseconds())
		done <- d
	}()
	return done
}

// drainKillGrace is how long after --drain-timeout the supervisor kills an
// old worker that has not exited: the worker cuts its own drain at the
// timeout and reports it, which takes a moment.
const drainKillGrace = time.Second

// unreportedInflight sums the requests in flight on live workers that have
// not reported a cut drain themselves.
func (s *Supervisor) unreportedInflight(workers []*worker) int64 {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var n int64
	for _, w := range workers {
		s.mu.Lock()
		skip := w.cutReported || isClosed(w.exited)
		s.mu.Unlock()
		if skip {
			continue
		}
		if c, err := metrics.ReadCounts(ctx, w.admin); err == nil {
			n += c.InflightRequests
		}
	}
	return n
}

// countDrainTimeout counts g's drain as cut at --drain-timeout, once.
func (s *Supervisor) countDrainTimeout(g *generation) {
	s.mu.Lock()
	first := !g.drainCut
	g.drainCut = true
	s.mu.Unlock()
	if first {
		s.metrics.DrainTimeouts.Inc()
	}
}

// drainCut records a worker's report that its own drain deadline (the
// same --drain-timeout) cut n requests before the supervisor had to kill
// it.
func (s *Supervisor) drainCut(w *worker, n int64) {
	s.mu.Lock()
	w.cutReported = true
	s.mu.Unlock()
	s.countDrainTimeout(w.gen)
	s.metrics.DrainCutRequests.Add(float64(n))
	s.log.Warn("drain timeout: requests cut", "generation", w.gen.num, "version", w.gen.release.Version,
		"worker", w.index, "pid", w.pid, "requests_cut", n)
}

// Stop drains every generation and makes Run return. It waits for a
// running upgrade to finish first.
func (s *Supervisor) Stop(ctx context.Context) error {
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		<-s.stopped
		return nil
	}
	s.stopping = true
	if s.opCancel != nil {
		s.opCancel()
	}
	s.mu.Unlock()
	s.notify.send("STOPPING=1", "STATUS=draining all generations")
	s.opMu.Lock()
	defer s.opMu.Unlock()
	s.stopAll(ctx)
	s.closeState()
	close(s.stopped)
	return nil
}

// stopAll releases and drains every worker, killing at --drain-timeout.
func (s *Supervisor) stopAll(ctx context.Context) {
	s.endProbation(probationStopped)
	s.mu.Lock()
	s.stopping = true
	var dones []<-chan time.Duration
	var all []*worker
	for _, g := range s.gens {
		if !g.hasLive() {
			continue
		}
		if g.state != StateFailed {
			g.state = StateDraining
		}
		all = append(all, g.workers...)
	}
	gens := append([]*generation(nil), s.gens...)
	s.mu.Unlock()
	s.log.Info("stopping: draining all generations")
	s.releaseWorkers(all)
	for _, g := range gens {
		var ws []*worker
		for _, w := range all {
			if w.gen == g {
				ws = append(ws, w)
			}
		}
		if len(ws) > 0 {
			dones = append(dones, s.watchDrain(g, ws))
		}
	}
	for _, d := range dones {
		<-d
	}
}

// repointCurrent points --current at the release directory, atomically.
func (s *Supervisor) repointCurrent(rel release) error {
	if s.cfg.Current == "" {
		return nil
	}
	target := filepath.Dir(rel.Path)
	// A relative link survives moving or bind-mounting the tree.
	if abs, err := filepath.Abs(filepath.Dir(s.cfg.Current)); err == nil {
		if r, err := filepath.Rel(abs, target); err == nil {
			target = r
		}
	}
	tmp := s.cfg.Current + ".tmp"
	os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return err
	}
	return os.Rename(tmp, s.cfg.Current)
}
