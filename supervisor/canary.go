package supervisor

import (
	"errors"
	"fmt"
	"time"

	"github.com/launcherd/launcher/internal/control"
)

// A canary upgrade gives the new generation a share of the new
// connections, step by step (--canary 10,50: 10 %, then 50 %, each for
// --canary-interval), before all of them and the usual probation. The
// previous generation stays listening, ready and steered to meanwhile: it
// is the probation's standby from the start, so a crash, a judged breach
// or a rollback gives it everything back at once. Only new connections
// are weighed: a keep-alive connection stays on the generation that
// accepted it until the canary is over (then the old one hands its
// keep-alive clients over, as on any probation).

// DefaultCanaryInterval is how long each canary weight holds when
// UpgradeOptions.CanaryInterval is zero.
const DefaultCanaryInterval = 30 * time.Second

// UpgradeOptions are the options of one upgrade.
type UpgradeOptions struct {
	// Wait follows the upgrade to its end: the probation's verdict and the
	// previous generation's exit.
	Wait bool
	// Canary are the percentages of new connections the new generation
	// gets, in turn, before all of them: increasing, each in 1..99. Empty
	// means none: all new connections at once.
	Canary []int
	// CanaryInterval is how long each weight holds. Zero means
	// DefaultCanaryInterval.
	CanaryInterval time.Duration
}

// ErrBadCanary wraps refused canary options.
var ErrBadCanary = errors.New("bad canary")

// checkCanary refuses weights that are not increasing percentages of
// 1..99, and a negative interval.
func checkCanary(weights []int, interval time.Duration) error {
	for i, w := range weights {
		if w < 1 || w > 99 {
			return fmt.Errorf("%w: weight %d: want 1..99 (percent of new connections)", ErrBadCanary, w)
		}
		if i > 0 && w <= weights[i-1] {
			return fmt.Errorf("%w: weights %v: want them increasing", ErrBadCanary, weights)
		}
	}
	if interval < 0 {
		return fmt.Errorf("%w: interval %s: want more than 0", ErrBadCanary, interval)
	}
	return nil
}

// maxWeightedSlots bounds a weighted program's slots (the kernel program
// allows 2000: see reuseport.Steer).
const maxWeightedSlots = 2000

// weightedSlots returns the slots of a program that sends weight percent
// of new connections to newSlots and the rest to oldSlots, each share
// spread evenly over its sockets. The program picks a slot by flow hash
// modulo the number of slots, so the share of each entry is 1/len: the
// list has 100·k entries, weight·k of them naming newSlots, with k the
// smallest multiplier (up to 20) that gives every socket of a share the
// same number of entries. With no socket on one side, the other gets all.
func weightedSlots(newSlots, oldSlots []int, weight int) []int {
	switch {
	case len(newSlots) == 0 || weight <= 0:
		return oldSlots
	case len(oldSlots) == 0 || weight >= 100:
		return newSlots
	}
	k := maxWeightedSlots / 100
	for m := 1; m <= maxWeightedSlots/100; m++ {
		if weight*m%len(newSlots) == 0 && (100-weight)*m%len(oldSlots) == 0 {
			k = m
			break
		}
	}
	out := make([]int, 0, 100*k)
	for i := 0; i < weight*k; i++ {
		out = append(out, newSlots[i%len(newSlots)])
	}
	for i := 0; i < (100-weight)*k; i++ {
		out = append(out, oldSlots[i%len(oldSlots)])
	}
	return out
}

// canaryWeight is the percentage of new connections g gets now: below 100
// only during a canary step with a standby worker to take the rest (with
// none, the program steers all to g: see desiredSlots).
func (g *generation) canaryWeight() int {
	if p := g.runningProbation(); p != nil && p.weight < 100 && len(unpaused(takeBack(p.workers))) > 0 {
		return p.weight
	}
	return 100
}

// nextCanaryStep moves g's canary to its next weight, or, after the last,
// to all new connections and the probation.
func (l *loop) nextCanaryStep(g *generation, p *probation) {
	if g.runningProbation() != p {
		return
	}
	if p.step >= len(p.canary) {
		l.fullWeight(g, p, "")
		return
	}
	p.weight = p.canary[p.step]
	p.step++
	rep := l.report(g)
	rep.stepAt(p.weight, time.Since(rep.Command))
	l.genLog(g).Info("canary step", "weight_percent", p.weight, "for", p.interval,
		"standby_generation", p.standby.num, "standby_version", p.standby.release.Version)
	p.follower.emit(Progress{Step: StepCanary, Generation: g.num, Version: g.release.Version, Weight: p.weight,
		Interval: p.interval, Other: p.standby.num, OtherVersion: p.standby.release.Version})
	l.resteer(func(l *loop, err error) {
		if err != nil {
			l.genLog(g).Warn("steer canary weight", "weight_percent", p.weight, "err", err)
		}
	})
	p.stopTimer = l.after(p.nextStepIn(), evFunc(func(l *loop) { l.nextCanaryStep(g, p) }))
}

// nextStepIn is the time left until the next canary step: each is due
// interval after the previous one was due, not after it came, so a late
// timer (a loaded machine) does not push the schedule back.
func (p *probation) nextStepIn() time.Duration {
	return max(time.Until(p.canaryStart.Add(time.Duration(p.step)*p.interval)), 0)
}

// fullWeight ends g's canary: all new connections go to g, the previous
// generation hands its keep-alive clients over and stands by for the
// probation; without a probation it retires at once. why, if not empty,
// says why the canary was cut short (a promote).
func (l *loop) fullWeight(g *generation, p *probation, why string) {
	p.stopTimer()
	p.weight = 100
	p.step = len(p.canary)
	rep := l.report(g)
	rep.stepAt(100, time.Since(rep.Command))
	rep.Promoted = rep.Promoted || why == "promoted"
	l.genLog(g).Info("canary over: all new connections", "reason", why)
	l.resteer(func(l *loop, err error) {
		if err != nil {
			l.genLog(g).Warn("steer to new generation", "err", err)
		}
	})
	p.follower.emit(Progress{Step: StepCanary, Generation: g.num, Version: g.release.Version, Weight: 100,
		Other: p.standby.num, OtherVersion: p.standby.release.Version, Reason: why})
	for _, w := range p.workers {
		l.send(w, control.Message{Type: control.TypeStandby})
	}
	if l.cfg.Probation <= 0 {
		l.passProbation(g, p)
		return
	}
	p.until = time.Now().Add(l.cfg.Probation)
	p.follower.emit(Progress{Step: StepStandby, Generation: p.standby.num, Version: p.standby.release.Version, Probation: l.cfg.Probation, Other: g.num, Judged: p.judge != nil})
	p.stopTimer = l.after(l.cfg.Probation, evFunc(func(l *loop) { l.passProbation(g, p) }))
}

// cmdPromote skips the running canary to all new connections.
type cmdPromote struct {
	req *opRequest
}

func (c cmdPromote) apply(l *loop) {
	g := l.active
	p := g.runningProbation()
	if p == nil || p.weight >= 100 {
		c.req.finish(Progress{}, errors.New("promote: no canary under way"))
		return
	}
	l.fullWeight(g, p, "promoted")
	sum := Progress{Step: StepCanary, Generation: g.num, Version: g.release.Version, Weight: 100,
		Other: p.standby.num, OtherVersion: p.standby.release.Version, Reason: "promoted"}
	c.req.emit(sum)
	c.req.finish(sum, nil)
}
