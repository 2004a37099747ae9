package loadgen_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"time"

	"github.com/launcherd/launcher/internal/loadgen"
)

// Drive keep-alive load at a service while marking an "upgrade" window,
// then summarize steady state and window apart.
func Example() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from v1\n")
	}))
	defer srv.Close()

	var windows loadgen.WindowLog
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	upgraded := make(chan struct{})
	go func() {
		defer close(upgraded)
		// Stands for "launcher upgrade": the window spans the upgrade.
		end := windows.Begin()
		defer end()
		time.Sleep(10 * time.Millisecond)
	}()
	res, err := loadgen.Run(ctx, loadgen.Config{
		Addr:        strings.TrimPrefix(srv.URL, "http://"),
		Mode:        loadgen.KeepAlive,
		Workers:     4,
		Duration:    5 * time.Second,
		MaxRequests: 1000,
	})
	<-upgraded
	if err != nil {
		fmt.Println(err)
		return
	}
	s := res.Summarize(windows.Windows())
	fmt.Println("requests:", s.Requests, "failures:", s.Failures, "versions:", s.Versions)
	fmt.Println("steady + upgrade:", s.Steady.Requests+s.Upgrade.Requests)
	// Output:
	// requests: 1000 failures: 0 versions: map[v1:1000]
	// steady + upgrade: 1000
}

func ExampleWriteTable() {
	ms := time.Millisecond
	rows := []loadgen.Row{
		{Handover: "cbpf+drain", Summary: loadgen.Summary{
			Mode: loadgen.KeepAlive, Requests: 5_530_123, Rate: 276_506,
			Versions: map[string]int64{"v1": 2_000_000, "v2": 3_530_123},
			Steady:   loadgen.Phase{Requests: 5_000_000, P50: ms / 5, P99: 2 * ms, Max: 15 * ms},
			Upgrade:  loadgen.Phase{Requests: 530_123, P50: ms / 4, P99: 4 * ms, Max: 1500 * ms},
		}},
		{Handover: "close", Summary: loadgen.Summary{
			Mode: loadgen.NewConn, Requests: 1_330_000, Rate: 66_500,
			Count:    [loadgen.NumClasses]int64{loadgen.Reset: 300, loadgen.EOF: 7},
			Failures: 307, FailureRate: 307.0 / 1_330_000,
			Versions: map[string]int64{"v1": 1_329_693},
			Steady:   loadgen.Phase{Requests: 1_330_000, Failures: 307, P50: ms / 2, P99: 12 * ms, Max: 2 * time.Second},
		}},
	}
	if err := loadgen.WriteTable(os.Stdout, rows); err != nil {
		fmt.Println(err)
	}
	// Output:
	// mode       handover     requests   rate/s  refused  reset  eof  timeout  non2xx  other   failed   steady p50/p99/max  upgrade p50/p99/max  versions
	// keepalive  cbpf+drain  5,530,123  276,506        0      0    0        0       0      0       0%  200µs/2.00ms/15.0ms   250µs/4.00ms/1.50s  v1=2,000,000 v2=3,530,123
	// new-conn   close       1,330,000   66,500        0    300    7        0       0      0  0.0231%   500µs/12.0ms/2.00s                    -  v1=1,329,693
}
