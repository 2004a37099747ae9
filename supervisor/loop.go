package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/launcherd/launcher/internal/control"
	"github.com/launcherd/launcher/metrics"
	"github.com/launcherd/launcher/reuseport"
)

// loop owns the supervisor's state: the generations and their workers,
// the reuseport group model, steering, probation, restarts and the
// operation under way. Only its own goroutine (run) touches that state.
// Everything else — worker connections, processes, timers, CLI requests,
// health checks — is an actor that posts a typed event and, where it
// waits for an answer, receives it on a channel of its own. The loop never
// blocks on I/O: what takes time (a worker's reply, a health check, an
// exit) comes back as another event.
type loop struct {
	cfg         Config
	log         *slog.Logger
	fx          effects
	m           *metrics.Supervisor
	stateDir    string // for the workers' environment
	restarts    restartPolicy
	adminSocket func(gen, worker int) string

	events chan event
	done   chan struct{}  // closed when run returns
	actors sync.WaitGroup // short-lived I/O actors (async)
	procs  sync.WaitGroup // process watchers: end when their process exits
	timers map[*time.Timer]bool

	gens    []*generation
	lastGen int
	active  *generation
	history []release        // releases that became active, oldest first
	reports []*UpgradeReport // the last upgrades' reports, oldest first
	// recent are the readings of the active generation's request metrics
	// of the last minute or so, oldest first, one each recentEvery (see
	// watchRecent).
	recent      []recentReading
	recentEvery time.Duration
	// stateStale: the state file's last write failed; stateRetry: its
	// next try is due (see flushState).
	stateStale, stateRetry bool
	stateRetryEvery        time.Duration
	// reportJSON holds the encoding of each final report in reports
	// (see savedReports).
	reportJSON map[*UpgradeReport][]byte
	byToken    map[string]*worker
	group      reuseport.Group[*worker]

	started bool // the first generation serves, or was adopted
	// early holds the upgrades asked for before started, in the order
	// asked: the first goes on once the first generation serves, the
	// others are refused as in progress (see releaseEarly).
	early    []cmdUpgrade
	adopting *adoption  // while adopted workers dial again
	op       *upgradeOp // the upgrade (or the first start) under way
	stop     *stopOp    // once stopping
	exit     bool       // run returns after this event

	// Listen grants and listener closes both change the kernel's group:
	// one at a time, so the model knows every socket's slot.
	granting  *worker
	grantQ    []*worker
	releaseQ  []*releaseJob
	releasing *releaseJob
	quick     *releaseRun // the run of quick releases under way, if any

	steer steerState
	// killLinger: how long a killed worker may take to exit before the
	// commands waiting for it are told why (see lingering).
	killLinger time.Duration
	pending    map[uint64]*pendingRequest
	nextID     uint64

	kept    []*keptSeries // final series of drained workers, oldest first
	maxKept int

	tickets tickets // TLS session-ticket keys for the workers

	dirty       bool // the state file needs writing
	stateClosed bool // everything stopped: no state file any more
}

// event is something that happened, posted to the loop by an actor. apply
// runs on the loop's goroutine.
type event interface{ apply(l *loop) }

func newLoop(cfg Config, fx effects, m *metrics.Supervisor, stateDir string, adminSocket func(int, int) string) *loop {
	return &loop{
		cfg: cfg, log: cfg.Logger, fx: fx, m: m, stateDir: stateDir, adminSocket: adminSocket, restarts: defaultRestarts,
		events:          make(chan event, 64),
		done:            make(chan struct{}),
		timers:          map[*time.Timer]bool{},
		byToken:         map[string]*worker{},
		pending:         map[uint64]*pendingRequest{},
		maxKept:         defaultMaxKept,
		steer:           steerState{timeout: steerTimeout},
		killLinger:      killLinger,
		recentEvery:     recentEvery,
		stateRetryEvery: stateRetryEvery,
		tickets:         tickets{ring: cfg.ticketFile, fixed: cfg.ticketFile.Len() > 0},
	}
}

// post hands ev to the loop. It reports false, dropping ev, once the loop
// has returned.
func (l *loop) post(ev event) bool {
	select {
	case l.events <- ev:
		return true
	case <-l.done:
		return false
	}
}

// run applies events until one sets exit (the stop is complete) or ctx
// ends. It then stops its timers and waits for the actors it started.
// maxBatch bounds the events applied between two writes of the state
// file.
const maxBatch = 64

func (l *loop) run(ctx context.Context) {
	defer func() {
		for t := range l.timers {
			t.Stop()
		}
		close(l.done)
		l.actors.Wait()
	}()
	for !l.exit {
		select {
		case ev := <-l.events:
			ev.apply(l)
			// The events queued meanwhile go first: a burst (a
			// generation's workers connecting, reporting, exiting) is one
			// write of the state file, not one per event, which with many
			// workers made the writes grow with their square. The
			// transitions a restart must see are written at once anyway
			// (flushState).
			for n := 1; n < maxBatch && !l.exit; n++ {
				select {
				case ev := <-l.events:
					ev.apply(l)
					continue
				default:
				}
				break
			}
			l.flushIfDirty()
		case <-ctx.Done():
			return
		}
	}
}

// evFunc is a continuation: the result of an actor's I/O, applied on the
// loop (see async).
type evFunc func(l *loop)

func (f evFunc) apply(l *loop) { f(l) }

// async runs io on an actor goroutine owned by the loop and applies then
// to its result on the loop. io must end within its own bounds.
func async[T any](l *loop, io func() T, then func(*loop, T)) {
	l.actors.Add(1)
	go func() {
		defer l.actors.Done()
		v := io()
		l.post(evFunc(func(l *loop) { then(l, v) }))
	}()
}

// readEach reads every admin socket of admins at once with read, each
// within the same second, and returns what each answered, in order (ok
// false where read failed or ran out of time). It blocks: run it off the
// loop (async). At once, because one worker that answers nothing (stopped,
// hung) would otherwise take the whole second and leave every worker after
// it unread, and because whoever waits for the answers waits for the
// slowest, not for their sum.
func readEach[T any](admins []string, read func(ctx context.Context, admin string) (T, error)) (out []T, ok []bool) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	out, ok = make([]T, len(admins)), make([]bool, len(admins))
	var wg sync.WaitGroup
	for i, a := range admins {
		wg.Go(func() { // ends within ctx's second
			v, err := read(ctx, a)
			out[i], ok[i] = v, err == nil
		})
	}
	wg.Wait()
	return out, ok
}

// runningCounts are the counts of workers read by countRunning: those not
// running (stopped[i]) were not asked; counted[i] says whether a worker
// asked answered.
type runningCounts struct {
	stopped, counted []bool
	counts           []metrics.Counts
}

// look takes w's part (the i-th) of a watch's reading lk in: its count
// of requests in flight, and its silence (reads in a row it left
// unanswered; a stopped one is not asked, and its stop is no silence). It
// returns why w cannot take traffic, whyStopped or whyHung (silent
// hungReads times, or a steer it left unanswered: see silentAgent), or
// "" (see watchPaused and watchStandby).
func (w *worker) look(lk runningCounts, i int) string {
	switch {
	case lk.counted[i]:
		w.silentReads, w.inflight = 0, lk.counts[i].InflightRequests
	case !lk.stopped[i]:
		w.silentReads++
	}
	switch {
	case lk.stopped[i]:
		return whyStopped
	case w.silentReads >= hungReads:
		return whyHung
	}
	return ""
}

// countRunning reads, off the loop, the counts of the processes of procs
// that run, at once, each within the second (see readEach). One found
// stopped or frozen (process.stopped), or, when asleep is set, asleep in
// state D (as under a cgroup v1 freezer), is not asked: it would only take
// the second. Each look is a /proc read, microseconds.
func countRunning(fx effects, procs []process, admins []string, asleep bool) runningCounts {
	rc := runningCounts{make([]bool, len(procs)), make([]bool, len(procs)), make([]metrics.Counts, len(procs))}
	var asked []string
	var at []int
	for i, p := range procs {
		rc.stopped[i] = p.stopped() || asleep && p.state() == 'D'
		if !rc.stopped[i] {
			asked, at = append(asked, admins[i]), append(at, i)
		}
	}
	counts, ok := readEach(asked, fx.counts)
	for j, i := range at {
		rc.counted[i], rc.counts[i] = ok[j], counts[j]
	}
	return rc
}

// after applies ev on the loop once d has passed, unless the loop has
// returned; the returned stop cancels it.
func (l *loop) after(d time.Duration, ev event) (stop func()) {
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		l.post(evFunc(func(l *loop) {
			if l.timers[t] {
				delete(l.timers, t)
				ev.apply(l)
			}
		}))
	})
	l.timers[t] = true
	return func() {
		t.Stop()
		delete(l.timers, t)
	}
}

// errNoAnswer is the error of a request to a worker that did not answer
// in time: a worker stopped (SIGSTOP) or stuck, not one that refused.
var errNoAnswer = errors.New("no answer")

// pendingRequest is a request to a worker awaiting its reply.
type pendingRequest struct {
	w    *worker
	want string // the reply's type
	then func(*loop, control.Message, error)
	stop func() // its timeout
}

// request sends m to w and applies then to its reply of type want, or to
// an error: w not connected, disconnected or exited meanwhile, or no reply
// within timeout. Replies are matched by ID; a worker of protocol version
// 1 sends none, and is matched by type, oldest request first.
func (l *loop) request(w *worker, m control.Message, want string, timeout time.Duration, then func(*loop, control.Message, error)) {
	if w.conn == nil || w.exited {
		then(l, control.Message{}, fmt.Errorf("%s is not connected", w))
		return
	}
	l.nextID++
	id := l.nextID
	m.ID = id
	p := &pendingRequest{w: w, want: want, then: then}
	l.pending[id] = p
	p.stop = l.after(timeout, evFunc(func(l *loop) {
		l.answer(id, control.Message{}, fmt.Errorf("%s did not answer %s within %s: %w", w, m.Type, timeout, errNoAnswer))
	}))
	if !w.conn.send(m) {
		l.answer(id, control.Message{}, fmt.Errorf("%s: connection lost", w))
	}
}

// answer completes the pending request id, once.
func (l *loop) answer(id uint64, m control.Message, err error) {
	p := l.pending[id]
	if p == nil {
		return
	}
	delete(l.pending, id)
	p.stop()
	if err == nil && m.Type != p.want {
		err = fmt.Errorf("%s answered %s, want %s", p.w, m.Type, p.want)
	}
	if err == nil && m.Error != "" {
		err = errors.New(m.Error)
	}
	p.then(l, m, err)
}

// reply matches a reply from w to its request.
func (l *loop) reply(w *worker, m control.Message) {
	if m.ID != 0 {
		if p := l.pending[m.ID]; p != nil && p.w == w {
			l.answer(m.ID, m, nil)
		}
		return
	}
	// Protocol version 1: the oldest request of w awaiting this type.
	var oldest uint64
	for id, p := range l.pending {
		if p.w == w && p.want == m.Type && (oldest == 0 || id < oldest) {
			oldest = id
		}
	}
	if oldest != 0 {
		l.answer(oldest, m, nil)
	}
}

// failPending fails every request awaiting w's reply.
func (l *loop) failPending(w *worker, err error) {
	for id, p := range l.pending {
		if p.w == w {
			l.answer(id, control.Message{}, err)
		}
	}
}

// send writes m to w without waiting for a reply; best effort.
func (l *loop) send(w *worker, m control.Message) {
	if w.conn != nil {
		w.conn.send(m)
	}
}

// markDirty asks for the state file to be written after this event.
func (l *loop) markDirty() { l.dirty = true }

// flushIfDirty writes the state file if an event changed what it holds.
func (l *loop) flushIfDirty() {
	if l.dirty {
		l.flushState()
	}
}

// flushState writes the state file now, and returns why it could not.
// Transitions a restarted supervisor must not miss (which generation is
// active) call it before traffic moves, and say a failure to the command.
func (l *loop) flushState() error {
	l.dirty = false
	if l.stateClosed {
		return nil
	}
	err := l.fx.saveState(l.snapshot())
	if err != nil {
		l.m.StateWriteErrors.Inc()
		l.log.Error("write state file: a supervisor started after this one is killed could not adopt what runs now", "err", err)
		if !l.stateRetry {
			// Written again until it takes: nothing else may change
			// for hours, and the file on disk is the last one that took
			// (a new user's recheck: stale until the next upgrade).
			l.stateRetry = true
			l.after(l.stateRetryEvery, evFunc(func(l *loop) {
				l.stateRetry = false
				if l.stateStale && !l.stateClosed && l.flushState() == nil {
					l.log.Info("state file written again")
				}
			}))
		}
	}
	if stale := err != nil; stale != l.stateStale {
		l.stateStale = stale
		v := 0.0
		if stale {
			v = 1
		}
		l.m.StateFileStale.Set(v)
	}
	return err
}

// stateRetryEvery is how often a state file whose last write failed is
// written again.
const stateRetryEvery = 5 * time.Second

// genLog returns the logger for g.
func (l *loop) genLog(g *generation) *slog.Logger {
	return l.log.With("generation", g.num, "version", g.release.Version)
}

// workerLog returns the logger for w.
func (l *loop) workerLog(w *worker) *slog.Logger {
	return l.genLog(w.gen).With("worker", w.index, "pid", w.pid)
}

// notWorkers returns the pids among pids that belong to no worker the
// loop knows: orphans the reaper may wait for.
func (l *loop) notWorkers(pids []int) []int {
	workers := map[int]bool{}
	for _, w := range l.byToken {
		workers[w.pid] = true
	}
	var out []int
	for _, pid := range pids {
		if !workers[pid] {
			out = append(out, pid)
		}
	}
	return out
}
