package supervisor

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Upgrade verdicts: how an upgrade ended, in its report.
const (
	VerdictPassed     = "passed"      // the new generation serves; the old one drained
	VerdictRolledBack = "rolled_back" // traffic went back to the old generation
	VerdictFailed     = "failed"      // the new generation never served
	VerdictSuperseded = "superseded"  // a newer upgrade ended its probation
	VerdictStopped    = "stopped"     // the supervisor stopped meanwhile
	// VerdictBreached: the judge found a breach when no worker of the old
	// generation was left to take traffic back; the new one serves on.
	VerdictBreached = "breached"
)

// keepReports is how many upgrade reports status keeps.
const keepReports = 20

// UpgradeReport sums one upgrade up, from the command to the exit of the
// generation that lost. Times are since the command; zero where unknown
// (FirstConnectionAfter needs a judged probation and a worker library
// that reports it; GoneAfter is set once that generation has exited).
type UpgradeReport struct {
	Generation  int       `json:"generation"`
	Version     string    `json:"version"`
	From        int       `json:"from_generation"`
	FromVersion string    `json:"from_version"`
	Command     time.Time `json:"command,omitzero"` // absent when not known (an adopted report's)
	// Canary are the weights asked for (percent of new connections), and
	// Weights the steps as they happened.
	Canary         []int         `json:"canary,omitempty"`
	CanaryInterval time.Duration `json:"canary_interval_ns,omitempty"`
	Weights        []WeightStep  `json:"weights,omitempty"`
	// Promoted is set when `launcher promote` cut the canary short.
	Promoted             bool          `json:"promoted,omitempty"`
	ReadyAfter           time.Duration `json:"ready_after_ns,omitempty"`
	FirstConnectionAfter time.Duration `json:"first_connection_after_ns,omitempty"`
	VerdictAfter         time.Duration `json:"verdict_after_ns,omitzero"`
	// GoneAfter is when the generation that lost (the old one, or the new
	// one when rolled back or failed) had no process left.
	GoneAfter time.Duration `json:"gone_after_ns,omitempty"`
	// Drain says what the losing generation's drain lost: workers that
	// died during it, or were cut or killed at --drain-timeout; empty for
	// a clean drain.
	Drain string `json:"drain,omitempty"`
	// New and Old are the judged windows' figures, when judged.
	New *WindowFigures `json:"new,omitempty"`
	Old *WindowFigures `json:"old,omitempty"`
	// Verdict is one of the Verdict* values; Reason says why.
	Verdict string `json:"verdict"`
	Reason  string `json:"reason,omitempty"`
	// Adopted is set on a verdict reached by a supervisor adopting the
	// workers of one killed during the upgrade: the rollback of an
	// upgrade whose new generation died while no supervisor ran, the
	// pass of one whose probation was cut short, the failure of one
	// still starting. Its times are not known (zero).
	Adopted bool `json:"adopted,omitempty"`
}

// WeightStep is a canary step: from At (since the command) the new
// generation got Weight percent of new connections.
type WeightStep struct {
	Weight int           `json:"weight"`
	At     time.Duration `json:"at_ns"`
}

// String renders r as `launcher upgrade --wait` prints it.
func (r UpgradeReport) String() string {
	// A zero time is one not known when the report was made: the ready
	// of a generation that never got there, the first connection of one
	// not judged (its workers' counts were not read), the end of a
	// generation still draining at the verdict.
	ms := func(d time.Duration, unknown string) string {
		if d == 0 {
			return unknown
		}
		return fmt.Sprintf("%d ms", d.Milliseconds())
	}
	var b strings.Builder
	fmt.Fprintf(&b, "upgrade report: generation %d (%s) from generation %d (%s): %s", r.Generation, r.Version, r.From, r.FromVersion, r.Verdict)
	if r.Reason != "" {
		fmt.Fprintf(&b, " (%s)", r.Reason)
	}
	if r.Adopted {
		b.WriteString("\n  decided by the supervisor that adopted the workers: the upgrade's times are not known")
	} else {
		fmt.Fprintf(&b, "\n  command → ready %s → first connection %s → verdict %s → gone %s", ms(r.ReadyAfter, "never"), ms(r.FirstConnectionAfter, "not known"), ms(r.VerdictAfter, "0 ms"), ms(r.GoneAfter, "not yet"))
	}
	if len(r.Weights) > 0 {
		var steps []string
		for _, s := range r.Weights {
			steps = append(steps, fmt.Sprintf("%d%% at %d ms", s.Weight, s.At.Milliseconds()))
		}
		fmt.Fprintf(&b, "\n  weights: %s", strings.Join(steps, ", "))
		if r.Promoted {
			b.WriteString(" (promoted)")
		}
	}
	if r.Drain != "" {
		fmt.Fprintf(&b, "\n  drain: %s", r.Drain)
	}
	if r.New != nil {
		fmt.Fprintf(&b, "\n  new: %s", r.New)
	}
	if r.Old != nil {
		fmt.Fprintf(&b, "\n  old: %s", r.Old)
	}
	return b.String()
}

// stepAt records that the new generation got weight percent from at on.
func (r *UpgradeReport) stepAt(weight int, at time.Duration) {
	if n := len(r.Weights); n > 0 && r.Weights[n-1].Weight == weight {
		return
	}
	r.Weights = append(r.Weights, WeightStep{Weight: weight, At: at})
}

// report returns g's upgrade report, making one if it has none.
func (l *loop) report(g *generation) *UpgradeReport {
	if g.report == nil {
		g.report = &UpgradeReport{Generation: g.num, Version: g.release.Version, Command: time.Now()}
	}
	return g.report
}

// newReport starts the report of an upgrade to g from old.
func (l *loop) newReport(g, old *generation, start time.Time, opts UpgradeOptions) {
	if old == nil {
		return
	}
	g.report = &UpgradeReport{Generation: g.num, Version: g.release.Version, From: old.num, FromVersion: old.release.Version,
		Command: start, Canary: opts.Canary}
	if len(opts.Canary) > 0 {
		g.report.CanaryInterval = opts.CanaryInterval
	}
}

// decide gives g's report its verdict, with the judge's figures if p had a
// judge, and files it in the history. It is a no-op for a generation
// without a report (the first) or one decided already.
func (l *loop) decide(g *generation, p *probation, verdict, reason string) *UpgradeReport {
	r := g.report
	if r == nil || r.Verdict != "" {
		return nil
	}
	r.Verdict, r.Reason = verdict, reason
	r.VerdictAfter = time.Since(r.Command)
	if p != nil && p.judge != nil && p.judge.began {
		l.setFigures(r, p.judge)
	}
	l.keepReport(r)
	return r
}

// keepReport adds r to the history, which keeps the last keepReports.
func (l *loop) keepReport(r *UpgradeReport) {
	l.reports = append(l.reports, r)
	if len(l.reports) > keepReports {
		l.reports = l.reports[len(l.reports)-keepReports:]
	}
	l.markDirty()
}

// setFigures puts the figures of j's latest reading in r: both windows
// (the old generation's whole life when its window has too few requests
// to compare with), and the new generation's first connection.
func (l *loop) setFigures(r *UpgradeReport, j *judge) {
	nw, ow := j.nw, j.ow
	if j.ofall.Requests > ow.Requests {
		ow = baseline(ow, j.ofall, int64(l.cfg.MinRequests))
	}
	r.New, r.Old = &nw, &ow
	if j.first > 0 {
		if d := time.Unix(0, int64(j.first*1e9)).Sub(r.Command); d > 0 {
			r.FirstConnectionAfter = d
		}
	}
}

// gone records that the losing generation of r, g, has exited, and what
// its drain lost (g is nil for a generation that never served).
func (r *UpgradeReport) gone(g *generation) {
	if r != nil && r.GoneAfter == 0 {
		r.GoneAfter = time.Since(r.Command)
		if g != nil {
			r.Drain = g.drainNote()
		}
	}
}

// final reports whether r can no longer change: decided, and the
// generation that lost it gone (see decide and gone).
func (r *UpgradeReport) final() bool { return r.Verdict != "" && r.GoneAfter != 0 }

// savedReports returns copies of the reports for the state file, oldest
// first, each final one with its JSON made at its first write and kept
// while it is in the history.
func (l *loop) savedReports() []savedReport {
	out := make([]savedReport, 0, len(l.reports))
	kept := make(map[*UpgradeReport][]byte, len(l.reports))
	for _, r := range l.reports {
		s := savedReport{UpgradeReport: *r}
		if r.final() {
			raw, ok := l.reportJSON[r]
			if !ok {
				if b, err := json.Marshal(r); err == nil {
					raw = b
				}
			}
			if raw != nil {
				kept[r], s.raw = raw, raw
			}
		}
		out = append(out, s)
	}
	l.reportJSON = kept
	return out
}

// upgradeHistory returns copies of the reports, oldest first.
func (l *loop) upgradeHistory() []UpgradeReport {
	out := make([]UpgradeReport, 0, len(l.reports))
	for _, r := range l.reports {
		out = append(out, *r)
	}
	return out
}
