package drain

import (
	"context"
	"net"
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

// slowAccept is a listener whose Accept hands over a connection only when
// told: as the kernel's accept that returned a connection just before the
// listener closed, with its goroutine not yet run on to track it.
type slowAccept struct {
	net.Listener
	give chan net.Conn
}

func (l slowAccept) Accept() (net.Conn, error) {
	if c, ok := <-l.give; ok {
		return c, nil
	}
	return nil, net.ErrClosed
}

// TestDrainWaitsForAnAcceptUnderWay: a drain that begins while an Accept
// is handing over a connection does not end before that connection is
// tracked and done (it ended at once, and the process exited under it:
// a client on a slow link whose request was still on its way read EOF).
func TestDrainWaitsForAnAcceptUnderWay(t *testing.T) {
	tr := NewTracker()
	give := make(chan net.Conn)
	ln := NewListener(slowAccept{give: give}, tr)
	accepted := make(chan net.Conn, 1)
	go func() { // ends when give is closed
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	time.Sleep(10 * time.Millisecond) // the Accept is under way
	tr.StartDrain()
	drained := make(chan error, 1)
	go func() { drained <- waitConns(context.Background(), tr, time.Hour, nil) }()
	select {
	case err := <-drained:
		t.Fatalf("drain ended (%v) with an Accept under way", err)
	case <-time.After(100 * time.Millisecond):
	}
	server, client := net.Pipe()
	defer client.Close()
	give <- server
	c := <-accepted
	close(give) // the next Accept returns net.ErrClosed, as after a close
	select {
	case err := <-drained:
		t.Fatalf("drain ended (%v) with the accepted connection open", err)
	case <-time.After(100 * time.Millisecond):
	}
	c.Close()
	select {
	case err := <-drained:
		if err != nil {
			t.Fatalf("drain: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("drain did not end once the connection closed and no Accept was under way")
	}
}
