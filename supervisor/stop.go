package supervisor

import (
	"errors"
	"time"
)

// stopOp is a stop under way: every generation drains, then the loop
// returns.
type stopOp struct {
	reqs []*opRequest
	// quiescing counts the generations whose workers quiesce before
	// their releases are queued; last, if set, retires the active
	// generation once none does (see retireAll).
	quiescing int
	last      func(*loop)
}

// quiesced notes that a generation's quiesce is over and its releases
// queued; the last one lets the active generation's retire go.
func (s *stopOp) quiesced(l *loop) {
	s.quiescing--
	if s.quiescing == 0 && s.last != nil {
		f := s.last
		s.last = nil
		f(l)
	}
}

// errAbortedByStop ends an upgrade, or the first start, that a stop cut
// short: for the start, not a failure (see Supervisor.Run).
var errAbortedByStop = errors.New("aborted: the supervisor is stopping")

// cmdStop asks to drain every generation and stop.
type cmdStop struct{ req *opRequest }

func (c cmdStop) apply(l *loop) {
	if l.stop != nil {
		l.stop.reqs = append(l.stop.reqs, c.req)
		l.checkStop()
		return
	}
	l.stop = &stopOp{reqs: []*opRequest{c.req}}
	l.releaseEarly() // refused: the supervisor is stopping
	l.fx.notify("STOPPING=1", "STATUS=draining all generations")
	l.log.Info("stopping: draining all generations")
	// A starting generation is killed: its upgrade is aborted.
	if l.op != nil && !l.op.activated {
		l.failOp(errAbortedByStop)
	}
	canary := false
	var p *probation
	if l.active != nil {
		p = l.active.runningProbation()
		canary = p != nil && p.weight < 100
		l.endProbation(l.active, probationStopped)
	}
	drain := func(l *loop) {
		switch {
		case l.adopting != nil:
		case canary:
			// The standby generation took a share of new connections:
			// the program goes to the active generation alone before
			// any of its listeners closes, or a connection meeting one
			// as it closed would be reset.
			l.resteer(func(l *loop, _ error) {
				l.retireAll()
				l.checkStop()
			})
		default:
			l.retireAll()
		}
		l.checkStop()
	}
	if p != nil {
		// Its report's last look reads both generations before they
		// drain: within a second, 20 ms when they answer.
		l.afterLook(p, drain)
		return
	}
	drain(l)
}

// retireAll releases and drains every live worker not already released.
// The active generation goes last, once the others have quiesced (their
// workers steered away from, the program on the active generation's):
// released first, its listeners would leave the others' about to close
// with every new connection.
func (l *loop) retireAll() {
	retire := func(l *loop, g *generation) {
		var ws []*worker
		for _, w := range g.live() {
			if !w.stopping {
				ws = append(ws, w)
			}
		}
		if len(ws) == 0 {
			return
		}
		l.retire(g, ws, func(l *loop, d time.Duration) {
			// A drain that lost something says so; a clean one is in
			// "stopped".
			if g.drainNote() != "" && l.stop != nil {
				for _, r := range l.stop.reqs {
					r.emit(drainedStep(g, d))
				}
			}
		})
	}
	for _, g := range l.gens {
		if l.op != nil && g == l.op.g && !l.op.activated {
			continue // being killed
		}
		if g != l.active {
			retire(l, g)
		}
	}
	if g := l.active; g != nil {
		if l.stop == nil || l.stop.quiescing == 0 {
			retire(l, g)
		} else {
			l.stop.last = func(l *loop) { retire(l, g) }
		}
	}
}

// evKillAll: the caller of Stop gave up waiting for the drain: whatever is
// left is killed.
type evKillAll struct{}

func (evKillAll) apply(l *loop) {
	for _, g := range l.gens {
		for _, w := range g.live() {
			l.kill(w)
		}
	}
}

// checkStop ends a stop once nothing is left running: the state file
// goes (nothing to adopt), the callers are answered, and the loop returns.
func (l *loop) checkStop() {
	if l.stop == nil || l.op != nil || l.adopting != nil {
		return
	}
	for _, g := range l.gens {
		if g.hasLive() {
			return
		}
	}
	// Every generation is over, those that had nothing left to drain
	// too (a standby one whose workers all died): their cgroups go.
	for _, g := range l.gens {
		if g.state != StateFailed {
			g.state = StateExited
		}
		l.forgetIfOver(g)
	}
	if !l.stateClosed {
		l.stateClosed = true
		l.fx.removeState()
	}
	for _, r := range l.stop.reqs {
		r.finish(Progress{Step: StepStopped}, nil)
	}
	l.stop.reqs = nil
	l.exit = true
}
