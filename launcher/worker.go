package launcher

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/launcherd/launcher/internal/control"
	"github.com/launcherd/launcher/reuseport"
)

// releaseTimeout bounds emptying the accept queues; a queue that does not
// empty by then belongs to a stuck app.
const releaseTimeout = 10 * time.Second

// readControl handles the supervisor's messages, on this connection and,
// once ready, on the next ones: a worker that loses its supervisor keeps
// serving and dials the control socket again, so that a new supervisor
// started on the same state directory adopts it. It is owned by the App
// and ends when Close closes the connection.
func (a *App) readControl(ctl *control.Conn) {
	defer close(a.readerEnd)
	for ctl != nil {
		if !a.serveControl(ctl) {
			return
		}
		ctl = a.rejoin()
	}
}

// serveControl handles messages on ctl until it fails. It returns false
// when the conversation is over for good (a finished handoff).
func (a *App) serveControl(ctl *control.Conn) bool {
	for {
		m, err := ctl.Read(time.Time{})
		if err != nil {
			a.mu.Lock()
			closed, handoff, checked := a.closed, a.handoff, a.checkedReady
			a.dropCtl(ctl)
			a.mu.Unlock()
			switch {
			case closed:
			case handoff:
				// The process handing over died before it was done (a
				// kill -9): this one is all that serves the port now. It
				// takes the port over once it has passed its health check:
				// now if its ready went out, else in Ready.
				a.log.Warn("the process handing over went away before it was done", "err", err)
				if checked {
					a.serveAlone()
				}
				return false
			default:
				a.log.Warn("supervisor connection lost; still serving", "err", err)
			}
			return true
		}
		switch m.Type {
		case control.TypeGrant, control.TypeFail:
			select {
			case a.grants <- m:
			default:
			}
		case control.TypeSteer:
			// Answered here, while a release or quiesce may still run:
			// replies go out in any order, matched by ID (Conn.Write is
			// safe for concurrent use).
			reply := control.Message{Type: control.TypeSteered, ID: m.ID}
			if err := a.steer(m.Slots); err != nil {
				reply.Error = err.Error()
			}
			ctl.Write(reply)
		case control.TypeRelease:
			if m.DrainMS > 0 {
				a.drainTimeout.Store(m.DrainMS)
			}
			go func() { // bounded by releaseTimeout
				reply := control.Message{Type: control.TypeReleased, ID: m.ID}
				settle := time.Duration(m.SettleMS) * time.Millisecond
				if m.Quick {
					settle = reuseport.OneLook
				}
				if err := a.release(settle, m.Naive, m.HandshakesDone); err != nil {
					reply.Error = err.Error()
				}
				// Reply before draining starts: a drain with nothing in flight
				// ends the process at once, and the reply would be lost.
				ctl.Write(reply)
				a.markStopping()
			}()
		case control.TypeQuiesce:
			go func() { // bounded by releaseTimeout
				reply := control.Message{Type: control.TypeQuiesced, ID: m.ID}
				if err := a.quiesce(time.Duration(m.SettleMS)*time.Millisecond, m.HandshakesDone); err != nil {
					reply.Error = err.Error()
				}
				ctl.Write(reply)
			}()
		case control.TypeStandby:
			a.tracker.SetKeepAlivesEnabled(false)
			a.log.Info("on standby: steered away, handing keep-alive clients over")
		case control.TypeResume:
			a.forgetHandshakes() // traffic is back: a later quiesce looks again
			a.tracker.SetKeepAlivesEnabled(true)
			a.log.Info("resumed: traffic is back")
		case control.TypeCollected:
			a.collectedOnce.Do(func() { close(a.collected) })
		case control.TypeTicketKeys:
			a.receiveTicketKeys(m)
		case control.TypeHandoffDone:
			a.finishHandoff(ctl)
			return false
		}
	}
}

// Rejoin back-off: the first attempt is quick, later ones are spaced up
// to rejoinMaxWait.
const (
	rejoinFirstWait = 50 * time.Millisecond
	rejoinMaxWait   = time.Second
)

// rejoin dials the control socket until a supervisor welcomes this worker
// again, or the App closes (nil). A worker that was never ready does not
// rejoin: a new supervisor would only stop it.
func (a *App) rejoin() *control.Conn {
	a.mu.Lock()
	ok := !a.closed && a.ready && !a.handoff && a.controlPath != ""
	a.mu.Unlock()
	if !ok {
		return nil
	}
	wait := rejoinFirstWait
	for attempt := 1; ; attempt++ {
		select {
		case <-a.closing:
			return nil
		case <-time.After(wait):
		}
		wait = min(2*wait, rejoinMaxWait)
		ctl, err := a.dialRejoin()
		if err == nil {
			a.log.Info("rejoined a supervisor", "attempts", attempt)
			return ctl
		}
		if attempt == 1 {
			a.log.Info("dialing the supervisor again until one answers", "err", err)
		}
	}
}

// dialRejoin says hello as a worker that lost its supervisor, with where
// it stands, and takes the stderr the new supervisor hands over. The new
// supervisor may be older than the lost one: the hello falls back to the
// version it speaks (see [control.Negotiate]).
func (a *App) dialRejoin() (*control.Conn, error) {
	a.mu.Lock()
	hello := a.hello()
	hello.Rejoin = true
	hello.Listening = len(a.lns) > 0 && !a.released
	hello.Ready, hello.Released = a.ready, a.released
	// The ring goes back to whichever supervisor adopts this worker, so
	// that tickets issued before its predecessor died still resume.
	hello.TicketKeys = a.tickets.Wire()
	a.mu.Unlock()
	var (
		ctl    *control.Conn
		stderr *os.File
	)
	m, err := control.Negotiate(hello, func(hello control.Message) (control.Message, error) {
		c, err := net.DialTimeout("unix", a.controlPath, 2*time.Second)
		if err != nil {
			return control.Message{}, err
		}
		uc := c.(*net.UnixConn)
		if err := control.NewConn(uc).Write(hello); err != nil {
			c.Close()
			return control.Message{}, err
		}
		m, f, conn, err := control.ReadFile(uc, time.Now().Add(10*time.Second))
		if err != nil || m.Type != control.TypeWelcome {
			if f != nil {
				f.Close()
			}
			c.Close()
			return m, err
		}
		ctl, stderr = conn, f
		return m, nil
	})
	if err == nil && m.Type != control.TypeWelcome {
		err = fmt.Errorf("refused: %s", m.Error)
	}
	if err != nil {
		return nil, err
	}
	if stderr != nil {
		// The old stderr was a pipe to the dead supervisor: log to the new
		// one's from now on.
		if err := redirectStderr(stderr); err != nil {
			a.log.Warn("take the new supervisor's stderr", "err", err)
		}
		stderr.Close()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		ctl.Close()
		return nil, errors.New("closed")
	}
	a.setCtl(ctl, m) // m is the welcome
	return ctl, nil
}

// steer points every listen address's reuseport group at slots.
func (a *App) steer(slots []int) error {
	var errs []error
	for _, ln := range a.listeners() {
		errs = append(errs, reuseport.Steer(ln, slots))
	}
	return errors.Join(errs...)
}

// quiesce waits until no handshake under way when the listeners were
// steered away can still complete on them (unless handshakesDone: another
// worker waited for them) and then every accept queue has stayed empty
// for settle, keeping them open: the Serve loops keep accepting.
func (a *App) quiesce(settle time.Duration, handshakesDone bool) error {
	return a.eachListener(func(ctx context.Context, ln *net.TCPListener) error {
		opts := a.quietOptions(ln, settle, handshakesDone)
		err := reuseport.Quiesce(ctx, ln, opts)
		a.logHandshakes(ln, opts.Handshakes, false)
		return err
	})
}

// eachListener runs f on every listener at once, within releaseTimeout.
func (a *App) eachListener(f func(context.Context, *net.TCPListener) error) error {
	lns := a.listeners()
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	errs := make([]error, len(lns))
	var wg sync.WaitGroup
	for i, ln := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(ctx, ln)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// release stops accepting without losing a connection: each listener's
// handshakes under way are waited for (unless handshakesDone) and its
// accept queue emptied (the Serve loops keep accepting), and then it is
// closed. naive closes at once, as a plain Shutdown-based server does. The
// caller then starts the drain with markStopping.
func (a *App) release(settle time.Duration, naive, handshakesDone bool) error {
	err := a.eachListener(func(ctx context.Context, ln *net.TCPListener) error {
		if naive {
			return ln.Close()
		}
		opts := a.quietOptions(ln, settle, handshakesDone)
		err := reuseport.Drain(ctx, ln, opts)
		a.logHandshakes(ln, opts.Handshakes, true)
		return err
	})
	if err != nil && !errors.Is(err, net.ErrClosed) {
		a.log.Warn("release listeners", "err", err)
		return err
	}
	a.mu.Lock()
	a.released = true
	a.mu.Unlock()
	a.log.Info("stopped accepting", "naive", naive)
	return nil
}

// finishHandoff runs in a process started by a standalone parent's SIGHUP
// once the parent has closed its listeners: this process now owns the port
// alone, so it steers to itself (a later process joining the group gets no
// connection before it is ready), writes the pid file and is standalone.
func (a *App) finishHandoff(ctl *control.Conn) {
	a.mu.Lock()
	a.dropCtl(ctl)
	a.mu.Unlock()
	ctl.Close()
	a.serveAlone()
}

// serveAlone makes a process started by a standalone parent's SIGHUP a
// standalone one: the port is its own (the parent released it, or died),
// so it steers to itself, writes the pid file and makes its ticket keys.
func (a *App) serveAlone() {
	a.mu.Lock()
	if !a.handoff { // done already: Ready and the control reader may both see the parent go
		a.mu.Unlock()
		return
	}
	a.handoff = false
	a.supervised = false
	caught := a.caught
	a.mu.Unlock()
	if err := a.steer([]int{0}); err != nil {
		a.log.Warn("steer after handoff", "err", err)
	}
	// A script that reads the pid file may send SIGHUP at once: Serve
	// catches it by then (it reported ready before catching signals).
	if caught != nil {
		<-caught
	}
	if err := a.writePIDFile(); err != nil {
		a.log.Warn("after handoff", "err", err)
	}
	a.makeTicketKeys() // the parent's library may have sent none
	a.log.Info("handoff complete; serving alone")
}
