package drain

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// tcpPair returns a tracked server side and the client side of a loopback
// TCP connection.
func tcpPair(t testing.TB) (*Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	raw, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	tr := NewTracker()
	c := &Conn{Conn: raw, t: tr}
	tr.add(c)
	t.Cleanup(func() { c.Close() })
	return c, client
}

// send writes b from the client and waits until the server's kernel has
// it (the write is synchronous on loopback; the sleep only makes sure).
func send(t *testing.T, client net.Conn, b string) {
	t.Helper()
	if _, err := io.WriteString(client, b); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond)
}

// TestCloseIfQuiet drives one connection through the states a drain meets
// and checks which ones it closes: only a waiting connection on which
// every byte received has been read and answered.
func TestCloseIfQuiet(t *testing.T) {
	tests := []struct {
		name string
		// prepare brings the connection to the state under test.
		prepare   func(t *testing.T, c *Conn, client net.Conn)
		eligible  bool // a candidate for the drain (waiting)
		wantClose bool // closed when the drain tries
	}{
		{"waiting, nothing arrived", func(t *testing.T, c *Conn, client net.Conn) {
			c.SetIdle(true)
		}, true, true},
		{"busy", func(t *testing.T, c *Conn, client net.Conn) {
			c.SetIdle(false)
		}, false, false},
		{"never marked (plain TCP)", func(t *testing.T, c *Conn, client net.Conn) {}, false, false},
		{"waiting, a request read", func(t *testing.T, c *Conn, client net.Conn) {
			c.SetIdle(true)
			send(t, client, "GET / HTTP/1.1\r\n")
			if _, err := c.Read(make([]byte, 64)); err != nil {
				t.Fatal(err)
			}
		}, false, false},
		{"answered and waiting again", func(t *testing.T, c *Conn, client net.Conn) {
			c.SetIdle(true)
			send(t, client, "GET / HTTP/1.1\r\n\r\n")
			if _, err := c.Read(make([]byte, 64)); err != nil {
				t.Fatal(err)
			}
			c.SetIdle(false)
			c.SetIdle(true)
		}, true, true},
		{"waiting, a request in the receive queue", func(t *testing.T, c *Conn, client net.Conn) {
			c.SetIdle(true)
			send(t, client, "G")
		}, true, false},
		{"waiting, a request read but its read not yet accounted for", func(t *testing.T, c *Conn, client net.Conn) {
			c.SetIdle(true)
			send(t, client, "GET / HTTP/1.1\r\n")
			// As a reader whose goroutine has not run on from its read
			// system call: the bytes left the queue, Read has not
			// counted them.
			if _, err := c.Conn.Read(make([]byte, 64)); err != nil {
				t.Fatal(err)
			}
		}, true, false},
		{"TLS before its first request: handshake read", func(t *testing.T, c *Conn, client net.Conn) {
			c.tlsFirst.Store(true)
			c.SetIdle(true)
			send(t, client, "\x16\x03\x01")
			if _, err := c.Read(make([]byte, 64)); err != nil {
				t.Fatal(err)
			}
		}, true, true},
		{"hijacked", func(t *testing.T, c *Conn, client net.Conn) {
			c.SetIdle(true)
			c.hijacked.Store(true)
		}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, client := tcpPair(t)
			tt.prepare(t, c, client)
			w := c.state.Load()
			if _, ok := c.idleSince(w); ok != tt.eligible {
				t.Fatalf("eligible = %v; want %v (state %#x)", ok, tt.eligible, w)
			}
			if !tt.eligible {
				return
			}
			if got := c.closeIfQuiet(w); got != tt.wantClose {
				t.Fatalf("closeIfQuiet = %v; want %v", got, tt.wantClose)
			}
			client.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			_, err := client.Read(make([]byte, 1))
			switch {
			case tt.wantClose && err != io.EOF:
				t.Errorf("client read %v; want EOF (the server's FIN)", err)
			case !tt.wantClose && !errors.Is(err, os.ErrDeadlineExceeded):
				t.Errorf("client read %v; want the connection left open", err)
			case !tt.wantClose && c.state.Load()&phaseMask != phaseReceiving:
				t.Errorf("phase %d after the drain backed off; want receiving (%d)", c.state.Load()&phaseMask, phaseReceiving)
			}
		})
	}
}

// TestClaimTakenBack: a read that returns data while a drain has claimed
// the connection takes it back; the drain's commit then fails.
func TestClaimTakenBack(t *testing.T) {
	for _, tlsFirst := range []bool{false, true} {
		c, _ := tcpPair(t)
		c.tlsFirst.Store(tlsFirst)
		c.SetIdle(true)
		w := c.state.Load()
		if !c.state.CompareAndSwap(w, phaseClosing) {
			t.Fatal("claim failed")
		}
		c.received()
		if c.commit() {
			t.Errorf("tlsFirst=%v: commit succeeded after a read; want the claim taken back", tlsFirst)
		}
		want := int64(phaseReceiving)
		if tlsFirst {
			want = phaseWaiting // with its idle clock started again
		}
		if got := c.state.Load() & phaseMask; got != want {
			t.Errorf("tlsFirst=%v: phase %d; want %d", tlsFirst, got, want)
		}
	}
}

// nopConn is a net.Conn whose reads return at once, to time the wrapper.
type nopConn struct{ net.Conn }

func (nopConn) Read(b []byte) (int, error) { return len(b), nil }

// BenchmarkConnRead is the cost a tracked connection adds to each read
// (without the system call): the busy check and the byte count.
func BenchmarkConnRead(b *testing.B) {
	buf := make([]byte, 4096)
	b.Run("bare", func(b *testing.B) {
		var c net.Conn = nopConn{}
		b.ReportAllocs()
		for b.Loop() {
			c.Read(buf)
		}
	})
	b.Run("tracked", func(b *testing.B) {
		var c net.Conn = &Conn{Conn: nopConn{}, t: NewTracker()}
		b.ReportAllocs()
		for b.Loop() {
			c.Read(buf)
		}
	})
}

// BenchmarkTrackerStats reads the counters of a tracker with 10,000 open
// connections, one of them hijacked, as a scrape or the supervisor's
// count of a draining worker does.
func BenchmarkTrackerStats(b *testing.B) {
	t := NewTracker()
	conns := make([]*Conn, 10000)
	for i := range conns {
		conns[i] = &Conn{t: t}
		t.add(conns[i])
	}
	t.hijack(conns[0])
	for b.Loop() {
		if s := t.Stats(); s.OpenConnections != 10000 || s.Hijacked != 1 {
			b.Fatalf("Stats = %+v; want 10000 open, 1 hijacked", s)
		}
	}
}

// A request still being received (a header arriving slowly) counts in
// flight during a drain, which waits for it and cuts it at its deadline
// as a request: status and the draining step said "0 request(s) in
// flight" all through a drain that then reported "1 request(s) cut" (a
// new user's trial). Outside a drain, in flight is what handlers run.
func TestReceivingRequestCountsInFlightDuringADrain(t *testing.T) {
	c, client := tcpPair(t)
	c.SetIdle(true)
	send(t, client, "GET / HT") // the rest of the header still to come
	if _, err := c.Read(make([]byte, 64)); err != nil {
		t.Fatal(err)
	}
	if !c.receiving() {
		t.Fatal("the connection is not receiving after a partial request")
	}
	if n := c.t.Stats().InflightRequests; n != 0 {
		t.Errorf("in flight before the drain: %d; want 0 (no handler runs)", n)
	}
	c.t.StartDrain()
	if n := c.t.Stats().InflightRequests; n != 1 {
		t.Errorf("in flight during the drain: %d; want 1, the request being received", n)
	}
	if _, requests := c.t.closeAll(); requests != 1 {
		t.Errorf("closeAll cut %d requests; want 1, as Stats counted", requests)
	}
}
