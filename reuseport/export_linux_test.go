package reuseport

import "time"

// AlwaysDump makes h's refreshes dump the port's request sockets rather
// than ask for each.
func AlwaysDump(h *Handshakes) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lookupCost = time.Hour
}
