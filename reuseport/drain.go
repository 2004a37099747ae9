package reuseport

import (
	"context"
	"fmt"
	"net"
	"time"
)

// DefaultSettle is how long an accept queue must stay empty before [Drain]
// closes the listener. Handshakes already in flight when traffic was
// steered away complete within a round trip on a healthy backlog; with a
// full, small backlog some complete only on the SYN-ACK retransmit (about
// one second), which needs a longer settle.
const DefaultSettle = 50 * time.Millisecond

// pollEvery is how often Drain reads the accept-queue length.
const pollEvery = 2 * time.Millisecond

// Drain waits until ln's accept queue has stayed empty for settle, then
// closes ln. The caller must keep accepting from ln meanwhile (an
// http.Server's Serve loop does) and should have steered new connections
// to other sockets of the group first: connections still queued when a
// listener closes are reset. When ctx ends first, ln is closed anyway and
// the number of connections left in the queue is reported in the error.
func Drain(ctx context.Context, ln *net.TCPListener, settle time.Duration) error {
	if err := Quiesce(ctx, ln, settle); err != nil {
		ln.Close()
		return err
	}
	if err := ln.Close(); err != nil {
		return fmt.Errorf("drain: close %s: %w", ln.Addr(), err)
	}
	return nil
}

// Quiesce waits until ln's accept queue has stayed empty for settle (0
// means DefaultSettle) and leaves ln open; the caller keeps accepting.
// Listeners steered away from can quiesce all at once, and then each
// closes after a much shorter Drain.
func Quiesce(ctx context.Context, ln *net.TCPListener, settle time.Duration) error {
	if settle <= 0 {
		settle = DefaultSettle
	}
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	emptySince := time.Now()
	for {
		n, err := QueueLen(ln)
		if err != nil {
			return fmt.Errorf("drain: %w", err)
		}
		now := time.Now()
		if n > 0 {
			emptySince = now
		} else if now.Sub(emptySince) >= settle {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("drain %s: %d connections left queued: %w", ln.Addr(), n, ctx.Err())
		case <-t.C:
		}
	}
}
