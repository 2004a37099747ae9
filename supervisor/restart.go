package supervisor

import (
	"time"
)

// Back-off for restarting crashed workers: the first restart is quick, each
// crash within resetAfter of the previous doubles the wait up to maxWait.
// crashLoop crashes in a row, each within resetAfter of the previous, are a
// crash loop: restarting stops and the generation shows failed.
const (
	firstWait  = 100 * time.Millisecond
	maxWait    = 10 * time.Second
	resetAfter = 30 * time.Second
	crashLoop  = 6
)

type backoff struct {
	wait     time.Duration
	last     time.Time
	restarts int // in total, for status
	streak   int // crashes in a row, each within resetAfter of the previous
}

// next returns how long to wait before the next restart, and false when the
// crashes have become a crash loop.
func (b *backoff) next(now time.Time) (time.Duration, bool) {
	if b.wait == 0 || now.Sub(b.last) > resetAfter {
		b.wait, b.streak = firstWait, 0
	} else {
		b.wait = min(2*b.wait, maxWait)
	}
	b.last = now
	b.streak++
	if b.streak >= crashLoop {
		return 0, false
	}
	b.restarts++
	return b.wait, true
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
	wait, ok := b.next(time.Now())
	ctx := s.ctx
	if !ok {
		g.state = StateFailed
	}
	s.mu.Unlock()
	if !ok {
		s.log.Error("crash loop: not restarting; the generation has failed (upgrade or rollback to recover)",
			"generation", g.num, "version", g.release.Version, "worker", index, "crashes", crashLoop)
		return
	}
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
		replaced := false
		for i, o := range g.workers {
			if o.index == index {
				g.workers[i] = w
				replaced = true
			}
		}
		if !replaced { // gone before an adoption
			g.workers = append(g.workers, w)
		}
		s.mu.Unlock()
		s.log.Info("worker restarted", "generation", g.num, "version", g.release.Version, "worker", index, "pid", w.pid)
	})
}
