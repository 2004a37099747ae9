package reuseport

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
// keep and whose index stays the same when k leaves: all but k's own and,
// unless k is last, the last one, which the kernel moves into k's slot. A
// program steering to them is exact both before and after k's socket
// closes, so no connection falls back to the kernel's own choice (which
// could be another socket about to close) in between.
func (g *Group[K]) StableSlots(k K, keep func(K) bool) []int {
	idx := -1
	for i, s := range g.socks {
		if s == k {
			idx = i
		}
	}
	last := len(g.socks) - 1
	var out []int
	for i, s := range g.socks {
		if i == idx || (i == last && idx != last && idx >= 0) || !keep(s) {
			continue
		}
		out = append(out, i)
	}
	return out
}
