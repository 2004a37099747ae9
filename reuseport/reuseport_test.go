package reuseport_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/launcherd/launcher/reuseport"
)

// listenGroup opens n listeners on one free loopback port, in order.
func listenGroup(t *testing.T, n int) []*net.TCPListener {
	t.Helper()
	first, err := reuseport.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lns := []*net.TCPListener{first}
	for i := 1; i < n; i++ {
		ln, err := reuseport.Listen(context.Background(), first.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
	}
	t.Cleanup(func() {
		for _, ln := range lns {
			ln.Close()
		}
	})
	return lns
}

// countAccepts accepts on every listener until it closes and counts per index.
func countAccepts(lns []*net.TCPListener) (counts []atomic.Int64, wait func()) {
	counts = make([]atomic.Int64, len(lns))
	var wg sync.WaitGroup
	for i, ln := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				counts[i].Add(1)
				c.Close()
			}
		}()
	}
	return counts, wg.Wait
}

func dialN(t *testing.T, addr string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		c.Close()
	}
}

func TestSteer(t *testing.T) {
	tests := []struct {
		name  string
		socks int
		slots []int
	}{
		{"to the last of two", 2, []int{1}},
		{"to the first of two", 2, []int{0}},
		{"to a tail range", 5, []int{2, 3, 4}},
		{"to scattered slots", 4, []int{0, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lns := listenGroup(t, tt.socks)
			if err := reuseport.Steer(lns[0], tt.slots); err != nil {
				t.Fatal(err)
			}
			counts, wait := countAccepts(lns)
			const dials = 200
			dialN(t, lns[0].Addr().String(), dials)
			time.Sleep(50 * time.Millisecond)
			for _, ln := range lns {
				ln.Close()
			}
			wait()
			want := map[int]bool{}
			for _, s := range tt.slots {
				want[s] = true
			}
			var total int64
			for i := range counts {
				got := counts[i].Load()
				total += got
				if !want[i] && got != 0 {
					t.Errorf("socket %d got %d connections; want 0", i, got)
				}
				if want[i] && len(tt.slots) > 1 && got == 0 {
					t.Errorf("socket %d got no connection; want a share", i)
				}
			}
			if total != dials {
				t.Errorf("accepted %d; want %d", total, dials)
			}
		})
	}
}

func TestUnsteerSpreadsAgain(t *testing.T) {
	lns := listenGroup(t, 2)
	if err := reuseport.Steer(lns[1], []int{1}); err != nil {
		t.Fatal(err)
	}
	if err := reuseport.Unsteer(lns[0]); err != nil {
		t.Fatal(err)
	}
	if err := reuseport.Unsteer(lns[0]); err != nil {
		t.Fatalf("second unsteer: %v; want nil when nothing is attached", err)
	}
	counts, wait := countAccepts(lns)
	dialN(t, lns[0].Addr().String(), 200)
	time.Sleep(50 * time.Millisecond)
	lns[0].Close()
	lns[1].Close()
	wait()
	if counts[0].Load() == 0 || counts[1].Load() == 0 {
		t.Errorf("counts %d/%d; want both sockets used", counts[0].Load(), counts[1].Load())
	}
}

func TestListenErrors(t *testing.T) {
	plain, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	tests := []struct {
		addr    string
		wantErr error
	}{
		{plain.Addr().String(), reuseport.ErrAddrHeld},
		{"127.0.0.1", nil},
		{"nonsense:http:x", nil},
	}
	for _, tt := range tests {
		ln, err := reuseport.Listen(context.Background(), tt.addr)
		if err == nil {
			ln.Close()
			t.Errorf("Listen(%q) = nil error; want one", tt.addr)
			continue
		}
		if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
			t.Errorf("Listen(%q) = %v; want %v", tt.addr, err, tt.wantErr)
		}
	}
}

func TestDrainWaitsForQueue(t *testing.T) {
	for _, settle := range []time.Duration{20 * time.Millisecond, reuseport.OneLook} {
		t.Run(settle.String(), func(t *testing.T) { testDrainWaitsForQueue(t, settle) })
	}
}

func testDrainWaitsForQueue(t *testing.T, settle time.Duration) {
	lns := listenGroup(t, 1)
	ln := lns[0]
	// Queue three connections without accepting them.
	var conns []net.Conn
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		defer c.Close()
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		n, err := reuseport.QueueLen(ln)
		if err != nil {
			t.Fatal(err)
		}
		if n == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("QueueLen = %d; want 3", n)
		}
		time.Sleep(time.Millisecond)
	}
	done := make(chan error, 1)
	go func() {
		done <- reuseport.Drain(context.Background(), ln, reuseport.QuiesceOptions{Settle: settle, QueueOnly: true})
	}()
	select {
	case err := <-done:
		t.Fatalf("Drain returned %v with connections queued", err)
	case <-time.After(100 * time.Millisecond):
	}
	for range conns {
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	if err := <-done; err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if _, err := ln.Accept(); err == nil {
		t.Fatal("listener still open after Drain")
	}
}

// TestQuiesceOneLook: with the OneLook settle, a quiesce of an empty
// queue returns at its first look, not after a poll (the 1 ms settle of a
// quick release took a poll each).
func TestQuiesceOneLook(t *testing.T) {
	ln := listenGroup(t, 1)[0]
	var took []time.Duration
	for range 21 {
		start := time.Now()
		if err := reuseport.Quiesce(context.Background(), ln, reuseport.QuiesceOptions{Settle: reuseport.OneLook, QueueOnly: true}); err != nil {
			t.Fatal(err)
		}
		took = append(took, time.Since(start))
	}
	// The fastest of them: a settle of a poll (1ms) could not go under it
	// however idle the machine, a look under load can be slow now and then.
	if fastest := slices.Min(took); fastest >= time.Millisecond {
		t.Errorf("fastest quiesce %s; want the first look (well under 1ms)", fastest)
	}
}

func TestDrainDeadline(t *testing.T) {
	lns := listenGroup(t, 1)
	c, err := net.Dial("tcp", lns[0].Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(20 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := reuseport.Drain(ctx, lns[0], reuseport.QuiesceOptions{Settle: 10 * time.Millisecond}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Drain = %v; want deadline exceeded", err)
	}
}

func TestGroupRenumbering(t *testing.T) {
	var g reuseport.Group[string]
	for _, k := range []string{"o1", "o2", "n1", "n2"} {
		g.Join(k)
	}
	isNew := func(k string) bool { return k[0] == 'n' }
	steps := []struct {
		leave string
		want  []int
	}{
		{"", []int{2, 3}},
		{"o1", []int{0, 2}}, // n2 moved into slot 0
		{"o2", []int{0, 1}}, // n1 (last) moved into slot 1
	}
	for _, s := range steps {
		if s.leave != "" && !g.Leave(s.leave) {
			t.Fatalf("Leave(%q) = false", s.leave)
		}
		got := g.Slots(isNew)
		if len(got) != len(s.want) || got[0] != s.want[0] || got[1] != s.want[1] {
			t.Fatalf("after leave %q: slots %v; want %v", s.leave, got, s.want)
		}
	}
	if g.Leave("o1") {
		t.Error("Leave of a socket no longer in the group = true")
	}
}

// TestGroupModelMatchesKernel checks the renumbering rule against the
// kernel: after a middle socket leaves, steering to the slot the model
// predicts for the last socket reaches that socket.
func TestGroupModelMatchesKernel(t *testing.T) {
	lns := listenGroup(t, 4)
	var g reuseport.Group[int]
	for i := range lns {
		g.Join(i)
	}
	lns[1].Close()
	g.Leave(1)
	slots := g.Slots(func(k int) bool { return k == 3 })
	if len(slots) != 1 || slots[0] != 1 {
		t.Fatalf("model puts socket 3 at %v; want [1]", slots)
	}
	if err := reuseport.Steer(lns[0], slots); err != nil {
		t.Fatal(err)
	}
	live := []*net.TCPListener{lns[0], lns[2], lns[3]}
	counts, wait := countAccepts(live)
	dialN(t, lns[0].Addr().String(), 100)
	time.Sleep(50 * time.Millisecond)
	for _, ln := range live {
		ln.Close()
	}
	wait()
	if got := counts[2].Load(); got != 100 {
		t.Errorf("socket 3 accepted %d of 100 (others %d, %d)", got, counts[0].Load(), counts[1].Load())
	}
}

func TestGroupStableSlots(t *testing.T) {
	isNew := func(k string) bool { return k[0] == 'n' }
	tests := []struct {
		name    string
		members []string
		leave   []string
		want    []int
	}{
		{"old first, new last: the last moves", []string{"o0", "o1", "n0", "n1"}, []string{"o0"}, []int{2}},
		{"leaving the last moves nothing", []string{"n0", "n1", "o0"}, []string{"o0"}, []int{0, 1}},
		{"a single new socket that moves", []string{"o0", "n0"}, []string{"o0"}, nil},
		{"a starting socket is last", []string{"o0", "n0", "n1", "s0"}, []string{"o0"}, []int{1, 2}},
		{"not in the group", []string{"n0", "n1"}, []string{"x"}, []int{0, 1}},
		{"three of four old leave: one new socket stays", []string{"n3", "o1", "o2", "o3", "n0", "n1", "n2"}, []string{"o1", "o2", "o3"}, []int{0}},
		{"all old leave, new last: every new socket moves", []string{"o0", "o1", "n0", "n1"}, []string{"o0", "o1"}, nil},
		{"the leaving are last: nothing else moves", []string{"n0", "n1", "o0", "o1"}, []string{"o1", "o0"}, []int{0, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var g reuseport.Group[string]
			for _, m := range tt.members {
				g.Join(m)
			}
			if got := g.StableSlots(tt.leave, isNew); !slices.Equal(got, tt.want) {
				t.Errorf("StableSlots(%q) = %v; want %v", tt.leave, got, tt.want)
			}
		})
	}
}

// TestStableSlotsAcrossAClose: steered to the stable slots, new
// connections reach only new sockets before and after an old socket
// closes, never the old socket still open.
func TestStableSlotsAcrossAClose(t *testing.T) {
	lns := listenGroup(t, 4) // o0, o1, n0, n1
	var g reuseport.Group[int]
	for i := range lns {
		g.Join(i)
	}
	slots := g.StableSlots([]int{0}, func(k int) bool { return k >= 2 })
	if err := reuseport.Steer(lns[1], slots); err != nil {
		t.Fatal(err)
	}
	live := []*net.TCPListener{lns[1], lns[2], lns[3]}
	counts, wait := countAccepts(live)
	addr := lns[1].Addr().String()
	dialN(t, addr, 50)
	lns[0].Close()
	dialN(t, addr, 50)
	time.Sleep(50 * time.Millisecond)
	for _, ln := range live {
		ln.Close()
	}
	wait()
	if o1, n := counts[0].Load(), counts[1].Load()+counts[2].Load(); o1 != 0 || n != 100 {
		t.Errorf("old socket still open accepted %d, new sockets %d of 100", o1, n)
	}
}

// TestStableSlotsAcrossCloses: steered once to the slots that no close
// of two leaving sockets moves, in either order, new connections reach
// only the steady socket before, between and after the closes, never a
// leaving socket still open or one that moved.
func TestStableSlotsAcrossCloses(t *testing.T) {
	for _, order := range [][]int{{1, 2}, {2, 1}} {
		t.Run(fmt.Sprint(order), func(t *testing.T) {
			lns := listenGroup(t, 5) // n, o1, o2, n, n
			var g reuseport.Group[int]
			for i := range lns {
				g.Join(i)
			}
			slots := g.StableSlots([]int{1, 2}, func(k int) bool { return k == 0 || k >= 3 })
			if !slices.Equal(slots, []int{0}) {
				t.Fatalf("StableSlots = %v; want [0]", slots)
			}
			if err := reuseport.Steer(lns[0], slots); err != nil {
				t.Fatal(err)
			}
			counts, wait := countAccepts(lns)
			addr := lns[0].Addr().String()
			dialN(t, addr, 30)
			lns[order[0]].Close()
			dialN(t, addr, 30)
			lns[order[1]].Close()
			dialN(t, addr, 30)
			time.Sleep(50 * time.Millisecond)
			for _, i := range []int{0, 3, 4} {
				lns[i].Close()
			}
			wait()
			var got []int64
			for i := range lns {
				got = append(got, counts[i].Load())
			}
			if !slices.Equal(got, []int64{90, 0, 0, 0, 0}) {
				t.Errorf("accepts per socket %v; want all 90 on socket 0", got)
			}
		})
	}
}
