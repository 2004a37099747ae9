package deploy_test

import (
	"bytes"
	"context"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/launcherd/launcher/internal/promtest"
)

// runPromtool runs promtool with args and stdin, and returns its combined
// output; it fails t if promtool fails.
func runPromtool(t *testing.T, stdin []byte, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, promtest.Promtool(t), args...)
	cmd.Stdin = bytes.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestPromtool checks the shipped Prometheus files with promtool: the
// configuration (and the rule files it names) is valid, the rules pass
// every lint, and the rules' unit tests pass.
func TestPromtool(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
	}{
		{"check config", []string{"check", "config", "--lint=all", "--lint-fatal", "prometheus/prometheus.yml"}},
		{"check rules", []string{"check", "rules", "--lint=all", "--lint-fatal", "prometheus/launcher-rules.yml"}},
		{"test rules", []string{"test", "rules", "prometheus/launcher-rules.test.yml"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out := runPromtool(t, nil, tt.args...)
			if !strings.Contains(out, "SUCCESS") {
				t.Fatalf("promtool %s did not report SUCCESS:\n%s", strings.Join(tt.args, " "), out)
			}
		})
	}
}

// TestSampleMetricsLint checks the metric names and types of the metrics
// contract, as the sample exports them, with promtool's linter (naming,
// units, _total on counters, help text).
func TestSampleMetricsLint(t *testing.T) {
	t.Parallel()
	rec := httptest.NewRecorder()
	newSampleSupervisor(t).handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("sample /metrics answered %d: %s", rec.Code, rec.Body)
	}
	if out := runPromtool(t, rec.Body.Bytes(), "check", "metrics"); strings.TrimSpace(out) != "" {
		t.Fatalf("promtool check metrics found problems in the contract's metrics:\n%s", out)
	}
}
