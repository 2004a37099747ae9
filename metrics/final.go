package metrics

import (
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

// Freeze returns what of a worker's series outlives it: the supervisor
// reads them once the worker has drained, and serves them after it has
// exited, so that a scrape sees the requests of its last moments.
// Counters, histograms and summaries keep the values read then, which no
// longer change. Gauges (gauge histograms too) and untyped series are
// left out: they describe a process that is gone (its in-flight requests
// and open connections, an app's memory in use), and a frozen copy would
// be a made-up reading.
//
// The result is never nil, also when nothing is left, and shares nothing
// with mfs, which is not changed.
func Freeze(mfs map[string]*dto.MetricFamily) map[string]*dto.MetricFamily {
	out := make(map[string]*dto.MetricFamily, len(mfs))
	for name, mf := range mfs {
		switch mf.GetType() {
		case dto.MetricType_COUNTER, dto.MetricType_HISTOGRAM, dto.MetricType_SUMMARY:
			if len(mf.Metric) > 0 {
				out[name] = proto.Clone(mf).(*dto.MetricFamily)
			}
		}
	}
	return out
}

// cloneFamilies returns a deep copy of mfs, which the gatherer may change.
func cloneFamilies(mfs map[string]*dto.MetricFamily) map[string]*dto.MetricFamily {
	out := make(map[string]*dto.MetricFamily, len(mfs))
	for name, mf := range mfs {
		out[name] = proto.Clone(mf).(*dto.MetricFamily)
	}
	return out
}
