package launcher

import (
	"net"
	"time"

	"github.com/launcherd/launcher/reuseport"
)

// logHandshakes says what the wait for hs found on ln: at debug level how
// many handshakes were under way and how long listing them took, and
// whether some were left (when closed, their clients may be reset) or
// sock_diag failed.
func (a *App) logHandshakes(ln *net.TCPListener, hs *reuseport.Handshakes, closed bool) {
	if hs == nil {
		return
	}
	n, took := hs.Snapshot()
	left := hs.Left()
	a.log.Debug("handshakes in flight waited for", "addr", ln.Addr(), "handshakes", n, "listed_in", took, "left", left)
	switch err := hs.Err(); {
	case err != nil:
		a.log.Warn("handshakes in flight unknown: waited for the accept queue only", "addr", ln.Addr(), "err", err)
	case left > 0 && closed:
		a.log.Info("closed with handshakes still under way: their clients may be reset",
			"addr", ln.Addr(), "handshakes", left, "after", time.Since(hs.Created()).Round(time.Millisecond))
	}
}

// quietOptions says when ln, steered away from, is quiet. The first
// quiesce or release of ln makes the handshakes to wait for, and later
// ones reuse them: the supervisor steers new connections away before
// either, so no handshake that starts later can be ln's, and a release
// after a quiesce need not wait for the handshakes of the new
// generation's sockets, which share the port. The wait for them is
// reuseport.DefaultHandshakeWait, or the drain timeout when that is
// shorter: it bounds everything an old generation still does. With
// handshakesDone only the accept queue is waited for.
func (a *App) quietOptions(ln *net.TCPListener, settle time.Duration, handshakesDone bool) reuseport.QuiesceOptions {
	if handshakesDone {
		return reuseport.QuiesceOptions{Settle: settle, QueueOnly: true}
	}
	wait := reuseport.DefaultHandshakeWait
	if ms := a.drainTimeout.Load(); ms > 0 {
		wait = min(wait, time.Duration(ms)*time.Millisecond)
	} else {
		wait = min(wait, a.opts.DrainTimeout)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	hs := a.handshakes[ln]
	if hs == nil {
		hs = reuseport.NewHandshakes(ln)
		if a.handshakes == nil {
			a.handshakes = map[*net.TCPListener]*reuseport.Handshakes{}
		}
		a.handshakes[ln] = hs
	}
	return reuseport.QuiesceOptions{Settle: settle, Handshakes: hs, HandshakeWait: wait}
}

// forgetHandshakes drops the snapshots of quietOptions.
func (a *App) forgetHandshakes() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.handshakes = nil
}
