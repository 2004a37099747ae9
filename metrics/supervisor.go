package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// GenerationInfo is one generation as the supervisor sees it.
type GenerationInfo struct {
	Generation int
	Version    string
	State      string
	// Weight is the percentage of new connections steered to it: 100 for
	// the active generation, its share during a canary, and 0 for the
	// others.
	Weight int
}

// Rollback reasons, the values of launcher_rollbacks_total's reason label.
var rollbackReasons = []string{"crashed", "errors", "latency", "requested"}

// Crash states, the values of launcher_worker_crashes_total's state label.
var crashStates = []string{"active", "standby", "draining"}

// Upgrade results, the values of launcher_upgrades_total's result label.
var upgradeResults = []string{"success", "failed", "refused", "aborted", "rolled_back", "breached"}

// Generation states, the values of launcher_generations' state label.
var generationStates = []string{"starting", "active", "standby", "draining", "exited", "failed"}

// Supervisor holds the supervisor's own series. Register it on an explicit
// registry; the supervisor updates the exported fields.
type Supervisor struct {
	// Upgrades counts upgrades by result: success, failed, refused, aborted,
	// rolled_back, breached.
	Upgrades *prometheus.CounterVec
	// UpgradeDuration is the time from the upgrade command to the new
	// generation serving, of successful upgrades (and the first start):
	// with a probation, observed when it passes.
	UpgradeDuration prometheus.Histogram
	// DrainDuration is the time from an old generation's drain start to
	// its last process exiting.
	DrainDuration prometheus.Histogram
	// DrainTimeouts counts drains cut at --drain-timeout.
	DrainTimeouts prometheus.Counter
	// DrainCutRequests counts requests in flight when a drain was cut.
	DrainCutRequests prometheus.Counter
	// Rollbacks counts upgrades rolled back during their canary or
	// probation, by reason: crashed, errors (5xx ratio), latency (p99),
	// requested (launcher rollback).
	Rollbacks *prometheus.CounterVec
	// ScrapeErrors counts worker admin scrapes that failed or timed out.
	ScrapeErrors prometheus.Counter
	// StateWriteErrors counts writes of the state file that failed.
	StateWriteErrors prometheus.Counter
	// StateFileStale is 1 while the state file's last write failed.
	StateFileStale prometheus.Gauge
	// WorkerCrashes counts workers that exited unasked, by their
	// generation's state then: active, standby, draining.
	WorkerCrashes *prometheus.CounterVec
	// TicketKeys is the number of TLS session-ticket keys the supervisor
	// hands its workers (0 until a worker that applies them joins).
	TicketKeys prometheus.Gauge
	// TicketKeyCreated is when the current ticket key was made (or read
	// from the operator's file), in Unix seconds; 0 without one.
	TicketKeyCreated prometheus.Gauge

	handover    string
	generations func() []GenerationInfo
	infoDesc    *prometheus.Desc
	countDesc   *prometheus.Desc
	handDesc    *prometheus.Desc
	weightDesc  *prometheus.Desc
}

// NewSupervisor returns the supervisor's collectors. generations is called
// at each scrape for launcher_generation_info and launcher_generations.
func NewSupervisor(handover string, generations func() []GenerationInfo) *Supervisor {
	s := &Supervisor{
		Upgrades: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "launcher_upgrades_total",
			Help: "Upgrades (including the first start and rollbacks) by result: success, failed (the new generation never served), refused (bad release, nothing started), aborted (stopped meanwhile), rolled_back (crashed during its canary or --probation, judged worse than the previous generation then, or rolled back by launcher rollback then: the previous generation serves again), breached (the judge found a breach when no worker of the previous generation was left to take traffic back: the new one serves on). With a probation, success is counted when it passes.",
		}, []string{"result"}),
		UpgradeDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "launcher_upgrade_duration_seconds",
			Help:    "Time from an upgrade command to the new generation serving, of successful upgrades (those counted in launcher_upgrades_total{result=\"success\"}, with the first start); with a probation, observed when it passes.",
			Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}),
		DrainDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "launcher_drain_duration_seconds",
			Help:    "Time from the start of a generation's drain to its last process exiting.",
			Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}),
		DrainTimeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "launcher_drain_timeouts_total",
			Help: "Drains cut at --drain-timeout, their processes killed.",
		}),
		DrainCutRequests: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "launcher_drain_cut_requests_total",
			Help: "Requests in flight when a drain was cut at --drain-timeout.",
		}),
		Rollbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "launcher_rollbacks_total",
			Help: "Upgrades rolled back to the generation standing by, by reason: crashed, errors (its 5xx ratio breached --max-error-ratio), latency (its p99 breached --max-latency-ratio), requested (launcher rollback). Each is also counted in launcher_upgrades_total{result=\"rolled_back\"}.",
		}, []string{"reason"}),
		ScrapeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "launcher_scrape_errors_total",
			Help: "Worker admin-socket scrapes that failed or timed out.",
		}),
		StateFileStale: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "launcher_state_file_stale",
			Help: "1 while the state file's last write failed (it is written again every 5 s until one takes): a supervisor started after this one is killed could not adopt what runs now; 0 otherwise.",
		}),
		StateWriteErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "launcher_state_write_errors_total",
			Help: "Writes of the state file (state.json) that failed, a full or read-only state dir: until one succeeds, a supervisor started after this one is killed cannot adopt what runs now.",
		}),
		WorkerCrashes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "launcher_worker_crashes_total",
			Help: "Workers that exited when the supervisor had not asked them to (a crash, a kill from outside, the OOM killer), by the state of their generation then: active (restarted, unless in a crash loop or rolled back from during its probation), standby (not restarted while it stands by; a rollback to it does), draining (died before its drain ended: what it still served was cut).",
		}, []string{"state"}),
		TicketKeys: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "launcher_tls_ticket_keys",
			Help: "TLS session-ticket keys handed to the workers: the current one encrypts new tickets, all decrypt.",
		}),
		TicketKeyCreated: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "launcher_tls_ticket_key_created_timestamp_seconds",
			Help: "When the current TLS session-ticket key was made or read from --tls-ticket-key-file, in Unix seconds; 0 without one.",
		}),
		handover:    handover,
		generations: generations,
		infoDesc: prometheus.NewDesc("launcher_generation_info",
			"Always 1: a generation with its version and state.", []string{"generation", "version", "state"}, nil),
		countDesc: prometheus.NewDesc("launcher_generations",
			"Number of generations in each state.", []string{"state"}, nil),
		handDesc: prometheus.NewDesc("launcher_handover_info",
			"Always 1: the handover strategy in use.", []string{"strategy"}, nil),
		weightDesc: prometheus.NewDesc("launcher_generation_weight",
			"Percentage of new connections steered to a generation: 100 for the active one, its share during a canary (the rest goes to the one standing by).", []string{"generation", "version"}, nil),
	}
	for _, r := range rollbackReasons {
		s.Rollbacks.WithLabelValues(r)
	}
	for _, r := range upgradeResults {
		s.Upgrades.WithLabelValues(r) // present at 0, so the first increase shows
	}
	for _, st := range crashStates {
		s.WorkerCrashes.WithLabelValues(st)
	}
	return s
}

// Describe implements prometheus.Collector.
func (s *Supervisor) Describe(ch chan<- *prometheus.Desc) {
	s.Upgrades.Describe(ch)
	s.UpgradeDuration.Describe(ch)
	s.DrainDuration.Describe(ch)
	s.DrainTimeouts.Describe(ch)
	s.StateWriteErrors.Describe(ch)
	s.StateFileStale.Describe(ch)
	s.DrainCutRequests.Describe(ch)
	s.Rollbacks.Describe(ch)
	s.ScrapeErrors.Describe(ch)
	s.WorkerCrashes.Describe(ch)
	s.TicketKeys.Describe(ch)
	s.TicketKeyCreated.Describe(ch)
	ch <- s.weightDesc
	ch <- s.infoDesc
	ch <- s.countDesc
	ch <- s.handDesc
}

// Collect implements prometheus.Collector. Generations that have exited
// are counted in launcher_generations but get no info series, so the
// series set stays bounded over many upgrades.
func (s *Supervisor) Collect(ch chan<- prometheus.Metric) {
	s.Upgrades.Collect(ch)
	s.UpgradeDuration.Collect(ch)
	s.DrainDuration.Collect(ch)
	s.DrainTimeouts.Collect(ch)
	s.StateWriteErrors.Collect(ch)
	s.StateFileStale.Collect(ch)
	s.DrainCutRequests.Collect(ch)
	s.Rollbacks.Collect(ch)
	s.ScrapeErrors.Collect(ch)
	s.WorkerCrashes.Collect(ch)
	s.TicketKeys.Collect(ch)
	s.TicketKeyCreated.Collect(ch)
	counts := map[string]int{}
	for _, g := range s.generations() {
		counts[g.State]++
		if g.State == "exited" || g.State == "failed" {
			continue
		}
		ch <- prometheus.MustNewConstMetric(s.infoDesc, prometheus.GaugeValue, 1, strconv.Itoa(g.Generation), g.Version, g.State)
		if g.Weight > 0 {
			ch <- prometheus.MustNewConstMetric(s.weightDesc, prometheus.GaugeValue, float64(g.Weight), strconv.Itoa(g.Generation), g.Version)
		}
	}
	for _, st := range generationStates {
		ch <- prometheus.MustNewConstMetric(s.countDesc, prometheus.GaugeValue, float64(counts[st]), st)
	}
	ch <- prometheus.MustNewConstMetric(s.handDesc, prometheus.GaugeValue, 1, s.handover)
}
