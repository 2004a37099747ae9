package reuseport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"

	goreuseport "github.com/libp2p/go-reuseport"
)

// ErrAddrHeld is returned by [Listen] when the address is held by a socket
// that did not set SO_REUSEPORT, or by another user: the kernel then refuses
// to add a socket to the group.
var ErrAddrHeld = errors.New("address in use by a socket without SO_REUSEPORT or of another user")

// ErrNotSupported is returned on systems other than Linux by what needs
// the Linux kernel: steering ([Steer]), the accept queue's length
// ([QueueLen]), half-open handshakes ([Handshakes]). The package builds
// everywhere so that apps importing it build on macOS and Windows too.
var ErrNotSupported = errors.New("not supported on this system (the launcher needs Linux)")

// Listen binds a TCP listener on addr with SO_REUSEPORT set.
//
// Multipath TCP is turned off: since Go 1.24 the default listener may be an
// MPTCP socket, on which SO_ATTACH_REUSEPORT_CBPF fails with EOPNOTSUPP.
func Listen(ctx context.Context, addr string) (*net.TCPListener, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("listen %q: bad address: %w", addr, err)
	}
	lc := net.ListenConfig{Control: goreuseport.Control}
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("listen %s: %w", addr, ErrAddrHeld)
		}
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	return ln.(*net.TCPListener), nil
}
