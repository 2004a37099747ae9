package loadgen

import (
	"bytes"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestWriteTable(t *testing.T) {
	rows := []Row{
		{Handover: "cbpf+drain", Summary: Summary{
			Mode: KeepAlive, Requests: 5_530_123, Rate: 276_506.4, Failures: 0,
			Versions: map[string]int64{"v1": 2_000_000, "v2": 3_530_123},
			Steady:   Phase{Requests: 5_000_000, P50: 180 * time.Microsecond, P99: 2100 * time.Microsecond, Max: 15 * ms},
			Upgrade:  Phase{Requests: 530_123, P50: 200 * time.Microsecond, P99: 4 * ms, Max: 1500 * ms},
		}},
		{Handover: "close", Summary: Summary{
			Mode: NewConn, Requests: 1_330_000, Rate: 66_500, Failures: 307,
			Count:       [NumClasses]int64{Reset: 300, EOF: 7},
			FailureRate: 307.0 / 1_330_000,
			Versions:    map[string]int64{"v1": 1_329_693},
			Steady:      Phase{Requests: 1_330_000, Failures: 307, P50: 412 * time.Microsecond, P99: 12 * ms, Max: 2 * time.Second},
		}},
	}
	var buf bytes.Buffer
	if err := WriteTable(&buf, rows); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	t.Logf("\n%s", out)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines, want 3", len(lines))
	}
	// Every column but the last is right-aligned: the text before the
	// versions column has the same width on every line.
	width := utf8.RuneCountInString(lines[0][:strings.Index(lines[0], "versions")])
	for _, l := range lines[1:] {
		at := utf8.RuneCountInString(l[:strings.Index(l, "v1=")])
		if at != width || !strings.HasPrefix(l, "keepalive ") && !strings.HasPrefix(l, "new-conn ") {
			t.Errorf("misaligned line %q (versions at %d, header at %d)", l, at, width)
		}
	}
	for _, want := range []string{
		"keepalive", "cbpf+drain", "5,530,123", "276,506", "180µs/2.10ms/15.0ms", "200µs/4.00ms/1.50s",
		"v1=2,000,000 v2=3,530,123", "new-conn", "0.0231", "412µs/12.0ms/2.00s", " - ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q", want)
		}
	}
}

func TestFormatters(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{fmtCount(0), "0"},
		{fmtCount(999), "999"},
		{fmtCount(1000), "1,000"},
		{fmtCount(1234567), "1,234,567"},
		{fmtCount(-1234), "-1,234"},
		{fmtPercent(0, 0), "0%"},
		{fmtPercent(1, 0.5), "50.0%"},
		{fmtPercent(1, 1), "100%"},
		{fmtPercent(1, 1.0/5_530_000), "0.0000181%"},
		{fmtDur(0), "0µs"},
		{fmtDur(999 * time.Microsecond), "999µs"},
		{fmtDur(4120 * time.Microsecond), "4.12ms"},
		{fmtDur(41200 * time.Microsecond), "41.2ms"},
		{fmtDur(412 * ms), "412ms"},
		{fmtDur(4120 * ms), "4.12s"},
		{fmtDur(41200 * ms), "41.2s"},
		{fmtPhase(Phase{}), "-"},
		{fmtPhase(Phase{Requests: 2, Failures: 2}), "-"},
		{fmtVersions(nil), "-"},
		{fmtVersions(map[string]int64{"v2": 1, "": 3, OverflowVersion: 2}), "?=3 (other)=2 v2=1"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}
