package loadgen

import (
	"context"
	"fmt"
	"iter"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Result holds every request of a run. Its exported fields are exact
// counts; the per-request records are read with Records and Summarize.
type Result struct {
	// Config is the configuration used, defaults applied.
	Config Config
	// Start is when the run started; record offsets count from it.
	Start time.Time
	// Elapsed is from Start until every worker had stopped.
	Elapsed time.Duration
	// Requests is the number of requests with an outcome (Aborted ones
	// excluded); it equals the sum of Count.
	Requests int64
	// Count is the number of requests per class.
	Count [NumClasses]int64
	// Aborted is the number of requests cut off by the cancellation of
	// Run's context; they are neither successes nor failures.
	Aborted int64
	// Versions counts OK responses per version from the body "hello from
	// X"; "" counts bodies that name no version.
	Versions map[string]int64
	// Samples holds up to a few distinct error messages per failure class,
	// for diagnosis.
	Samples [NumClasses][]string

	records  [][]uint64
	versions []string // version index -> name; index 0 is ""
}

// Run drives load as cfg says and returns when it is over: Duration has
// passed, MaxRequests requests have started or Stop is closed (requests
// in flight then finish, each within its deadline), or ctx is done. All its goroutines
// have stopped when it returns. It returns at the latest Duration +
// Timeout (+ SleepMax in Long mode) after it started; in Long mode expect
// up to SleepMax after Duration even when all goes well.
//
// An invalid cfg returns a nil Result and an error. When ctx is cancelled,
// Run returns the partial Result and an error wrapping ctx.Err().
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	var issued atomic.Int64
	start := time.Now()
	workers := make([]*worker, cfg.Workers)
	var wg sync.WaitGroup
	for i := range workers {
		w := newWorker(&cfg, start, &issued, seed, uint64(i))
		workers[i] = w
		wg.Go(func() { w.run(ctx) })
	}
	wg.Wait()
	res := merge(cfg, start, time.Since(start), workers)
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("loadgen: run cut short: %w", err)
	}
	return res, nil
}

// merge gathers the workers' counts and records into one Result, giving
// versions one index space.
func merge(cfg Config, start time.Time, elapsed time.Duration, workers []*worker) *Result {
	r := &Result{
		Config:   cfg,
		Start:    start,
		Elapsed:  elapsed,
		Versions: make(map[string]int64),
		versions: []string{""},
	}
	global := map[string]uint8{"": 0}
	for _, w := range workers {
		// remap turns the worker's version indexes into global ones.
		remap := [overflowIndex + 1]uint8{overflowIndex: overflowIndex}
		r.Versions[""] += w.perVersion[0]
		r.Versions[OverflowVersion] += w.perVersion[overflowIndex]
		for i, name := range w.versions.names {
			g, ok := global[name]
			if !ok {
				g = overflowIndex
				if len(r.versions) <= maxVersions {
					g = uint8(len(r.versions))
					r.versions = append(r.versions, name)
					global[name] = g
				}
			}
			remap[i+1] = g
			r.Versions[name] += w.perVersion[i+1]
		}
		for _, chunk := range w.log.chunks {
			for j, rec := range chunk {
				_, _, _, v := decode(rec)
				chunk[j] = withVersion(rec, remap[v])
			}
		}
		r.records = append(r.records, w.log.chunks...)
		for c, n := range w.count {
			r.Count[c] += n
			r.Requests += n
		}
		r.Aborted += w.abortedN
		for c, msgs := range w.samples {
			for _, m := range msgs {
				r.addSample(Class(c), m)
			}
		}
	}
	for name, n := range r.Versions {
		if n == 0 {
			delete(r.Versions, name)
		}
	}
	return r
}

func (r *Result) addSample(c Class, msg string) {
	if len(r.Samples[c]) >= maxSamples {
		return
	}
	for _, s := range r.Samples[c] {
		if s == msg {
			return
		}
	}
	r.Samples[c] = append(r.Samples[c], msg)
}

// Failures returns the number of failed requests (every class but OK).
func (r *Result) Failures() int64 {
	return r.Requests - r.Count[OK]
}

// versionName returns the name of global version index v.
func (r *Result) versionName(v uint8) string {
	if int(v) < len(r.versions) {
		return r.versions[v]
	}
	return OverflowVersion
}

// Records yields every request of the run, grouped by worker and in start
// order within a worker.
func (r *Result) Records() iter.Seq[Record] {
	return func(yield func(Record) bool) {
		for _, chunk := range r.records {
			for _, rec := range chunk {
				s, l, c, v := decode(rec)
				if !yield(Record{Start: s, Latency: l, Class: c, Version: r.versionName(v)}) {
					return
				}
			}
		}
	}
}
