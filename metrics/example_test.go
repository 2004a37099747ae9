package metrics_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	"github.com/launcherd/launcher/drain"
	"github.com/launcherd/launcher/metrics"
)

// printFamilies prints each series as name{labels} value (a histogram as
// its sample count), in the registry's order.
func printFamilies(mfs []*dto.MetricFamily) {
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			name := mf.GetName()
			if len(ls) > 0 {
				name += "{" + strings.Join(ls, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				fmt.Println(name, m.Counter.GetValue())
			case strings.HasSuffix(name, "_timestamp_seconds"):
				fmt.Println(name, "set") // a time: differs at each run
			case m.Gauge != nil:
				fmt.Println(name, m.Gauge.GetValue())
			case m.Histogram != nil:
				fmt.Println(name, "count", m.Histogram.GetSampleCount())
			}
		}
	}
}

// A worker counts its requests and connections with a drain.Tracker and a
// metrics.Worker as the drain.Server's Observer, registered on an explicit
// registry (never the global one) that it serves on its admin socket.
// launcher.App does all of this; the example shows the parts.
func ExampleNewWorker() {
	tracker := drain.NewTracker()
	w := metrics.NewWorker(tracker)
	reg := prometheus.NewRegistry()
	reg.MustRegister(w)

	mux := http.NewServeMux()
	mux.HandleFunc("/", func(rw http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(rw, r)
			return
		}
		io.WriteString(rw, "hello\n")
	})
	srv := &drain.Server{HTTP: &http.Server{Handler: mux}, Tracker: tracker, Observer: w}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(ln)

	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for _, path := range []string{"/", "/", "/nowhere"} {
		resp, err := client.Get("http://" + ln.Addr().String() + path)
		if err != nil {
			log.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if err := srv.Drain(context.Background()); err != nil {
		log.Fatal(err)
	}

	mfs, err := reg.Gather()
	if err != nil {
		log.Fatal(err)
	}
	printFamilies(mfs)
	// Output:
	// launcher_first_connection_timestamp_seconds set
	// launcher_inflight_requests 0
	// launcher_open_connections 0
	// launcher_request_duration_seconds count 3
	// launcher_requests_total{code="200"} 2
	// launcher_requests_total{code="404"} 1
}

// The supervisor's own series. Every upgrade result is present at 0 from
// the start, so that the first failure shows in increase(); exited
// generations are counted but get no info series.
func ExampleNewSupervisor() {
	gens := []metrics.GenerationInfo{
		{Generation: 1, Version: "v1", State: "exited"},
		{Generation: 2, Version: "v2", State: "draining"},
		{Generation: 3, Version: "v3", State: "active"},
	}
	s := metrics.NewSupervisor("steer", func() []metrics.GenerationInfo { return gens })
	reg := prometheus.NewRegistry()
	reg.MustRegister(s)
	s.Upgrades.WithLabelValues("success").Add(3)

	mfs, err := reg.Gather()
	if err != nil {
		log.Fatal(err)
	}
	var picked []*dto.MetricFamily
	for _, mf := range mfs {
		switch mf.GetName() {
		case "launcher_generation_info", "launcher_generations", "launcher_upgrades_total":
			picked = append(picked, mf)
		}
	}
	printFamilies(picked)
	// Output:
	// launcher_generation_info{generation="2",state="draining",version="v2"} 1
	// launcher_generation_info{generation="3",state="active",version="v3"} 1
	// launcher_generations{state="active"} 1
	// launcher_generations{state="draining"} 1
	// launcher_generations{state="exited"} 1
	// launcher_generations{state="failed"} 0
	// launcher_generations{state="standby"} 0
	// launcher_generations{state="starting"} 0
	// launcher_upgrades_total{result="aborted"} 0
	// launcher_upgrades_total{result="breached"} 0
	// launcher_upgrades_total{result="failed"} 0
	// launcher_upgrades_total{result="refused"} 0
	// launcher_upgrades_total{result="rolled_back"} 0
	// launcher_upgrades_total{result="success"} 3
}

// The supervisor serves its own registry and every live worker's series,
// gathered from the admin sockets at each scrape with generation, version
// and worker labels added. A worker that does not answer within Timeout is
// skipped and counted in launcher_scrape_errors_total.
func ExampleWorkerGatherer() {
	s := metrics.NewSupervisor("steer", func() []metrics.GenerationInfo { return nil })
	reg := prometheus.NewRegistry()
	reg.MustRegister(s)
	workers := metrics.WorkerGatherer{
		Targets: func() []metrics.Target {
			return []metrics.Target{
				{Socket: "/run/hello/admin-1-0.sock", Generation: 1, Version: "v1", Worker: 0},
				{Socket: "/run/hello/admin-2-0.sock", Generation: 2, Version: "v2", Worker: 0},
			}
		},
		Errors:  s.ScrapeErrors,
		Timeout: metrics.DefaultScrapeTimeout,
	}
	http.Handle("/metrics", promhttp.HandlerFor(prometheus.Gatherers{reg, workers},
		promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	log.Fatal(http.ListenAndServe("127.0.0.1:9100", nil))
}

// Each live generation's cost, read at every scrape: the new version's
// beside the old one's during an upgrade.
func ExampleNewUsage() {
	u := metrics.NewUsage(metrics.MemoryCurrent, func() []metrics.GenerationUsage {
		return []metrics.GenerationUsage{
			{Generation: 3, Version: "v1", CPUSeconds: 812.4, MemoryBytes: 48 << 20},
			{Generation: 4, Version: "v2", CPUSeconds: 3.1, MemoryBytes: 31 << 20},
		}
	})
	reg := prometheus.NewRegistry()
	reg.MustRegister(u)
	mfs, err := reg.Gather()
	if err != nil {
		log.Fatal(err)
	}
	printFamilies(mfs)
	// Output:
	// launcher_generation_cpu_seconds_total{generation="3",version="v1"} 812.4
	// launcher_generation_cpu_seconds_total{generation="4",version="v2"} 3.1
	// launcher_generation_memory_bytes{generation="3",version="v1"} 5.0331648e+07
	// launcher_generation_memory_bytes{generation="4",version="v2"} 3.2505856e+07
}
