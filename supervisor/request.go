package supervisor

import (
	"context"
	"errors"
	"time"
)

// errStopped is returned to requests the loop can no longer answer.
var errStopped = errors.New("the supervisor has stopped")

// opRequest is a caller's side of an upgrade, a rollback, a start or a
// stop: the loop streams Progress into events and sends one result. The
// loop never blocks on it: events is buffered and an operation has only a
// handful of steps.
type opRequest struct {
	start  time.Time
	wait   bool // follow the probation and the drain too
	events chan Progress
	result chan opResult
	done   bool     // the result was sent; loop-owned
	sum    Progress // the step that sums it up: the result unless another is given
}

type opResult struct {
	p   Progress
	err error
}

func newRequest(wait bool) *opRequest {
	return &opRequest{start: time.Now(), wait: wait, events: make(chan Progress, 32), result: make(chan opResult, 1)}
}

// emit streams p, unless the result has been sent. Called on the loop.
func (r *opRequest) emit(p Progress) {
	if r == nil || r.done {
		return
	}
	p.Elapsed = time.Since(r.start)
	select {
	case r.events <- p:
	default: // the caller is far behind: a step line is lost, not the loop
	}
}

// emitReport streams an upgrade's report as a StepReport, if there is
// one.
func (r *opRequest) emitReport(rep *UpgradeReport) {
	if rep == nil {
		return
	}
	c := *rep
	r.emit(Progress{Step: StepReport, Generation: c.Generation, Version: c.Version, Report: &c})
}

// finish sends the result, once. Called on the loop.
func (r *opRequest) finish(p Progress, err error) {
	if r == nil || r.done {
		return
	}
	r.done = true
	if p.Step == "" && err == nil {
		p = r.sum
	}
	if p.Step != "" {
		p.Elapsed = time.Since(r.start)
	}
	r.result <- opResult{p, err}
}

// await passes the steps to progress (if not nil) until the result comes,
// ctx ends or the loop has returned.
func (r *opRequest) await(ctx context.Context, loopDone <-chan struct{}, progress func(Progress)) (Progress, error) {
	pass := func(p Progress) {
		if progress != nil {
			progress(p)
		}
	}
	// Every step was emitted before the result: pass what is left.
	done := func(res opResult) (Progress, error) {
		for {
			select {
			case p := <-r.events:
				pass(p)
				continue
			default:
			}
			return res.p, res.err
		}
	}
	for {
		select {
		case p := <-r.events:
			pass(p)
		case res := <-r.result:
			return done(res)
		case <-ctx.Done():
			return Progress{}, ctx.Err()
		case <-loopDone:
			// A stop's result comes as the loop returns: the select may
			// pick this case first, and the steps before the result
			// must not be lost then either.
			select {
			case res := <-r.result:
				return done(res)
			default:
				return Progress{}, errStopped
			}
		}
	}
}
