package supervisor

import (
	"time"
)

// Back-off for restarting crashed workers: the first restart is quick, each
// crash within resetAfter of the previous doubles the wait up to maxWait.
const (
	firstWait  = 100 * time.Millisecond
	maxWait    = 10 * time.Second
	resetAfter = 30 * time.Second
)

type backoff struct {
	wait     time.Duration
	last     time.Time
	restarts int
}

// next returns how long to wait before the next restart.
func (b *backoff) next(now time.Time) time.Duration {
	if b.wait == 0 || now.Sub(b.last) > resetAfter {
		b.wait = firstWait
	} else {
		b.wait = min(2*b.wait, maxWait)
	}
	b.last = now
	b.restarts++
	return b.wait
}

// scheduleRestart starts worker index of g again after the back-off, if g
// is still the active generation then.
func (s *Supervisor) scheduleRestart(g *generation, index int) {
	s.mu.Lock()
	b := s.restarts[g]
	if b == nil {
		b = &backoff{}
		s.restarts[g] = b
	}
	wait := b.next(time.Now())
	ctx := s.ctx
	s.mu.Unlock()
	time.AfterFunc(wait, func() {
		s.mu.Lock()
		ok := ctx != nil && ctx.Err() == nil && !s.stopping && s.active == g && g.state == StateActive
		s.mu.Unlock()
		if !ok {
			return
		}
		w, err := s.startWorker(g, index)
		if err != nil {
			s.log.Error("restart worker", "generation", g.num, "worker", index, "err", err)
			s.scheduleRestart(g, index)
			return
		}
		s.mu.Lock()
		for i, o := range g.workers {
			if o.index == index {
				g.workers[i] = w
			}
		}
		s.mu.Unlock()
		s.log.Info("worker restarted", "generation", g.num, "version", g.release.Version, "worker", index, "pid", w.pid)
	})
}
