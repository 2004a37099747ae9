package supervisor

import (
	"fmt"
	"time"

	"github.com/launcherd/launcher/internal/control"
)

// Why a probation ended. A crash or a rollback request gives traffic back
// to the generation on standby; the others retire it.
const (
	probationPassed     = "passed"
	probationCrashed    = "crashed"
	probationRolledBack = "rollback requested"
	probationSuperseded = "superseded by a newer upgrade"
	probationStopped    = "stopped"
)

// probation keeps the previous generation listening, steered away from and
// ready, for a while after an upgrade: if the new generation crashes in
// that time, traffic goes back to it at once, with no restart and no cold
// start. Its fields are guarded by Supervisor.mu.
type probation struct {
	standby *generation
	workers []*worker // the standby's workers, all ready when it began
	until   time.Time
	wake    chan struct{}        // ends the wait early; cause says why
	cause   string               // "" while it runs
	crash   string               // what crashed, for the log and the error
	done    chan struct{}        // closed once the outcome is carried out
	drained <-chan time.Duration // the standby's drain, once retired
}

// end ends p early for cause, unless it has already ended. The caller
// holds s.mu. It reports whether cause is the outcome.
func (p *probation) end(cause string) bool {
	if p.cause != "" {
		return false
	}
	p.cause = cause
	select {
	case p.wake <- struct{}{}:
	default:
	}
	return true
}

// standbyReady reports whether every standby worker still runs, listens
// and is ready, so traffic can go back to it. The caller holds s.mu.
func (p *probation) standbyReady() bool { return canStandBy(p.workers) }

// canStandBy reports whether workers can take traffic back at once: each
// runs, listens and is ready, and none is being released. The caller
// holds s.mu.
func canStandBy(workers []*worker) bool {
	for _, w := range workers {
		if isClosed(w.exited) || !w.ready || !w.listening || w.stopping {
			return false
		}
	}
	return len(workers) > 0
}

// startProbationLocked puts old on standby behind g for --probation. The caller
// holds s.mu; old's workers have just been steered away from.
func (s *Supervisor) startProbationLocked(g, old *generation) *probation {
	p := &probation{
		standby: old,
		workers: append([]*worker(nil), old.workers...),
		until:   time.Now().Add(s.cfg.Probation),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	old.state = StateStandby
	g.probation = p
	return p
}

// watchProbation waits for g's probation to pass or end early and carries
// out the outcome. It is owned by the generation and ends with it.
func (s *Supervisor) watchProbation(g *generation, p *probation) {
	defer close(p.done)
	t := time.NewTimer(time.Until(p.until))
	defer t.Stop()
	s.mu.Lock()
	ctxDone := s.ctx.Done()
	s.mu.Unlock()
	stopped := false
	select {
	case <-t.C:
	case <-p.wake:
	case <-ctxDone:
		stopped = true
	}
	s.mu.Lock()
	if stopped {
		p.end(probationStopped)
	}
	p.end(probationPassed) // a no-op if something ended it first
	cause := p.cause
	s.mu.Unlock()
	log := s.log.With("generation", g.num, "version", g.release.Version)
	switch cause {
	case probationCrashed, probationRolledBack:
		s.rollBackTo(g, p)
	case probationStopped:
		// Stop drains every generation, the standby one too.
	default:
		log.Info("probation over: retiring the previous generation", "outcome", cause,
			"standby_generation", p.standby.num, "standby_version", p.standby.release.Version)
		s.metrics.Upgrades.WithLabelValues("success").Inc()
		drained := s.retire(p.standby, p.workers)
		s.mu.Lock()
		p.drained = drained
		s.mu.Unlock()
	}
}

// rollBackTo gives traffic back to the generation on standby behind g and
// drains what is left of g.
func (s *Supervisor) rollBackTo(g *generation, p *probation) {
	old := p.standby
	s.mu.Lock()
	s.active = old
	old.state = StateActive
	g.state = StateDraining
	if p.cause == probationCrashed {
		g.state = StateFailed
	}
	var live []*worker
	for _, w := range g.workers {
		w.stopping = true
		if !isClosed(w.exited) {
			live = append(live, w)
		}
	}
	// Like any rollback, a requested one makes the next rollback go
	// forward again; a crashed release is forgotten instead.
	if n := len(s.history); p.cause == probationCrashed && n > 0 && s.history[n-1] == g.release {
		s.history = s.history[:n-1]
	} else {
		s.history = append(s.history, old.release)
	}
	cause, crash := p.cause, p.crash
	s.mu.Unlock()
	// Steer at once: every moment counts while a crashed worker's slot
	// may be taken by whatever the kernel moved into it. The state file
	// first (a small write), so a restarted supervisor steers the same way.
	s.flushState()
	if err := s.resteer(); err != nil {
		s.log.Warn("steer back to the standby generation", "generation", old.num, "err", err)
	}
	for _, w := range p.workers {
		s.write(w, control.Message{Type: control.TypeResume})
	}
	result := "rolled_back"
	if cause == probationCrashed {
		s.log.Error(fmt.Sprintf("ROLLED BACK: generation %d (%s) crashed during its probation; generation %d (%s) serves again", g.num, g.release.Version, old.num, old.release.Version),
			"generation", g.num, "version", g.release.Version, "crash", crash,
			"restored_generation", old.num, "restored_version", old.release.Version)
	} else {
		s.log.Warn(fmt.Sprintf("rolled back on request: generation %d (%s) serves again", old.num, old.release.Version),
			"generation", g.num, "version", g.release.Version)
	}
	s.metrics.Upgrades.WithLabelValues(result).Inc()
	if err := s.repointCurrent(old.release); err != nil {
		s.log.Warn("repoint current symlink", "err", err)
	}
	s.notify.send("STATUS=" + s.statusLine())
	if len(live) > 0 {
		s.releaseWorkers(live)
		s.watchDrain(g, live)
	}
}

// retire releases g's workers and drains them.
func (s *Supervisor) retire(g *generation, workers []*worker) <-chan time.Duration {
	s.mu.Lock()
	if g.state != StateFailed {
		g.state = StateDraining
	}
	s.mu.Unlock()
	s.releaseWorkers(workers)
	return s.watchDrain(g, workers)
}

// endProbation ends the probation of the active generation, if one runs,
// for cause, and waits until its outcome is carried out. It reports
// whether it ended one.
func (s *Supervisor) endProbation(cause string) bool {
	s.mu.Lock()
	p := s.probationLocked()
	ended := p != nil && p.end(cause)
	s.mu.Unlock()
	if p != nil {
		<-p.done // also when something else ended it: let it finish
	}
	return ended
}

// probationLocked returns the active generation's probation if it has
// one that has not finished. The caller holds s.mu.
func (s *Supervisor) probationLocked() *probation {
	if s.active == nil || s.active.probation == nil || isClosed(s.active.probation.done) {
		return nil
	}
	return s.active.probation
}

// write sends m to w without waiting for a reply; best effort.
func (s *Supervisor) write(w *worker, m control.Message) {
	s.mu.Lock()
	conn := w.conn
	s.mu.Unlock()
	if conn != nil {
		conn.Write(m)
	}
}
