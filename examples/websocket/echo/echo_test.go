package echo

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestClientFollowsToTheNextServer: two servers behind one address, as two
// generations behind the reuseport steering. New connections go to the
// second, then the first drains: its client gets 1001, reconnects to the
// second, resends what the first had not echoed, and nothing is lost or
// echoed twice.
func TestClientFollowsToTheNextServer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	old, next := NewServer(1, "v1", nil), NewServer(2, "v2", nil)
	oldDraining := make(chan struct{})
	go old.Run(ctx, oldDraining) // ends with the test (cancel)
	go next.Run(ctx, nil)        // the same
	var steered atomic.Pointer[Server]
	steered.Store(old)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		steered.Load().ServeHTTP(w, r)
	}))
	defer hs.Close()

	c := &Client{URL: "ws" + hs.URL[len("http"):], Name: "t", Interval: time.Millisecond}
	cctx, stop := context.WithCancel(ctx)
	type result struct {
		rep Report
		err error
	}
	done := make(chan result, 1)
	go func() { rep, err := c.Run(cctx); done <- result{rep, err} }() // ends after stop
	waitGen(t, c, 1)
	time.Sleep(100 * time.Millisecond)
	steered.Store(next) // the steering moves first, then the old generation drains
	close(oldDraining)
	waitGen(t, c, 2)
	time.Sleep(100 * time.Millisecond)
	stop()
	r := <-done
	if r.err != nil {
		t.Fatalf("Run: %v (lost %v)", r.err, r.rep.Lost)
	}
	rep := r.rep
	if rep.Sent == 0 || rep.Answered != rep.Sent || rep.Duplicates != 0 || rep.Mismatched != 0 {
		t.Errorf("%d sent, %d echoed, %d duplicate(s), %d mismatched; want every one echoed once", rep.Sent, rep.Answered, rep.Duplicates, rep.Mismatched)
	}
	if len(rep.Sessions) != 2 {
		t.Fatalf("sessions = %+v; want 2", rep.Sessions)
	}
	if s := rep.Sessions[0]; s.Generation != 1 || s.Version != "v1" || s.Close != websocket.StatusGoingAway {
		t.Errorf("first connection: generation %d (%s), close %d (%v); want 1 (v1), %d", s.Generation, s.Version, s.Close, s.Err, websocket.StatusGoingAway)
	}
	if s := rep.Sessions[1]; s.Generation != 2 || s.Version != "v2" || !s.ByClient {
		t.Errorf("second connection: generation %d (%s), closed by the client %v (%v); want 2 (v2), true", s.Generation, s.Version, s.ByClient, s.Err)
	}
}

func waitGen(t *testing.T, c *Client, gen int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); c.Generation() != gen; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("client on generation %d; want %d", c.Generation(), gen)
		}
	}
}
