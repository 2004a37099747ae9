// Package frameworks holds one small program per web framework run by the
// launcher: a gin, echo or chi router is an http.Handler, so
// launcher.App.Run serves it (or App.Serve, with an http.Server of one's
// own). They are built by scripts/test so that the README's copies of
// them stay true.
package frameworks
