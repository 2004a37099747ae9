package promtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

const (
	// DefaultWaitTimeout bounds [Server.WaitFor] when its context has no
	// deadline.
	DefaultWaitTimeout = 30 * time.Second
	pollInterval       = 200 * time.Millisecond
	maxResponseBytes   = 64 << 20
)

// Sample is one element of an instant vector, or the value of a scalar
// (with no labels).
type Sample struct {
	Labels map[string]string // includes __name__ when the series has one
	Value  float64
	Time   time.Time
}

// String formats s as Prometheus does, such as `up{instance="a:1", job="b"} => 1`.
func (s Sample) String() string {
	return formatLabels(s.Labels) + " => " + strconv.FormatFloat(s.Value, 'g', -1, 64)
}

// Series is one element of a range vector.
type Series struct {
	Labels map[string]string
	Points []Point
}

// Point is one value of a [Series].
type Point struct {
	Time  time.Time
	Value float64
}

// APIError is an error answered by the Prometheus HTTP API, such as a PromQL
// syntax error (Type "bad_data") or a failed evaluation (Type "execution").
type APIError struct {
	StatusCode int
	Type       string
	Message    string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("prometheus API: %s (HTTP %d): %s", e.Type, e.StatusCode, e.Message)
}

// AtLeast returns a [Server.WaitFor] condition that holds once the result
// has n samples or more.
func AtLeast(n int) func([]Sample) bool {
	return func(s []Sample) bool { return len(s) >= n }
}

// Query evaluates promql at the current time through /api/v1/query. The
// result must be an instant vector or a scalar. Errors from Prometheus
// itself are [*APIError].
func (s *Server) Query(ctx context.Context, promql string) ([]Sample, error) {
	return s.QueryAt(ctx, promql, time.Time{})
}

// QueryAt is [Server.Query] evaluated at time at (to the millisecond)
// rather than now; the zero time means now. Two queries at chosen times
// read a counter's values exactly, where increase() extrapolates.
func (s *Server) QueryAt(ctx context.Context, promql string, at time.Time) ([]Sample, error) {
	form := url.Values{"query": {promql}}
	if !at.IsZero() {
		form.Set("time", formatTime(at))
	}
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := s.api(ctx, "/api/v1/query", form, &data); err != nil {
		return nil, fmt.Errorf("query %q: %w", promql, err)
	}
	switch data.ResultType {
	case "vector":
		var vec []struct {
			Metric map[string]string `json:"metric"`
			Value  pair              `json:"value"`
		}
		if err := json.Unmarshal(data.Result, &vec); err != nil {
			return nil, fmt.Errorf("query %q: decoding vector: %w", promql, err)
		}
		out := make([]Sample, len(vec))
		for i, v := range vec {
			out[i] = Sample{Labels: v.Metric, Value: v.Value.Value, Time: v.Value.Time}
		}
		return out, nil
	case "scalar":
		var p pair
		if err := json.Unmarshal(data.Result, &p); err != nil {
			return nil, fmt.Errorf("query %q: decoding scalar: %w", promql, err)
		}
		return []Sample{{Labels: map[string]string{}, Value: p.Value, Time: p.Time}}, nil
	default:
		return nil, fmt.Errorf("query %q: result type %q is not a vector or scalar", promql, data.ResultType)
	}
}

// QueryRange evaluates promql from start to end every step through
// /api/v1/query_range, as a dashboard panel does.
func (s *Server) QueryRange(ctx context.Context, promql string, start, end time.Time, step time.Duration) ([]Series, error) {
	form := url.Values{
		"query": {promql},
		"start": {formatTime(start)},
		"end":   {formatTime(end)},
		"step":  {strconv.FormatFloat(step.Seconds(), 'f', -1, 64)},
	}
	var data struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Values []pair            `json:"values"`
		} `json:"result"`
	}
	if err := s.api(ctx, "/api/v1/query_range", form, &data); err != nil {
		return nil, fmt.Errorf("range query %q: %w", promql, err)
	}
	if data.ResultType != "matrix" {
		return nil, fmt.Errorf("range query %q: result type %q is not a matrix", promql, data.ResultType)
	}
	out := make([]Series, len(data.Result))
	for i, r := range data.Result {
		points := make([]Point, len(r.Values))
		for j, v := range r.Values {
			points[j] = Point{Time: v.Time, Value: v.Value}
		}
		out[i] = Series{Labels: r.Metric, Points: points}
	}
	return out, nil
}

// WaitFor evaluates promql every 200ms until cond holds for its result, and
// returns that result. It gives up when ctx is done or, if ctx has no
// deadline, after [DefaultWaitTimeout]. A query Prometheus rejects as
// invalid ends the wait at once; other errors are retried.
func (s *Server) WaitFor(ctx context.Context, promql string, cond func([]Sample) bool) ([]Sample, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultWaitTimeout)
		defer cancel()
	}
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	var last []Sample
	var lastErr error
	for {
		last, lastErr = s.Query(ctx, promql)
		if lastErr == nil && cond(last) {
			return last, nil
		}
		if apiErr := (*APIError)(nil); errors.As(lastErr, &apiErr) && apiErr.Type == "bad_data" {
			return nil, fmt.Errorf("waiting: %w", lastErr)
		}
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return nil, fmt.Errorf("waiting for %q: %w (last error: %w)", promql, ctx.Err(), lastErr)
			}
			return nil, fmt.Errorf("waiting for %q: %w (last result: %v)", promql, ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// api POSTs form to path and decodes the "data" member of a successful
// response into data.
func (s *Server) api(ctx context.Context, path string, form url.Values, data any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url+path, strings.NewReader(form.Encode()))
	if err != nil {
		return fmt.Errorf("building request: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("POST %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return fmt.Errorf("reading %s response: %w", path, err)
	}
	var env struct {
		Status    string          `json:"status"`
		Data      json.RawMessage `json:"data"`
		ErrorType string          `json:"errorType"`
		Error     string          `json:"error"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return fmt.Errorf("decoding %s response (HTTP %d): %w", path, resp.StatusCode, err)
	}
	if env.Status != "success" {
		return &APIError{StatusCode: resp.StatusCode, Type: env.ErrorType, Message: env.Error}
	}
	if err := json.Unmarshal(env.Data, data); err != nil {
		return fmt.Errorf("decoding %s data: %w", path, err)
	}
	return nil
}

// pair is a [time, "value"] pair of the Prometheus JSON format.
type pair struct {
	Time  time.Time
	Value float64
}

func (p *pair) UnmarshalJSON(b []byte) error {
	var raw [2]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return fmt.Errorf("sample pair: %w", err)
	}
	var ts float64
	if err := json.Unmarshal(raw[0], &ts); err != nil {
		return fmt.Errorf("sample time: %w", err)
	}
	var v string
	if err := json.Unmarshal(raw[1], &v); err != nil {
		return fmt.Errorf("sample value: %w", err)
	}
	f, err := strconv.ParseFloat(v, 64) // also parses "NaN", "+Inf", "-Inf"
	if err != nil {
		return fmt.Errorf("sample value: %w", err)
	}
	p.Time = time.UnixMilli(int64(math.Round(ts * 1000)))
	p.Value = f
	return nil
}

func formatTime(t time.Time) string {
	return strconv.FormatFloat(float64(t.UnixMilli())/1000, 'f', 3, 64)
}

func formatLabels(labels map[string]string) string {
	var b strings.Builder
	b.WriteString(labels["__name__"])
	b.WriteByte('{')
	sep := ""
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		if k == "__name__" {
			continue
		}
		fmt.Fprintf(&b, "%s%s=%q", sep, k, labels[k])
		sep = ", "
	}
	b.WriteByte('}')
	return b.String()
}
