//go:build !linux

package drain

// shutQuiet commits a claimed connection to its close. Elsewhere than on
// Linux the drain does not look at the socket's receive queue (SIOCINQ):
// only a byte read since the connection became idle keeps it open.
func (c *Conn) shutQuiet() bool { return c.commit() }
