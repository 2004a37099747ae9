// Package drain tracks in-flight work and stops a server gracefully, with
// no error visible to clients.
//
// It follows net/http's Server.Shutdown but fixes the race that makes every
// Shutdown-based upgrade lose requests of keep-alive clients: Shutdown
// closes idle connections at once, while a client may be sending its next
// request on one. Here, during a drain:
//
//   - each response carries "Connection: close", so an active client learns
//     to reconnect (to the new generation) after its current request;
//   - a connection is closed only when it has been idle for a grace period;
//   - HTTP/2 connections get GOAWAY through http.Server.Shutdown at the end;
//   - hijacked connections (WebSocket-style) stay open, the app is told
//     through [Tracker.Draining], and they are force-closed only at the
//     drain deadline.
//
// [Listener] gives the same tracking to a plain TCP server. The counters
// ([Tracker.Stats]) are atomics on the request path; the metrics package
// exports them.
package drain
