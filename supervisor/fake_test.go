package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	"github.com/launcherd/launcher/internal/control"
	"github.com/launcherd/launcher/metrics"
)

// The state machine's tests run the real loop, the real control socket and
// the real protocol, with fake processes: each "process" is a goroutine
// that speaks the worker's side of the protocol, as the release's
// behaviour says. Nothing is executed.

// behaviour is what a fake release's workers do.
type behaviour struct {
	exitBeforeReady bool          // exit right after hello
	noHello         bool          // run, and never dial the supervisor (a release without the library)
	neverReady      bool          // listen, never report ready
	readyAfter      time.Duration // listen, then report ready this much later (a warm-up)
	stderr          string        // a line it writes to stderr at its start
	unhealthy       bool          // fail the health check
	adminHealth     bool          // an older library: no health check of its own before ready, only /healthz
	crashAfter      time.Duration // exit this long after ready (0: never)
	crashOne        bool          // with crashAfter: only the first of its generation's workers to be ready does
	drainFor        time.Duration // after a release, exit this much later
	exitLate        time.Duration // with finalMetrics: after its drain ended, exit this much later still (a long shutdown hook)
	inflight        int64         // the requests in flight its admin socket counts
	protocol        int           // hello version; 0 means control.Version
	reverse         bool          // answer a quiesce after the next request
	mute            bool          // answer no quiesce or release: stopped (SIGSTOP) or stuck
	dieAtRelease    bool          // crash when released, its answer never sent (killed during its drain)
	// stopOneReady: the first of its generation's workers to report
	// ready is stopped (see fakeProc.stop) right after it.
	stopOneReady bool
	// finalMetrics: like this library, it lists CapFinalMetrics and, when
	// the welcome does too, reports Drained and waits for Collected (at
	// most control.CollectWait) before it exits.
	finalMetrics bool
	scrapeFails  bool // its admin socket answers no scrape
	countsFail   bool // its admin socket answers no count (stopped, stuck)
	noHandshakes bool // a library without control.CapHandshakes
	// askListen: a library without control.CapWelcomeGrant, which asks
	// to listen (TypeListen) and waits for TypeGrant whatever the
	// welcome says. Without it, like this library, a fake worker whose
	// welcome grants its listen joins the group at once.
	askListen bool
	// ticketKeys: like this library, it lists CapTicketKeys; the keys it
	// gets are recorded (fakeEffects.gotTickets).
	ticketKeys bool
	// rps > 0: its scrapes count rps requests a second since it started,
	// errorRatio of them answered 500, all taking latency.
	rps        float64
	errorRatio float64
	latency    time.Duration
	// slowFor: the requests of its first slowFor took slowLatency (a
	// slow warm-up, another mix of requests then); trafficFor > 0: it
	// counts requests only over its first trafficFor (then none reach
	// it, as when steered away from).
	slowFor, slowLatency time.Duration
	trafficFor           time.Duration
}

// fakeProc is a fake worker process.
type fakeProc struct {
	id   int
	gen  int
	fx   *fakeEffects
	exit chan struct{}
	// adopted: its exit status is not known, as an adopted process's
	// (errAdoptedExit); exitFirst: its exit comes before its drain's
	// report, whose socket closes a moment after it.
	adopted, exitFirst bool
	once               sync.Once
	mu                 sync.Mutex
	signals            []syscall.Signal
	killed             bool // its tree was killed
	released           bool // its listeners were released
	started            time.Time
	// saidHello: it has said hello (guarded by fx.mu).
	saidHello bool
	// sigstopped: stopped as by SIGSTOP (see stop); hung: answers nothing,
	// as a deadlocked process, though it runs (see hang).
	sigstopped, hung bool
	// dsleep: asleep in state D, as under a cgroup v1 freezer: it answers
	// nothing, and a kill takes effect only at wakeD.
	dsleep bool
}

// hang makes p answer nothing any more, on its control connection or its
// admin socket, as a deadlocked process: its state does not read stopped.
func (p *fakeProc) hang() {
	p.mu.Lock()
	p.hung = true
	p.mu.Unlock()
}

// failStarts makes the starts of the workers of indexes fail as a
// fork/exec of a missing binary does; all workers' with all set; none
// fail again without either.
func (fx *fakeEffects) failStarts(all bool, indexes ...int) {
	fx.mu.Lock()
	defer fx.mu.Unlock()
	fx.startErr = nil
	if all || len(indexes) > 0 {
		fx.startErr = func(spec procSpec) error {
			if all || slices.Contains(indexes, spec.index) {
				return fmt.Errorf("fork/exec %s: no such file or directory", spec.path)
			}
			return nil
		}
	}
}

// unhang makes p answer again.
func (p *fakeProc) unhang() {
	p.mu.Lock()
	p.hung = false
	p.mu.Unlock()
}

// silent reports whether p answers nothing: stopped or hung.
func (p *fakeProc) silent() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sigstopped || p.hung || p.dsleep
}

// stop stops p as SIGSTOP would: it answers nothing any more, neither on
// its control connection nor on its admin socket, and its state reads
// stopped.
func (p *fakeProc) stop() {
	p.mu.Lock()
	p.sigstopped = true
	p.mu.Unlock()
}

// cont lets p run again, as SIGCONT would.
func (p *fakeProc) cont() {
	p.mu.Lock()
	p.sigstopped = false
	p.mu.Unlock()
}

// sleepD puts p in an uninterruptible sleep (state D): it answers
// nothing, and a kill waits for wakeD.
func (p *fakeProc) sleepD() {
	p.mu.Lock()
	p.dsleep = true
	p.mu.Unlock()
}

// wakeD ends p's uninterruptible sleep; a kill sent meanwhile ends it now.
func (p *fakeProc) wakeD() {
	p.mu.Lock()
	p.dsleep = false
	killed := p.killed
	p.mu.Unlock()
	if killed {
		p.die()
	}
}

func (p *fakeProc) state() byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case !p.alive():
		return 0
	case p.dsleep:
		return 'D'
	case p.sigstopped:
		return 'T'
	}
	return 'S'
}

func (p *fakeProc) stopped() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sigstopped && !p.killed
}

func (p *fakeProc) pid() int              { return p.id }
func (p *fakeProc) done() <-chan struct{} { return p.exit }

// exitErr is a clean exit's after a release (the end of its drain), else
// a crash's.
func (p *fakeProc) exitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.adopted {
		return errAdoptedExit
	}
	if p.released && !p.killed && len(p.signals) == 0 {
		return errExitedZero
	}
	return errors.New("exit status 1")
}

func (p *fakeProc) release() {}
func (p *fakeProc) signal(sig syscall.Signal) {
	if sig == syscall.SIGKILL {
		// SIGKILL to the worker alone leaves its children running.
		p.fx.t.Errorf("worker %d got SIGKILL alone; kill its tree", p.id)
	}
	p.mu.Lock()
	p.signals = append(p.signals, sig)
	p.mu.Unlock()
	if sig == syscall.SIGKILL || sig == syscall.SIGTERM {
		p.die()
	}
}

func (p *fakeProc) kill() {
	p.mu.Lock()
	p.killed = true
	d := p.dsleep
	p.mu.Unlock()
	if !d {
		p.die()
	}
}

func (p *fakeProc) wasKilled() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.killed
}

func (p *fakeProc) die() {
	p.once.Do(func() {
		p.fx.closeSockets(p.id)
		p.fx.trace(p.id, "exited")
		close(p.exit)
	})
}
func (p *fakeProc) alive() bool {
	select {
	case <-p.exit:
		return false
	default:
		return true
	}
}

// fakeEffects are effects that start fake workers.
type fakeEffects struct {
	t         *testing.T
	behave    map[string]behaviour // by release path
	adoptable map[int]string       // pid → token of processes a killed supervisor left
	// currentLink, when set, is a real --current symlink that repoint
	// swaps as the real one does.
	currentLink string
	// adoptedExits: adopted processes exit as real adopted ones do, their
	// status unknown (errAdoptedExit), and report their drain's end as
	// this library's do (TypeDrained), which their exit overtakes.
	adoptedExits bool
	// adoptSilent: adoptable pids that never dial the new supervisor
	// (stopped, stuck): an adoption waits for them.
	adoptSilent map[int]bool
	saved       *savedState // loadState's answer
	control     string      // the control socket, for adopted workers
	taken       string      // listened's answer: a --listen address already served
	wg          sync.WaitGroup

	mu         sync.Mutex
	nextPID    int
	stopped1   map[int]bool // generations one of whose workers stopped (stopOneReady)
	crashed1   map[int]bool // generations one of whose workers crashed (crashOne)
	procs      []*fakeProc
	byAdmin    map[string]behaviour
	state      *savedState // the last state written
	removed    bool
	repointed  []string
	repointErr error                // what repoint returns
	onStart    func(*fakeProc)      // called with each worker of a generation after the first, if set
	startErr   func(procSpec) error // a start it fails, as fork/exec does, if set (guarded by mu)
	saveErr    error                // what saveState fails with, if set (guarded by mu)
	msgs       map[int][]string     // pid → message types the worker got
	steers     [][]int              // the slots of every steer, in order
	settles    map[int][]string     // pid → "type:settle" of its quiesces and releases
	pidAt      map[string]int       // admin socket → pid
	traces     map[int][]string     // pid → drained, scraped, collected, exited in order
	forgotten  []int                // generations removeGeneration was called for
	// handshakesDone: pid → HandshakesDone of each quiesce and release
	// it got, as "quiesce:true" and so on.
	handshakesDone map[int][]string
	tickets        map[int][][]control.TicketKey // pid → each ring it got
	// adoptKeys: pid → the ring an adoptable worker brings back when it
	// rejoins (it then lists CapTicketKeys).
	adoptKeys map[int][]control.TicketKey
	// kernel, when a test sets it, models the kernel's reuseport group of
	// the fake workers' sockets and checks every program against it.
	kernel *kernelGroup
	// healthAsked counts the /healthz checks asked of workers.
	healthAsked int
	// helloBefore: for each process started, how many workers of its
	// generation had said hello by then.
	helloBefore []int
}

// kernelGroup is the kernel's side of a reuseport group, as the fake
// workers' sockets would make it: a socket joins at listen() (the
// worker's TypeListening), and when one closes (its release, or its
// process's end) the last moves into its slot. At each close it checks
// the program in place, before and after: every slot it names exists and
// holds a socket that no quiesce or release has stepped away from, so no
// new connection can meet a socket about to close, nor fall back to the
// kernel's own choice.
//
// A slot past the group's end makes the kernel choose by hash among all
// its sockets, which is harmless only when none of them is stepped away
// from.
type kernelGroup struct {
	socks      []int // pids, in slot order
	away       map[int]bool
	program    []int
	violations []string
	events     []string // "steer" and "close", in order
	named      [][]int  // the pids each program named when it came, in order
}

func (k *kernelGroup) check(when string) {
	anyAway := slices.ContainsFunc(k.socks, func(pid int) bool { return k.away[pid] })
	for _, slot := range k.program {
		if (slot >= len(k.socks) && anyAway) || (slot < len(k.socks) && k.away[k.socks[slot]]) {
			k.violations = append(k.violations, fmt.Sprintf("%s: program %v, group %v (stepped away: %v)", when, k.program, k.socks, k.away))
			return
		}
	}
}

// steersAmidCloses counts the steers between the first and the last
// close among events.
func steersAmidCloses(events []string) int {
	first, last := slices.Index(events, "close"), -1
	for i, e := range events {
		if e == "close" {
			last = i
		}
	}
	n := 0
	for i := first + 1; first >= 0 && i < last; i++ {
		if events[i] == "steer" {
			n++
		}
	}
	return n
}

// steersBeforeCloses counts the steers before the first close among
// events (all of them if there is none).
func steersBeforeCloses(events []string) int {
	first := slices.Index(events, "close")
	if first < 0 {
		first = len(events)
	}
	return strings.Count(strings.Join(events[:first], " "), "steer")
}

// kernelSettled waits until no steer or close has come for 150 ms (a
// loaded machine may be slow to run a fake worker's goroutine) and
// returns how many there were.
func (fx *fakeEffects) kernelSettled() int {
	n := len(fx.kernelEvents())
	for {
		time.Sleep(150 * time.Millisecond)
		m := len(fx.kernelEvents())
		if m == n {
			return n
		}
		n = m
	}
}

// kernelEvents returns the kernel model's steers and closes so far.
func (fx *fakeEffects) kernelEvents() []string {
	fx.mu.Lock()
	defer fx.mu.Unlock()
	return append([]string(nil), fx.kernel.events...)
}

func (k *kernelGroup) close(pid int) {
	i := slices.Index(k.socks, pid)
	if i < 0 {
		return
	}
	k.events = append(k.events, "close")
	k.check(fmt.Sprintf("before pid %d closes", pid))
	last := len(k.socks) - 1
	k.socks[i] = k.socks[last]
	k.socks = k.socks[:last]
	k.check(fmt.Sprintf("after pid %d closed", pid))
}

// closeSockets closes pid's sockets in the kernel model, if any.
func (fx *fakeEffects) closeSockets(pid int) {
	fx.mu.Lock()
	defer fx.mu.Unlock()
	if fx.kernel != nil {
		fx.kernel.close(pid)
	}
}

// kernelPrograms returns the pids each program named when it came, in
// order.
func (fx *fakeEffects) kernelPrograms() [][]int {
	fx.mu.Lock()
	defer fx.mu.Unlock()
	return append([][]int(nil), fx.kernel.named...)
}

// kernelViolations returns the checks of the kernel model that failed.
func (fx *fakeEffects) kernelViolations() []string {
	fx.mu.Lock()
	defer fx.mu.Unlock()
	return append([]string(nil), fx.kernel.violations...)
}

func newFakeEffects(t *testing.T) *fakeEffects {
	return &fakeEffects{t: t, behave: map[string]behaviour{}, adoptable: map[int]string{}, nextPID: 1000,
		byAdmin: map[string]behaviour{}, msgs: map[int][]string{}, pidAt: map[string]int{}, traces: map[int][]string{}, stopped1: map[int]bool{}, crashed1: map[int]bool{},
		handshakesDone: map[int][]string{}, tickets: map[int][][]control.TicketKey{}, adoptKeys: map[int][]control.TicketKey{}}
}

func envOf(env []string, name string) string {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, name+"="); ok {
			return v
		}
	}
	return ""
}

func (fx *fakeEffects) start(spec procSpec) (process, error) {
	fx.mu.Lock()
	if fx.startErr != nil {
		if err := fx.startErr(spec); err != nil {
			fx.mu.Unlock()
			return nil, err
		}
	}
	// How many of this generation's workers had said hello when this one
	// started (see startNextInTurn).
	said := 0
	for _, p := range fx.procs {
		if p.gen == spec.gen && p.saidHello {
			said++
		}
	}
	fx.helloBefore = append(fx.helloBefore, said)
	b := fx.behave[filepath.Base(filepath.Dir(spec.path))]
	fx.nextPID++
	p := &fakeProc{id: fx.nextPID, gen: spec.gen, fx: fx, exit: make(chan struct{}), started: time.Now()}
	fx.procs = append(fx.procs, p)
	admin := envOf(spec.env, control.EnvAdmin)
	fx.byAdmin[admin] = b
	fx.pidAt[admin] = p.id
	fx.mu.Unlock()
	if b.stderr != "" && spec.tail != nil {
		spec.tail.add(b.stderr)
	}
	if fx.onStart != nil && spec.gen > 1 {
		fx.onStart(p)
	}
	fx.wg.Add(1)
	go func() { defer fx.wg.Done(); fx.runWorker(p, b, spec.env, false) }()
	return p, nil
}

func (fx *fakeEffects) adopt(pid int, token string, gen int) (process, bool) {
	fx.mu.Lock()
	defer fx.mu.Unlock()
	if fx.adoptable[pid] != token || token == "" {
		return nil, false
	}
	p := &fakeProc{id: pid, gen: gen, fx: fx, exit: make(chan struct{}), adopted: fx.adoptedExits, exitFirst: fx.adoptedExits}
	fx.procs = append(fx.procs, p)
	// It dials the new supervisor as a worker that lost its own, ready
	// and listening.
	env := []string{control.EnvControl + "=" + fx.control, control.EnvToken + "=" + token}
	fx.wg.Add(1)
	b := behaviour{ticketKeys: fx.adoptKeys[pid] != nil, noHello: fx.adoptSilent[pid], finalMetrics: fx.adoptedExits}
	go func() { defer fx.wg.Done(); fx.runWorker(p, b, env, true) }()
	return p, true
}

func (fx *fakeEffects) record(pid int, m control.Message) {
	fx.mu.Lock()
	defer fx.mu.Unlock()
	fx.msgs[pid] = append(fx.msgs[pid], m.Type)
	if m.Type == control.TypeTicketKeys {
		fx.tickets[pid] = append(fx.tickets[pid], m.TicketKeys)
	}
	if m.Type == control.TypeSteer {
		fx.steers = append(fx.steers, m.Slots)
		if k := fx.kernel; k != nil {
			k.program = m.Slots
			k.events = append(k.events, "steer")
			var named []int
			for _, slot := range m.Slots {
				if slot < len(k.socks) {
					named = append(named, k.socks[slot])
				}
			}
			k.named = append(k.named, named)
		}
	}
	if k := fx.kernel; k != nil && (m.Type == control.TypeQuiesce || m.Type == control.TypeRelease) {
		if k.away == nil {
			k.away = map[int]bool{}
		}
		k.away[pid] = true
	}
	if m.Type == control.TypeQuiesce || m.Type == control.TypeRelease {
		fx.handshakesDone[pid] = append(fx.handshakesDone[pid], fmt.Sprintf("%s:%v", m.Type, m.HandshakesDone))
		if fx.settles == nil {
			fx.settles = map[int][]string{}
		}
		quick := ""
		if m.Quick {
			quick = " quick"
		}
		fx.settles[pid] = append(fx.settles[pid], fmt.Sprintf("%s:%dms%s", m.Type, m.SettleMS, quick))
	}
}

// gotSettles returns the settles of the quiesces and releases pid got, as
// "quiesce:2ms".
func (fx *fakeEffects) gotSettles(pid int) []string {
	fx.mu.Lock()
	defer fx.mu.Unlock()
	return append([]string(nil), fx.settles[pid]...)
}

// gotHandshakesDone returns what fx.handshakesDone holds for pid.
func (fx *fakeEffects) gotHandshakesDone(pid int) []string {
	fx.mu.Lock()
	defer fx.mu.Unlock()
	return append([]string(nil), fx.handshakesDone[pid]...)
}

// trace records what happened to pid's final metrics.
func (fx *fakeEffects) trace(pid int, what string) {
	fx.mu.Lock()
	fx.traces[pid] = append(fx.traces[pid], what)
	fx.mu.Unlock()
}

func (fx *fakeEffects) traced(pid int) []string {
	fx.mu.Lock()
	defer fx.mu.Unlock()
	return append([]string(nil), fx.traces[pid]...)
}

// gotTickets returns each ring pid got, in order.
func (fx *fakeEffects) gotTickets(pid int) [][]control.TicketKey {
	fx.mu.Lock()
	defer fx.mu.Unlock()
	return append([][]control.TicketKey(nil), fx.tickets[pid]...)
}

func (fx *fakeEffects) got(pid int) []string {
	fx.mu.Lock()
	defer fx.mu.Unlock()
	return append([]string(nil), fx.msgs[pid]...)
}

// runWorker is a fake worker's life: the worker side of the protocol.
func (fx *fakeEffects) runWorker(p *fakeProc, b behaviour, env []string, rejoin bool) {
	if b.noHello {
		<-p.exit
		return
	}
	defer p.die()
	c, err := net.Dial("unix", envOf(env, control.EnvControl))
	if err != nil {
		return
	}
	defer c.Close()
	go func() { // a killed process's socket closes
		<-p.exit
		if p.exitFirst {
			time.Sleep(100 * time.Millisecond) // what it wrote just before is still read
		}
		c.Close()
	}()
	conn := control.NewConn(c)
	v := b.protocol
	if v == 0 {
		v = control.Version
	}
	caps := []string{control.CapQuiesce, control.CapHandshakes}
	if b.noHandshakes {
		caps = []string{control.CapQuiesce}
	}
	if !b.adminHealth {
		caps = append(caps, control.CapReadyHealth)
	}
	hello := control.Message{Type: control.TypeHello, Version: v, Role: control.RoleWorker, Token: envOf(env, control.EnvToken),
		Caps: caps, Rejoin: rejoin, Listening: rejoin, Ready: rejoin}
	if b.finalMetrics {
		hello.Caps = append(hello.Caps, control.CapFinalMetrics)
	}
	if !b.askListen {
		hello.Caps = append(hello.Caps, control.CapWelcomeGrant)
	}
	if b.ticketKeys {
		hello.Caps = append(hello.Caps, control.CapTicketKeys)
		if rejoin {
			fx.mu.Lock()
			hello.TicketKeys = fx.adoptKeys[p.id]
			fx.mu.Unlock()
		}
	}
	fx.mu.Lock()
	p.saidHello = true // before the write: the supervisor may start the next worker on reading it
	fx.mu.Unlock()
	if conn.Write(hello) != nil {
		return
	}
	welcome, err := conn.Read(time.Now().Add(5 * time.Second))
	if err != nil || welcome.Type != control.TypeWelcome {
		return
	}
	waits := b.finalMetrics && control.HasCap(welcome.Caps, control.CapFinalMetrics)
	if b.exitBeforeReady {
		return
	}
	if !rejoin {
		if b.askListen || !control.HasCap(welcome.Caps, control.CapWelcomeGrant) {
			conn.Write(control.Message{Type: control.TypeListen})
			m, err := conn.Read(time.Now().Add(5 * time.Second))
			for err == nil && m.Type == control.TypeTicketKeys { // sent after the welcome
				fx.record(p.id, m)
				m, err = conn.Read(time.Now().Add(5 * time.Second))
			}
			if err != nil || m.Type != control.TypeGrant {
				return
			}
		} else {
			fx.trace(p.id, "listened at welcome")
		}
		fx.mu.Lock()
		if fx.kernel != nil {
			fx.kernel.socks = append(fx.kernel.socks, p.id)
		}
		fx.mu.Unlock()
		conn.Write(control.Message{Type: control.TypeListening})
		if b.readyAfter > 0 {
			select {
			case <-time.After(b.readyAfter):
			case <-p.exit:
				return
			}
		}
		if !b.neverReady {
			ready := control.Message{Type: control.TypeReady}
			if b.unhealthy && control.HasCap(welcome.Caps, control.CapReadyHealth) && !b.adminHealth {
				ready.Error = "database down"
			}
			conn.Write(ready)
			fx.mu.Lock()
			first := b.stopOneReady && !fx.stopped1[p.gen]
			if first {
				fx.stopped1[p.gen] = true
			}
			fx.mu.Unlock()
			if first {
				p.stop()
			}
		}
		crash := b.crashAfter > 0
		if crash && b.crashOne {
			fx.mu.Lock()
			crash = !fx.crashed1[p.gen]
			fx.crashed1[p.gen] = true
			fx.mu.Unlock()
		}
		if crash {
			time.AfterFunc(b.crashAfter, p.die)
		}
	}
	reply := func(m control.Message, typ string) {
		r := control.Message{Type: typ}
		if v >= 2 {
			r.ID = m.ID
		}
		conn.Write(r)
	}
	answers := map[string]string{control.TypeSteer: control.TypeSteered, control.TypeQuiesce: control.TypeQuiesced}
	var held *control.Message
	for {
		m, err := conn.Read(time.Time{})
		if err != nil {
			return
		}
		if p.silent() {
			continue // read by nobody, carried out never: not recorded
		}
		if !p.alive() {
			// Dead, its socket not yet closed: it reads nothing (a
			// release read then made a crash a clean exit, once in
			// about a hundred runs of a test that kills workers).
			return
		}
		fx.record(p.id, m)
		if b.mute && (m.Type == control.TypeQuiesce || m.Type == control.TypeRelease) {
			continue
		}
		switch m.Type {
		case control.TypeSteer, control.TypeQuiesce:
			switch {
			case b.reverse && held == nil && m.Type == control.TypeQuiesce:
				held = &m
			case held == nil:
				reply(m, answers[m.Type])
			default:
				reply(m, answers[m.Type])
				reply(*held, answers[held.Type])
				held = nil
			}
		case control.TypeRelease:
			fx.closeSockets(p.id)
			if b.dieAtRelease {
				p.die()
				return
			}
			reply(m, control.TypeReleased)
			p.mu.Lock()
			p.released = true
			p.mu.Unlock()
			if !b.finalMetrics {
				time.AfterFunc(b.drainFor, p.die)
				break
			}
			time.AfterFunc(b.drainFor, func() {
				fx.trace(p.id, "drained")
				if p.exitFirst && !waits {
					// Its exit seen before its report is read.
					p.die()
					time.Sleep(20 * time.Millisecond)
					conn.Write(control.Message{Type: control.TypeDrained})
					return
				}
				conn.Write(control.Message{Type: control.TypeDrained})
				if b.exitLate > 0 {
					time.AfterFunc(b.exitLate, p.die)
					return
				}
				if !waits {
					p.die()
					return
				}
				time.AfterFunc(control.CollectWait, p.die)
			})
		case control.TypeCollected:
			fx.trace(p.id, "collected")
			if b.exitLate == 0 {
				p.die()
			}
		}
	}
}

func (fx *fakeEffects) health(ctx context.Context, admin string) error {
	fx.mu.Lock()
	b := fx.byAdmin[admin]
	fx.healthAsked++
	fx.mu.Unlock()
	if b.unhealthy {
		return errors.New("/healthz answered 503 Service Unavailable: database down")
	}
	return nil
}

func (fx *fakeEffects) counts(ctx context.Context, admin string) (metrics.Counts, error) {
	fx.mu.Lock()
	b := fx.byAdmin[admin]
	fx.mu.Unlock()
	if b.countsFail {
		return metrics.Counts{}, fmt.Errorf("dial unix %s: i/o timeout", admin)
	}
	if fx.silentAt(admin) { // its socket's queue takes the request; nobody reads it
		<-ctx.Done()
		return metrics.Counts{}, ctx.Err()
	}
	return metrics.Counts{InflightRequests: b.inflight}, nil
}

// scrape answers for a fake worker alive for the whole 20 ms a scrape
// takes: its requests counted under code 200 are its pid, and one request
// is in flight.
func (fx *fakeEffects) scrape(ctx context.Context, admin string) (map[string]*dto.MetricFamily, error) {
	fx.mu.Lock()
	pid, b := fx.pidAt[admin], fx.byAdmin[admin]
	fx.mu.Unlock()
	p := fx.proc(pid)
	if p == nil || !p.alive() || b.scrapeFails {
		return nil, fmt.Errorf("dial unix %s: connection refused", admin)
	}
	if p.silent() { // its socket's queue takes the request; nobody reads it
		<-ctx.Done()
		return nil, ctx.Err()
	}
	select {
	case <-time.After(20 * time.Millisecond):
	case <-p.exit:
		return nil, fmt.Errorf("scrape %s: unexpected EOF", admin)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	fx.trace(pid, "scraped")
	if b.rps > 0 {
		return fakeTraffic(b, time.Since(p.started)), nil
	}
	return map[string]*dto.MetricFamily{
		"launcher_requests_total": {Name: proto.String("launcher_requests_total"), Help: proto.String("Requests."), Type: dto.MetricType_COUNTER.Enum(),
			Metric: []*dto.Metric{{Label: []*dto.LabelPair{{Name: proto.String("code"), Value: proto.String("200")}}, Counter: &dto.Counter{Value: proto.Float64(float64(pid))}}}},
		"launcher_inflight_requests": {Name: proto.String("launcher_inflight_requests"), Help: proto.String("In flight."), Type: dto.MetricType_GAUGE.Enum(),
			Metric: []*dto.Metric{{Gauge: &dto.Gauge{Value: proto.Float64(1)}}}},
	}, nil
}

func (fx *fakeEffects) saveState(st savedState) error {
	fx.mu.Lock()
	defer fx.mu.Unlock()
	if fx.saveErr != nil {
		return fx.saveErr
	}
	fx.state = &st
	return nil
}

func (fx *fakeEffects) removeState() {
	fx.mu.Lock()
	defer fx.mu.Unlock()
	fx.removed = true
}

func (fx *fakeEffects) loadState() (*savedState, error) { return fx.saved, nil }

func (fx *fakeEffects) repoint(rel release) error {
	fx.mu.Lock()
	defer fx.mu.Unlock()
	fx.repointed = append(fx.repointed, rel.Version)
	if fx.currentLink != "" && fx.repointErr == nil {
		tmp := fx.currentLink + ".fake"
		os.Remove(tmp)
		if err := os.Symlink(filepath.Dir(rel.Path), tmp); err != nil {
			return err
		}
		return os.Rename(tmp, fx.currentLink)
	}
	return fx.repointErr
}

func (fx *fakeEffects) notify(...string)        {}
func (fx *fakeEffects) removeAdmin(path string) {}

func (fx *fakeEffects) listened(addrs []string) string {
	fx.mu.Lock()
	defer fx.mu.Unlock()
	return fx.taken
}

// removeGeneration checks that gen is over, and is forgotten once.
func (fx *fakeEffects) removeGeneration(gen int) {
	fx.mu.Lock()
	defer fx.mu.Unlock()
	for _, g := range fx.forgotten {
		if g == gen {
			fx.t.Errorf("generation %d removed twice", gen)
		}
	}
	for _, p := range fx.procs {
		if p.gen == gen && p.alive() {
			fx.t.Errorf("generation %d removed while its process %d runs", gen, p.id)
		}
	}
	fx.forgotten = append(fx.forgotten, gen)
}

// usage measures generations that have a process, and are not removed:
// generation N used N seconds of CPU and holds N MB.
func (fx *fakeEffects) usage(gen int) (metrics.GenerationUsage, bool) {
	fx.mu.Lock()
	defer fx.mu.Unlock()
	if slices.Contains(fx.forgotten, gen) || !slices.ContainsFunc(fx.procs, func(p *fakeProc) bool { return p.gen == gen }) {
		return metrics.GenerationUsage{}, false
	}
	return metrics.GenerationUsage{Generation: gen, CPUSeconds: float64(gen), MemoryBytes: float64(gen) * 1e6}, true
}

// removedGens returns the generations removeGeneration was called for.
func (fx *fakeEffects) removedGens() []int {
	fx.mu.Lock()
	defer fx.mu.Unlock()
	return slices.Clone(fx.forgotten)
}

// alive returns the pids of fake processes still running.
func (fx *fakeEffects) alive() []int {
	fx.mu.Lock()
	defer fx.mu.Unlock()
	var out []int
	for _, p := range fx.procs {
		if p.alive() {
			out = append(out, p.id)
		}
	}
	return out
}

func (fx *fakeEffects) started() int {
	fx.mu.Lock()
	defer fx.mu.Unlock()
	return len(fx.procs)
}

func (fx *fakeEffects) proc(pid int) *fakeProc {
	fx.mu.Lock()
	defer fx.mu.Unlock()
	for _, p := range fx.procs {
		if p.id == pid {
			return p
		}
	}
	return nil
}

// silentAt reports whether the worker whose admin socket is admin
// answers nothing: stopped or hung (see fakeProc.stop and hang).
func (fx *fakeEffects) silentAt(admin string) bool {
	fx.mu.Lock()
	pid := fx.pidAt[admin]
	fx.mu.Unlock()
	p := fx.proc(pid)
	return p != nil && p.silent()
}

// rig is a supervisor on fake effects, running.
type rig struct {
	t    *testing.T
	s    *Supervisor
	fx   *fakeEffects
	dir  string
	rels string
	run  chan error
	log  *logBuffer
}

// releases makes releases/VERSION/app files (never executed).
func releases(t *testing.T, versions ...string) string {
	dir := filepath.Join(t.TempDir(), "releases")
	for _, v := range versions {
		p := filepath.Join(dir, v, "app")
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startRig starts a supervisor of releases/v1 on fake effects and waits
// until it serves (or, with wantErr, until Run fails).
func startRig(t *testing.T, cfg Config, fx *fakeEffects, tweak func(*rig)) *rig {
	t.Helper()
	rels := releases(t, "v1", "v2", "v3")
	// State dirs hold a unix socket: keep the path short.
	dir, err := os.MkdirTemp("", "sv")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg.Command = []string{filepath.Join(rels, "v1", "app")}
	cfg.Releases = rels
	cfg.StateDir = dir
	if cfg.Listen == nil {
		cfg.Listen = []string{"127.0.0.1:1"}
	}
	lb := &logBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
	fx.control = ControlSocket(dir)
	s, err := newSupervisor(cfg, fx)
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, s: s, fx: fx, dir: dir, rels: rels, run: make(chan error, 1), log: lb}
	if tweak != nil {
		tweak(r) // before Run: nothing runs yet
	}
	go func() { r.run <- s.Run(context.Background()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		select {
		case <-s.ran:
		default:
			s.Stop(ctx)
		}
		fx.wg.Wait()
		if t.Failed() {
			t.Logf("supervisor log:\n%s", lb.String())
		}
	})
	return r
}

// path returns the fake release path of version.
func (r *rig) path(v string) string { return filepath.Join(r.rels, v, "app") }

// behave sets what version's workers do.
func (r *rig) behave(v string, b behaviour) {
	r.fx.mu.Lock()
	r.fx.behave[v] = b
	r.fx.mu.Unlock()
}

func (r *rig) waitStarted() {
	r.t.Helper()
	select {
	case <-r.s.started:
	case err := <-r.run:
		r.t.Fatalf("Run returned before serving: %v\n%s", err, r.log.String())
	case <-time.After(10 * time.Second):
		r.t.Fatalf("not started after 10s\n%s", r.log.String())
	}
}

func (r *rig) status() Status {
	r.t.Helper()
	st, err := r.s.Status(context.Background())
	if err != nil {
		r.t.Fatal(err)
	}
	return st
}

// stop stops the supervisor, which must be done within 10 s.
func (r *rig) stop() {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.s.Stop(ctx); err != nil {
		r.t.Fatalf("Stop: %v", err)
	}
}

// gen returns generation n's status; its Generation is 0 if there is no
// such generation.
func (r *rig) gen(n int) GenerationStatus {
	r.t.Helper()
	for _, g := range r.status().Generations {
		if g.Generation == n {
			return g
		}
	}
	return GenerationStatus{}
}

// eventually retries check until it passes or 5 s have passed.
// counted waits until the supervisor holds n requests in flight as pid's
// last count (a look of the paused or the standby watch, every second).
func (r *rig) counted(t *testing.T, pid int, n int64) {
	t.Helper()
	eventually(t, fmt.Sprintf("pid %d counted", pid), func() error {
		got, err := ask(context.Background(), r.s.loop, func(l *loop) int64 {
			for _, g := range l.gens {
				for _, w := range g.workers {
					if w.pid == pid {
						return w.inflight
					}
				}
			}
			return -1
		})
		if err != nil || got != n {
			return fmt.Errorf("its count %d (%v); want %d", got, err, n)
		}
		return nil
	})
}

func eventually(t *testing.T, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// steps collects the steps of an operation.
type steps struct {
	mu    sync.Mutex
	l     []Step
	lines []string
}

func (s *steps) add(p Progress) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.l = append(s.l, p.Step)
	s.lines = append(s.lines, p.String())
}

// text returns the steps as the CLI prints them, a line each.
func (s *steps) text() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.lines, "\n")
}

func (s *steps) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprint(s.l)
}

// fakeTraffic is the scrape of a worker of behaviour b after up.
func fakeTraffic(b behaviour, up time.Duration) map[string]*dto.MetricFamily {
	if b.trafficFor > 0 {
		up = min(up, b.trafficFor)
	}
	n := float64(int64(b.rps * up.Seconds()))
	slow := float64(int64(b.rps * min(up, b.slowFor).Seconds()))
	errs := float64(int64(n * b.errorRatio))
	code := func(c string, v float64) *dto.Metric {
		return &dto.Metric{Label: []*dto.LabelPair{{Name: proto.String("code"), Value: proto.String(c)}}, Counter: &dto.Counter{Value: proto.Float64(v)}}
	}
	h := &dto.Histogram{SampleCount: proto.Uint64(uint64(n))}
	for _, le := range metrics.DurationBuckets {
		c := 0.0
		if b.latency.Seconds() <= le {
			c += n - slow
		}
		if b.slowLatency.Seconds() <= le {
			c += slow
		}
		h.Bucket = append(h.Bucket, &dto.Bucket{UpperBound: proto.Float64(le), CumulativeCount: proto.Uint64(uint64(c))})
	}
	return map[string]*dto.MetricFamily{
		"launcher_requests_total": {Name: proto.String("launcher_requests_total"), Type: dto.MetricType_COUNTER.Enum(),
			Metric: []*dto.Metric{code("200", n-errs), code("500", errs)}},
		"launcher_request_duration_seconds": {Name: proto.String("launcher_request_duration_seconds"), Type: dto.MetricType_HISTOGRAM.Enum(),
			Metric: []*dto.Metric{{Histogram: h}}},
		"launcher_inflight_requests": {Name: proto.String("launcher_inflight_requests"), Type: dto.MetricType_GAUGE.Enum(),
			Metric: []*dto.Metric{{Gauge: &dto.Gauge{Value: proto.Float64(0)}}}},
	}
}

// steered returns the slots of every steer so far.
func (fx *fakeEffects) steered() [][]int {
	fx.mu.Lock()
	defer fx.mu.Unlock()
	return append([][]int(nil), fx.steers...)
}
