package supervisor

import "fmt"

// breachCrashed is the breach of a generation that crashed during its
// canary or probation with no standby worker left to roll back to.
const breachCrashed = "crashed"

// A judged breach with no worker of the standby generation left to take
// traffic back cannot roll back: the new generation serves on. The
// upgrade still failed, and says so at once (verdict breached, exit 1),
// and the breached release is treated as a rolled-back one would be: a
// later rollback never goes to it, and it never stands by as a rollback
// target (the next upgrade drains it at once).

// serveOnBreached ends g's probation p on the judge's breach (p.breach,
// p.crash, p.figures) when no standby worker is left: g serves on, its
// release leaves the rollback history, and the standby generation's
// remains are retired.
func (l *loop) serveOnBreached(g *generation, p *probation) {
	old := p.standby
	phase := p.phase()
	what, figures := "breached its judged "+phase, "; figures: "+p.figures
	if p.breach == breachCrashed {
		what, figures = "crashed during its "+phase, ""
	}
	g.breached = true
	l.forgetRelease(g.release)
	l.markDirty()
	// A canary's program already left the standby out (it has no ready
	// socket); steering again makes sure it is all g's.
	l.resteer(func(l *loop, err error) {
		if err != nil {
			l.genLog(g).Warn("steer to the breached generation", "err", err)
		}
	})
	l.log.Error(fmt.Sprintf("BREACHED: generation %d (%s) %s: %s; no worker of generation %d (%s) is left to take traffic back: generation %d serves on",
		g.num, g.release.Version, what, p.crash, old.num, old.release.Version, g.num),
		"generation", g.num, "version", g.release.Version, "breach", p.breach, "figures", p.figures,
		"standby_generation", old.num, "standby_version", old.release.Version)
	l.m.Upgrades.WithLabelValues("breached").Inc()
	why := fmt.Sprintf("%s: %s; no rollback possible: no worker of generation %d was left to take traffic back", p.breach, p.crash, old.num)
	p.follower.emit(Progress{Step: StepProbationEnded, Generation: g.num, Version: g.release.Version, Weight: p.weight,
		Reason: "breached: " + p.breach + ": " + p.crash + "; no standby worker left to roll back to",
		Other:  old.num, OtherVersion: old.release.Version})
	rep := l.decide(g, p, VerdictBreached, why)
	err := fmt.Errorf("upgrade to %s: generation %d %s (%s: %s); no rollback possible: no worker of generation %d (%s) was left to take traffic back; generation %d serves on%s",
		g.release.Version, g.num, what, p.breach, p.crash, old.num, old.release.Version, g.num, figures)
	l.retireStandby(p, rep, err)
}
