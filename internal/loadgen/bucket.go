package loadgen

import (
	"slices"
	"time"
)

// Series is a run cut into buckets of equal width: what the service
// answered in each, per version, for a capacity check and a plot.
type Series struct {
	// Width is the width of a bucket; bucket i covers
	// [i*Width, (i+1)*Width) from Result.Start.
	Width time.Duration
	// Versions names the series of OK and Inflight, sorted; "" is a
	// response that named no version.
	Versions []string
	// OK[v][i] counts the OK responses of version Versions[v] that
	// completed in bucket i.
	OK [][]int64
	// Inflight[v][i] is the mean number of requests in flight in bucket i
	// that version Versions[v] answered (a request's version is known at
	// its end, so it is counted from its start).
	Inflight [][]float64
	// Failed[i] counts the failed requests that ended in bucket i.
	Failed []int64
	// Full is the number of buckets that lie wholly within the run's
	// Duration: later ones hold only its tail.
	Full int
}

// Series returns r cut into buckets of width (> 0), up to the end of the
// last request.
func (r *Result) Series(width time.Duration) Series {
	s := Series{Width: width, Full: int(r.Config.Duration / width)}
	index := map[string]int{}
	for name := range r.Versions {
		s.Versions = append(s.Versions, name)
	}
	slices.Sort(s.Versions)
	for i, v := range s.Versions {
		index[v] = i
	}
	var end time.Duration
	for rec := range r.Records() {
		end = max(end, rec.Start+rec.Latency)
	}
	n := int(end/width) + 1
	s.Failed = make([]int64, n)
	for range s.Versions {
		s.OK = append(s.OK, make([]int64, n))
		s.Inflight = append(s.Inflight, make([]float64, n))
	}
	for rec := range r.Records() {
		stop := rec.Start + rec.Latency
		b := int(stop / width)
		if rec.Class != OK {
			s.Failed[b]++
			continue
		}
		v, ok := index[rec.Version]
		if !ok {
			continue
		}
		s.OK[v][b]++
		// The request's share of each bucket it spans.
		for i := int(rec.Start / width); i <= b; i++ {
			lo := max(rec.Start, time.Duration(i)*width)
			hi := min(stop, time.Duration(i+1)*width)
			if hi > lo {
				s.Inflight[v][i] += float64(hi-lo) / float64(width)
			}
		}
	}
	return s
}

// Total returns the OK responses of every version per bucket.
func (s Series) Total() []int64 {
	out := make([]int64, len(s.Failed))
	for _, ok := range s.OK {
		for i, n := range ok {
			out[i] += n
		}
	}
	return out
}

// Capacity compares the buckets that overlap an upgrade window with the
// steady state. The first bucket and those from the last whole one on (a
// start and a tail) count as neither.
type Capacity struct {
	// SteadyMedian is the median of OK responses per bucket outside every
	// window.
	SteadyMedian float64
	// MinRatio is the smallest count of OK responses in a bucket that
	// overlaps a window, over SteadyMedian: 1 means an upgrade cost no
	// capacity (it may exceed 1). It is 0 without steady buckets, 1 without
	// window buckets.
	MinRatio float64
	// Below counts the window buckets under 95% of SteadyMedian, of
	// WindowBuckets.
	Below, WindowBuckets int
	// SteadyBelow counts the steady buckets under 95% of SteadyMedian, of
	// SteadyBuckets: the noise of the machine, which upgrades meet too.
	SteadyBelow, SteadyBuckets int
	// SteadyMin is the smallest steady bucket over SteadyMedian.
	SteadyMin float64
}

// Capacity returns how the upgrade windows (offsets from the run's start
// as Result.Start gives them) compare with the steady state.
func (s Series) Capacity(start time.Time, windows []Window) Capacity {
	ss := spans(start, windows)
	total := s.Total()
	w := s.Width.Microseconds()
	var steady, upgrade []int64
	for i := 1; i < min(len(total), s.Full)-1; i++ {
		lo, hi := int64(i)*w, int64(i+1)*w
		if overlaps(ss, lo, hi) {
			upgrade = append(upgrade, total[i])
		} else {
			steady = append(steady, total[i])
		}
	}
	c := Capacity{MinRatio: 1, WindowBuckets: len(upgrade), SteadyBuckets: len(steady)}
	first := true
	if len(steady) == 0 {
		c.MinRatio = 0
		return c
	}
	slices.Sort(steady)
	c.SteadyMedian = float64(steady[len(steady)/2])
	if len(steady)%2 == 0 {
		c.SteadyMedian = float64(steady[len(steady)/2-1]+steady[len(steady)/2]) / 2
	}
	if c.SteadyMedian == 0 {
		return c
	}
	c.SteadyMin = float64(steady[0]) / c.SteadyMedian
	for _, n := range steady {
		if float64(n) < 0.95*c.SteadyMedian {
			c.SteadyBelow++
		}
	}
	for _, n := range upgrade {
		r := float64(n) / c.SteadyMedian
		if first || r < c.MinRatio {
			c.MinRatio, first = r, false
		}
		if r < 0.95 {
			c.Below++
		}
	}
	return c
}

// overlaps reports whether [lo, hi) meets one of the sorted spans ss.
func overlaps(ss []span, lo, hi int64) bool {
	for _, s := range ss {
		if s.lo < hi && lo < s.hi {
			return true
		}
	}
	return false
}

// Ratios returns, for each bucket that overlaps one of windows and none
// of others, its OK responses over median (the first bucket and those
// from the last whole one on left out, as in Capacity): to tell apart
// the phases of an upgrade, e.g. its new generation's cold start and the
// switch to it.
func (s Series) Ratios(start time.Time, windows, others []Window, median float64) []float64 {
	ss, os := spans(start, windows), spans(start, others)
	total := s.Total()
	w := s.Width.Microseconds()
	var out []float64
	for i := 1; i < min(len(total), s.Full)-1; i++ {
		lo, hi := int64(i)*w, int64(i+1)*w
		if median > 0 && overlaps(ss, lo, hi) && !overlaps(os, lo, hi) {
			out = append(out, float64(total[i])/median)
		}
	}
	return out
}
