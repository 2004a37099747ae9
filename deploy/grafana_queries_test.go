package deploy_test

import (
	"context"
	"fmt"
	"math"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/launcherd/launcher/internal/promtest"
)

// grafanaBuiltins returns the values given to Grafana's own variables, as
// for a one-hour dashboard with a 15s interval.
func grafanaBuiltins() map[string]string {
	return map[string]string{
		"__rate_interval": "1m",
		"__interval":      "15s",
		"__interval_ms":   "15000",
		"__range":         "1h",
		"__range_s":       "3600",
		"__range_ms":      "3600000",
	}
}

// variableRE matches a Grafana variable reference in any of its syntaxes.
var variableRE = regexp.MustCompile(`\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)(?::[^\]]*)?\]\]`)

// expand replaces Grafana variables ($v, ${v}, ${v:fmt}, [[v]]) in expr with
// their values in vars or grafanaBuiltins. An unknown variable is an error.
func expand(expr string, vars map[string]string) (string, error) {
	builtins := grafanaBuiltins()
	var unknown []string
	out := variableRE.ReplaceAllStringFunc(expr, func(ref string) string {
		m := variableRE.FindStringSubmatch(ref)
		name := m[1] + m[2] + m[3]
		if v, ok := vars[name]; ok {
			return v
		}
		if v, ok := builtins[name]; ok {
			return v
		}
		unknown = append(unknown, ref)
		return ref
	})
	if unknown != nil {
		return "", fmt.Errorf("undefined variables %v in %q", unknown, expr)
	}
	return out, nil
}

// TestExpand checks the substitution of Grafana variables in queries.
func TestExpand(t *testing.T) {
	vars := map[string]string{"job": "launcher", "instance": "127.0.0.1:1"}
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{in: `rate(x{job=~"$job"}[$__rate_interval])`, want: `rate(x{job=~"launcher"}[1m])`},
		{in: `x{instance=~"${instance}", a=~"[[job]]"}`, want: `x{instance=~"127.0.0.1:1", a=~"launcher"}`},
		{in: `x{job=~"${job:regex}"}[$__range]`, want: `x{job=~"launcher"}[1h]`},
		{in: `x{a=~"b$"}`, want: `x{a=~"b$"}`},
		{in: `x{cluster="$cluster"}`, wantErr: true},
	}
	for _, tt := range tests {
		got, err := expand(tt.in, vars)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("expand(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

// TestDashboardQueries evaluates every query of the dashboard on a real
// Prometheus that scrapes two sample supervisors, both selected (the
// instance variable is multi-select with All): each must be valid PromQL,
// return data, and no value that is not a number (+Inf: a rate divided by
// an idle generation's rate of 0), so no panel of the shipped dashboard is
// broken or empty. Generation numbers are per supervisor, and the two
// samples have the same ones: a per-generation panel must keep instance in
// its series and its legend, else it merges two supervisors' generation 4
// into one line.
func TestDashboardQueries(t *testing.T) {
	t.Parallel()
	d := loadDashboard(t)
	qs := queries(t, d)

	targets := []string{newSampleSupervisor(t).serve(t), newSampleSupervisor(t).serve(t)}
	prom := promtest.Start(t, targets)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	// Three scrapes give rate(), increase() and changes() two samples or more.
	if _, err := prom.WaitFor(ctx, `sum_over_time(up{job="launcher"}[1m]) >= 3`, promtest.AtLeast(len(targets))); err != nil {
		t.Fatalf("sample supervisors not scraped: %v", err)
	}

	// As Grafana renders a multi-value variable in a regex matcher (its
	// escaping of the dots left out: a dot matches a dot).
	instances := "(" + targets[0] + "|" + targets[1] + ")"
	vars := map[string]string{"datasource": "prometheus", "job": promtest.Job, "instance": instances}
	for _, v := range d.Templating.List {
		if _, ok := vars[v.Name]; !ok {
			t.Fatalf("dashboard variable %q has no test value; add one to vars", v.Name)
		}
	}
	// Series each panel must return from one sample; 1 when not listed.
	// Per-generation panels return them for each supervisor.
	minSeries := map[string]int{
		"In-flight requests by generation": 2, // the draining and the active generation at least
		"Open connections by generation":   2,
		"Request rate by generation":       2,
		"p99 latency by generation":        2,
		"Generation states":                3, // starting, draining and active: exited and failed have no info series
		"CPU by generation":                3, // starting, draining and active
		"Memory by generation":             3,
		"CPU per request by generation":    2, // those that serve requests, not the idle starting one
	}

	for _, q := range qs {
		t.Run(q.where, func(t *testing.T) {
			expr, err := expand(q.expr, vars)
			if err != nil {
				t.Fatal(err)
			}
			got, err := prom.Query(ctx, expr)
			if err != nil {
				t.Fatalf("Prometheus rejected the query: %v", err)
			}
			perGeneration := strings.Contains(q.legend, "{{generation}}")
			want := max(minSeries[q.panel], 1)
			if perGeneration {
				want *= len(targets)
			}
			if len(got) < want {
				t.Fatalf("query %s returned %d series %v; want %d or more", expr, len(got), got, want)
			}
			for _, s := range got {
				if math.IsInf(s.Value, 0) || math.IsNaN(s.Value) {
					t.Errorf("query %s returned %v: not a number to chart", expr, s)
				}
			}
			if perGeneration {
				if !strings.Contains(q.legend, "{{instance}}") {
					t.Errorf("legend %q names the generation without the instance: generation numbers are per supervisor", q.legend)
				}
				for _, s := range got {
					if s.Labels["instance"] == "" {
						t.Errorf("series %v of %s has no instance label: it merges the supervisors' generations of that number", s, expr)
					}
				}
			}
			if q.label != "" {
				for _, s := range got {
					if s.Labels[q.label] == "" {
						t.Errorf("series %v has no label %q for the variable to list", s, q.label)
					}
				}
			}
		})
	}
}
