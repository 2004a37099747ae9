package launcher

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/launcherd/launcher/internal/control"
	"github.com/launcherd/launcher/metrics"
)

// TestDrainedWaitsForCollection: once drained, a worker under a
// supervisor that collects final metrics reports Drained and exits (Run
// returns) only after the supervisor's Collected — its admin socket
// serving the final counts meanwhile — or after CollectWait without it,
// or at once if the connection is lost; under an older supervisor it does
// not wait at all.
func TestDrainedWaitsForCollection(t *testing.T) {
	final := []string{control.CapFinalMetrics}
	tests := []struct {
		name    string
		caps    []string              // the welcome's
		after   func(c *control.Conn) // what the supervisor does once drained
		minWait time.Duration         // Run returns no sooner after Drained
		maxWait time.Duration         // nor later
		collect bool                  // the test scrapes and answers Collected
	}{
		{name: "collected", caps: final, collect: true, minWait: 300 * time.Millisecond, maxWait: control.CollectWait},
		{name: "older supervisor", caps: nil, maxWait: time.Second},
		{name: "no answer", caps: final, minWait: control.CollectWait - 100*time.Millisecond, maxWait: control.CollectWait + time.Second},
		{name: "supervisor lost", caps: final, after: func(c *control.Conn) { c.Close() }, maxWait: time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startFakeSupervisor(t, 1, 2, "")
			f.caps.Store(&tt.caps)
			supervisedEnv(t, f.path, false)
			dir, err := os.MkdirTemp("", "la")
			if err != nil {
				t.Fatal(err)
			}
			defer os.RemoveAll(dir)
			admin := filepath.Join(dir, "admin.sock")
			t.Setenv(control.EnvAdmin, admin)
			app, err := New(quietOptions())
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if h := <-f.hellos; !control.HasCap(h.Caps, control.CapFinalMetrics) {
				t.Fatalf("hello caps %v; want %s", h.Caps, control.CapFinalMetrics)
			}
			c := f.conn(t)
			ran := make(chan error, 1)
			go func() { // ends when Run returns, after the release below
				ran <- app.Run(context.Background(), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
			}()
			read(t, c, control.TypeListen)
			c.Write(control.Message{Type: control.TypeGrant})
			read(t, c, control.TypeListening)
			read(t, c, control.TypeReady)
			addr := app.listeners()[0].Addr().String()
			client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			for range 3 {
				resp, err := client.Get("http://" + addr + "/")
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
			}
			c.Write(control.Message{Type: control.TypeRelease, ID: 1, SettleMS: 10})
			read(t, c, control.TypeReleased)
			read(t, c, control.TypeDrained)
			drained := time.Now()
			if tt.after != nil {
				tt.after(c)
			}
			if tt.collect {
				time.Sleep(tt.minWait)
				select {
				case err := <-ran:
					t.Fatalf("Run returned (%v) before the supervisor collected", err)
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				mfs, err := metrics.Scrape(ctx, admin)
				if err != nil {
					t.Fatalf("final scrape: %v", err)
				}
				if n := mfs["launcher_requests_total"].GetMetric()[0].GetCounter().GetValue(); n != 3 {
					t.Errorf("final launcher_requests_total = %v; want 3", n)
				}
				c.Write(control.Message{Type: control.TypeCollected})
			}
			select {
			case err := <-ran:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(tt.maxWait + time.Second):
				t.Fatalf("Run still running %s after Drained", tt.maxWait+time.Second)
			}
			if took := time.Since(drained); took < tt.minWait || took > tt.maxWait {
				t.Errorf("Run returned %s after Drained; want %s to %s", took.Round(time.Millisecond), tt.minWait, tt.maxWait)
			}
		})
	}
}
