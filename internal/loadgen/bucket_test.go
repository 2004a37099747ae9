package loadgen

import (
	"testing"
	"time"
)

func TestSeriesAndCapacity(t *testing.T) {
	start := time.Unix(1000, 0)
	var recs []Record
	// 10 buckets of 100 ms; 10 OK responses of 10 ms each per bucket,
	// v1 before 500 ms and v2 after, except bucket 5 (the upgrade) with 5
	// responses and one failure.
	for b := 0; b < 10; b++ {
		n, v := 10, "v1"
		if b >= 5 {
			v = "v2"
		}
		if b == 5 {
			n = 5
			recs = append(recs, Record{Start: 550 * ms, Latency: ms, Class: Reset})
		}
		for i := 0; i < n; i++ {
			recs = append(recs, Record{Start: time.Duration(b)*100*ms + time.Duration(i)*10*ms, Latency: 5 * ms, Class: OK, Version: v})
		}
	}
	res := synthetic(start, recs)
	res.Config.Duration = time.Second
	s := res.Series(100 * ms)
	if got, want := len(s.Failed), 10; got != want {
		t.Fatalf("buckets = %d; want %d", got, want)
	}
	if got := s.Versions; len(got) != 2 || got[0] != "v1" || got[1] != "v2" {
		t.Fatalf("versions = %v; want [v1 v2]", got)
	}
	if got := s.OK[0][0]; got != 10 {
		t.Errorf("v1 OK in bucket 0 = %d; want 10", got)
	}
	if got := s.OK[1][5]; got != 5 {
		t.Errorf("v2 OK in bucket 5 = %d; want 5", got)
	}
	if got := s.Failed[5]; got != 1 {
		t.Errorf("failed in bucket 5 = %d; want 1", got)
	}
	// 10 requests of 5 ms in 100 ms: 0.5 in flight on average.
	if got := s.Inflight[0][1]; got < 0.49 || got > 0.51 {
		t.Errorf("v1 in flight in bucket 1 = %v; want 0.5", got)
	}
	c := s.Capacity(start, []Window{{Start: start.Add(520 * ms), End: start.Add(580 * ms)}})
	if c.SteadyMedian != 10 || c.WindowBuckets != 1 || c.Below != 1 || c.MinRatio != 0.5 {
		t.Errorf("capacity = %+v; want median 10, 1 window bucket, 1 below, min ratio 0.5", c)
	}
	cold := []Window{{Start: start.Add(520 * ms), End: start.Add(530 * ms)}}
	switching := []Window{{Start: start.Add(530 * ms), End: start.Add(650 * ms)}}
	if got := s.Ratios(start, switching, cold, 10); len(got) != 1 || got[0] != 1 {
		t.Errorf("switch-only ratios = %v; want [1] (bucket 6 alone)", got)
	}
	if got := s.Ratios(start, cold, switching, 10); len(got) != 0 {
		t.Errorf("cold-only ratios = %v; want none (bucket 5 has both)", got)
	}
	if c := s.Capacity(start, nil); c.MinRatio != 1 || c.WindowBuckets != 0 {
		t.Errorf("capacity without windows = %+v; want min ratio 1", c)
	}
}
