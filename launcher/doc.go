// Package launcher is the app side of the launcher: the few calls a Go
// network service makes so that it can be upgraded without dropping a
// request.
//
// Under the launcher supervisor (launcher start -- ./app), an [App] reads
// its generation, listen addresses and control socket from the environment,
// binds every address with SO_REUSEPORT when the supervisor grants it, and
// tells the supervisor when it is ready. The supervisor then steers new
// connections to the new generation. The old one first stands by for the
// probation: it keeps its listeners, gets no new connection, and hands its
// keep-alive clients over (Connection: close on their next response), so
// that traffic can go straight back to it should the new generation crash.
// Then it is released: its accept queues are emptied before its listeners
// close, so no connection is reset, and [App.Stopping] is closed for the
// drain. Metrics and a health check are served on a private admin unix
// socket for the supervisor to gather. Once [App.Run]'s drain is over, a
// worker waits (at most 2 s) until the supervisor has read its metrics
// one last time, so that its final counts outlive it in the supervisor's
// /metrics.
//
// Should the supervisor die, the workers serve on. A worker that was ready
// dials the control socket again (after 50 ms, backing off to once a
// second), so that a new launcher start on the same state directory adopts
// it. The App says
// hello with the newest control protocol and falls back to an older
// supervisor's, so the launcher and the app can be upgraded in either
// order.
//
// Run without a supervisor, the same binary still works: it listens on
// [Options.Addr], writes [Options.PIDFile], drains on SIGTERM, and on SIGHUP
// starts its own executable path again (a "current" symlink is re-resolved)
// and hands the port over to the new process: the classic
// kill -HUP $(cat app.pid) flow, without passing file descriptors.
//
// For an HTTP service, [App.Run] does everything:
//
//	app, err := launcher.New(launcher.Options{Addr: ":8080"})
//	if err != nil { log.Fatal(err) }
//	err = app.Run(ctx, mux)
//
// [App.Serve] does the same with an http.Server configured by the caller
// (timeouts, ErrorLog, TLSConfig).
//
// Other servers (plain TCP, gRPC) take the same steps one call each:
// [App.Listen], [App.Ready], [App.Wait] (signals; returns once
// [App.Stopping] is closed), a drain within [App.DrainContext], and
// [App.Drained] with the count cut at the deadline; [App.Begin] and
// [Request.End] count their requests in the launcher's metrics. See
// ExampleApp_Drained, and examples/grpc in the repository.
//
// The launcher runs on Linux only. The package builds on macOS and
// Windows, where [New] returns [ErrNotSupported], so that an app that
// imports it builds on a developer's laptop.
package launcher
