package reuseport_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/launcherd/launcher/internal/delaylink"
	"github.com/launcherd/launcher/reuseport"
)

func TestSnapshotHandshakesIdle(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(addr, func(t *testing.T) {
			ln, err := reuseport.Listen(context.Background(), addr)
			if err != nil {
				t.Skipf("no %s here: %v", addr, err)
			}
			defer ln.Close()
			// A completed connection is no handshake in flight.
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			hs := reuseport.NewHandshakes(ln)
			for i := range 2 { // the snapshot, then a refresh
				if n, err := hs.Refresh(); n != 0 || err != nil {
					t.Errorf("Refresh() #%d = %d, %v on loopback with no handshake under way; want 0, nil", i+1, n, err)
				}
			}
		})
	}
}

// slowPair returns two network namespaces joined by a link with the given
// one-way delay, or skips the test (fails it in CI) when it cannot.
func slowPair(t *testing.T, delay time.Duration) *delaylink.Pair {
	t.Helper()
	_, ipErr := exec.LookPath("ip")
	if os.Getuid() != 0 || ipErr != nil {
		msg := fmt.Sprintf("needs root and ip(8) for network namespaces with a delayed link (uid %d; ip: %v)", os.Getuid(), ipErr)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := delaylink.NewPair(ctx, delaylink.PairConfig{
		Name:  fmt.Sprintf("lrp-%d", os.Getpid()),
		AddrA: netip.MustParsePrefix("10.77.0.1/24"),
		AddrB: netip.MustParsePrefix("10.77.0.2/24"),
		Delay: delay,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// TestQuiesceWaitsForHandshakesInFlight starts handshakes over a link
// with 250 ms one way and quiesces the listener while they are under way:
// their request sockets exist from the SYN's arrival (250 ms) until the
// ACK's (750 ms), and the accept queue stays empty until then. The
// snapshot comes in the middle, with room for a dump that is slow on a
// busy host.
func TestQuiesceWaitsForHandshakesInFlight(t *testing.T) {
	const (
		delay = 250 * time.Millisecond
		n     = 8
	)
	p := slowPair(t, delay)
	tests := []struct {
		name     string
		listen   string        // host the listener binds
		dumps    bool          // refresh with dumps, not a lookup per socket
		wait     time.Duration // QuiesceOptions.HandshakeWait
		accepted int           // connections accepted when Quiesce returns
		left     int           // Handshakes.Left then
	}{
		{"waits for them", "10.77.0.1", false, 0, n, 0},
		{"waits for them, refreshed by dumps", "10.77.0.1", true, 0, n, 0},
		// IPv4 clients of a dual-stack listener: AF_INET6 request
		// sockets with IPv4-mapped addresses.
		{"waits for them on a dual-stack listener", "[::]", false, 0, n, 0},
		// Gives up at once: the queue alone settles before they complete.
		{"gives up at HandshakeWait", "10.77.0.1", false, time.Nanosecond, 0, n},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ln *net.TCPListener
			if err := delaylink.InNetns(p.Path(p.NetnsA), func() (err error) {
				ln, err = reuseport.Listen(context.Background(), fmt.Sprintf("%s:%d", tt.listen, 8000+i))
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			var accepted atomic.Int64
			go func() { // ends when ln closes
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					accepted.Add(1)
					c.Close()
				}
			}()

			start := time.Now()
			fds := connectFrom(t, p.Path(p.NetnsB), ln.Addr().(*net.TCPAddr), n)
			defer func() {
				for _, fd := range fds {
					unix.Close(fd)
				}
			}()
			time.Sleep(delay) // the SYNs arrive after one delay, the ACKs after three
			// sock_diag answers for the namespace of the thread that asks,
			// as a worker does in its own.
			var (
				hs   *reuseport.Handshakes
				snap int
			)
			err := delaylink.InNetns(p.Path(p.NetnsA), func() (err error) {
				// A snapshot (its first Refresh) once every SYN is in,
				// which a loaded host's copier can delay, and well before
				// the ACKs (3 × delay).
				for {
					hs = reuseport.NewHandshakes(ln)
					if tt.dumps {
						reuseport.AlwaysDump(hs)
					}
					if snap, err = hs.Refresh(); err != nil {
						return err
					}
					if snap == n || time.Since(start) > 2*delay {
						break
					}
					time.Sleep(10 * time.Millisecond)
				}
				return reuseport.Quiesce(context.Background(), ln, reuseport.QuiesceOptions{
					Settle: 20 * time.Millisecond, Handshakes: hs, HandshakeWait: tt.wait,
				})
			})
			took := time.Since(start)
			if err != nil {
				t.Fatal(err)
			}
			if snap != n {
				t.Fatalf("snapshot of %d handshakes under way; want %d", snap, n)
			}
			if got := accepted.Load(); int(got) != tt.accepted || hs.Left() != tt.left {
				t.Errorf("Quiesce returned after %v with %d accepted, %d handshakes left; want %d, %d", took, got, hs.Left(), tt.accepted, tt.left)
			}
			t.Logf("Quiesce returned after %v: %d accepted, %d handshakes left", took, accepted.Load(), hs.Left())
		})
	}
}

// connectFrom starts n connections to addr's port on 10.77.0.1 from
// sockets made in the network namespace at nsPath, without waiting for
// them.
func connectFrom(t *testing.T, nsPath string, addr *net.TCPAddr, n int) []int {
	t.Helper()
	var fds []int
	sa := &unix.SockaddrInet4{Port: addr.Port, Addr: [4]byte{10, 77, 0, 1}}
	err := delaylink.InNetns(nsPath, func() error {
		for range n {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			fds = append(fds, fd)
			if err := unix.Connect(fd, sa); err != nil && err != unix.EINPROGRESS {
				return err
			}
		}
		return nil
	})
	if err != nil {
		for _, fd := range fds {
			unix.Close(fd)
		}
		t.Fatal(err)
	}
	return fds
}

// BenchmarkHandshakesSnapshot measures one sock_diag dump of a port with
// no handshake under way: the kernel walks its whole established hash,
// so it costs more with more sockets on the host (TIME_WAIT included).
func BenchmarkHandshakesSnapshot(b *testing.B) {
	ln, err := reuseport.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	for b.Loop() {
		if _, err := reuseport.NewHandshakes(ln).Refresh(); err != nil {
			b.Fatal(err)
		}
	}
}
