package reuseport

import (
	"errors"
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// Classic BPF ancillary offsets (linux/filter.h); x/sys/unix lacks them.
// The offsets are negative in C; as a uint32 K field they wrap.
const (
	skfAdRXHash uint32 = 0xfffff000 + 32 // SKF_AD_OFF + SKF_AD_RXHASH
	skfAdRandom uint32 = 0xfffff000 + 56 // SKF_AD_OFF + SKF_AD_RANDOM
)

// maxSteerSlots bounds the jump table: classic BPF programs are limited to
// 4096 instructions and each slot takes two.
const maxSteerSlots = 2000

// steerProgram builds a classic BPF program for a reuseport group that
// returns one of slots for each new connection, chosen by the packet's
// flow hash (or a random number when the hash is zero, as on a NIC without
// hashing), so connections spread evenly over the chosen sockets.
func steerProgram(slots []int) ([]unix.SockFilter, error) {
	n := len(slots)
	if n == 0 || n > maxSteerSlots {
		return nil, fmt.Errorf("steer: %d slots (want 1..%d)", n, maxSteerSlots)
	}
	ld := uint16(unix.BPF_LD | unix.BPF_W | unix.BPF_ABS)
	prog := []unix.SockFilter{
		{Code: ld, K: skfAdRXHash},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: 0, Jt: 0, Jf: 1},
		{Code: ld, K: skfAdRandom},
		{Code: unix.BPF_ALU | unix.BPF_MOD | unix.BPF_K, K: uint32(n)},
	}
	for i, s := range slots {
		if s < 0 {
			return nil, fmt.Errorf("steer: negative slot %d", s)
		}
		prog = append(prog,
			unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: uint32(i), Jt: 0, Jf: 1},
			unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: uint32(s)},
		)
	}
	prog = append(prog, unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: uint32(slots[0])})
	return prog, nil
}

// Steer attaches to ln's reuseport group a program that sends every new
// connection to one of the sockets at the given slots (indices in the
// group, in listen order). It replaces any program the group had. Any
// member of the group may call it; the program stays with the group after
// ln closes. An index that is out of range when a connection arrives makes
// the kernel fall back to its normal hash over the whole group.
func Steer(ln *net.TCPListener, slots []int) error {
	prog, err := steerProgram(slots)
	if err != nil {
		return err
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	return control(ln, "steer", func(fd int) error {
		return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF, &fprog)
	})
}

// Unsteer detaches any program from ln's reuseport group, so the kernel
// spreads connections over all its sockets again. It is not an error when
// no program was attached.
func Unsteer(ln *net.TCPListener) error {
	return control(ln, "unsteer", func(fd int) error {
		err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DETACH_REUSEPORT_BPF, 0)
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return err
	})
}

// QueueLen returns how many established connections wait in ln's accept
// queue (for a listener, TCP_INFO's unacked field is the accept backlog).
func QueueLen(ln *net.TCPListener) (int, error) {
	var n int
	err := control(ln, "queue length", func(fd int) error {
		info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return err
		}
		n = int(info.Unacked)
		return nil
	})
	return n, err
}

// control runs f on ln's file descriptor and wraps its error with what.
func control(ln *net.TCPListener, what string, f func(fd int) error) error {
	rc, err := ln.SyscallConn()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if ferr != nil {
		return fmt.Errorf("%s %s: %w", what, ln.Addr(), ferr)
	}
	return nil
}
