package drain

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// shutQuiet is the decision to close a claimed connection, made in the
// kernel's terms: if a byte has arrived that the connection's reads have
// not accounted for, a request is arriving and the claim is given up;
// otherwise the claim is committed and the sending side shut down
// (SHUT_WR), so that the FIN leaves at once rather than whenever the
// descriptor is finally closed.
//
// A byte not accounted for is one in the socket's receive queue (SIOCINQ;
// closing a socket with unread bytes would send a reset), or, on a
// *net.TCPConn, one the kernel counts as received (TCP_INFO's
// tcpi_bytes_received, Linux ≥ 4.1) beyond those Read has counted: a read
// whose goroutine has taken the bytes but not yet run on to mark the
// connection, which under load can take milliseconds. Only a *net.TCPConn
// is compared so: a wrapper might read bytes it does not return. A
// connection without a descriptor has nothing to look at: it is only
// committed.
func (c *Conn) shutQuiet() bool {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return c.commit()
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return c.commit()
	}
	_, isTCP := c.Conn.(*net.TCPConn)
	shut := false
	err = rc.Control(func(fd uintptr) {
		if !c.quiet(int(fd), isTCP) {
			c.received()
			return
		}
		if !c.commit() {
			return // a read or the server took it back
		}
		shut = true
		unix.Shutdown(int(fd), unix.SHUT_WR)
	})
	if err != nil { // closed meanwhile: nothing more to decide
		return c.commit()
	}
	return shut
}

// quiet reports whether every byte received on fd has been read and
// accounted for.
func (c *Conn) quiet(fd int, isTCP bool) bool {
	if n, err := unix.IoctlGetInt(fd, unix.SIOCINQ); err == nil && n > 0 {
		return false
	}
	if !isTCP {
		return true
	}
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	// A kernel without the field leaves it 0, which no connection that
	// has been read from shows.
	if err != nil || info.Bytes_received == 0 {
		return true
	}
	return info.Bytes_received == c.rx.Load()
}
