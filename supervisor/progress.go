package supervisor

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Step says what a [Progress] event reports. An upgrade's steps come in
// causal order: Starting, Ready, Serves, then with a canary one Canary per
// weight and one for all new connections, then either Standby (with a
// probation) followed by ProbationPassed, RolledBack or ProbationEnded,
// or Draining at once; Drained, then Report last. A breach with no
// standby worker left ends a canary or a probation at once with
// ProbationEnded (Reason "breached: …").
type Step string

// Steps of an upgrade, a rollback and a stop.
const (
	StepSuperseded      Step = "superseded"       // a running probation ended: its standby generation (Generation) drains
	StepRollingBack     Step = "rolling-back"     // a rollback starts Version again as a new generation
	StepStarting        Step = "starting"         // Generation (Version, Path) starts Workers workers
	StepReady           Step = "ready"            // all of Generation's workers are ready and healthy, ReadyAfter since StepStarting
	StepServes          Step = "serves"           // new connections go to Generation: the upgrade has served
	StepStandby         Step = "standby"          // Generation (the previous one) stands by for Probation, Inflight requests there
	StepDraining        Step = "draining"         // Generation (the previous one) stopped accepting and drains, Inflight requests there
	StepProbationPassed Step = "probation-passed" // Generation passed its Probation; Other (the standby) drains
	StepProbationEnded  Step = "probation-ended"  // Generation's probation ended for Reason; Other drains
	StepRolledBack      Step = "rolled-back"      // traffic went back to Generation (on standby); Reason says why
	StepDrained         Step = "drained"          // Generation has exited, DrainedAfter after it stopped accepting; Reason names workers that died during the drain
	StepStopped         Step = "stopped"          // every generation has drained; the supervisor exits
	// StepWaiting: a worker of Generation, killed, has not exited yet;
	// Reason says which and why (its process state). The command waits on.
	StepWaiting Step = "waiting"
	// StepWarning: something the command asked for beside its aim did
	// not happen (--current not repointed); Reason says what. The
	// command goes on.
	StepWarning Step = "warning"
	// StepCanary: Generation gets Weight percent of new connections for
	// Interval; Other (on standby) the rest. Weight 100 ends the canary
	// (Reason "promoted" when cut short).
	StepCanary Step = "canary"
	// StepReport carries the upgrade's Report, once it has a verdict (and,
	// when it passed, once the old generation is gone).
	StepReport Step = "report"
)

// ReasonSuperseded is the Reason of a StepProbationEnded whose probation
// a newer upgrade ended (once its new generation was ready): the
// generation judged was not rolled back; the newer one takes over.
const ReasonSuperseded = "superseded by a newer upgrade"

// Progress is one step of an upgrade, a rollback or a stop, as the
// supervisor streams it to `launcher upgrade` and to [Client] callers.
// Fields that do not apply to a step are zero.
type Progress struct {
	Step Step `json:"step"`
	// Elapsed is the time since the supervisor received the command.
	Elapsed      time.Duration `json:"elapsed_ns"`
	Generation   int           `json:"generation,omitempty"`
	Version      string        `json:"version,omitempty"`
	Path         string        `json:"path,omitempty"`
	Workers      int           `json:"workers,omitempty"`
	ReadyAfter   time.Duration `json:"ready_after_ns,omitempty"`
	DrainedAfter time.Duration `json:"drained_after_ns,omitempty"`
	Inflight     int64         `json:"inflight,omitempty"`
	Probation    time.Duration `json:"probation_ns,omitempty"`
	// Other is the other generation a step names: the new one for
	// StepStandby, the standby one for StepProbationPassed and
	// StepProbationEnded, the one rolled back from for StepRolledBack.
	Other        int    `json:"other,omitempty"`
	OtherVersion string `json:"other_version,omitempty"`
	Reason       string `json:"reason,omitempty"`
	// Note, on StepDrained of a drain that lost nothing, names workers
	// that drained but were killed for not exiting by --drain-timeout.
	Note string `json:"note,omitempty"`
	// Same is set on StepStarting when the release is the file the active
	// generation already runs: a restart of the same release.
	Same bool `json:"same,omitempty"`
	// Judged is set on StepStandby when the judge watches the new
	// generation: a breach gives traffic back too.
	Judged bool `json:"judged,omitempty"`
	// Weight and Interval are a canary step's (StepCanary). On
	// StepSuperseded and StepProbationEnded a Weight below 100 says that
	// what ended was a canary, at that weight.
	Weight   int           `json:"weight,omitempty"`
	Interval time.Duration `json:"interval_ns,omitempty"`
	// Report is StepReport's.
	Report *UpgradeReport `json:"report,omitempty"`
	// Line is the text of a step from a supervisor too old to send typed
	// steps; Step is then empty.
	Line string `json:"-"`
}

// String renders p as the line `launcher upgrade` prints.
func (p Progress) String() string {
	ms := func(d time.Duration) int64 { return d.Milliseconds() }
	switch p.Step {
	case StepSuperseded:
		if p.Weight > 0 && p.Weight < 100 {
			return fmt.Sprintf("previous canary ended (at %d%% of new connections): its standby generation %d (%s) drains", p.Weight, p.Generation, p.Version)
		}
		return fmt.Sprintf("previous probation ended: its standby generation %d (%s) drains", p.Generation, p.Version)
	case StepRollingBack:
		if p.Reason != "" {
			return fmt.Sprintf("rolling back to %s: %s", p.Version, p.Reason)
		}
		return fmt.Sprintf("rolling back to %s", p.Version)
	case StepStarting:
		s := fmt.Sprintf("generation %d (%s) starting: %d worker(s) of %s", p.Generation, p.Version, p.Workers, p.Path)
		if p.Same {
			s += " (the same file as the active generation: a restart of the same release)"
		}
		return s
	case StepReady:
		return fmt.Sprintf("generation %d ready after %d ms", p.Generation, ms(p.ReadyAfter))
	case StepServes:
		return fmt.Sprintf("generation %d (%s) serves; ready after %d ms", p.Generation, p.Version, ms(p.ReadyAfter))
	case StepStandby:
		if p.Judged {
			return fmt.Sprintf("generation %d (%s) on standby for the %s probation: %d request(s) in flight there complete; traffic comes back to it if generation %d crashes or the judge finds it worse meanwhile",
				p.Generation, p.Version, p.Probation, p.Inflight, p.Other)
		}
		return fmt.Sprintf("generation %d (%s) on standby for the %s probation: %d request(s) in flight there complete; traffic comes back to it if generation %d crashes meanwhile",
			p.Generation, p.Version, p.Probation, p.Inflight, p.Other)
	case StepDraining:
		return fmt.Sprintf("generation %d (%s) draining: %d request(s) in flight", p.Generation, p.Version, p.Inflight)
	case StepProbationPassed:
		return fmt.Sprintf("generation %d passed its %s probation: generation %d (%s) draining", p.Generation, p.Probation, p.Other, p.OtherVersion)
	case StepProbationEnded:
		phase := "probation"
		if p.Weight > 0 && p.Weight < 100 {
			phase = fmt.Sprintf("canary (at %d%% of new connections)", p.Weight)
		}
		return fmt.Sprintf("generation %d's %s ended (%s): generation %d (%s) draining", p.Generation, phase, p.Reason, p.Other, p.OtherVersion)
	case StepRolledBack:
		return fmt.Sprintf("generation %d (%s) serves again: %s", p.Generation, p.Version, p.Reason)
	case StepDrained:
		if p.Reason != "" {
			return fmt.Sprintf("generation %d gone after %d ms: %s", p.Generation, ms(p.DrainedAfter), p.Reason)
		}
		if p.Note != "" {
			return fmt.Sprintf("generation %d drained after %d ms; %s", p.Generation, ms(p.DrainedAfter), p.Note)
		}
		return fmt.Sprintf("generation %d drained after %d ms", p.Generation, ms(p.DrainedAfter))
	case StepStopped:
		return "stopped"
	case StepWaiting:
		return "waiting: " + p.Reason
	case StepWarning:
		return "warning: " + p.Reason
	case StepCanary:
		if p.Weight >= 100 {
			s := fmt.Sprintf("generation %d (%s) gets all new connections", p.Generation, p.Version)
			if p.Reason != "" {
				s += " (" + p.Reason + ")"
			}
			return s
		}
		return fmt.Sprintf("canary: generation %d (%s) gets %d%% of new connections for %s; generation %d (%s) the rest",
			p.Generation, p.Version, p.Weight, p.Interval, p.Other, p.OtherVersion)
	case StepReport:
		if p.Report != nil {
			return p.Report.String()
		}
	}
	if p.Step == "" {
		return p.Line
	}
	return string(p.Step)
}

// drainedStep is the step that says g has exited, d after it stopped
// accepting, naming any worker that died during its drain or whose drain
// was cut (see drainNote).
func drainedStep(g *generation, d time.Duration) Progress {
	return Progress{Step: StepDrained, Generation: g.num, Version: g.release.Version, DrainedAfter: d, Reason: g.drainNote(), Note: strings.Join(g.lateExits, "; ")}
}

// drainNote says what g's drain lost: its workers' deaths and cuts, ""
// for a clean drain.
func (g *generation) drainNote() string {
	return strings.Join(append(slices.Clone(g.deaths), g.cuts...), "; ")
}
