package launcher

import (
	"time"
)

// Request is one request of a server that is not [App.Run]'s or
// [App.Serve]'s (a gRPC call, a command of a TCP protocol), counted from
// [App.Begin] to [Request.End]. It is a small value: neither call
// allocates, so they suit an interceptor on every call.
type Request struct {
	a     *App
	start time.Time
}

// Begin counts a request in flight (launcher_inflight_requests, which the
// supervisor reads to follow a generation's drain) until its End.
func (a *App) Begin() Request {
	a.tracker.RequestStarted()
	return Request{a: a, start: time.Now()}
}

// End counts the request as done with code, an HTTP status code (200 for
// success; map other protocols' outcomes onto the nearest), in
// launcher_requests_total and launcher_request_duration_seconds, and no
// longer in flight. Call it once per Begin.
func (r Request) End(code int) {
	r.a.tracker.RequestDone()
	r.a.metrics.ObserveRequest(code, time.Since(r.start))
}
