package supervisor

import (
	"context"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/launcherd/launcher/metrics"
)

// Status is what `launcher status --json` prints.
type Status struct {
	PID      int      `json:"pid"`
	StateDir string   `json:"state_dir"`
	Listen   []string `json:"listen"`
	Handover string   `json:"handover"`
	// Releases is --releases, for completing version names; "" if unset.
	Releases    string             `json:"releases,omitempty"`
	Generations []GenerationStatus `json:"generations"`
	// History are the reports of the last upgrades, oldest first.
	History []UpgradeReport `json:"history"`
	// Waiting are the releases of upgrades asked for while the first
	// generation starts, in the order asked: the first goes on once it
	// serves, the others are refused then (see releaseEarly).
	Waiting []string `json:"waiting_upgrades,omitempty"`
}

// GenerationStatus describes one generation.
type GenerationStatus struct {
	Generation       int    `json:"generation"`
	Version          string `json:"version"`
	State            string `json:"state"`
	Path             string `json:"path"`
	PIDs             []int  `json:"pids"`
	InflightRequests int64  `json:"inflight_requests"`
	OpenConnections  int64  `json:"open_connections"`
	// Unanswered are the pids of workers whose counts could not be read
	// within the second a status allows (stopped, stuck, or gone just
	// then): InflightRequests and OpenConnections leave them out.
	Unanswered []int `json:"unanswered_pids,omitempty"`
	// Paused are the pids of its workers found stopped (SIGSTOP, a
	// debugger, a frozen cgroup) or hung, and steered away from until
	// they run or answer again (active and standby generations).
	Paused []int `json:"paused_pids,omitempty"`
	// NotRestarted are the indexes of its workers left down after a
	// crash loop while the others served on: it serves with fewer
	// workers until an upgrade or a rollback.
	NotRestarted []int     `json:"not_restarted_workers,omitempty"`
	Restarts     int       `json:"restarts"`
	Started      time.Time `json:"started"`
	// ProbationUntil is set on the active generation while the previous
	// one stands by for it.
	ProbationUntil *time.Time `json:"probation_until,omitempty"`
	// Weight is the percentage of new connections steered to it: 100 for
	// the active generation, its share during a canary, 0 for the others.
	Weight int `json:"weight"`
}

// statusView is the loop's part of a status: the generations, and the
// admin sockets of the connected workers to read counts from.
type statusView struct {
	gens    []GenerationStatus
	history []UpgradeReport
	waiting []string
	sockets []statusSocket
}

type statusSocket struct {
	gi     int // index in gens
	pid    int
	socket string
}

func (l *loop) statusView() statusView {
	v := statusView{history: l.upgradeHistory()}
	for _, c := range l.early {
		v.waiting = append(v.waiting, c.rel.Version)
	}
	weights := map[*generation]int{}
	for _, gi := range l.generationInfo() {
		for _, g := range l.gens {
			if g.num == gi.Generation {
				weights[g] = gi.Weight
			}
		}
	}
	for _, g := range l.gens {
		gs := GenerationStatus{Generation: g.num, Version: g.release.Version, State: g.state, Path: g.release.Path,
			Started: g.started, PIDs: []int{}, Restarts: g.restarts.restarts, Weight: weights[g],
			NotRestarted: slices.Clone(g.notRestarted)}
		// During a canary step the probation has no end yet.
		if p := g.runningProbation(); p != nil && g == l.active && p.weight >= 100 {
			until := p.until
			gs.ProbationUntil = &until
		}
		for _, w := range g.live() {
			gs.PIDs = append(gs.PIDs, w.pid)
			if w.paused && (g == l.active || g.state == StateStandby) {
				gs.Paused = append(gs.Paused, w.pid)
			}
			if w.conn != nil {
				v.sockets = append(v.sockets, statusSocket{len(v.gens), w.pid, w.admin})
			}
		}
		v.gens = append(v.gens, gs)
	}
	return v
}

// Status returns the supervisor's state, with live in-flight counts read
// from the workers' admin sockets (within a second).
func (s *Supervisor) Status(ctx context.Context) (Status, error) {
	st := Status{PID: os.Getpid(), StateDir: s.dir.path, Listen: s.cfg.Listen, Handover: s.cfg.Handover, Releases: s.releasesAbs}
	v, err := ask(ctx, s.loop, (*loop).statusView)
	if err != nil {
		return st, err
	}
	st.Generations = v.gens
	st.History = v.history
	st.Waiting = v.waiting
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, l := range v.sockets {
		wg.Add(1)
		go func() { // bounded by ctx
			defer wg.Done()
			c, err := s.fx.counts(ctx, l.socket)
			mu.Lock()
			defer mu.Unlock()
			g := &st.Generations[l.gi]
			if err != nil {
				g.Unanswered = append(g.Unanswered, l.pid)
				return
			}
			g.InflightRequests += c.InflightRequests
			g.OpenConnections += c.OpenConnections
		}()
	}
	wg.Wait()
	for i := range st.Generations {
		slices.Sort(st.Generations[i].Unanswered)
	}
	return st, nil
}

// ask applies f on the loop and returns its result: a read of the state
// for an actor outside the loop.
func ask[T any](ctx context.Context, l *loop, f func(*loop) T) (T, error) {
	reply := make(chan T, 1)
	var zero T
	if !l.post(evFunc(func(l *loop) { reply <- f(l) })) {
		return zero, errStopped
	}
	select {
	case v := <-reply:
		return v, nil
	case <-l.done:
		return zero, errStopped
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// measured returns the generations whose processes the effects may
// measure: those not over yet, with their labels.
func (l *loop) measured() []metrics.GenerationUsage {
	var out []metrics.GenerationUsage
	for _, g := range l.gens {
		if !g.forgotten {
			out = append(out, metrics.GenerationUsage{Generation: g.num, Version: g.release.Version})
		}
	}
	return out
}

// usage reads the cost of every generation not over yet, off the loop:
// the effects read it from each generation's cgroup.
func (s *Supervisor) usage() []metrics.GenerationUsage {
	gens, _ := ask(context.Background(), s.loop, (*loop).measured)
	out := gens[:0]
	for _, g := range gens {
		if u, ok := s.fx.usage(g.Generation); ok {
			u.Generation, u.Version = g.Generation, g.Version
			out = append(out, u)
		}
	}
	return out
}

// generationInfo reports each generation's state for the metrics.
func (l *loop) generationInfo() []metrics.GenerationInfo {
	out := make([]metrics.GenerationInfo, 0, len(l.gens))
	for _, g := range l.gens {
		gi := metrics.GenerationInfo{Generation: g.num, Version: g.release.Version, State: g.state}
		if a := l.active; g == a {
			gi.Weight = a.canaryWeight()
		} else if p := a.runningProbation(); p != nil && p.standby == g {
			gi.Weight = 100 - a.canaryWeight()
		}
		out = append(out, gi)
	}
	return out
}
