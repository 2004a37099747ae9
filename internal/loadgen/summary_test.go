package loadgen

import (
	"sync"
	"testing"
	"time"
)

const ms = time.Millisecond

// synthetic builds a Result from records, as Run would.
func synthetic(start time.Time, recs []Record) *Result {
	r := &Result{Start: start, Elapsed: time.Second, Versions: map[string]int64{}}
	var vt versionTable
	var log recordLog
	for _, rec := range recs {
		v := vt.lookup([]byte(rec.Version))
		log.add(encodeRecord(rec.Start, rec.Latency, rec.Class, v))
		r.Requests++
		r.Count[rec.Class]++
		if rec.Class == OK {
			r.Versions[rec.Version]++
		}
	}
	r.records = log.chunks
	r.versions = append([]string{""}, vt.names...)
	return r
}

func TestSummarizeSplitsWindows(t *testing.T) {
	t0 := time.Now()
	res := synthetic(t0, []Record{
		{Start: 50 * ms, Latency: 1 * ms, Version: "v1"},
		{Start: 100 * ms, Latency: 10 * ms, Version: "v1"}, // at a window's start: upgrade
		{Start: 150 * ms, Latency: 7 * ms, Class: Reset},
		{Start: 199*ms + 999*time.Microsecond, Latency: 20 * ms, Version: "v2"},
		{Start: 200 * ms, Latency: 2 * ms, Version: "v2"}, // at its end: steady
		{Start: 300 * ms, Latency: 3 * ms, Version: "v2"},
		{Start: 400 * ms, Latency: 30 * ms, Class: Timeout},
	})
	win := []Window{{Start: t0.Add(100 * ms), End: t0.Add(200 * ms)}}

	for _, tc := range []struct {
		name            string
		windows         []Window
		steady, upgrade Phase
		nwin            int
	}{
		{"no windows", nil,
			Phase{Requests: 7, Failures: 2, P50: 3 * ms, P99: 20 * ms, Max: 20 * ms}, Phase{}, 0},
		{"one window", win,
			Phase{Requests: 4, Failures: 1, P50: 2 * ms, P99: 3 * ms, Max: 3 * ms},
			Phase{Requests: 3, Failures: 1, P50: 10 * ms, P99: 20 * ms, Max: 20 * ms}, 1},
		{"overlapping, unordered", []Window{
			{Start: t0.Add(150 * ms), End: t0.Add(200 * ms)},
			{Start: t0.Add(100 * ms), End: t0.Add(160 * ms)},
			{Start: t0.Add(120 * ms), End: t0.Add(130 * ms)},
		},
			Phase{Requests: 4, Failures: 1, P50: 2 * ms, P99: 3 * ms, Max: 3 * ms},
			Phase{Requests: 3, Failures: 1, P50: 10 * ms, P99: 20 * ms, Max: 20 * ms}, 1},
		{"open window", []Window{{Start: t0.Add(250 * ms)}},
			Phase{Requests: 5, Failures: 1, P50: 2 * ms, P99: 20 * ms, Max: 20 * ms},
			Phase{Requests: 2, Failures: 1, P50: 3 * ms, P99: 3 * ms, Max: 3 * ms}, 1},
		{"before the run, and empty", []Window{
			{Start: t0.Add(-time.Second), End: t0.Add(60 * ms)},
			{Start: t0.Add(300 * ms), End: t0.Add(300 * ms)},
		},
			Phase{Requests: 6, Failures: 2, P50: 3 * ms, P99: 20 * ms, Max: 20 * ms},
			Phase{Requests: 1, P50: 1 * ms, P99: 1 * ms, Max: 1 * ms}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := res.Summarize(tc.windows)
			// Per-class counts must add up; the rest is compared as is.
			check := func(what string, got, want Phase) {
				var n int64
				for _, c := range got.Count {
					n += c
				}
				if n != got.Requests || got.Failures != got.Requests-got.Count[OK] {
					t.Errorf("%s: counts %v do not add up to %d requests, %d failures", what, got.Count, got.Requests, got.Failures)
				}
				got.Count = [NumClasses]int64{}
				if got != want {
					t.Errorf("%s = %+v, want %+v", what, got, want)
				}
			}
			check("steady", s.Steady, tc.steady)
			check("upgrade", s.Upgrade, tc.upgrade)
			if s.Windows != tc.nwin {
				t.Errorf("Windows = %d, want %d", s.Windows, tc.nwin)
			}
			if s.Requests != 7 || s.Failures != 2 || s.Count[Reset] != 1 || s.Count[Timeout] != 1 {
				t.Errorf("totals %d/%d %v", s.Requests, s.Failures, s.Count)
			}
			if s.Versions["v1"] != 2 || s.Versions["v2"] != 3 || s.Rate != 7 || s.FailureRate != 2.0/7 {
				t.Errorf("versions %v rate %v failure rate %v", s.Versions, s.Rate, s.FailureRate)
			}
		})
	}
}

func TestPercentiles(t *testing.T) {
	var recs []Record
	for i := 100; i >= 1; i-- { // out of order on purpose
		recs = append(recs, Record{Start: time.Duration(i) * ms, Latency: time.Duration(i) * ms, Version: "v1"})
	}
	s := synthetic(time.Now(), recs).Summarize(nil)
	if p := s.Steady; p.P50 != 50*ms || p.P99 != 99*ms || p.Max != 100*ms || p.Requests != 100 {
		t.Errorf("steady %+v, want p50 50ms, p99 99ms, max 100ms", p)
	}
}

func TestRecordEncoding(t *testing.T) {
	for _, r := range []Record{
		{Start: 0, Latency: 0, Class: OK},
		{Start: 1234567 * time.Microsecond, Latency: 250 * time.Microsecond, Class: Reset, Version: "v2"},
		{Start: 59 * time.Minute, Latency: 8*time.Second + 388*ms, Class: Timeout},
		{Start: time.Second, Latency: 15 * time.Second, Class: Other},    // millisecond range
		{Start: time.Second, Latency: 2 * time.Hour, Class: Non2xx},      // large, still exact in ms
		{Start: time.Second, Latency: time.Minute + 7*ms, Class: EOF},    // ms
		{Start: time.Second, Latency: 5*time.Second + 1, Class: Refused}, // truncated to µs
	} {
		s, l, c, v := decode(encodeRecord(r.Start, r.Latency, r.Class, 5))
		want := r.Latency.Truncate(time.Microsecond)
		if r.Latency >= latMsFlag*time.Microsecond {
			want = r.Latency.Truncate(ms)
		}
		if s != r.Start || l != want || c != r.Class || v != 5 {
			t.Errorf("round trip of %+v = %v %v %v %v", r, s, l, c, v)
		}
	}
	if s, _, _, _ := decode(encodeRecord(3*time.Hour, 0, OK, 0)); s != maxOffsetUs*time.Microsecond {
		t.Errorf("start past the limit decoded as %v, want it saturated", s)
	}
	if _, l, _, _ := decode(encodeRecord(0, 3*time.Hour, OK, 0)); l != (latMsFlag-1)*ms {
		t.Errorf("latency past the limit decoded as %v, want it saturated", l)
	}
}

func TestVersionTableOverflow(t *testing.T) {
	var vt versionTable
	for i := range maxVersions + 5 {
		idx := vt.lookup([]byte{'v', byte('A' + i)})
		if want := min(uint8(i+1), overflowIndex); idx != want {
			t.Fatalf("version %d got index %d, want %d", i, idx, want)
		}
	}
	if vt.name(overflowIndex) != OverflowVersion || vt.name(0) != "" || vt.name(1) != "vA" {
		t.Errorf("names: %q %q %q", vt.name(overflowIndex), vt.name(0), vt.name(1))
	}
	if got := string(parseVersion([]byte("hello from v2\n"))); got != "v2" {
		t.Errorf("parseVersion = %q", got)
	}
	if got := parseVersion([]byte("busy\n")); got != nil {
		t.Errorf("parseVersion(busy) = %q", got)
	}
}

func TestWindowLogConcurrent(t *testing.T) {
	var l WindowLog
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 10 {
				end := l.Begin()
				l.Mark(time.Now(), time.Now().Add(ms))
				_ = l.Windows()
				end()
				end() // a second call changes nothing
			}
		})
	}
	wg.Wait()
	ws := l.Windows()
	if len(ws) != 160 {
		t.Fatalf("%d windows, want 160", len(ws))
	}
	for _, w := range ws {
		if w.End.IsZero() || w.End.Before(w.Start) {
			t.Fatalf("bad window %+v", w)
		}
	}
}
