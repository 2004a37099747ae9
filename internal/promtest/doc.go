// Package promtest runs a real Prometheus server for integration tests.
//
// [Start] launches the prometheus binary (from PATH, or /usr/bin/prometheus
// as installed by Debian's "prometheus" package) on a free 127.0.0.1 port,
// with a temporary configuration that scrapes the given targets every second
// under job "launcher" and a TSDB in a test temporary directory. It returns
// once the server reports ready, and stops it when the test ends.
//
// [Server.Query], [Server.QueryRange] and [Server.WaitFor] go through the
// HTTP query API (/api/v1/query and /api/v1/query_range), so a test sees
// exactly what a dashboard or an alerting rule would: metric names, labels
// and PromQL are checked by Prometheus itself, not by a mock.
//
// [Promtool] finds the promtool binary shipped with Prometheus, for tests
// that check configuration and rule files.
//
// When a binary is missing, these helpers skip the test, unless the
// environment variable CI is true: there a missing binary is a broken CI
// image, and the test fails instead.
//
// The package has no dependencies outside the standard library.
package promtest
