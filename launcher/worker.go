package launcher

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/launcherd/launcher/internal/control"
	"github.com/launcherd/launcher/reuseport"
)

// releaseTimeout bounds emptying the accept queues; a queue that does not
// empty by then belongs to a stuck app.
const releaseTimeout = 10 * time.Second

// readControl handles the supervisor's messages until the connection ends.
// It is owned by the App and ends when Close closes the connection.
func (a *App) readControl(ctl *control.Conn) {
	defer close(a.readerEnd)
	for {
		m, err := ctl.Read(time.Time{})
		if err != nil {
			a.mu.Lock()
			closed := a.closed
			if a.ctl == ctl {
				a.ctl = nil
			}
			a.mu.Unlock()
			if !closed {
				a.log.Warn("supervisor connection lost; still serving", "err", err)
			}
			return
		}
		switch m.Type {
		case control.TypeGrant, control.TypeFail:
			select {
			case a.grants <- m:
			default:
			}
		case control.TypeSteer:
			reply := control.Message{Type: control.TypeSteered}
			if err := a.steer(m.Slots); err != nil {
				reply.Error = err.Error()
			}
			ctl.Write(reply)
		case control.TypeRelease:
			if m.DrainMS > 0 {
				a.drainTimeout.Store(m.DrainMS)
			}
			go func() {
				reply := control.Message{Type: control.TypeReleased}
				if err := a.release(time.Duration(m.SettleMS)*time.Millisecond, m.Naive); err != nil {
					reply.Error = err.Error()
				}
				// Reply before draining starts: a drain with nothing in flight
				// ends the process at once, and the reply would be lost.
				ctl.Write(reply)
				a.markStopping()
			}()
		case control.TypeStandby:
			a.tracker.SetKeepAlivesEnabled(false)
			a.log.Info("on standby: steered away, handing keep-alive clients over")
		case control.TypeResume:
			a.tracker.SetKeepAlivesEnabled(true)
			a.log.Info("resumed: traffic is back")
		case control.TypeHandoffDone:
			a.finishHandoff(ctl)
			return
		}
	}
}

// steer points every listen address's reuseport group at slots.
func (a *App) steer(slots []int) error {
	var errs []error
	for _, ln := range a.listeners() {
		errs = append(errs, reuseport.Steer(ln, slots))
	}
	return errors.Join(errs...)
}

// release stops accepting without losing a connection: each listener's
// accept queue is emptied (the Serve loops keep accepting) and then it is
// closed. naive closes at once, as a plain Shutdown-based server does. The
// caller then starts the drain with markStopping.
func (a *App) release(settle time.Duration, naive bool) error {
	lns := a.listeners()
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	errs := make([]error, len(lns))
	var wg sync.WaitGroup
	for i, ln := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if naive {
				errs[i] = ln.Close()
				return
			}
			errs[i] = reuseport.Drain(ctx, ln, settle)
		}()
	}
	wg.Wait()
	err := errors.Join(errs...)
	if err != nil && !errors.Is(err, net.ErrClosed) {
		a.log.Warn("release listeners", "err", err)
		return err
	}
	a.log.Info("stopped accepting", "naive", naive)
	return nil
}

// finishHandoff runs in a process started by a standalone parent's SIGHUP
// once the parent has closed its listeners: this process now owns the port
// alone, so it steers to itself (a later process joining the group gets no
// connection before it is ready), writes the pid file and is standalone.
func (a *App) finishHandoff(ctl *control.Conn) {
	a.mu.Lock()
	a.ctl = nil
	a.handoff = false
	a.mu.Unlock()
	ctl.Close()
	if err := a.steer([]int{0}); err != nil {
		a.log.Warn("steer after handoff", "err", err)
	}
	if err := a.writePIDFile(); err != nil {
		a.log.Warn("after handoff", "err", err)
	}
	a.log.Info("handoff complete; serving alone")
}
