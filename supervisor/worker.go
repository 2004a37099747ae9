package supervisor

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/launcherd/launcher/internal/control"
)

// Generation states, as shown by status and metrics.
const (
	StateStarting = "starting"
	StateActive   = "active"
	// StateStandby is the previous generation during the new one's
	// probation: steered away from, listening and ready to take traffic
	// back.
	StateStandby  = "standby"
	StateDraining = "draining"
	StateExited   = "exited"
	StateFailed   = "failed"
)

// generation is one release running as Workers processes. It belongs to
// the loop: only the loop's goroutine reads or writes it.
type generation struct {
	num       int
	release   release
	state     string
	workers   []*worker
	started   time.Time
	drainCut  bool           // its drain hit --drain-timeout (counted once)
	probation *probation     // while the previous generation stands by for it
	report    *UpgradeReport // the upgrade that started it; nil for the first
	restarts  backoff        // its workers' restarts in total (restarts.restarts)
	// backoffs pace each worker's restarts (by index): a crash loop is
	// one worker's, and another's first crash is restarted (it was taken
	// for the sixth of the loop, and the generation failed).
	backoffs  map[int]*backoff
	drain     *drainWatch // once it drains
	forgotten bool        // over: what held its processes (its cgroup) is gone
	// deaths says which of its workers died during its drain (what they
	// still served was cut), and cuts which had their drain cut at
	// --drain-timeout or were killed then, for the drained step and the
	// upgrade report: a drain that lost something never reads "drained".
	deaths, cuts []string
	// lateExits names its workers that drained (nothing cut) but had not
	// exited by --drain-timeout, killed then: the app's code after Run
	// ran long. Nothing was lost: the drain reads drained, with a note.
	lateExits []string
	// followers are the commands following its drain to its exit
	// (`upgrade --wait`, `rollback --wait`): a killed worker that lingers
	// is named to them (see lingering).
	followers []*opRequest
	// breached: the judge found it in breach with no standby to roll back
	// to; it serves on, but never stands by for a later upgrade.
	breached bool
	// notRestarted are the indexes of its workers left down at a crash
	// loop while others of it served on (see scheduleRestart).
	notRestarted []int
}

// live returns g's workers that have not exited.
func (g *generation) live() []*worker {
	var out []*worker
	for _, w := range g.workers {
		if !w.exited {
			out = append(out, w)
		}
	}
	return out
}

func (g *generation) hasLive() bool { return len(g.live()) > 0 }

// hangNote says where w, not ready, hangs, as far as the supervisor can
// tell, for the ready timeout's error: a stopped one is no slow one (as
// the standby's and the drain's kills say), and new users' trials got
// only "not ready" for a health check with no timeout, or a release that
// never runs the launcher's library.
func (w *worker) hangNote() string {
	switch {
	case w.proc.stopped():
		return " (it " + whyStopped + ")"
	case w.listening:
		return " (it listened: its app had not called Ready, or its health check, Options.Health, had not returned)"
	case w.conn == nil:
		return " (it never said hello: its process runs, but not the launcher's library, or not yet)"
	}
	return ""
}

// goingOn counts g's workers other than index that serve or are to be
// started again: neither left down after a crash loop nor being stopped.
func (g *generation) goingOn(index int) int {
	n := 0
	for _, w := range g.workers {
		if w.index != index && !w.stopping && !slices.Contains(g.notRestarted, w.index) {
			n++
		}
	}
	return n
}

// readyLive returns g's workers that run and are ready: those that serve.
func (g *generation) readyLive() []*worker {
	var out []*worker
	for _, w := range g.workers {
		if !w.exited && !w.killed && w.ready {
			out = append(out, w)
		}
	}
	return out
}

// hasLiveWorker reports whether g's worker index i runs.
func (g *generation) hasLiveWorker(i int) bool {
	return slices.ContainsFunc(g.workers, func(w *worker) bool { return w.index == i && !w.exited })
}

// worker is one process of a generation. It belongs to the loop.
type worker struct {
	gen   *generation
	index int
	token string
	admin string
	proc  process
	pid   int
	tail  *tailBuffer

	conn      *workerConn // nil while not connected
	protocol  int         // the version of its hello
	caps      []string    // what its library understands (control.Cap*)
	ready     bool        // reported ready and passed its health check
	checking  bool        // a health check is under way
	listening bool        // its sockets are in the reuseport group model
	stopping  bool        // its exit is expected (drain, stop, abort)
	released  bool        // it stopped accepting and drains (its release answered)
	killed    bool        // the supervisor killed it (see loop.kill)
	killedAt  time.Time   // when it was killed
	rejoined  bool        // an adopted worker has dialed again
	cut       bool        // it reported a drain cut at its deadline
	drained   bool        // it reported its drain's end (TypeDrained)
	// exitSeen: an adopted worker's exit came while its connection was
	// still open; evExited applies once the connection closes.
	exitSeen bool
	// inflight: its requests in flight at its last count (sumInflight).
	inflight int64
	// silentReads: watchStandby's reads in a row it left unanswered.
	silentReads int
	// paused: an active worker found stopped, steered away from until it
	// runs again (see watchPaused).
	paused bool
	// collecting: its final metrics are being read; final: they are kept
	// (the worker is no longer scraped).
	collecting bool
	final      *keptSeries
	exited     bool
	exitErr    error
}

func (w *worker) String() string {
	return fmt.Sprintf("worker %d (pid %d) of generation %d", w.index, w.pid, w.gen.num)
}

// canQuiesce reports whether w's library understands TypeQuiesce.
func (w *worker) canQuiesce() bool { return w.can(control.CapQuiesce) }

// can reports whether w's hello listed capability c.
func (w *worker) can(c string) bool { return control.HasCap(w.caps, c) }

func newToken() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Back-off for restarting crashed workers: the first restart is quick, each
// crash within resetAfter of the previous doubles the wait up to maxWait.
// crashLoop crashes in a row, each within resetAfter of the previous, are a
// crash loop: restarting stops, and the generation shows failed once none
// of its workers is left.
const (
	firstWait  = 100 * time.Millisecond
	maxWait    = 10 * time.Second
	resetAfter = 30 * time.Second
	crashLoop  = 6
)

// restartPolicy is the back-off's timing; tests shorten it.
type restartPolicy struct {
	first, max, reset time.Duration
	loop              int
}

var defaultRestarts = restartPolicy{first: firstWait, max: maxWait, reset: resetAfter, loop: crashLoop}

// backoff paces the restarts of one worker of a generation (and counts a
// generation's in total: generation.restarts).
type backoff struct {
	wait     time.Duration
	last     time.Time
	restarts int // in total, for status
	streak   int // crashes in a row, each within resetAfter of the previous
}

// next returns how long to wait before the next restart, and false when the
// crashes have become a crash loop.
func (b *backoff) next(now time.Time, p restartPolicy) (time.Duration, bool) {
	if b.wait == 0 || now.Sub(b.last) > p.reset {
		b.wait, b.streak = p.first, 0
	} else {
		b.wait = min(2*b.wait, p.max)
	}
	b.last = now
	b.streak++
	if b.streak >= p.loop {
		return 0, false
	}
	b.restarts++
	return b.wait, true
}

// tailBuffer passes a worker's stderr through and keeps its last lines
// for error messages. It is safe for concurrent use: its copier writes,
// the loop reads. A line is kept as it came, up to what an error shows
// of it (see tailLine), and made printable only when an error asks for it
// (last): a worker's stderr may be its access log, a line each request.
type tailBuffer struct {
	mu    sync.Mutex
	lines []tailLine
	max   int
	// partial is what follows the last newline: a process that hangs
	// after writing a line without one (a never-ready release's last
	// words) is still heard.
	partial tailLine
	// reason is the line that says why, where what follows it would push
	// it out of the last lines: the first line of a Go runtime's crash
	// report ("panic: …", "fatal error: …"), before its stack (a new
	// user's trial: the reason of a crash read only "main.go:100 +0x2d4 |
	// created by …"), or the line before a usage message ("flag provided
	// but not defined: -x" before the flag package's "Usage of …", or
	// cobra's "Error: …" before "Usage:"; a later trial read only the
	// usage's last flags).
	reason tailLine
}

// tailLine is the start of a line, as much of it as an error shows, and
// its whole length in bytes.
type tailLine struct {
	text string
	size int
}

func newTailLine(b []byte) tailLine {
	return tailLine{string(b[:min(len(b), maxTailLine+utf8.UTFMax)]), len(b)}
}

func newTailBuffer(max int) *tailBuffer { return &tailBuffer{max: max} }

// maxLine bounds a line: a longer run without a newline counts as one.
const maxLine = 1 << 20

// copyLines copies src's lines to dst (each whole, so that workers' lines
// do not interleave) and keeps them, until src ends.
func (t *tailBuffer) copyLines(dst io.Writer, src io.Reader) {
	buf := make([]byte, 64<<10)
	var pending []byte
	emit := func(line []byte) {
		if dst != nil {
			fmt.Fprintln(dst, string(line))
		}
		t.addLine(newTailLine(line))
	}
	for {
		n, err := src.Read(buf)
		pending = append(pending, buf[:n]...)
		for {
			i := bytes.IndexByte(pending, '\n')
			if i < 0 {
				break
			}
			emit(bytes.TrimSuffix(pending[:i], []byte("\r")))
			pending = pending[i+1:]
		}
		if len(pending) > maxLine {
			emit(pending)
			pending = nil
		}
		partial := newTailLine(pending)
		t.mu.Lock()
		t.partial = partial
		t.mu.Unlock()
		if err != nil {
			if len(pending) > 0 {
				emit(pending)
			}
			return
		}
	}
}

func (t *tailBuffer) add(line string) { t.addLine(newTailLine([]byte(line))) }

func (t *tailBuffer) addLine(line tailLine) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.reason.size == 0 {
		switch {
		case strings.HasPrefix(line.text, "panic: ") || strings.HasPrefix(line.text, "fatal error: "):
			t.reason = line
		case (strings.HasPrefix(line.text, "Usage of ") || strings.HasPrefix(line.text, "Usage:")) && len(t.lines) > 0:
			t.reason = t.lines[len(t.lines)-1]
		}
	}
	t.partial = tailLine{}
	t.lines = append(t.lines, line)
	if len(t.lines) > t.max {
		t.lines = t.lines[len(t.lines)-t.max:]
	}
}

// maxTailLine bounds a line kept for an error, in bytes: an error is one
// line a terminal shows.
const maxTailLine = 300

// printable makes l fit an error line on a terminal: control characters
// (a carriage return that would write over the error's start, an escape
// sequence that would colour the terminal) are escaped as Go escapes them
// (\r, \x1b), invalid UTF-8 is replaced, and a line longer than
// maxTailLine is cut, saying how long it was.
func (l tailLine) printable() string {
	line := strings.ToValidUTF8(l.text, "\uFFFD")
	if strings.IndexFunc(line, func(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f }) >= 0 {
		q := strconv.Quote(line)
		line = q[1 : len(q)-1]
	}
	if len(line) > maxTailLine || l.size > len(l.text) {
		cut := min(maxTailLine, len(line))
		for cut > 0 && cut < len(line) && !utf8.RuneStart(line[cut]) {
			cut--
		}
		line = fmt.Sprintf("%s… (%d bytes)", line[:cut], l.size)
	}
	return line
}

// stderrTail is "; stderr: " and tail, for an error; "" when the process
// wrote nothing.
func stderrTail(tail string) string {
	if tail == "" {
		return ""
	}
	return "; stderr: " + tail
}

// last returns up to n last lines joined with " | ", the one still
// without its newline last, after the reason (the first line of a Go
// crash report, the line before a usage message) when that is not among
// them.
func (t *tailBuffer) last(n int) string {
	if t == nil { // an adopted worker's stderr is not ours
		return ""
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	l := t.lines
	if t.partial.size > 0 {
		l = append(slices.Clone(l), t.partial)
	}
	if len(l) > n {
		l = l[len(l)-n:]
	}
	var out []string
	if t.reason.size > 0 && !slices.Contains(l, t.reason) {
		out = append(out, t.reason.printable(), "…")
	}
	for _, line := range l {
		out = append(out, line.printable())
	}
	return strings.Join(out, " | ")
}
