package drain

import (
	"context"
	"testing"
	"time"
)

// TestDrainEndsWhenCountsReachZero: the drain returns when its last
// connection closes or its last request ends, not at its next poll for
// idle connections (here an hour away).
func TestDrainEndsWhenCountsReachZero(t *testing.T) {
	for _, last := range []string{"connection", "request", "RequestDone"} {
		t.Run(last, func(t *testing.T) {
			c, _ := tcpPair(t)
			tr := c.t
			c.busy() // a handler runs on it: not idle
			switch last {
			case "request":
				tr.inflight.Add(1)
				tr.remove(c) // the connection is gone, its request not yet
			case "RequestDone": // counted by a server that is not a Server
				tr.RequestStarted()
				tr.remove(c) // the connection is gone, its request not yet
			}
			tr.StartDrain()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			errc := make(chan error, 1)
			go func() { errc <- waitConnsEvery(ctx, tr, time.Hour, nil, time.Hour) }()
			time.Sleep(20 * time.Millisecond) // the drain has looked once and waits
			start := time.Now()
			switch last {
			case "request":
				tr.requestDone()
			case "RequestDone":
				tr.RequestDone()
			default:
				tr.remove(c)
			}
			if err := <-errc; err != nil {
				t.Fatalf("drain: %v; want it to end when the %s ends", err, last)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("drain ended %v after the last %s; want at once", d, last)
			}
		})
	}
}
