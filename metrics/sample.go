package metrics

import (
	"math"
	"slices"
	"strconv"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// RequestSample is what one scrape of a worker says of the requests it has
// handled: launcher_requests_total (all, and the 5xx answers) and the
// launcher_request_duration_seconds histogram, cumulative since the
// worker started. Samples subtract and add, so that a window (a later
// sample minus an earlier one) and a generation (the sum over its
// workers) are samples too.
type RequestSample struct {
	Requests float64
	Errors   float64 // answers with a 5xx status code
	// Bounds are the histogram's upper bounds in seconds, ascending
	// (without +Inf); Counts the cumulative count of each, and Count all.
	Bounds []float64
	Counts []float64
	Count  float64
	// FirstConnection is the Unix time in seconds of the worker's first
	// connection; 0 if none or unknown. Sums keep the earliest.
	FirstConnection float64
}

// SampleRequests reads a worker's request series from its scrape.
func SampleRequests(mfs map[string]*dto.MetricFamily) RequestSample {
	var s RequestSample
	if mf := mfs["launcher_requests_total"]; mf != nil {
		for _, m := range mf.Metric {
			v := m.GetCounter().GetValue()
			s.Requests += v
			for _, lp := range m.Label {
				if lp.GetName() == "code" {
					if c, err := strconv.Atoi(lp.GetValue()); err == nil && c >= 500 && c < 600 {
						s.Errors += v
					}
				}
			}
		}
	}
	if mf := mfs["launcher_request_duration_seconds"]; mf != nil && len(mf.Metric) > 0 {
		h := mf.Metric[0].GetHistogram()
		s.Count = float64(h.GetSampleCount())
		for _, b := range h.Bucket {
			if math.IsInf(b.GetUpperBound(), 1) {
				continue
			}
			s.Bounds = append(s.Bounds, b.GetUpperBound())
			s.Counts = append(s.Counts, float64(b.GetCumulativeCount()))
		}
	}
	if mf := mfs["launcher_first_connection_timestamp_seconds"]; mf != nil && len(mf.Metric) > 0 {
		s.FirstConnection = mf.Metric[0].GetGauge().GetValue()
	}
	return s
}

// Sub returns s minus earlier: what happened in between. A histogram with
// other bounds (another release's) counts as empty in earlier.
func (s RequestSample) Sub(earlier RequestSample) RequestSample {
	out := s
	out.Requests -= earlier.Requests
	out.Errors -= earlier.Errors
	out.Counts = slices.Clone(s.Counts)
	if slices.Equal(s.Bounds, earlier.Bounds) {
		out.Count -= earlier.Count
		for i := range out.Counts {
			out.Counts[i] -= earlier.Counts[i]
		}
	}
	return out
}

// Add returns the sum of s and o, for a generation's workers. Histograms
// with other bounds than the first one's are left out of the sum.
func (s RequestSample) Add(o RequestSample) RequestSample {
	out := s
	out.Requests += o.Requests
	out.Errors += o.Errors
	if o.FirstConnection > 0 && (out.FirstConnection == 0 || o.FirstConnection < out.FirstConnection) {
		out.FirstConnection = o.FirstConnection
	}
	switch {
	case len(s.Bounds) == 0:
		out.Bounds, out.Counts, out.Count = o.Bounds, slices.Clone(o.Counts), o.Count
	case slices.Equal(s.Bounds, o.Bounds):
		out.Counts = slices.Clone(s.Counts)
		out.Count += o.Count
		for i := range out.Counts {
			out.Counts[i] += o.Counts[i]
		}
	}
	return out
}

// Quantile estimates the q-quantile (0 < q < 1) of the request durations
// the way PromQL's histogram_quantile does: linear interpolation inside
// the bucket the rank falls in, so the estimate is within that bucket's
// bounds (see [DurationBuckets] for their spacing). A rank in the +Inf
// bucket gives the highest finite bound. No observation gives 0.
func (s RequestSample) Quantile(q float64) time.Duration {
	if s.Count <= 0 || len(s.Bounds) == 0 {
		return 0
	}
	rank := q * s.Count
	lower, below := 0.0, 0.0
	for i, upper := range s.Bounds {
		if c := s.Counts[i]; c >= rank {
			v := upper
			if c > below {
				v = lower + (upper-lower)*(rank-below)/(c-below)
			}
			return time.Duration(v * float64(time.Second))
		}
		lower, below = upper, s.Counts[i]
	}
	return time.Duration(s.Bounds[len(s.Bounds)-1] * float64(time.Second))
}
