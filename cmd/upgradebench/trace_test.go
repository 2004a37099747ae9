package main

import (
	"strings"
	"testing"
	"time"
)

// A start (generation 1) and one upgrade to generation 2, with two
// workers each, as launcher start -v logs them.
const traceLog = `time=2026-01-02T03:04:05.000Z level=INFO msg="starting generation" supervisor=1 generation=1 version=v1 workers=2
time=2026-01-02T03:04:05.010Z level=INFO msg=listening generation=1 version=v1 worker=0 pid=2
time=2026-01-02T03:04:05.020Z level=INFO msg="generation active" supervisor=1 generation=1 version=v1 ready_ms=20
time=2026-01-02T03:04:06.000Z level=INFO msg="starting generation" supervisor=1 generation=2 version=v2 workers=2
time=2026-01-02T03:04:06.008Z level=INFO msg=listening generation=2 version=v2 worker=1 pid=4
time=2026-01-02T03:04:06.012Z level=INFO msg=listening generation=2 version=v2 worker=0 pid=3
time=2026-01-02T03:04:06.015Z level=INFO msg="generation active" supervisor=1 generation=2 version=v2 ready_ms=15
time=2026-01-02T03:04:06.025Z level=INFO msg="stopped accepting" generation=1 version=v1 worker=0 pid=2 naive=false
time=2026-01-02T03:04:06.031Z level=INFO msg="stopped accepting" generation=1 version=v1 worker=1 pid=5 naive=false
time=2026-01-02T03:04:06.032Z level=INFO msg=drained generation=1 version=v1 worker=0 pid=2 after=0s
time=2026-01-02T03:04:06.033Z level=INFO msg=drained generation=1 version=v1 worker=1 pid=5 after=0s
time=2026-01-02T03:04:06.040Z level=INFO msg="generation drained" supervisor=1 generation=1 version=v1 after_ms=9
some line a worker printed
`

func TestTracePhases(t *testing.T) {
	got := tracePhases(parseLog(strings.NewReader(traceLog)))
	want := []time.Duration{12, 3, 10, 6, 2, 7} // ms
	if len(got) != len(want) {
		t.Fatalf("phases = %d; want %d", len(got), len(want))
	}
	for i, w := range want {
		if len(got[i]) != 1 || got[i][0] != w*time.Millisecond {
			t.Errorf("phase %d (%s) = %v; want [%v]", i, phases[i].name, got[i], w*time.Millisecond)
		}
	}
}
