// Package echo is a WebSocket echo service that hands its clients over to
// the next generation when the launcher drains it, and a client that
// follows them there without losing a message.
//
// A WebSocket is a hijacked HTTP connection: the drain of package drain
// cannot close it as idle (it does not know the protocol), so it waits for
// it until the drain's deadline, then cuts it, which the client sees as a
// reset (close code 1006). [Server] does better: it keeps its open sockets
// in a set owned by one goroutine, and when the generation starts draining
// (launcher.App.Stopping is closed) it sends each a close frame with
// status 1001 "going away" (RFC 6455, section 7.4.1). The handlers
// return, the drain completes, and the clients reconnect to the same
// address, where the reuseport steering has already sent new connections
// to the new generation.
//
// [Client] sends numbered messages and keeps those not yet echoed; on any
// end of its connection it dials again and first resends them, so that
// every message is echoed, and exactly once when connections end with a
// close frame: the server writes an echo before its close frame or not at
// all, and TCP delivers them in that order.
package echo
