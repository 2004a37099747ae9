// Package reuseport listens with SO_REUSEPORT and hands a port over from
// one generation of a service to the next without losing connections.
//
// Several processes of the same user may listen on one TCP address when
// each socket sets SO_REUSEPORT; the kernel keeps them in a "reuseport
// group" and spreads new connections over it. Closing a listener resets
// every connection still queued on it, so a plain close loses requests
// under load. This package gives the pieces of a lossless handover:
//
//   - [Listen] binds with SO_REUSEPORT (and without Multipath TCP, on which
//     the kernel refuses a steering program).
//   - [Steer] attaches a classic BPF program to the whole group that sends
//     every new connection to a chosen set of sockets, named by their index
//     in the group. Indices are the order of listen(); when a socket
//     leaves, the last one moves into its slot ([Group] models that).
//   - [Drain] waits until no handshake that was under way when the
//     listener was steered away from can still complete on it
//     ([Handshakes], read through sock_diag), and then its accept queue
//     has stayed empty for a settle time, while the caller keeps
//     accepting; then it closes the listener. [Quiesce] waits the same
//     way and leaves it open.
//
// The launcher supervisor uses them in this order: steer to the new
// generation, quiesce the old listeners at once, then close them in turn,
// in runs under a program that names only sockets no close of the run
// moves ([Group.StableSlots]), and steer to every new socket after each
// run. See the launcher package for the whole flow.
package reuseport
