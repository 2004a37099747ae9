package supervisor

import (
	"context"
	"slices"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/launcherd/launcher/internal/control"
	"github.com/launcherd/launcher/metrics"
)

// A worker's counters keep moving until its last request ends; then it
// exits, and a series that went with it would lose what it served since
// the last scrape. So a worker of this library, once drained, reports
// Drained and waits (control.CollectWait at most) while the loop reads
// its metrics one last time (an async scrape of its admin socket), keeps
// what of them outlives it (metrics.Freeze) and answers Collected. The
// frozen series are served with the worker's labels until --keep-exited
// after its exit, then dropped: the series set stays bounded.

// finalScrapeTimeout bounds the last read of a drained worker's metrics,
// well within the control.CollectWait it waits for the answer.
const finalScrapeTimeout = time.Second

// defaultMaxKept bounds the exited workers whose series are kept at once,
// however fast upgrades come; beyond it the oldest go first.
const defaultMaxKept = 512

// keptSeries are a drained worker's final series.
type keptSeries struct {
	target  metrics.Target // with Final set
	stop    func()         // its expiry, once the worker has exited
	dropped bool
}

// collectFinal reads the final metrics of w, which reported Drained and
// waits for Collected, keeps them, and lets w exit.
func (l *loop) collectFinal(w *worker) {
	if !l.cfg.collectsFinal() || !control.HasCap(w.caps, control.CapFinalMetrics) || w.final != nil || w.collecting {
		return
	}
	w.collecting = true
	fx, target := l.fx, metrics.Target{Socket: w.admin, Generation: w.gen.num, Version: w.gen.release.Version, Worker: w.index}
	type final struct {
		mfs map[string]*dto.MetricFamily
		err error
	}
	async(l, func() final {
		ctx, cancel := context.WithTimeout(context.Background(), finalScrapeTimeout)
		defer cancel()
		mfs, err := fx.scrape(ctx, target.Socket)
		if err != nil {
			return final{err: err}
		}
		return final{mfs: metrics.Freeze(mfs)}
	}, func(l *loop, f final) {
		w.collecting = false
		if f.err != nil {
			l.m.ScrapeErrors.Inc()
			l.workerLog(w).Warn("final metrics not read: its series go when it exits", "err", f.err)
		} else {
			target.Final = f.mfs
			l.keep(w, target)
		}
		l.send(w, control.Message{Type: control.TypeCollected})
	})
}

// keep serves t, w's final series, from now on instead of scraping w, and
// until --keep-exited after w's exit.
func (l *loop) keep(w *worker, t metrics.Target) {
	k := &keptSeries{target: t}
	w.final = k
	l.kept = append(l.kept, k)
	for len(l.kept) > l.maxKept {
		l.dropKept(l.kept[0])
	}
	if w.exited {
		l.expireKept(k)
	}
}

// expireKept drops k once --keep-exited has passed: its worker has exited.
func (l *loop) expireKept(k *keptSeries) {
	if k == nil || k.dropped || k.stop != nil {
		return
	}
	k.stop = l.after(l.cfg.KeepExited, evFunc(func(l *loop) { l.dropKept(k) }))
}

// dropKept stops serving k.
func (l *loop) dropKept(k *keptSeries) {
	if k.dropped {
		return
	}
	k.dropped = true
	if k.stop != nil {
		k.stop()
	}
	l.kept = slices.DeleteFunc(l.kept, func(x *keptSeries) bool { return x == k })
}

// scrapeTargets lists the admin sockets of live workers with their labels,
// and the final series of drained workers, kept or still exiting.
func (l *loop) scrapeTargets() []metrics.Target {
	var out []metrics.Target
	for _, g := range l.gens {
		for _, w := range g.live() {
			if w.conn != nil && w.final == nil {
				out = append(out, metrics.Target{Socket: w.admin, Generation: g.num, Version: g.release.Version, Worker: w.index})
			}
		}
	}
	for _, k := range l.kept {
		out = append(out, k.target)
	}
	return out
}
