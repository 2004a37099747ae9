package e2e

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestAppMetricsAcrossUpgrade: an app's own metric (hello registers
// hello_slept_seconds_total on its registry) is served by the supervisor
// with generation and version labels, and the new generation's comes
// through the same path after an upgrade. The exited generation's
// counters stay, frozen at their final values, for --keep-exited; its
// gauges go at once.
func TestAppMetricsAcrossUpgrade(t *testing.T) {
	// Parallel (see TestMetricsPerGeneration): it mostly waits out
	// --keep-exited, a lower bound a loaded machine only lengthens, on
	// ports and a state dir of its own.
	t.Parallel()
	const keep = 2 * time.Second
	maddr := freeAddr(t)
	s := startSup(t, "--metrics", maddr, "--keep-exited", keep.String(), "--probation", "0")
	scrape := func() string {
		resp, err := http.Get("http://" + maddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	mustGet(t, s.addr, "/sleep?d=150ms")
	want1 := `hello_slept_seconds_total{generation="1",version="v1",worker="0"} 0.15`
	if m := scrape(); !strings.Contains(m, want1) {
		t.Fatalf("supervisor /metrics lacks %s:\n%s", want1, grepLines(m, "hello_"))
	}
	cmdAt := time.Now()
	out, errOut, code := s.cli("upgrade", "--wait", "v2")
	if code != 0 {
		t.Fatalf("upgrade: %s", errOut)
	}
	// When generation 1 exited, counted as the supervisor counts, from its
	// receipt of the command (after cmdAt). The time --wait returns is
	// later by the CLI's own exit, tens of ms on a loaded machine: the
	// drop would seem early.
	exited := cmdAt.Add(progressAt(t, out, "generation 1 drained"))
	mustGet(t, s.addr, "/sleep?d=50ms")
	want2 := `hello_slept_seconds_total{generation="2",version="v2",worker="0"} 0.05`
	m := scrape()
	for _, want := range []string{want1, want2, `launcher_requests_total{code="200",generation="1",version="v1",worker="0"} 1`} {
		if !strings.Contains(m, want) {
			t.Errorf("after generation 1 exited, /metrics lacks %s:\n%s", want, grepLines(m, `generation="`))
		}
	}
	if strings.Contains(m, `launcher_inflight_requests{generation="1"`) {
		t.Errorf("exited generation 1 still has gauges:\n%s", grepLines(m, `generation="1"`))
	}
	eventually(t, keep+5*time.Second, "exited generation 1 dropped after --keep-exited", func() error {
		m := scrape()
		if !strings.Contains(m, want2) {
			return fmt.Errorf("lacks %s:\n%s", want2, grepLines(m, "hello_"))
		}
		if strings.Contains(m, `generation="1"`) {
			return fmt.Errorf("exited generation 1 still exported:\n%s", grepLines(m, `generation="1"`))
		}
		return nil
	})
	if d := time.Since(exited); d < keep {
		t.Errorf("generation 1's series dropped %s after it exited; want --keep-exited %s", d, keep)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
