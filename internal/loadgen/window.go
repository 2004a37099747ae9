package loadgen

import (
	"slices"
	"sync"
	"time"
)

// Window is a span of time during which an upgrade was going on. A request
// belongs to the window when it started at or after Start and before End.
// A zero End means the window was still open when the run ended.
type Window struct {
	Start, End time.Time
}

// WindowLog collects windows while a run is going on; it is safe for
// concurrent use, and its zero value is ready to use.
type WindowLog struct {
	mu      sync.Mutex
	windows []Window
}

// Mark records a window from start to end.
func (l *WindowLog) Mark(start, end time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.windows = append(l.windows, Window{Start: start, End: end})
}

// Begin opens a window now and returns the function that closes it. Until
// it is called, the window is open-ended.
func (l *WindowLog) Begin() (end func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := len(l.windows)
	l.windows = append(l.windows, Window{Start: time.Now()})
	var once sync.Once
	return func() {
		once.Do(func() {
			now := time.Now()
			l.mu.Lock()
			defer l.mu.Unlock()
			l.windows[i].End = now
		})
	}
}

// Windows returns a copy of the windows recorded so far.
func (l *WindowLog) Windows() []Window {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.windows)
}

// span is a window as microsecond offsets from a run's start: [lo, hi).
type span struct{ lo, hi int64 }

// spans turns windows into sorted, disjoint offsets from start. Open
// windows extend to the end of time; empty ones are dropped.
func spans(start time.Time, windows []Window) []span {
	out := make([]span, 0, len(windows))
	for _, w := range windows {
		s := span{lo: w.Start.Sub(start).Microseconds(), hi: 1<<63 - 1}
		if !w.End.IsZero() {
			s.hi = w.End.Sub(start).Microseconds()
		}
		if s.hi > s.lo {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b span) int {
		switch {
		case a.lo < b.lo:
			return -1
		case a.lo > b.lo:
			return 1
		}
		return 0
	})
	merged := out[:0]
	for _, s := range out {
		if n := len(merged); n > 0 && s.lo <= merged[n-1].hi {
			merged[n-1].hi = max(merged[n-1].hi, s.hi)
			continue
		}
		merged = append(merged, s)
	}
	return merged
}

// inSpans reports whether offset t lies in one of the sorted spans ss.
func inSpans(ss []span, t int64) bool {
	i, _ := slices.BinarySearchFunc(ss, t, func(s span, t int64) int {
		switch {
		case s.hi <= t:
			return -1
		case s.lo > t:
			return 1
		}
		return 0
	})
	return i < len(ss) && ss[i].lo <= t && t < ss[i].hi
}
