package loadgen

import (
	"errors"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// writeIfOpen writes req on c unless the server has closed c, and reports
// whether it wrote. The check is the way a client learns that a server
// closed an idle connection: recv with MSG_PEEK|MSG_DONTWAIT returns 0 at
// the server's FIN and EAGAIN while the connection is open and quiet. The
// check and the write are two system calls back to back, so that the
// client's own share of the race with a server closing the connection is
// as short as it can be (net/http's Transport learns of the FIN from a
// read it keeps pending, some scheduling later). A request of a few
// hundred bytes fits in any socket buffer: the write does not block.
func writeIfOpen(c net.Conn, req []byte) (bool, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		_, err := c.Write(req)
		return true, err
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false, err
	}
	var (
		sent bool
		werr error
		buf  [1]byte
	)
	if err := rc.Control(func(fd uintptr) {
		n, _, err := unix.Recvfrom(int(fd), buf[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if (err == nil && n == 0) || (err != nil && !errors.Is(err, unix.EAGAIN)) {
			return // closed (FIN or reset): a client would dial again
		}
		sent = true
		m, err := unix.Write(int(fd), req)
		if err == nil && m < len(req) {
			err = errors.New("short write")
		}
		werr = err
	}); err != nil {
		return false, err
	}
	return sent, werr
}

// RaiseNoFile makes sure this process may open n files: it raises the
// soft RLIMIT_NOFILE to n, and the hard one too when it is lower and the
// process may (as root). Thousands of connections need it where the
// default is 1024. The limit is this process's only.
func RaiseNoFile(n uint64) error {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if lim.Cur >= n {
		return nil
	}
	want := unix.Rlimit{Cur: n, Max: max(lim.Max, n)}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &want); err != nil {
		return fmt.Errorf("raise RLIMIT_NOFILE from %d (hard %d) to %d: %w", lim.Cur, lim.Max, n, err)
	}
	return nil
}
