package supervisor

import (
	"context"
	"os"
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
}

// GenerationStatus describes one generation.
type GenerationStatus struct {
	Generation       int       `json:"generation"`
	Version          string    `json:"version"`
	State            string    `json:"state"`
	Path             string    `json:"path"`
	PIDs             []int     `json:"pids"`
	InflightRequests int64     `json:"inflight_requests"`
	OpenConnections  int64     `json:"open_connections"`
	Restarts         int       `json:"restarts"`
	Started          time.Time `json:"started"`
	// ProbationUntil is set on the active generation while the previous
	// one stands by for it.
	ProbationUntil *time.Time `json:"probation_until,omitempty"`
}

// Status returns the supervisor's state, with live in-flight counts read
// from the workers' admin sockets.
func (s *Supervisor) Status(ctx context.Context) Status {
	st := Status{PID: os.Getpid(), StateDir: s.dir.path, Listen: s.cfg.Listen, Handover: s.cfg.Handover, Releases: s.releasesAbs}
	type live struct {
		gi     int
		socket string
	}
	var sockets []live
	s.mu.Lock()
	for _, g := range s.gens {
		gs := GenerationStatus{Generation: g.num, Version: g.release.Version, State: g.state, Path: g.release.Path, Started: g.started, PIDs: []int{}}
		if p := g.probation; p != nil && p.cause == "" && g == s.active {
			until := p.until
			gs.ProbationUntil = &until
		}
		if b := s.restarts[g]; b != nil {
			gs.Restarts = b.restarts
		}
		for _, w := range g.workers {
			if isClosed(w.exited) {
				continue
			}
			gs.PIDs = append(gs.PIDs, w.pid)
			if w.conn != nil {
				sockets = append(sockets, live{len(st.Generations), w.admin})
			}
		}
		st.Generations = append(st.Generations, gs)
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, l := range sockets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := metrics.ReadCounts(ctx, l.socket)
			if err != nil {
				return
			}
			mu.Lock()
			st.Generations[l.gi].InflightRequests += c.InflightRequests
			st.Generations[l.gi].OpenConnections += c.OpenConnections
			mu.Unlock()
		}()
	}
	wg.Wait()
	return st
}

// inflight returns the requests in flight on g's workers.
func (s *Supervisor) inflight(ctx context.Context, g *generation) int64 {
	for _, gs := range s.Status(ctx).Generations {
		if gs.Generation == g.num {
			return gs.InflightRequests
		}
	}
	return 0
}
