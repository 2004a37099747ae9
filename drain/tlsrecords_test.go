package drain

import (
	"bytes"
	"testing"
)

// record is a TLS record of content type typ with a body of n bytes.
func record(typ byte, n int) []byte {
	b := []byte{typ, 3, 3, byte(n >> 8), byte(n)}
	return append(b, bytes.Repeat([]byte{0xa5}, n)...)
}

// TestTLSRecordsFindFirstRequest: the client's records before its first
// request, as each TLS version and handshake sends them, read in chunks of
// every size: the request is found in the chunk that holds its record's
// first byte, never before; where the records cannot tell, never.
func TestTLSRecordsFindFirstRequest(t *testing.T) {
	cat := func(rs ...[]byte) []byte { return bytes.Join(rs, nil) }
	hello := record(22, 300)
	tests := []struct {
		name        string
		tls12, auth bool   // what GetConfigForClient tells, after hello
		rest        []byte // what the client sends after hello
		request     int    // offset in rest of the request's first byte; -1: not found
	}{
		{"TLS 1.3", false, false, cat(record(20, 1), record(23, 53)), -1},
		{"TLS 1.3, request", false, false, cat(record(20, 1), record(23, 53), record(23, 40)), 6 + 58},
		{"TLS 1.3, HelloRetryRequest", false, false, cat(record(20, 1), record(22, 280), record(23, 53), record(23, 40)), 6 + 285 + 58},
		{"TLS 1.3, request with the Finished", false, false, cat(record(23, 53), record(23, 1)), 58},
		{"TLS 1.3, client certificate asked for", false, true, cat(record(23, 900), record(23, 300), record(23, 53), record(23, 40)), -1},
		{"TLS 1.2, full handshake", true, false, cat(record(22, 70), record(20, 1), record(22, 40)), -1},
		{"TLS 1.2, full handshake, request", true, false, cat(record(22, 70), record(20, 1), record(22, 40), record(23, 40)), 75 + 6 + 45},
		{"TLS 1.2, resumed, request", true, false, cat(record(20, 1), record(22, 40), record(23, 40)), 6 + 45},
		{"TLS 1.2, client certificate, request", true, true, cat(record(22, 900), record(22, 70), record(22, 80), record(20, 1), record(22, 40), record(23, 40)), 905 + 75 + 85 + 6 + 45},
		{"TLS 1.2, an empty record first", true, false, cat(record(22, 0), record(23, 0), record(23, 40)), 5},
		{"an alert", true, false, cat(record(21, 2)), -1},
		{"not TLS", true, false, []byte("GET / HTTP/1.1\r\n\x17\x03\x03\x00\x01x"), -1},
		{"a record too long", true, false, cat([]byte{22, 3, 3, 0xff, 0xff}, record(23, 1)), -1},
		{"a record of TLS 2", true, false, cat([]byte{22, 4, 3, 0, 1, 0}, record(23, 1)), -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, size := range []int{1, 2, 3, 4, 5, 6, 7, 64, 1 << 16} {
				var r tlsRecords
				for b := hello; len(b) > 0; b = b[min(size, len(b)):] {
					if r.read(b[:min(size, len(b))]) {
						t.Fatalf("chunks of %d: request found in the ClientHello", size)
					}
				}
				r.expect(tt.tls12, tt.auth)
				found := -1
				for off := 0; off < len(tt.rest) && found < 0; off += size {
					if r.read(tt.rest[off:min(off+size, len(tt.rest))]) {
						found = off
					}
				}
				want := -1
				if tt.request >= 0 {
					want = tt.request / size * size // the chunk that holds it
				}
				if found != want {
					t.Errorf("chunks of %d: request found in the chunk at %d; want %d (-1: none)", size, found, want)
				}
			}
		})
	}
}

// TestTLSRecordsApplicationDataBeforeClientHello: an application_data
// record before crypto/tls handled the ClientHello ends the following:
// what it was is not known, so no later record counts as a request.
func TestTLSRecordsApplicationDataBeforeClientHello(t *testing.T) {
	var r tlsRecords
	r.read(append(record(22, 300), record(23, 20)...))
	r.expect(true, false)
	if r.read(record(23, 40)) {
		t.Error("a request found after an application_data record came before the ClientHello was handled")
	}
}
