package supervisor

import (
	"fmt"
	"time"

	"github.com/launcherd/launcher/metrics"
)

// The judge watches a generation during its canary and its probation and
// compares it with the generation standing by for it, over the same
// window (from the moment traffic began to move to now): the ratio of 5xx
// answers and the p99 latency, read from both generations' own
// launcher_requests_total and launcher_request_duration_seconds every
// Config.JudgeEvery. A breach found by two readings in a row rolls back at
// once.

// Judge defaults: Config's zero values mean these.
const (
	// DefaultMaxErrorRatio: the new generation's 5xx ratio may exceed the
	// old one's by 5 percentage points.
	DefaultMaxErrorRatio = 0.05
	// DefaultMaxLatencyRatio: its p99 may be twice the old one's.
	DefaultMaxLatencyRatio = 2.0
	// DefaultMinRequests: no judgement on fewer requests of the new
	// generation in the window.
	DefaultMinRequests = 100
	// DefaultJudgeEvery is how often the judge reads the workers' metrics.
	DefaultJudgeEvery = time.Second
)

// NoJudge as Config.MaxErrorRatio or Config.MaxLatencyRatio turns that
// judgement off.
const NoJudge = -1.0

// judgeConfirm is how many readings in a row must find a breach before
// the judge rolls back (the probation's last reading acts on its own).
const judgeConfirm = 2

// latencyFloor: p99s below it count as it. Below a few milliseconds a p99
// is scheduling noise (a loaded machine, a cold start), not the release's.
const latencyFloor = 10 * time.Millisecond

// Why a judged probation rolled back: the reason label of
// launcher_rollbacks_total (with "crashed" and "requested").
const (
	breachErrors  = "errors"
	breachLatency = "latency"
)

// WindowFigures are one generation's requests in a judged window.
type WindowFigures struct {
	Generation int    `json:"generation"`
	Version    string `json:"version"`
	Requests   int64  `json:"requests"`
	// Errors are the answers with a 5xx status code.
	Errors int64 `json:"errors"`
	// P99 is estimated from the duration histogram's buckets (see
	// metrics.RequestSample.Quantile): 0 without requests.
	P99 time.Duration `json:"p99_ns"`
	// Window is the window's length.
	Window time.Duration `json:"window_ns"`
	// Lifetime is set when the window held too few of its requests to
	// compare with, and the figures are those of its whole life instead.
	Lifetime bool `json:"lifetime,omitempty"`
	// Before is set when the window held too few of its requests to
	// compare with, and the figures are those of its last Window before
	// the upgrade (and since) instead: a minute at most, from the
	// supervisor's readings of the active generation (see watchRecent).
	Before bool `json:"before_upgrade,omitempty"`
	// Unread counts its running workers the last reading did not read
	// (paused: stopped or hung; or not answering): what they served
	// since their previous reading, if any, is not in the figures.
	Unread int `json:"unread_workers,omitempty"`
	// Lost counts its workers that exited without a drain (a crash, a
	// kill) since the window began: what they served since their last
	// reading died with them, and is not in the figures.
	Lost int `json:"lost_workers,omitempty"`
}

func (f WindowFigures) ratio() float64 {
	if f.Requests <= 0 {
		return 0
	}
	return float64(f.Errors) / float64(f.Requests)
}

func (f WindowFigures) String() string {
	s := f.counts()
	if f.Unread > 0 {
		s += fmt.Sprintf("; %d worker(s) not read (paused or not answering): what they served since their last reading is not counted", f.Unread)
	}
	if f.Lost > 0 {
		s += fmt.Sprintf("; %d worker(s) exited without a drain (crashed or killed): what they served since their last reading is lost, not counted", f.Lost)
	}
	return s
}

// counts renders f's figures.
func (f WindowFigures) counts() string {
	if f.Requests <= 0 {
		none := "no requests"
		if f.Unread > 0 || f.Lost > 0 {
			// Not "none": none were read (a new user's trial: a
			// generation that served 556 requests and crashed read
			// "no requests").
			none = "no requests read"
		}
		s := fmt.Sprintf("generation %d (%s): %s", f.Generation, f.Version, none)
		if f.Lifetime {
			s += " in its whole life"
		}
		return s
	}
	noun := "requests"
	if f.Requests == 1 {
		noun = "request"
	}
	// The window's length says how much of the generation's traffic the
	// figures hold: a generation that crashed was last read before.
	span := ""
	switch {
	case f.Before:
		span = fmt.Sprintf(" in its last %.0f s", f.Window.Seconds())
	case !f.Lifetime && f.Window > 0:
		span = fmt.Sprintf(" in %.1f s", f.Window.Seconds())
	}
	s := fmt.Sprintf("generation %d (%s): %d %s%s, %d 5xx (%.1f%%), p99 %s", f.Generation, f.Version,
		f.Requests, noun, span, f.Errors, 100*f.ratio(), f.P99.Round(100*time.Microsecond))
	if f.Lifetime {
		s += " over its whole life"
	}
	return s
}

// judgeLimits are Config's judge settings.
type judgeLimits struct {
	maxErrorRatio, maxLatencyRatio float64 // < 0: off
	minRequests                    int64
}

// verdict judges the new generation's window nw against the old one's,
// ow, or, when ow has fewer than minRequests, against ofall: the old
// one's figures before the upgrade (Before) or over its whole life. It returns the breach ("" for none, else breachErrors or
// breachLatency) with its reason, and whether it judged at all: not
// before the new generation has minRequests. Without a baseline of
// minRequests, errors are judged against none and latency not at all.
// figures are both generations' figures as judged.
func verdict(nw, ow, ofall WindowFigures, lim judgeLimits) (breach, reason, figures string, judged bool) {
	if nw.Requests < lim.minRequests || nw.Requests <= 0 {
		return "", fmt.Sprintf("not judged: %d of the %d requests it needs", max(nw.Requests, 0), lim.minRequests), "", false
	}
	base := baseline(ow, ofall, lim.minRequests)
	baseOK := base.Requests >= lim.minRequests && base.Requests > 0
	oldRatio := 0.0
	if baseOK {
		oldRatio = base.ratio()
	}
	figures = fmt.Sprintf("%s; %s", nw, base)
	if lim.maxErrorRatio >= 0 && nw.ratio() > oldRatio+lim.maxErrorRatio {
		return breachErrors, fmt.Sprintf("5xx ratio %.1f%% (%d of %d) against %.1f%% on generation %d (limit: +%.1f points)",
			100*nw.ratio(), nw.Errors, nw.Requests, 100*oldRatio, base.Generation, 100*lim.maxErrorRatio), figures, true
	}
	if lim.maxLatencyRatio > 0 && baseOK {
		np, op := max(nw.P99, latencyFloor), max(base.P99, latencyFloor)
		if float64(np) > lim.maxLatencyRatio*float64(op) {
			return breachLatency, fmt.Sprintf("p99 latency %s against %s on generation %d (×%.2f, both counted as at least %s; limit ×%.1f)",
				nw.P99.Round(100*time.Microsecond), base.P99.Round(100*time.Microsecond), base.Generation,
				float64(np)/float64(op), latencyFloor, lim.maxLatencyRatio), figures, true
		}
	}
	return "", "healthy", figures, true
}

// baseline is what the new generation's window is compared with: the old
// generation's window ow, or ofall when ow has fewer than minRequests
// (flagged Lifetime unless it is the figures before the upgrade).
func baseline(ow, ofall WindowFigures, minRequests int64) WindowFigures {
	if ow.Requests >= minRequests {
		return ow
	}
	if !ofall.Before {
		ofall.Lifetime = true
	}
	return ofall
}

// judge is the judge of one probation. It belongs to the loop.
type judge struct {
	g, old  *generation
	start   time.Time
	known   map[*worker]bool // the workers live when it began
	base    map[*worker]metrics.RequestSample
	last    map[*worker]metrics.RequestSample
	began   bool // the first reading is in: the window starts there
	stopped bool
	last1   bool // the probation is over: this reading is the last
	// breaches counts the readings in a row that found a breach.
	breaches int
	// before is the supervisor's reading of the old generation that the
	// figures before the upgrade count from (see watchRecent); nil for
	// none.
	before      *recentReading
	minRequests int64
	// The latest reading: both windows, the old generation's figures
	// for when its window is thin (ofall: before the upgrade when they
	// have minRequests, else over its whole life), and the judgement.
	nw, ow, ofall WindowFigures
	judged        bool
	reason        string
	first         float64 // the new generation's first connection, Unix seconds
}

func (l *loop) limits() judgeLimits {
	return judgeLimits{maxErrorRatio: l.cfg.MaxErrorRatio, maxLatencyRatio: l.cfg.MaxLatencyRatio, minRequests: int64(l.cfg.MinRequests)}
}

// startJudge starts judging g against old during p; the first reading
// starts the window.
func (l *loop) startJudge(g, old *generation, p *probation) {
	j := &judge{g: g, old: old, known: map[*worker]bool{}, base: map[*worker]metrics.RequestSample{}, last: map[*worker]metrics.RequestSample{},
		before: l.recentOf(old), minRequests: int64(l.cfg.MinRequests)}
	for _, w := range append(g.live(), old.live()...) {
		j.known[w] = true
	}
	p.judge = j
	l.readJudge(g, p)
}

// readJudge reads the metrics of both generations' workers, off the loop,
// and judges; then again after JudgeEvery while p runs.
func (l *loop) readJudge(g *generation, p *probation) {
	j := p.judge
	if j == nil || j.stopped || g.runningProbation() != p {
		return
	}
	l.scrapeJudged(g, j, func(l *loop, read map[*worker]metrics.RequestSample) {
		if j.stopped || g.runningProbation() != p {
			return
		}
		l.judgeReading(g, p, read)
		switch {
		case g.runningProbation() != p || j.stopped:
		case j.last1:
			l.endProbation(g, probationPassed)
		default:
			l.after(l.cfg.JudgeEvery, evFunc(func(l *loop) {
				if !j.last1 { // the last reading is under way
					l.readJudge(g, p)
				}
			}))
		}
	})
}

// scrapeJudged reads the request metrics of g's and j.old's connected
// workers off the loop (within a second), then calls then on the loop.
func (l *loop) scrapeJudged(g *generation, j *judge, then func(*loop, map[*worker]metrics.RequestSample)) {
	var ws []*worker
	for _, w := range append(g.live(), j.old.live()...) {
		// A worker found stopped or hung would only take the reading's
		// whole second: it serves nothing meanwhile.
		if w.conn != nil && !w.paused {
			ws = append(ws, w)
		}
	}
	async(l, readSamples(l.fx, ws), then)
}

// readSamples returns what reads ws's request metrics off the loop, at
// once, each within the second (see readEach: read in turn, a worker that
// answers nothing took the whole second and left the reading empty); a
// worker that did not answer is left out.
func readSamples(fx effects, ws []*worker) func() map[*worker]metrics.RequestSample {
	admins := make([]string, len(ws))
	for i, w := range ws {
		admins[i] = w.admin
	}
	return func() map[*worker]metrics.RequestSample {
		mfs, ok := readEach(admins, fx.scrape)
		out := map[*worker]metrics.RequestSample{}
		for i, w := range ws {
			if ok[i] {
				out[w] = metrics.SampleRequests(mfs[i])
			}
		}
		return out
	}
}

// lastLook reads g's and the standby's workers once more after p ended
// before its judge's next reading (a newer upgrade superseded it), so
// that rep, decided on the reading before (perhaps the first, with no
// request counted yet), counts up to its verdict. The report is printed
// and made final only after it (see retireStandby): within a second.
func (l *loop) lastLook(g *generation, p *probation, rep *UpgradeReport) {
	j := p.judge
	if j == nil || !j.began || rep == nil {
		return
	}
	p.looking = true
	l.scrapeJudged(g, j, func(l *loop, read map[*worker]metrics.RequestSample) {
		j.take(read, time.Now())
		l.setFigures(rep, j)
		l.markDirty()
		p.looking = false
		fs := p.afterLook
		p.afterLook = nil
		for _, f := range fs {
			f(l)
		}
	})
}

// take takes a reading in: the windows' figures as of now. The first
// reading starts the windows.
func (j *judge) take(read map[*worker]metrics.RequestSample, now time.Time) {
	if !j.began {
		j.began, j.start = true, now
	}
	for w, s := range read {
		if _, ok := j.base[w]; !ok {
			// The new generation had no traffic before and a worker
			// started since (a restart) none either: they count from
			// zero. An old worker counts from its first reading.
			if w.gen == j.g || !j.known[w] {
				s0 := metrics.RequestSample{Bounds: s.Bounds, Counts: make([]float64, len(s.Counts))}
				j.base[w] = s0
			} else {
				j.base[w] = s
			}
		}
		j.last[w] = s
	}
	sum := func(gen *generation, life bool) (metrics.RequestSample, WindowFigures) {
		var tot metrics.RequestSample
		for w, s := range j.last {
			if w.gen != gen {
				continue
			}
			if !life {
				s = s.Sub(j.base[w])
			}
			tot = tot.Add(s)
		}
		unread, lost := 0, 0
		for _, w := range gen.live() {
			if _, ok := read[w]; !ok {
				unread++
			}
		}
		for _, w := range gen.workers {
			if w.exited && !w.drained {
				lost++
			}
		}
		return tot, WindowFigures{Generation: gen.num, Version: gen.release.Version, Requests: int64(tot.Requests),
			Errors: int64(tot.Errors), P99: tot.Quantile(0.99), Window: now.Sub(j.start), Unread: unread, Lost: lost}
	}
	ns, nw := sum(j.g, false)
	_, ow := sum(j.old, false)
	_, ofall := sum(j.old, true)
	if b := j.before; b != nil {
		// Its last minute or so, with the same mix of requests as the
		// new generation's window: its whole life, from a start with
		// another mix, made a healthy release three times slower at
		// p99 (a new user's trial, 1 of 8: uploads and slow requests
		// begun long after the old generation started).
		var tot metrics.RequestSample
		for w, s := range j.last {
			if s0, ok := b.read[w]; ok && w.gen == j.old {
				tot = tot.Add(s.Sub(s0))
			}
		}
		if n := int64(tot.Requests); n >= j.minRequests {
			ofall = WindowFigures{Generation: j.old.num, Version: j.old.release.Version, Requests: n,
				Errors: int64(tot.Errors), P99: tot.Quantile(0.99), Window: now.Sub(b.at), Before: true, Unread: ofall.Unread}
		}
	}
	j.nw, j.ow, j.ofall = nw, ow, ofall
	if ns.FirstConnection > 0 {
		j.first = ns.FirstConnection
	}
}

// judgeReading takes one reading in and rolls back on a breach.
func (l *loop) judgeReading(g *generation, p *probation, read map[*worker]metrics.RequestSample) {
	j := p.judge
	j.take(read, time.Now())
	breach, reason, figures, judged := verdict(j.nw, j.ow, j.ofall, l.limits())
	j.judged, j.reason = judged, reason
	if breach == "" {
		j.breaches = 0
	} else {
		j.breaches++
	}
	switch {
	case breach == "":
	case j.breaches < judgeConfirm && !j.last1:
		// One reading can be a cold start's or a loaded machine's
		// moment: the next one, a JudgeEvery later, confirms it.
		l.genLog(g).Info("judge: breach, to be confirmed at the next reading", "breach", breach, "reason", reason)
	case len(l.wakeStandby(p)) == 0:
		// The old generation has no worker left to take traffic back:
		// the new one serves on, and the verdict says so at once (see
		// serveOnBreached).
		p.breach, p.crash, p.figures = breach, reason, figures
		l.endProbation(g, probationBreached)
	default:
		p.breach, p.crash, p.figures = breach, reason, figures
		l.endProbation(g, probationJudged)
	}
}

// stopJudge ends p's judge, if any.
func (p *probation) stopJudge() {
	if p.judge != nil {
		p.judge.stopped = true
	}
}

func itoa(n int) string { return fmt.Sprint(n) }

// recentReading is a reading of the active generation's workers'
// request metrics (see watchRecent).
type recentReading struct {
	at   time.Time
	gen  *generation
	read map[*worker]metrics.RequestSample
}

// How often watchRecent reads the active generation (by default: tests
// shorten loop.recentEvery), and how far back the readings it keeps go:
// the judge compares a new generation whose old one has too few requests
// in the window with the old one's last minute or so, not with its whole
// life.
const (
	recentEvery = 10 * time.Second
	recentSpan  = time.Minute
)

// watchRecent reads the active generation's workers' request metrics
// every recentEvery, off the loop, while a judge may come (a probation or
// a canary, and a limit to judge), and keeps the readings of the last
// recentSpan: the judge's figures of the old generation before an upgrade
// (see startJudge). A reading is a scrape of each ready worker's admin
// socket, about a millisecond each.
func (l *loop) watchRecent() {
	if l.stop != nil {
		return
	}
	again := func(l *loop) { l.after(l.recentEvery, evFunc(func(l *loop) { l.watchRecent() })) }
	g := l.active
	judged := l.cfg.MaxErrorRatio >= 0 || l.cfg.MaxLatencyRatio > 0
	if g == nil || !judged || l.cfg.Handover != HandoverSteer || g.runningProbation() != nil {
		again(l)
		return
	}
	var ws []*worker
	for _, w := range g.workers {
		if w.ready && !w.exited && !w.killed && !w.paused && w.conn != nil {
			ws = append(ws, w)
		}
	}
	async(l, readSamples(l.fx, ws), func(l *loop, read map[*worker]metrics.RequestSample) {
		now := time.Now()
		keep := l.recent[:0]
		for _, r := range l.recent {
			if r.gen == g && now.Sub(r.at) <= recentSpan+l.recentEvery {
				keep = append(keep, r)
			}
		}
		l.recent = append(keep, recentReading{at: now, gen: g, read: read})
		again(l)
	})
}

// recentOf returns the oldest of the kept readings of g (a minute or so
// old), nil for none.
func (l *loop) recentOf(g *generation) *recentReading {
	for i := range l.recent {
		if l.recent[i].gen == g {
			r := l.recent[i]
			return &r
		}
	}
	return nil
}
