package drain

import "testing"

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
