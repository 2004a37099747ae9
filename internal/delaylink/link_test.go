package delaylink

import (
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

// fakeEnd is a packet endpoint: Read returns what the test injects, one
// packet per call, and Write records what the link delivers, with when.
type fakeEnd struct {
	in        chan []byte
	closed    chan struct{}
	closeOnce sync.Once

	mu  sync.Mutex
	got []delivered
}

type delivered struct {
	data []byte
	at   time.Time
}

func newFakeEnd() *fakeEnd {
	return &fakeEnd{in: make(chan []byte, 64), closed: make(chan struct{})}
}

func (e *fakeEnd) Read(b []byte) (int, error) {
	select {
	case p := <-e.in:
		return copy(b, p), nil
	case <-e.closed:
		return 0, os.ErrClosed
	}
}

func (e *fakeEnd) Write(b []byte) (int, error) {
	select {
	case <-e.closed:
		return 0, os.ErrClosed
	default:
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.got = append(e.got, delivered{append([]byte(nil), b...), time.Now()})
	return len(b), nil
}

func (e *fakeEnd) Close() error {
	e.closeOnce.Do(func() { close(e.closed) })
	return nil
}

func (e *fakeEnd) delivered() []delivered {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]delivered(nil), e.got...)
}

// waitFor polls until end has n packets or a second passes.
func waitFor(t *testing.T, end *fakeEnd, n int) []delivered {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for {
		got := end.delivered()
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(time.Millisecond)
	}
}

func TestLinkDelaysBothWaysInOrder(t *testing.T) {
	const delay = 40 * time.Millisecond
	a, b := newFakeEnd(), newFakeEnd()
	l := Start(a, b, delay, 0)
	defer l.Close()
	tests := []struct {
		name     string
		from, to *fakeEnd
	}{
		{"a to b", a, b},
		{"b to a", b, a},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sent := time.Now()
			for i := range 5 {
				tt.from.in <- []byte(fmt.Sprintf("%s %d", tt.name, i))
			}
			got := waitFor(t, tt.to, 5)
			if len(got) != 5 {
				t.Fatalf("got %d packets; want 5", len(got))
			}
			for i, d := range got {
				if want := fmt.Sprintf("%s %d", tt.name, i); string(d.data) != want {
					t.Errorf("packet %d = %q; want %q", i, d.data, want)
				}
				if took := d.at.Sub(sent); took < delay || took > delay+200*time.Millisecond {
					t.Errorf("packet %d delivered after %v; want about %v", i, took, delay)
				}
			}
		})
	}
	if fwd, drop := l.Stats(); fwd != 10 || drop != 0 {
		t.Errorf("Stats() = %d forwarded, %d dropped; want 10, 0", fwd, drop)
	}
}

func TestLinkDropsWhenQueueFull(t *testing.T) {
	a, b := newFakeEnd(), newFakeEnd()
	l := Start(a, b, time.Hour, 2) // nothing is delivered during the test
	for i := range 10 {
		a.in <- []byte{byte(i)}
	}
	// Two wait in the queue and one in the writer, unless the reader
	// filled the queue before the writer took the first: 7 or 8 dropped.
	deadline := time.Now().Add(time.Second)
	for {
		if _, drop := l.Stats(); drop >= 7 && len(a.in) == 0 {
			break
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	if fwd, drop := l.Stats(); fwd != 0 || drop < 7 || drop > 8 {
		t.Fatalf("Stats() = %d forwarded, %d dropped of 10 with a queue of 2; want 0, 7 or 8", fwd, drop)
	}
	closeWithin(t, l, time.Second) // held packets do not keep Close waiting
	if got := b.delivered(); len(got) != 0 {
		t.Errorf("delivered %d packets before their time", len(got))
	}
}

func TestLinkCloseEndsCopiers(t *testing.T) {
	a, b := newFakeEnd(), newFakeEnd()
	l := Start(a, b, 30*time.Millisecond, 0)
	a.in <- []byte("in flight at close")
	b.in <- []byte("also in flight")
	closeWithin(t, l, time.Second)
	if _, err := a.Write([]byte("x")); err == nil {
		t.Error("endpoint a still open after Close")
	}
}

// closeWithin closes l and fails the test if that takes longer than d.
func closeWithin(t *testing.T, l *Link, d time.Duration) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- l.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Close = %v", err)
		}
	case <-time.After(d):
		t.Fatalf("Close did not return within %v", d)
	}
}
