package main

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// A trace splits each idle upgrade into phases, from the log lines the
// supervisor and its workers write (launcher start -v): the lines carry
// their time (slog's, to the millisecond) and generation.

// phase is one part of an upgrade, between two log events.
type phase struct {
	name string
	// from and to name a log message and whose it is: the new generation
	// (its first or last such line) or the old one.
	from, to event
}

type event struct {
	msg  string
	old  bool // of the old generation, else of the new one
	last bool // the last such line (of several workers), else the first
}

var phases = []phase{
	{"command → last new worker listening: fork/exec, runtime start, control handshake, listen grant (one worker at a time), listen",
		event{msg: "starting generation"}, event{msg: "listening", last: true}},
	{"→ active: ready (with its health check), state file, steer to the new sockets",
		event{msg: "listening", last: true}, event{msg: "generation active"}},
	{"→ first old worker stopped accepting: in-flight count, quiesce (handshakes in flight, settle), close",
		event{msg: "generation active"}, event{msg: "stopped accepting", old: true}},
	{"→ last old worker stopped accepting: the other releases, in runs (a steer a run, a look at the queue, close)",
		event{msg: "stopped accepting", old: true}, event{msg: "stopped accepting", old: true, last: true}},
	{"→ last old worker drained: the drain",
		event{msg: "stopped accepting", old: true, last: true}, event{msg: "drained", old: true, last: true}},
	{"→ old generation gone: final metrics read, exit, reap",
		event{msg: "drained", old: true, last: true}, event{msg: "generation drained", old: true}},
}

var logLine = regexp.MustCompile(`^time=(\S+) level=\w+ msg=("[^"]*"|\S+)(.*)$`)
var genField = regexp.MustCompile(`\bgeneration=(\d+)\b`)

type logEvent struct {
	at  time.Time
	msg string
	gen int
}

// parseLog returns the events of a supervisor's log.
func parseLog(r io.Reader) []logEvent {
	var out []logEvent
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m := logLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil {
			continue
		}
		g := genField.FindStringSubmatch(m[3])
		if g == nil {
			continue
		}
		n, _ := strconv.Atoi(g[1])
		out = append(out, logEvent{at: at, msg: strings.Trim(m[2], `"`), gen: n})
	}
	return out
}

// tracePhases returns, per phase, its duration in each upgrade of the log
// (generation g replacing g-1), leaving out the first generation (a start,
// not an upgrade) and the last (its old generation drains at the stop).
func tracePhases(evs []logEvent) [][]time.Duration {
	last := 0
	for _, e := range evs {
		last = max(last, e.gen)
	}
	out := make([][]time.Duration, len(phases))
	for g := 2; g <= last; g++ {
		find := func(e event) (time.Time, bool) {
			gen := g
			if e.old {
				gen = g - 1
			}
			var at time.Time
			for _, le := range evs {
				if le.gen == gen && le.msg == e.msg {
					at = le.at
					if !e.last {
						break
					}
				}
			}
			return at, !at.IsZero()
		}
		var ds []time.Duration
		for _, p := range phases {
			from, ok1 := find(p.from)
			to, ok2 := find(p.to)
			if !ok1 || !ok2 {
				ds = nil
				break
			}
			ds = append(ds, to.Sub(from))
		}
		for i, d := range ds {
			out[i] = append(out[i], d)
		}
	}
	return out
}

// printTrace writes the median of each phase per idle run.
func printTrace(w io.Writer, idle []idleRun) {
	fmt.Fprintln(w, "== where an idle upgrade's time goes (from the -v log lines, millisecond resolution; medians) ==")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprint(tw, "phase")
	for _, r := range idle {
		fmt.Fprintf(tw, "\t%s w=%d", r.label, r.workers)
	}
	fmt.Fprintln(tw)
	for i, p := range phases {
		fmt.Fprint(tw, p.name)
		for _, r := range idle {
			if i < len(r.trace) && len(r.trace[i]) > 0 {
				fmt.Fprintf(tw, "\t%s", msf(median(r.trace[i])))
			} else {
				fmt.Fprint(tw, "\t-")
			}
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	fmt.Fprintln(w)
}
