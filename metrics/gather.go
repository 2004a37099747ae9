package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/launcherd/launcher/drain"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/proto"
)

// DefaultScrapeTimeout is the budget of one scrape of all workers.
const DefaultScrapeTimeout = time.Second

// Target is a worker to gather: its admin socket and the labels its series
// get.
type Target struct {
	Socket     string
	Generation int
	Version    string
	Worker     int
	// Final, when not nil, are the series of a worker that has drained
	// (see [Freeze]): they are served, labelled as the live ones were,
	// without a scrape. The gatherer copies them and never changes them,
	// so one Final may serve many scrapes at once.
	Final map[string]*dto.MetricFamily
}

// WorkerGatherer gathers every worker's series from its admin socket at
// each scrape, in parallel, adding generation, version and worker labels.
// A worker that fails or does not answer within Timeout is counted in
// Errors and never fails nor blocks the whole scrape; its series are left
// out, or with a Cache served as last scraped.
type WorkerGatherer struct {
	Targets func() []Target
	Errors  prometheus.Counter
	Timeout time.Duration // zero means DefaultScrapeTimeout
	// Scrape reads a worker's admin socket; nil means [Scrape].
	Scrape func(ctx context.Context, socket string) (map[string]*dto.MetricFamily, error)
	// Cache, if set, keeps each live worker's last scraped counters,
	// histograms and summaries (see [Freeze]) and serves them in a scrape
	// that worker misses. Without it a missed scrape drops the worker's
	// counters for that scrape: a sum over workers goes down, and
	// Prometheus takes the fall for a counter reset and counts the whole
	// sum again in rate() and increase().
	Cache *ScrapeCache
}

// ScrapeCache is a [WorkerGatherer]'s memory of the last series each live
// worker gave, by admin socket; a worker leaves it once it is no longer a
// live target. The zero value is ready; it is safe for concurrent scrapes.
type ScrapeCache struct {
	mu   sync.Mutex
	last map[string]map[string]*dto.MetricFamily // socket → Freeze of its last scrape
}

// remember keeps socket's frozen series.
func (c *ScrapeCache) remember(socket string, frozen map[string]*dto.MetricFamily) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last == nil {
		c.last = map[string]map[string]*dto.MetricFamily{}
	}
	c.last[socket] = frozen
}

// recall returns a copy of socket's last series, or nil.
func (c *ScrapeCache) recall(socket string) map[string]*dto.MetricFamily {
	c.mu.Lock()
	last := c.last[socket]
	c.mu.Unlock()
	if last == nil {
		return nil
	}
	return cloneFamilies(last) // the copy is changed by the merge
}

// keepOnly forgets every socket but those of live.
func (c *ScrapeCache) keepOnly(live map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for socket := range c.last {
		if !live[socket] {
			delete(c.last, socket)
		}
	}
}

// Gather implements prometheus.Gatherer.
func (g WorkerGatherer) Gather() ([]*dto.MetricFamily, error) {
	timeout := g.Timeout
	if timeout <= 0 {
		timeout = DefaultScrapeTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	scrape := g.Scrape
	if scrape == nil {
		scrape = Scrape
	}
	targets := g.Targets()
	results := make([]map[string]*dto.MetricFamily, len(targets))
	live := map[string]bool{}
	var wg sync.WaitGroup
	for i, t := range targets {
		if t.Final != nil {
			results[i] = cloneFamilies(t.Final)
			continue
		}
		live[t.Socket] = true
		wg.Add(1)
		go func() { // bounded by ctx
			defer wg.Done()
			mfs, err := scrape(ctx, t.Socket)
			if err != nil {
				if g.Errors != nil {
					g.Errors.Inc()
				}
				if g.Cache != nil {
					results[i] = g.Cache.recall(t.Socket)
				}
				return
			}
			if g.Cache != nil {
				g.Cache.remember(t.Socket, Freeze(mfs))
			}
			results[i] = mfs
		}()
	}
	wg.Wait()
	if g.Cache != nil {
		g.Cache.keepOnly(live)
	}
	merged := map[string]*dto.MetricFamily{}
	for i, mfs := range results {
		labels := []*dto.LabelPair{
			{Name: proto.String("generation"), Value: proto.String(strconv.Itoa(targets[i].Generation))},
			{Name: proto.String("version"), Value: proto.String(targets[i].Version)},
			{Name: proto.String("worker"), Value: proto.String(strconv.Itoa(targets[i].Worker))},
		}
		for name, mf := range mfs {
			into, ok := merged[name]
			if !ok {
				into = &dto.MetricFamily{Name: mf.Name, Help: mf.Help, Type: mf.Type, Unit: mf.Unit}
				merged[name] = into
			} else if into.GetType() != mf.GetType() {
				continue // two releases disagree on a type: keep the first
			}
			for _, m := range mf.Metric {
				m.Label = withLabels(m.Label, labels)
				into.Metric = append(into.Metric, m)
			}
		}
	}
	out := make([]*dto.MetricFamily, 0, len(merged))
	for _, mf := range merged {
		out = append(out, mf)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
	return out, nil
}

// withLabels sets add on ls. A label of ls with the name of one of add
// (an app's own "version") is kept as exported_NAME, as Prometheus keeps
// a scraped label that clashes with a target's (honor_labels: false,
// https://prometheus.io/docs/prometheus/latest/configuration/configuration/#scrape_config):
// replaced, it lost the app's values, and its series that differed only
// there collapsed into one (a new user's trial).
func withLabels(ls, add []*dto.LabelPair) []*dto.LabelPair {
	has := func(set []*dto.LabelPair, name string) bool {
		return slices.ContainsFunc(set, func(l *dto.LabelPair) bool { return l.GetName() == name })
	}
	out := make([]*dto.LabelPair, 0, len(ls)+len(add))
	for _, l := range ls {
		if has(add, l.GetName()) {
			// exported_ again while that is taken too (an app's own
			// exported_version): a name twice made the family invalid,
			// and the exposition dropped it whole (a new user's recheck).
			name := "exported_" + l.GetName()
			for has(ls, name) || has(add, name) {
				name = "exported_" + name
			}
			l = &dto.LabelPair{Name: proto.String(name), Value: l.Value}
		}
		out = append(out, l)
	}
	out = append(out, add...)
	sort.Slice(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
	return out
}

// Scrape reads the metrics a worker serves on its admin unix socket.
func Scrape(ctx context.Context, socket string) (map[string]*dto.MetricFamily, error) {
	resp, err := get(ctx, socket, "/metrics", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: %s", socket, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", socket, err)
	}
	return mfs, nil
}

// get sends a GET of path to the worker's admin socket.
func get(ctx context.Context, socket, path, accept string) (*http.Response, error) {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://worker"+path, nil)
	if err != nil {
		return nil, err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	return (&http.Client{Transport: tr}).Do(req)
}

// Counts are a worker's live counters.
type Counts struct {
	InflightRequests int64 `json:"inflight_requests"`
	OpenConnections  int64 `json:"open_connections"`
}

// CountsPath is where a worker's admin socket serves its [Counts] as
// JSON (see [CountsHandler]).
const CountsPath = "/counts"

// CountsHandler serves t's in-flight requests and open connections as
// JSON Counts: what the supervisor reads at each upgrade's switch and
// each status, without the whole exposition of the worker's metrics (the
// app's own registry included) made, sent and parsed for two numbers.
func CountsHandler(t *drain.Tracker) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := t.Stats()
		b, _ := json.Marshal(Counts{InflightRequests: s.InflightRequests, OpenConnections: s.OpenConnections})
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
	})
}

// ReadCounts returns a worker's in-flight requests and open connections,
// from its [CountsPath], or, for a worker of a library before it (a 404),
// from a scrape of its /metrics.
func ReadCounts(ctx context.Context, socket string) (Counts, error) {
	resp, err := get(ctx, socket, CountsPath, "")
	if err != nil {
		return Counts{}, fmt.Errorf("counts of %s: %w", socket, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		var c Counts
		if err := json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&c); err != nil {
			return Counts{}, fmt.Errorf("counts of %s: %w", socket, err)
		}
		return c, nil
	case http.StatusNotFound:
		return scrapeCounts(ctx, socket)
	default:
		return Counts{}, fmt.Errorf("counts of %s: %s", socket, resp.Status)
	}
}

// scrapeCounts reads Counts from the gauges of a worker's /metrics.
func scrapeCounts(ctx context.Context, socket string) (Counts, error) {
	mfs, err := Scrape(ctx, socket)
	if err != nil {
		return Counts{}, err
	}
	gauge := func(name string) (int64, error) {
		mf := mfs[name]
		if mf == nil || len(mf.Metric) == 0 || mf.Metric[0].Gauge == nil {
			return 0, errors.New("no " + name)
		}
		return int64(mf.Metric[0].Gauge.GetValue()), nil
	}
	var c Counts
	var e1, e2 error
	c.InflightRequests, e1 = gauge("launcher_inflight_requests")
	c.OpenConnections, e2 = gauge("launcher_open_connections")
	return c, errors.Join(e1, e2)
}
