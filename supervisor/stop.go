package supervisor

import (
	"errors"
	"time"
)

// stopOp is a stop under way: every generation drains, then the loop
// returns.
type stopOp struct {
	reqs []*opRequest
}

// cmdStop asks to drain every generation and stop.
type cmdStop struct{ req *opRequest }

func (c cmdStop) apply(l *loop) {
	if l.stop != nil {
		l.stop.reqs = append(l.stop.reqs, c.req)
		l.checkStop()
		return
	}
	l.stop = &stopOp{reqs: []*opRequest{c.req}}
	l.fx.notify("STOPPING=1", "STATUS=draining all generations")
	l.log.Info("stopping: draining all generations")
	// A starting generation is killed: its upgrade is aborted.
	if l.op != nil && !l.op.activated {
		l.failOp(errors.New("aborted: the supervisor is stopping"))
	}
	if l.active != nil {
		l.endProbation(l.active, probationStopped)
	}
	if l.adopting == nil {
		l.retireAll()
	}
	l.checkStop()
}

// retireAll releases and drains every live worker not already released.
func (l *loop) retireAll() {
	for _, g := range l.gens {
		if l.op != nil && g == l.op.g && !l.op.activated {
			continue // being killed
		}
		var ws []*worker
		for _, w := range g.live() {
			if !w.stopping {
				ws = append(ws, w)
			}
		}
		if len(ws) > 0 {
			l.retire(g, ws, func(l *loop, d time.Duration) {
				// A drain that lost something says so; a clean one is
				// in "stopped".
				if g.drainNote() != "" && l.stop != nil {
					for _, r := range l.stop.reqs {
						r.emit(drainedStep(g, d))
					}
				}
			})
		}
	}
}

// evKillAll: the caller of Stop gave up waiting for the drain: whatever is
// left is killed.
type evKillAll struct{}

func (evKillAll) apply(l *loop) {
	for _, g := range l.gens {
		for _, w := range g.live() {
			w.kill()
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
