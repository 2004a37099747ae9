package reuseport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Handshakes are the TCP handshakes under way on a listener's port once
// it was steered away from, and which of them are still under way.
//
// A listener that answered a SYN holds a request socket (state
// TCP_NEW_SYN_RECV) until the client's final ACK comes, one round trip
// later; only then does the connection enter the accept queue. Closing the
// listener meanwhile drops the request socket, and the client, which
// already thinks itself connected, is reset when its ACK or its request
// arrives. On a slow link (20–300 ms away) that is a round trip's worth
// of new connections, and a settle of the accept queue alone does not see
// them.
//
// Once new SYNs are steered away from a listener, only request sockets
// that exist already can still complete on it. The first [Handshakes.Refresh]
// takes their snapshot; it may come a little after the steering, as a
// request socket that completed meanwhile is in the accept queue and
// later ones are other sockets'. The kernel does not say which socket of a
// reuseport group owns a request socket, so the snapshot holds all of
// them on the port (and address family): waiting for those of other
// sockets too is safe, at worst a round trip slower.
//
// They are read without privilege through sock_diag(7) on a
// NETLINK_SOCK_DIAG socket, with the inet_diag_req_v2 request of
// include/uapi/linux/inet_diag.h. The snapshot is a SOCK_DIAG_BY_FAMILY
// dump of TCP sockets in state TCP_NEW_SYN_RECV with the listener's local
// port: the kernel walks its whole established hash, where request sockets
// live, and filters on the state and idiag_sport itself (tcp_diag_dump in
// net/ipv4/tcp_diag.c; inet_diag.c before Linux 6.15). Each request
// socket answers with its address and socket cookie (inet_req_diag_fill),
// and a later request for exactly that socket (tcp_diag_dump_one) tells
// whether it is still there: ENOENT once it was dropped, or the socket
// its handshake made (which keeps the cookie) in a state past SYN_RECV
// once it completed. The answers
// cover the network namespace of the thread that asks, which for a
// process serving its own listeners is theirs.
//
// A Handshakes is safe for concurrent use.
type Handshakes struct {
	ln      *net.TCPListener
	created time.Time

	mu      sync.Mutex // held by Refresh while it asks the kernel
	snapped bool
	family  uint8
	port    uint16
	// left holds the request sockets of the snapshot not yet seen gone,
	// by cookie.
	left map[uint64]*requestSock
	// dumpCost is how long the snapshot's dump took: a Refresh asks
	// about each request socket left only while that is cheaper, at
	// lookupCost each.
	dumpCost, lookupCost time.Duration
	snapN                int // request sockets in the snapshot
	err                  error
}

// requestSock is a request socket of the snapshot.
type requestSock struct {
	id     [sizeofSockID]byte // struct inet_diag_sockid, as the kernel sent it
	misses int                // dumps in a row that missed it
}

// Request sockets are taken as gone once this many dumps in a row miss
// them: a dump of many sockets comes in parts, and one whose hash bucket
// changes between two parts can skip an entry.
const goneAfterMisses = 2

// lookupCost is about what asking for one socket by its address costs (a
// netlink round trip and a hash lookup): beyond dumpCost/lookupCost
// request sockets, one dump is cheaper.
const lookupCost = 10 * time.Microsecond

// inet_diag (include/uapi/linux/inet_diag.h, include/net/tcp_states.h).
const (
	tcpSynRecv        = 3  // TCP_SYN_RECV: how a request socket is reported
	tcpNewSynRecv     = 12 // TCP_NEW_SYN_RECV: how it is asked for
	sizeofSockID      = 48 // struct inet_diag_sockid
	sizeofInetDiagReq = 56 // struct inet_diag_req_v2: 8 bytes, then the sockid
	sizeofInetDiagMsg = 72 // struct inet_diag_msg: 4 bytes, the sockid, 20 bytes
	sockIDCookie      = 40 // offsetof(struct inet_diag_sockid, idiag_cookie)
)

// NewHandshakes returns the handshakes of ln to wait for, counted from
// now. The snapshot is taken by the first Refresh.
func NewHandshakes(ln *net.TCPListener) *Handshakes {
	return &Handshakes{ln: ln, created: time.Now(), left: map[uint64]*requestSock{}, lookupCost: lookupCost}
}

// Created returns when h was made: the wait for its handshakes is counted
// from then.
func (h *Handshakes) Created() time.Time { return h.created }

// Left returns how many handshakes of the snapshot were still under way
// at the last Refresh.
func (h *Handshakes) Left() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.left)
}

// Err returns the error of the last Refresh, if it failed. When the
// snapshot itself failed (no sock_diag), no handshake is known to wait
// for.
func (h *Handshakes) Err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err
}

// Refresh asks the kernel which handshakes of the snapshot are still
// under way, taking the snapshot on the first call, and returns how many.
// A handshake is gone once it completed (its connection is in an accept
// queue) or was dropped (reset, or the SYN-ACK retransmits gave up). On
// error nothing is forgotten.
func (h *Handshakes) Refresh() (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.snapped && len(h.left) == 0 {
		return 0, nil
	}
	c, err := netlink.Dial(unix.NETLINK_INET_DIAG, nil)
	if err != nil {
		h.err = fmt.Errorf("sock_diag: %w", err)
		h.snapped = true
		return len(h.left), h.err
	}
	defer c.Close()
	if !h.snapped {
		h.err = h.snapshot(c)
		h.snapped = true
		return len(h.left), h.err
	}
	if time.Duration(len(h.left))*h.lookupCost < h.dumpCost {
		h.err = h.lookupEach(c)
	} else {
		h.err = h.redump(c)
	}
	return len(h.left), h.err
}

// snapshot records the request sockets on the listener's port.
func (h *Handshakes) snapshot(c *netlink.Conn) error {
	err := control(h.ln, "handshakes", func(fd int) error {
		sa, err := unix.Getsockname(fd)
		if err != nil {
			return err
		}
		switch sa := sa.(type) {
		case *unix.SockaddrInet4:
			h.family, h.port = unix.AF_INET, uint16(sa.Port)
		case *unix.SockaddrInet6:
			h.family, h.port = unix.AF_INET6, uint16(sa.Port)
		default:
			return fmt.Errorf("not a TCP/IP socket: %T", sa)
		}
		return nil
	})
	if err != nil {
		return err
	}
	start := time.Now()
	socks, err := h.dump(c)
	h.dumpCost = time.Since(start)
	if err != nil {
		return err
	}
	for cookie, id := range socks {
		h.left[cookie] = &requestSock{id: id}
	}
	h.snapN = len(h.left)
	return nil
}

// Snapshot returns how many handshakes the snapshot found and how long
// taking it took (0, 0 before the first Refresh).
func (h *Handshakes) Snapshot() (n int, took time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.snapN, h.dumpCost
}

// redump forgets the request sockets that dumps keep missing.
func (h *Handshakes) redump(c *netlink.Conn) error {
	socks, err := h.dump(c)
	if err != nil {
		return err
	}
	for cookie, r := range h.left {
		if _, ok := socks[cookie]; ok {
			r.misses = 0
		} else if r.misses++; r.misses >= goneAfterMisses {
			delete(h.left, cookie)
		}
	}
	return nil
}

// lookupEach asks for each request socket left by its address and cookie,
// and forgets those the kernel no longer has.
func (h *Handshakes) lookupEach(c *netlink.Conn) error {
	for cookie, r := range h.left {
		msgs, err := c.Execute(netlink.Message{
			Header: netlink.Header{Type: unix.SOCK_DIAG_BY_FAMILY, Flags: netlink.Request},
			Data:   h.request(r.id),
		})
		switch {
		case err == nil:
			// The connection a handshake makes keeps its cookie
			// (inet_csk_clone_lock), and so does its TIME_WAIT: the
			// state tells them apart from the request socket.
			if len(msgs) == 0 || len(msgs[0].Data) < sizeofInetDiagMsg || msgs[0].Data[1] != tcpSynRecv {
				delete(h.left, cookie)
			}
		case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ESTALE):
			// No socket with the address, or one with another cookie
			// (ESTALE from sock_diag_check_cookie, in some kernels).
			delete(h.left, cookie)
		default:
			return fmt.Errorf("sock_diag: %w", err)
		}
	}
	return nil
}

// dump returns the request sockets on the listener's port, by cookie.
func (h *Handshakes) dump(c *netlink.Conn) (map[uint64][sizeofSockID]byte, error) {
	var id [sizeofSockID]byte
	binary.BigEndian.PutUint16(id[0:], h.port) // idiag_sport
	msgs, err := c.Execute(netlink.Message{
		Header: netlink.Header{Type: unix.SOCK_DIAG_BY_FAMILY, Flags: netlink.Request | netlink.Dump},
		Data:   h.request(id),
	})
	if err != nil {
		return nil, fmt.Errorf("sock_diag: %w", err)
	}
	socks := make(map[uint64][sizeofSockID]byte, len(msgs))
	for _, m := range msgs {
		if m.Header.Flags&netlink.DumpInterrupted != 0 {
			return nil, errors.New("sock_diag: dump interrupted")
		}
		d := m.Data
		if len(d) < sizeofInetDiagMsg {
			return nil, fmt.Errorf("sock_diag: short inet_diag_msg (%d bytes)", len(d))
		}
		copy(id[:], d[4:4+sizeofSockID])
		// The kernel filtered by state and port; check them anyway.
		// inet_req_diag_fill reports a request socket as TCP_SYN_RECV.
		if d[1] != tcpSynRecv && d[1] != tcpNewSynRecv || binary.BigEndian.Uint16(id[0:]) != h.port {
			continue
		}
		lo := binary.NativeEndian.Uint32(id[sockIDCookie:])
		hi := binary.NativeEndian.Uint32(id[sockIDCookie+4:])
		socks[uint64(hi)<<32|uint64(lo)] = id
	}
	return socks, nil
}

// request encodes an inet_diag_req_v2 for TCP request sockets of h's
// family with the given socket id.
func (h *Handshakes) request(id [sizeofSockID]byte) []byte {
	req := make([]byte, sizeofInetDiagReq)
	req[0] = h.family                                        // sdiag_family
	req[1] = unix.IPPROTO_TCP                                // sdiag_protocol
	binary.NativeEndian.PutUint32(req[4:], 1<<tcpNewSynRecv) // idiag_states
	copy(req[8:], id[:])
	return req
}
