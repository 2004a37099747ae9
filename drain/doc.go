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
//   - a connection is closed only when it has been idle for a grace period,
//     and idle means that nothing has arrived on it (below);
//   - idle connections are closed a few at a time (at most 5,000 a second),
//     not in one sweep;
//   - HTTP/2 connections get two GOAWAYs (below), the final one through
//     http.Server.Shutdown at the end;
//   - hijacked connections (WebSocket-style) stay open, the app is told
//     through [Tracker.Draining], and they are force-closed only at the
//     drain deadline.
//
// # Idle: nothing received that is not answered
//
// A connection that has received a byte it has not answered is busy. For
// a connection of a [Server] (HTTP/1) that means: it is idle only while
// net/http waits for a request on it (it reported [net/http.StateNew] or
// [net/http.StateIdle], so every request it parsed has been answered) and
// no [Conn.Read] has returned data since. The first byte of a request
// makes it busy, not the end of its header: a client that sends its header
// slowly is not cut as idle. It stays busy until net/http reports it idle
// again, after the response to that request; if the drain's deadline
// comes first, it is cut there and counted among the requests cut.
//
// Bytes that have reached the socket but that no Read has accounted for
// count too. Before closing an idle connection the drain looks, in one
// callback on its descriptor and on Linux: at the receive queue (SIOCINQ),
// where a request waits that net/http has not read yet (closing the
// socket then would send a reset); and at the kernel's count of bytes
// received on the TCP connection (TCP_INFO), which is above the count of
// bytes Read has returned while a read has taken a request but its
// goroutine has not yet run on to mark the connection (under load that
// can take milliseconds). If either shows a byte, the connection is busy.
// Otherwise it shuts down its sending side at once (SHUT_WR), so the FIN
// leaves right after the check; the descriptor is closed afterwards. A
// Read that returns data marks the connection before it adds to the
// count, and the drain claims the connection before the check and
// commits to the close after it, each by compare-and-swap on the same
// state: a read that marks it after the claim takes it back (the commit
// fails); one that would mark it only after the commit cannot have taken
// bytes that arrived before the check, since the check would have seen
// them uncounted.
//
// What is left is the network's own race, which no server can close: a
// request that a client sends after the check but before the FIN reaches
// it (on loopback, within the microseconds between two system calls; on a
// network, within a round trip) is not answered. HTTP/1.1 clients retry
// such a request when it is idempotent (RFC 9112, section 9.3.1).
//
// HTTP/1 pipelining: bytes that net/http reads ahead while a request is
// active — a pipelined request read together with its predecessor, or
// the one byte of net/http's background read that watches for the client
// going away — cannot be told apart from the active request's own. When
// net/http reports the connection idle after the response, such a
// pipelined request is complete in its buffer and served at once (the
// connection is active again long before any grace), or incomplete, and
// its next byte to arrive marks the connection busy. Only a pipelining
// client that stalls mid-request for longer than the grace can see its
// request closed on. During a drain every response closes its connection,
// which leaves any request pipelined behind it to the client to retry, as
// HTTP/1.1 provides (RFC 9112, section 9.3.2).
//
// TLS: before its first request a connection reads mostly the TLS
// handshake, whose end net/http does not report, and handshake bytes must
// not make it busy (else every connection a browser opens ahead of use
// would be kept until the deadline). So a [Server] follows the headers of
// the TLS records (RFC 8446, section 5.1) its client sends until then: the
// first byte of the first request's record makes the connection busy, as
// over plain TCP, however long ago the handshake ended. Over TLS 1.2 that
// is the first application_data record; over TLS 1.3, the one after the
// client's Finished. Which applies is told by a GetConfigForClient that
// ServeTLS sets on a copy of the server's TLSConfig (it calls the app's
// own, if set). When the records cannot tell (TLS 1.3 with a client
// certificate asked for, whose Certificate and Finished crypto/tls may
// read together), the connection counts as busy only from its first
// request's whole header, the receive-queue and byte-count checks still
// applying. From its first request on it is tracked as above.
//
// # HTTP/2: two GOAWAYs
//
// Go's HTTP/2 server shuts down gracefully with one GOAWAY naming the last
// stream it has seen, and then ignores frames of any later stream (RFC
// 9113, section 6.8): a stream the client opens while the GOAWAY travels
// is refused. A [Server] therefore serves HTTP/2 (over TLS, and h2c with
// prior knowledge when its http.Server's Protocols allow unencrypted
// HTTP/2) through golang.org/x/net/http2 on a connection that follows the
// frames both ways, and a drain begins with these steps on each HTTP/2
// connection, at a frame boundary after the server's SETTINGS:
//
//  1. a PING, and the server's writes wait for its ACK, so that the
//     client has sent what it queued and reads what follows afresh
//     (nghttp2 fails by itself the requests it queued before a GOAWAY it
//     read in the same read);
//  2. GOAWAY naming stream 2^31-1 with NO_ERROR, which stops new streams
//     and refuses none, and a second PING;
//  3. once the server has read the second PING's ACK, which the client
//     sent after every stream it opened before seeing the GOAWAY, and has
//     processed it (the server reads the next frame only after processing
//     one), http.Server.Shutdown sends the final GOAWAY, naming the last
//     of those streams, and waits for them.
//
// Each ACK is awaited at most [GoAwayAckTimeout]; a connection the server
// itself sent a GOAWAY on (its last stream ID may not rise) skips the
// steps. An app that sets TLSNextProto serves HTTP/2 its own way and gets
// Go's one-phase GOAWAY.
//
// A plain TCP server marks its connections with [Conn.SetIdle]; an
// unmarked connection is busy, and one marked idle becomes busy again
// when a Read returns data, until the server marks it idle again.
//
// [Listener] gives the same tracking to a plain TCP server. The counters
// ([Tracker.Stats]) are atomics on the request path; the metrics package
// exports them.
package drain
