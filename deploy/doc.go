// Package deploy holds the files that run launcher in production, kept next
// to the code (see DESIGN.md): among them the Prometheus configuration and
// alerting rules in deploy/prometheus, and the Grafana dashboard with its
// provisioning examples in deploy/grafana.
//
// It has no Go API. Its tests check those files with real tools: promtool
// validates the Prometheus configuration and runs the rules' unit tests, and
// a real Prometheus (see internal/promtest) evaluates every query of the
// Grafana dashboard against a sample supervisor that exports each series of
// the metrics contract.
package deploy
