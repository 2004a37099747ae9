// Package launcher is the app side of the launcher: the few calls a Go
// network service makes so that it can be upgraded without dropping a
// request.
//
// Under the launcher supervisor (launcher start -- ./app), an [App] reads
// its generation, listen addresses and control socket from the environment,
// binds every address with SO_REUSEPORT when the supervisor grants it,
// tells the supervisor when it is ready, and drains when told to. The
// supervisor then steers new connections to the new generation, empties the
// old listeners' accept queues and only then closes them, so no connection
// is reset. Metrics and a health check are served on a private admin unix
// socket for the supervisor to gather.
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
// Other servers use [App.Listen], [App.Ready] and [App.Stopping].
package launcher
