package supervisor

import (
	"context"
	"testing"
)

// TestAwaitPassesEveryStepWhenTheLoopHasReturned: a stop's steps and its
// result come just before the loop returns, and await's select may see the
// loop's end first. It returned the result then without the steps still
// queued: `launcher stop` printed "stopped" without the drain that cut a
// stuck worker (once in the suite; on the code before, about a third of
// the tries here).
func TestAwaitPassesEveryStepWhenTheLoopHasReturned(t *testing.T) {
	lost := 0
	for range 300 {
		r := newRequest(false)
		r.emit(Progress{Step: StepDrained, Generation: 1})
		r.finish(Progress{Step: StepStopped}, nil)
		loopDone := make(chan struct{})
		close(loopDone)
		var got []Step
		res, err := r.await(context.Background(), loopDone, func(p Progress) { got = append(got, p.Step) })
		if err != nil || res.Step != StepStopped {
			t.Fatalf("await = %v, %v; want stopped", res, err)
		}
		if len(got) != 1 || got[0] != StepDrained {
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("the step before the result was lost in %d of 300 awaits", lost)
	}
}
