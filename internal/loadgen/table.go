package loadgen

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"
)

// Row is one line of the benchmark table: a run's summary and how the
// service was upgraded during it.
type Row struct {
	// Handover names the upgrade method under test, e.g. "cbpf+drain".
	Handover string
	Summary
}

// WriteTable writes rows as a table with aligned columns: mode, handover,
// requests, rate/s, failures per class, failure percentage, latency
// p50/p99/max of OK requests in steady state and in upgrade windows ("-"
// without any), and OK responses per version ("?" is a body without a
// version). Numbers are right-aligned and grouped by thousands.
func WriteTable(w io.Writer, rows []Row) error {
	lines := [][]string{{
		"mode", "handover", "requests", "rate/s",
		"refused", "reset", "eof", "timeout", "non2xx", "other", "failed",
		"steady p50/p99/max", "upgrade p50/p99/max", "versions",
	}}
	for _, r := range rows {
		lines = append(lines, []string{
			string(r.Mode), r.Handover,
			fmtCount(r.Requests), fmtCount(int64(math.Round(r.Rate))),
			fmtCount(r.Count[Refused]), fmtCount(r.Count[Reset]), fmtCount(r.Count[EOF]),
			fmtCount(r.Count[Timeout]), fmtCount(r.Count[Non2xx]), fmtCount(r.Count[Other]),
			fmtPercent(r.Failures, r.FailureRate),
			fmtPhase(r.Steady), fmtPhase(r.Upgrade),
			fmtVersions(r.Versions),
		})
	}
	// The tabwriter right-aligns every cell; the two text columns are
	// padded to one width first, so that they read left-aligned.
	for col := range 2 {
		width := 0
		for _, l := range lines {
			width = max(width, utf8.RuneCountInString(l[col]))
		}
		for _, l := range lines {
			l[col] += strings.Repeat(" ", width-utf8.RuneCountInString(l[col]))
		}
	}
	// Cells carry their two-space gap in front, so that no line starts
	// with padding; the last, free-form column follows the last tab.
	tw := tabwriter.NewWriter(w, 0, 0, 0, ' ', tabwriter.AlignRight)
	for _, l := range lines {
		fmt.Fprintf(tw, "%s\n", strings.Join(l, "\t  "))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("loadgen: write table: %w", err)
	}
	return nil
}

// fmtCount formats n with thousands separators: 1234567 -> "1,234,567".
func fmtCount(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	for i, d := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(d)
	}
	return b.String()
}

// fmtPercent formats a failure rate as a percentage with three
// significant digits and a % sign; it is "0%" only when nothing failed.
func fmtPercent(failures int64, rate float64) string {
	if failures == 0 || rate <= 0 {
		return "0%"
	}
	pct := rate * 100
	digits := max(0, 2-int(math.Floor(math.Log10(pct))))
	return strconv.FormatFloat(pct, 'f', digits, 64) + "%"
}

// fmtPhase formats a phase's latencies as "p50/p99/max", or "-".
func fmtPhase(p Phase) string {
	if p.Requests == 0 || p.Requests == p.Failures {
		return "-"
	}
	return fmtDur(p.P50) + "/" + fmtDur(p.P99) + "/" + fmtDur(p.Max)
}

// fmtDur formats d with about three significant digits: "412µs",
// "4.12ms", "41.2ms", "412ms", "4.12s", "41.2s".
func fmtDur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return strconv.FormatInt(d.Microseconds(), 10) + "µs"
	case d < time.Second:
		return sig3(float64(d)/float64(time.Millisecond)) + "ms"
	default:
		return sig3(d.Seconds()) + "s"
	}
}

// sig3 formats x (1 <= x < 1000) with three significant digits.
func sig3(x float64) string {
	switch {
	case x < 10:
		return strconv.FormatFloat(x, 'f', 2, 64)
	case x < 100:
		return strconv.FormatFloat(x, 'f', 1, 64)
	}
	return strconv.FormatFloat(x, 'f', 0, 64)
}

// fmtVersions formats per-version counts sorted by version: "v1=12 v2=34".
func fmtVersions(m map[string]int64) string {
	names := make([]string, 0, len(m))
	for v := range m {
		names = append(names, v)
	}
	slices.Sort(names)
	parts := make([]string, 0, len(names))
	for _, v := range names {
		label := v
		if label == "" {
			label = "?"
		}
		parts = append(parts, label+"="+fmtCount(m[v]))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " ")
}
