package reuseport

import "slices"

// Group models the socket order of a kernel reuseport group, so that a
// steering program can name sockets by index. The kernel appends a socket
// at listen(); when one leaves, the last socket moves into its slot. The
// model is exact only when every join and leave is reported in the order
// the kernel saw them, which is why the launcher serialises listen() of
// its workers.
//
// The zero value is an empty group. It is not safe for concurrent use.
type Group[K comparable] struct {
	socks []K
}

// Join records that the socket owned by k called listen().
func (g *Group[K]) Join(k K) { g.socks = append(g.socks, k) }

// Leave records that the socket owned by k closed. It reports false when k
// was not in the group.
func (g *Group[K]) Leave(k K) bool {
	for i, s := range g.socks {
		if s == k {
			last := len(g.socks) - 1
			g.socks[i] = g.socks[last]
			g.socks = g.socks[:last]
			return true
		}
	}
	return false
}

// Slots returns the indices of the sockets whose owner satisfies keep, in
// ascending order.
func (g *Group[K]) Slots(keep func(K) bool) []int {
	var out []int
	for i, s := range g.socks {
		if keep(s) {
			out = append(out, i)
		}
	}
	return out
}

// Len returns the number of sockets in the group.
func (g *Group[K]) Len() int { return len(g.socks) }

// Members returns the owners in slot order.
func (g *Group[K]) Members() []K { return append([]K(nil), g.socks...) }

// StableSlots returns the indices of the sockets whose owner satisfies
// keep and whose index stays the same while the sockets of leaving close,
// one after the other in any order: of a group of n with m of them
// leaving, every other socket below index n-m (each close moves the last
// socket into the freed slot, and only a socket that is last at some
// close can move; all those at n-m and above must, as the group shrinks
// to n-m). A program steering to them is exact before, during and after
// those closes, so no connection falls back to the kernel's own choice
// (which could be another socket about to close) in between, and the
// closes need no re-steer between them. Owners of leaving not in the
// group are ignored.
func (g *Group[K]) StableSlots(leaving []K, keep func(K) bool) []int {
	m := 0
	for _, s := range g.socks {
		if slices.Contains(leaving, s) {
			m++
		}
	}
	var out []int
	for i, s := range g.socks[:len(g.socks)-m] {
		if keep(s) && !slices.Contains(leaving, s) {
			out = append(out, i)
		}
	}
	return out
}
