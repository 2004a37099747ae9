// Package metrics holds the launcher's Prometheus collectors.
//
// A worker registers a [Worker] on an explicit registry and serves it on its
// admin unix socket (never on the shared port, where a scrape would reach a
// random generation). The supervisor registers a [Supervisor] for its own
// series and, at each scrape, gathers every live worker's series with
// [GatherWorkers], adding generation, version and worker labels, so an
// app's own metrics come through the same path and keep working across
// upgrades. Once a worker has drained, the supervisor reads its series a
// last time and serves what of them outlives it ([Freeze]: counters,
// histograms and summaries, with the same labels) as a [Target]'s Final,
// for a while after the worker has exited, so that no scrape misses the
// requests of its last moments. During an upgrade's canary and probation
// the supervisor's judge reads the same series as [RequestSample]s, whose
// differences are windows and whose sums are generations.
//
// Names follow the contract in the README: launcher_inflight_requests,
// launcher_open_connections, launcher_requests_total{code},
// launcher_request_duration_seconds, launcher_generation_info{state},
// launcher_upgrades_total{result}, launcher_rollbacks_total{reason},
// launcher_generation_weight, launcher_upgrade_duration_seconds,
// launcher_drain_duration_seconds and a few more.
package metrics
