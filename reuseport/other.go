//go:build !linux

package reuseport

import (
	"fmt"
	"net"
	"runtime"
	"time"
)

// This file lets the packages that import reuseport build on a
// developer's laptop (macOS, Windows). Steering a reuseport group with a
// classic BPF program, reading the accept queue's length from TCP_INFO
// and finding half-open handshakes with sock_diag are Linux only, so each
// of those returns ErrNotSupported here.

// Steer returns ErrNotSupported: SO_ATTACH_REUSEPORT_CBPF is Linux only.
func Steer(ln *net.TCPListener, slots []int) error { return notSupported("steer") }

// Unsteer returns ErrNotSupported: SO_DETACH_REUSEPORT_BPF is Linux only.
func Unsteer(ln *net.TCPListener) error { return notSupported("unsteer") }

// QueueLen returns ErrNotSupported: a listener's TCP_INFO is Linux only.
func QueueLen(ln *net.TCPListener) (int, error) { return 0, notSupported("queue length") }

// MigrateReq returns ErrNotSupported: net.ipv4.tcp_migrate_req is Linux
// only.
func MigrateReq() (bool, error) { return false, notSupported("tcp_migrate_req") }

// Handshakes are, on Linux, the TCP handshakes under way on a listener's
// port; here none is ever known (sock_diag is Linux only).
type Handshakes struct{ created time.Time }

// NewHandshakes returns handshakes that never hold any.
func NewHandshakes(ln *net.TCPListener) *Handshakes { return &Handshakes{created: time.Now()} }

// Created returns when h was made.
func (h *Handshakes) Created() time.Time { return h.created }

// Left returns 0.
func (h *Handshakes) Left() int { return 0 }

// Err returns ErrNotSupported.
func (h *Handshakes) Err() error { return notSupported("handshakes") }

// Refresh returns ErrNotSupported.
func (h *Handshakes) Refresh() (int, error) { return 0, h.Err() }

// Snapshot returns 0 handshakes.
func (h *Handshakes) Snapshot() (n int, took time.Duration) { return 0, 0 }

func notSupported(what string) error {
	return fmt.Errorf("%s on %s: %w", what, runtime.GOOS, ErrNotSupported)
}
