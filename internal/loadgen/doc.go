// Package loadgen is the client side of the upgrade benchmark: it drives
// HTTP/1.1 load at a service on a loopback address while the caller
// upgrades that service, and it counts every failed request.
//
// The service under test answers GET / and POST / with the body
// "hello from VERSION\n", and GET|POST /sleep?d=DURATION after sleeping
// that long (see cmd/hello).
//
// # No silent retries
//
// Each worker owns a hand-written HTTP/1.1 client on a raw net.Conn: it
// writes the request bytes itself and parses the answer with
// http.ReadResponse. net/http's Transport is deliberately not used, because
// it retries some failed requests on a fresh connection without telling
// anyone. Here a request that fails is recorded as failed, the connection
// is dropped, and the next request dials a new one.
//
// # Modes
//
//   - [NewConn]: one TCP connection per request, sent with "Connection: close".
//   - [KeepAlive]: persistent connections reused for many requests.
//   - [Long]: persistent connections, each request to /sleep?d=X with X
//     random in [Config.SleepMin, Config.SleepMax] (1–5 s by default), so
//     some requests are always in flight while an upgrade happens.
//
// In the persistent modes the client honors "Connection: close" (and
// HTTP/1.0 semantics, see http.Response.Close): the connection is closed
// after that response and the next request dials; this is not a failure.
//
// # Failure classes
//
// Every request ends in exactly one [Class]: [OK], [Refused] (ECONNREFUSED
// on dial), [Reset] (ECONNRESET, EPIPE or ECONNABORTED), [EOF] (the
// connection ended before a full response), [Timeout] (the per-request
// deadline passed), [Non2xx] (a full response whose status is not 2xx) or
// [Other] (anything else, e.g. a malformed response or EADDRNOTAVAIL).
//
// # Records and windows
//
// [Run] stores one 8-byte record per request (start offset, latency, class,
// version) and returns them in a [Result]. Upgrade windows are marked by the
// caller, during or after the run (a [WindowLog] is safe for concurrent
// use), and [Result.Summarize] splits the latency percentiles between
// requests that started inside a window and the steady state. [WriteTable]
// prints summaries as an aligned table.
//
// # Idle connections and slow clients
//
// Two clients that a drain must not cut, for its tests: an [IdlePool] of
// keep-alive connections that sit idle and then send one request each at
// set times (checking first, as a client reusing an idle connection does,
// that the server has not closed it), and [SlowRequest], which sends a
// request header a line at a time.
//
// Stopping: when Config.Duration has passed or Config.MaxRequests requests
// have been started, no new request starts and requests in flight finish
// (each is bounded by its own deadline). When the context passed to Run is
// cancelled, requests in flight are cut off and counted in Result.Aborted,
// not as failures.
package loadgen
