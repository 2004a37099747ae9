package loadgen

import (
	"maps"
	"slices"
	"time"
)

// Summary condenses a Result, with the requests split between upgrade
// windows and the steady state.
type Summary struct {
	// Mode is the load mode of the run.
	Mode Mode
	// Requests, Count, Failures and Versions are the exact totals of the
	// run (see Result).
	Requests int64
	Count    [NumClasses]int64
	Failures int64
	Versions map[string]int64
	// FailureRate is Failures / Requests (0 without requests).
	FailureRate float64
	// Elapsed is the run's duration and Rate its achieved requests per
	// second over it.
	Elapsed time.Duration
	Rate    float64
	// Windows is the number of disjoint upgrade windows after merging
	// overlapping ones.
	Windows int
	// Steady covers the requests that started outside every window,
	// Upgrade those that started inside one.
	Steady, Upgrade Phase
}

// Phase describes the requests that started in one part of a run.
type Phase struct {
	// Requests started in this phase, and their outcomes.
	Requests int64
	Count    [NumClasses]int64
	Failures int64
	// P50, P99 and Max are latency percentiles (nearest rank) of the OK
	// requests only; all zero when there is none. Failed requests are
	// counted, not timed.
	P50, P99, Max time.Duration
}

// Summarize computes the summary of r with the given upgrade windows.
// Windows may overlap and be in any order. It can be called any number of
// times, e.g. with windows learned after Run returned.
func (r *Result) Summarize(windows []Window) Summary {
	ss := spans(r.Start, windows)
	s := Summary{
		Mode:     r.Config.Mode,
		Requests: r.Requests,
		Count:    r.Count,
		Failures: r.Failures(),
		Versions: maps.Clone(r.Versions),
		Elapsed:  r.Elapsed,
		Windows:  len(ss),
	}
	if s.Requests > 0 {
		s.FailureRate = float64(s.Failures) / float64(s.Requests)
	}
	if s.Elapsed > 0 {
		s.Rate = float64(s.Requests) / s.Elapsed.Seconds()
	}

	var steady, upgrade []uint32 // OK latencies in µs
	for _, chunk := range r.records {
		for _, rec := range chunk {
			start, lat, c, _ := decode(rec)
			p, lats := &s.Steady, &steady
			if len(ss) > 0 && inSpans(ss, start.Microseconds()) {
				p, lats = &s.Upgrade, &upgrade
			}
			p.Requests++
			p.Count[c]++
			if c != OK {
				p.Failures++
				continue
			}
			*lats = append(*lats, uint32(min(lat.Microseconds(), 1<<32-1)))
		}
	}
	s.Steady.setLatencies(steady)
	s.Upgrade.setLatencies(upgrade)
	return s
}

// setLatencies sorts lats (µs) and sets the percentiles from them.
func (p *Phase) setLatencies(lats []uint32) {
	if len(lats) == 0 {
		return
	}
	slices.Sort(lats)
	p.P50 = percentile(lats, 50)
	p.P99 = percentile(lats, 99)
	p.Max = time.Duration(lats[len(lats)-1]) * time.Microsecond
}

// percentile returns the nearest-rank q-th percentile of the sorted lats.
func percentile(lats []uint32, q int) time.Duration {
	rank := (len(lats)*q + 99) / 100 // ceil(n*q/100), at least 1 when n > 0
	rank = max(rank, 1)
	return time.Duration(lats[rank-1]) * time.Microsecond
}
