package loadgen

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestFailureClasses runs each mode against servers that fail in one
// known way and checks that every request lands in exactly that class.
func TestFailureClasses(t *testing.T) {
	cases := []struct {
		name    string
		want    Class
		timeout time.Duration
		addr    func(t *testing.T) string
	}{
		{"closed port", Refused, 0, closedAddr},
		{"close after request", EOF, 0, func(t *testing.T) string {
			return newRawServer(t, func(c *net.TCPConn, br *bufio.Reader) {
				readRequest(br)
				c.Close()
			}).addr()
		}},
		{"half a response", EOF, 0, func(t *testing.T) string {
			return newRawServer(t, func(c *net.TCPConn, br *bufio.Reader) {
				readRequest(br)
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\nhello")
				c.Close()
			}).addr()
		}},
		{"reset after request", Reset, 0, func(t *testing.T) string {
			return newRawServer(t, func(c *net.TCPConn, br *bufio.Reader) {
				readRequest(br)
				c.SetLinger(0) // close sends RST
				c.Close()
			}).addr()
		}},
		{"503", Non2xx, 0, func(t *testing.T) string {
			return newRawServer(t, func(c *net.TCPConn, br *bufio.Reader) {
				for readRequest(br) == nil {
					io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\n\r\nbusy\n")
				}
			}).addr()
		}},
		{"never answers", Timeout, 150 * time.Millisecond, func(t *testing.T) string {
			return newRawServer(t, func(c *net.TCPConn, br *bufio.Reader) {
				io.Copy(io.Discard, br) // until the client gives up
			}).addr()
		}},
		{"not http", Other, 0, func(t *testing.T) string {
			return newRawServer(t, func(c *net.TCPConn, br *bufio.Reader) {
				readRequest(br)
				io.WriteString(c, "SSH-2.0-OpenSSH\r\n\r\n")
				c.Close()
			}).addr()
		}},
	}
	for _, tc := range cases {
		for _, mode := range []Mode{NewConn, KeepAlive, Long} {
			t.Run(tc.name+"/"+string(mode), func(t *testing.T) {
				cfg := short(tc.addr(t), mode)
				cfg.Workers, cfg.MaxRequests, cfg.Duration = 2, 6, 10*time.Second
				if tc.timeout > 0 {
					cfg.Timeout = tc.timeout
				}
				res := mustRun(t, cfg)
				var want [NumClasses]int64
				want[tc.want] = 6
				if res.Requests != 6 || res.Count != want {
					t.Fatalf("counts %v, want %v; samples %q", res.Count, want, res.Samples)
				}
				if len(res.Samples[tc.want]) == 0 {
					t.Errorf("no sample error for %v", tc.want)
				}
				for r := range res.Records() {
					if r.Class != tc.want || r.Version != "" {
						t.Fatalf("record %+v, want class %v without version", r, tc.want)
					}
					if tc.want == Timeout && r.Latency < tc.timeout {
						t.Fatalf("timed out after %v < Timeout %v", r.Latency, tc.timeout)
					}
				}
			})
		}
	}
}

func TestClassify(t *testing.T) {
	opErr := func(op string, err error) error {
		return &net.OpError{Op: op, Net: "tcp", Err: os.NewSyscallError(op, err)}
	}
	for _, tc := range []struct {
		err  error
		want Class
	}{
		{opErr("dial", syscall.ECONNREFUSED), Refused},
		{opErr("read", syscall.ECONNRESET), Reset},
		{fmt.Errorf("write request: %w", opErr("write", syscall.EPIPE)), Reset},
		{opErr("read", syscall.ECONNABORTED), Reset},
		{&net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}, Timeout},
		{context.DeadlineExceeded, Timeout},
		{io.EOF, EOF},
		{fmt.Errorf("read response: %w", io.ErrUnexpectedEOF), EOF},
		{opErr("dial", syscall.EADDRNOTAVAIL), Other},
		{errors.New("malformed HTTP response"), Other},
		{nil, Other},
	} {
		if got := Classify(tc.err); got != tc.want {
			t.Errorf("Classify(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
	if s := Class(9).String(); s != "class(9)" {
		t.Errorf("Class(9).String() = %q", s)
	}
}
