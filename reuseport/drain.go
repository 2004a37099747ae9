package reuseport

import (
	"context"
	"fmt"
	"net"
	"time"
)

// DefaultSettle is how long an accept queue must stay empty before [Drain]
// closes the listener. Handshakes already in flight when traffic was
// steered away are waited for apart from it (see [Handshakes]); with a
// full, small backlog some complete only on the SYN-ACK retransmit (about
// one second), which needs a longer settle.
const DefaultSettle = 50 * time.Millisecond

// DefaultHandshakeWait bounds how long [Quiesce] waits for the handshakes
// of its snapshot. A client 20–300 ms away completes its handshake within
// a round trip, or about a second later when a SYN-ACK was lost (the first
// retransmit is after 1 s). The kernel goes on retransmitting for 63 s
// (net.ipv4.tcp_synack_retries = 5), but what is still there after a few
// seconds is mostly clients that went away or spoofed SYNs; waiting for
// those would hold up the supervisor, which changes one listener at a
// time.
const DefaultHandshakeWait = 3 * time.Second

// pollEvery is how often Quiesce reads the accept-queue length.
const pollEvery = 2 * time.Millisecond

// minPoll bounds how often Quiesce reads the accept-queue length when the
// settle is shorter than pollEvery and the queue is not empty (the
// accept loop is taking a connection): it does not spin.
const minPoll = 100 * time.Microsecond

// OneLook, as a QuiesceOptions.Settle, makes Quiesce return at the first
// look that finds the accept queue empty (and no handshake left): for a
// listener already quiesced and steered away from since, where nothing
// can enter the queue any more.
const OneLook = time.Nanosecond

// handshakePollEvery is how often at most Quiesce asks the kernel which
// handshakes are left; it asks less often when asking takes longer than a
// quarter of that (see Handshakes.Refresh).
const handshakePollEvery = 10 * time.Millisecond

// QuiesceOptions say when a listener steered away from is quiet. The zero
// value waits for DefaultSettle and for the handshakes under way when
// Quiesce starts, at most DefaultHandshakeWait.
type QuiesceOptions struct {
	// Settle is how long the accept queue must stay empty after the last
	// handshake waited for is gone. 0 means DefaultSettle; OneLook, one
	// look at an empty queue.
	Settle time.Duration
	// Handshakes are the handshakes to wait for: those under way on the
	// port once new connections were steered away from the listener
	// (see NewHandshakes). nil means new ones made when Quiesce starts.
	// A caller that quiesces and later drains the same listener passes
	// the same to both, so the drain does not wait again for handshakes
	// that started on other sockets meanwhile.
	Handshakes *Handshakes
	// HandshakeWait bounds the wait for Handshakes, counted from when
	// they were made. 0 means DefaultHandshakeWait. Those left then are
	// given up on (Handshakes.Left says how many): if they complete on
	// the listener after it closes, their clients are reset.
	HandshakeWait time.Duration
	// QueueOnly waits for the accept queue alone, for a caller that knows
	// the handshakes are done (another socket's quiesce on the same port
	// waited for them all). Handshakes is then ignored.
	QueueOnly bool
}

// Drain quiesces ln (see [Quiesce]), then closes it. The caller must keep
// accepting from ln meanwhile (an http.Server's Serve loop does) and
// should have steered new connections to other sockets of the group
// first: connections still queued when a listener closes are reset, and
// so are handshakes still under way on it. When ctx ends first, ln is
// closed anyway and what was left is reported in the error.
func Drain(ctx context.Context, ln *net.TCPListener, opts QuiesceOptions) error {
	if err := Quiesce(ctx, ln, opts); err != nil {
		ln.Close()
		return err
	}
	if err := ln.Close(); err != nil {
		return fmt.Errorf("drain: close %s: %w", ln.Addr(), err)
	}
	return nil
}

// Quiesce waits until no handshake of opts.Handshakes can still complete
// on ln (or opts.HandshakeWait has passed) and then ln's accept queue has
// stayed empty for opts.Settle, and leaves ln open: the caller keeps
// accepting. Listeners steered away from can quiesce all at once, and then
// each closes after a much shorter Drain.
func Quiesce(ctx context.Context, ln *net.TCPListener, opts QuiesceOptions) error {
	settle := opts.Settle
	if settle <= 0 {
		settle = DefaultSettle
	}
	wait := opts.HandshakeWait
	if wait <= 0 {
		wait = DefaultHandshakeWait
	}
	hs := opts.Handshakes
	if hs == nil {
		hs = NewHandshakes(ln)
	}
	giveUp := hs.Created().Add(wait)
	if opts.QueueOnly {
		giveUp = time.Time{}
	}
	// A settle shorter than the poll is read at its own pace: the quick
	// settle of a listener already quiesced is one look at an empty queue.
	t := time.NewTicker(max(min(pollEvery, settle), minPoll))
	defer t.Stop()
	// The snapshot, taken by the first Refresh, counts toward the settle:
	// the accept loop goes on meanwhile.
	emptySince := time.Now()
	var nextAsk time.Time
	for {
		now := time.Now()
		inFlight := 0
		if now.Before(giveUp) && now.After(nextAsk) {
			// On error the same handshakes count as under way, until
			// giveUp at the latest.
			hs.Refresh()
			// A dump walks the kernel's whole established hash: on a
			// host with many sockets that is milliseconds of CPU, kept
			// to a fraction of a core.
			took := time.Since(now)
			nextAsk = now.Add(max(handshakePollEvery, 4*took))
			now = time.Now()
		}
		if now.Before(giveUp) {
			inFlight = hs.Left()
		}
		n, err := QueueLen(ln)
		if err != nil {
			return fmt.Errorf("drain: %w", err)
		}
		// A completed handshake enters the accept queue just after its
		// request socket goes: the queue settles after the last one.
		if n > 0 || inFlight > 0 {
			emptySince = now
		} else if now.Sub(emptySince) >= settle {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("drain %s: %d connections left queued, %d handshakes under way: %w", ln.Addr(), n, hs.Left(), ctx.Err())
		case <-t.C:
		}
	}
}
