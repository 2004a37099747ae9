package rig

import (
	"bytes"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
)

// GORACE is the race detector's setting for every process the tests run
// (the value of their GORACE environment variable; workers inherit the
// supervisor's). halt_on_error=1: the first data race prints its report
// and ends the process with status [RaceExitStatus], so that it cannot
// pass for one more log line. atexit_sleep_ms=0: a process exits at once,
// not after the detector's default second of sleep, which every CLI
// command, drained worker and stopped supervisor would add to the tests
// (and to the times some of them check).
const GORACE = "halt_on_error=1 atexit_sleep_ms=0"

// RaceExitStatus is the exit status of a process the race detector
// stopped (its default exitcode option).
const RaceExitStatus = 66

const (
	raceMarker = "WARNING: DATA RACE"
	// raceRule opens and closes each report.
	raceRule = "=================="
	// raceLines of the first report are kept: enough for both stacks.
	raceLines = 40
	// raceExit is how an exec error (in a supervisor's log line about a
	// worker, say) names the race detector's exit.
	raceExit = "exit status 66"
	// maxLine bounds the unfinished line kept between writes.
	maxLine = 64 << 10
)

// RaceDetector is an [io.Writer] that passes everything on to another
// and watches the lines going through for the reports of the race
// detector, which a process built with -race prints on its stderr. It is
// meant for the log of a supervisor, which carries its workers' stderr
// too. It is safe for concurrent use.
type RaceDetector struct {
	w io.Writer

	mu      sync.Mutex
	partial []byte // the last line, not ended yet
	seen    raceLog
}

// raceLog is what a RaceDetector learnt from the lines so far.
type raceLog struct {
	prev    string   // the line before the current one
	races   int      // reports seen
	report  []string // the first report's lines, at most raceLines
	open    bool     // the first report goes on
	exits   []string // lines naming an exit status 66, the first few
	cutLong bool     // the first report had more than raceLines lines
}

// NewRaceDetector returns a RaceDetector that writes to w.
func NewRaceDetector(w io.Writer) *RaceDetector {
	if w == nil {
		w = io.Discard
	}
	return &RaceDetector{w: w}
}

// Write passes p on and scans its lines.
func (d *RaceDetector) Write(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	n, err := d.w.Write(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			d.partial = append(d.partial, p...)
			if len(d.partial) > maxLine {
				d.partial = append(d.partial[:0], d.partial[len(d.partial)-maxLine:]...)
			}
			break
		}
		line := p[:i]
		if len(d.partial) > 0 {
			line = append(d.partial, line...)
		}
		d.seen.line(string(line))
		d.partial = d.partial[:0]
		p = p[i+1:]
	}
	return n, err
}

// Report returns the first race report seen (up to 40 lines: its two
// stacks and where the goroutines started) with the number of reports,
// or, if there was none, the lines that name an exit status 66; "" if
// neither.
func (d *RaceDetector) Report() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	seen := d.seen
	if len(d.partial) > 0 {
		// A process that died mid-line: its last words count too.
		seen.report = append([]string(nil), seen.report...)
		seen.exits = append([]string(nil), seen.exits...)
		seen.line(string(d.partial))
	}
	return seen.String()
}

func (l *raceLog) line(s string) {
	s = strings.TrimRight(s, "\r")
	if strings.Contains(s, raceMarker) {
		l.races++
		if l.races == 1 {
			if strings.Contains(l.prev, raceRule) {
				l.report = append(l.report, l.prev)
			}
			l.open = true
		}
	}
	if l.open {
		if len(l.report) == raceLines {
			l.open, l.cutLong = false, true
		} else {
			l.report = append(l.report, s)
			// The closing rule (the opening one came before the marker).
			if strings.Contains(s, raceRule) && len(l.report) > 2 {
				l.open = false
			}
		}
	}
	if strings.Contains(s, raceExit) && len(l.exits) < 5 {
		l.exits = append(l.exits, s)
	}
	l.prev = s
}

func (l raceLog) String() string {
	switch {
	case l.races > 0:
		more := ""
		if l.cutLong {
			more = "\n[…]"
		}
		return fmt.Sprintf("%d data race report(s); the first:\n%s%s", l.races, strings.Join(l.report, "\n"), more)
	case len(l.exits) > 0:
		return fmt.Sprintf("exit status %d, the race detector's, though no report was seen:\n%s", RaceExitStatus, strings.Join(l.exits, "\n"))
	}
	return ""
}

// RaceReport returns the race report in out, the output of a process
// built with -race (see [RaceDetector.Report]), or a line saying so if
// there is none but err is the process's exit with status 66; "" if
// neither.
func RaceReport(out []byte, err error) string {
	d := NewRaceDetector(io.Discard)
	d.Write(out)
	code := -1
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	return withExitStatus(d.Report(), code)
}

// withExitStatus adds a process's exit status to report, when it is the
// race detector's.
func withExitStatus(report string, code int) string {
	if code != RaceExitStatus {
		return report
	}
	if report == "" {
		return fmt.Sprintf("exit status %d, the race detector's, though no report was seen", RaceExitStatus)
	}
	return fmt.Sprintf("exit status %d; %s", RaceExitStatus, report)
}
