package drain

import (
	"net"
	"testing"

	"github.com/launcherd/launcher/internal/race"
)

// TestFrameCursorSplits feeds the same frames split in every way into
// two pieces and checks that the cursor finds each frame's end, header
// and first payload bytes.
func TestFrameCursorSplits(t *testing.T) {
	preface := "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	stream := []byte(preface)
	// SETTINGS (empty), PING ACK with goAwayPing, DATA of 20 bytes.
	stream = append(stream, 0, 0, 0, 0x4, 0, 0, 0, 0, 0)
	stream = append(stream, 0, 0, 8, framePing, flagAck, 0, 0, 0, 0)
	stream = append(stream, goAwayPing...)
	stream = append(stream, 0, 0, 20, 0, 0, 0, 0, 0, 1)
	stream = append(stream, make([]byte, 20)...)
	for cut := 0; cut <= len(stream); cut++ {
		f := frameCursor{skip: len(preface)}
		var ends []byte
		var pings int
		for _, part := range [][]byte{stream[:cut], stream[cut:]} {
			for k := 0; k < len(part); {
				n, end := f.step(part[k:])
				if n == 0 {
					t.Fatalf("cut %d: no progress", cut)
				}
				k += n
				if end {
					ends = append(ends, f.hdr[3])
					if f.hdr[3] == framePing && f.npay == 8 && string(f.pay[:]) == goAwayPing {
						pings++
					}
				}
			}
		}
		if string(ends) != string([]byte{0x4, framePing, 0}) || pings != 1 || !f.atBoundary() || f.frames != 3 {
			t.Errorf("cut %d: frame types %v, %d pings, boundary %v, %d frames; want [4 6 0], 1, true, 3", cut, ends, pings, f.atBoundary(), f.frames)
		}
	}
}

// frameConn is a net.Conn whose reads repeat one stream of frames and
// whose writes go nowhere.
type frameConn struct {
	net.Conn
	frames []byte
	off    int
}

func (c *frameConn) Read(b []byte) (int, error) {
	n := copy(b, c.frames[c.off:])
	c.off = (c.off + n) % len(c.frames)
	return n, nil
}

func (c *frameConn) Write(b []byte) (int, error) { return len(b), nil }

// TestHTTP2ConnDoesNotAllocate: following the frames an HTTP/2 server
// reads and writes costs no allocation.
func TestHTTP2ConnDoesNotAllocate(t *testing.T) {
	if race.Enabled {
		t.Skip("allocation counts are meaningless under -race; scripts/test runs this test without it")
	}
	// A HEADERS frame of 10 bytes and a DATA frame of 30, read as the
	// server's framer reads them: header, then payload.
	frames := append([]byte{0, 0, 10, 1, 4, 0, 0, 0, 1}, make([]byte, 10)...)
	frames = append(frames, 0, 0, 30, 0, 1, 0, 0, 0, 1)
	frames = append(frames, make([]byte, 30)...)
	c := newH2Conn(&frameConn{frames: frames})
	hdr, pay := make([]byte, 9), make([]byte, 30)
	if got := testing.AllocsPerRun(1000, func() {
		c.Read(hdr)
		c.Read(pay[:10])
		c.Read(hdr)
		c.Read(pay)
		c.Write(frames)
	}); got != 0 {
		t.Errorf("allocations per two frames read and written = %v; want 0", got)
	}
	if c.in.frames != c.out.frames || c.in.frames == 0 || !c.in.atBoundary() || !c.out.atBoundary() {
		t.Errorf("frames read %d, written %d; want equal, at a boundary", c.in.frames, c.out.frames)
	}
}

// BenchmarkHTTP2Conn measures what following the frames adds to the
// reads and writes of two frames (HEADERS and DATA), against the same
// calls on the connection underneath.
func BenchmarkHTTP2Conn(b *testing.B) {
	frames := append([]byte{0, 0, 10, 1, 4, 0, 0, 0, 1}, make([]byte, 10)...)
	frames = append(frames, 0, 0, 30, 0, 1, 0, 0, 0, 1)
	frames = append(frames, make([]byte, 30)...)
	hdr, pay := make([]byte, 9), make([]byte, 30)
	for _, bc := range []struct {
		name string
		conn net.Conn
	}{
		{"raw", &frameConn{frames: frames}},
		{"h2Conn", newH2Conn(&frameConn{frames: frames})},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c := bc.conn
			for b.Loop() {
				c.Read(hdr)
				c.Read(pay[:10])
				c.Read(hdr)
				c.Read(pay)
				c.Write(frames)
			}
		})
	}
}
