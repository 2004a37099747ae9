package deploy_test

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
)

const dashboardPath = "grafana/launcher-dashboard.json"

// dashboard is the part of a Grafana dashboard model these tests read.
type dashboard struct {
	ID            *int   `json:"id"`
	UID           string `json:"uid"`
	SchemaVersion int    `json:"schemaVersion"`
	Annotations   struct {
		List []struct {
			Name       string         `json:"name"`
			BuiltIn    int            `json:"builtIn"`
			Expr       string         `json:"expr"`
			Datasource *datasourceRef `json:"datasource"`
		} `json:"list"`
	} `json:"annotations"`
	Templating struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"` // a string, or {"query": "..."}
			Datasource *datasourceRef  `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource *datasourceRef `json:"datasource"`
	GridPos    struct{ X, Y, W, H int }
	Targets    []struct {
		RefID        string         `json:"refId"`
		Expr         string         `json:"expr"`
		LegendFormat string         `json:"legendFormat"`
		Datasource   *datasourceRef `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // of a collapsed row
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// dashboardQuery is one PromQL expression of the dashboard.
type dashboardQuery struct {
	where      string         // e.g. `panel "Title" target A`
	panel      string         // title of its panel, if any
	expr       string         // as written, with template variables
	legend     string         // legendFormat of a panel target
	datasource *datasourceRef // nil only for template variable queries
	label      string         // for label_values(expr, label): the label it lists
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatalf("reading dashboard: %v", err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("parsing %s: %v", dashboardPath, err)
	}
	return d
}

// allPanels returns panels and the panels nested in their rows.
func allPanels(panels []panel) []panel {
	var out []panel
	for _, p := range panels {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

var labelValuesRE = regexp.MustCompile(`^label_values\((.*),\s*(\w+)\)$`)

// queries returns every PromQL expression of d: panel targets, annotations
// and the selectors of label_values() template variables.
func queries(t *testing.T, d dashboard) []dashboardQuery {
	t.Helper()
	var out []dashboardQuery
	for _, p := range allPanels(d.Panels) {
		for _, tg := range p.Targets {
			out = append(out, dashboardQuery{
				where: fmt.Sprintf("panel %q target %s", p.Title, tg.RefID),
				panel: p.Title, expr: tg.Expr, legend: tg.LegendFormat, datasource: tg.Datasource,
			})
		}
	}
	for _, a := range d.Annotations.List {
		if a.BuiltIn == 0 {
			out = append(out, dashboardQuery{where: fmt.Sprintf("annotation %q", a.Name), expr: a.Expr, datasource: a.Datasource})
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q string
		if err := json.Unmarshal(v.Query, &q); err != nil {
			var obj struct{ Query string }
			if err := json.Unmarshal(v.Query, &obj); err != nil {
				t.Fatalf("variable %q: query is neither a string nor an object: %v", v.Name, err)
			}
			q = obj.Query
		}
		m := labelValuesRE.FindStringSubmatch(strings.TrimSpace(q))
		if m == nil {
			t.Fatalf("variable %q: query %q is not label_values(selector, label)", v.Name, q)
		}
		out = append(out, dashboardQuery{
			where: fmt.Sprintf("variable %q", v.Name), expr: m[1], datasource: v.Datasource, label: m[2],
		})
	}
	return out
}

// TestDashboardModel checks what makes the dashboard provisionable and
// portable: a prometheus datasource variable used everywhere, no
// hard-coded datasource or instance, a sane layout, and the panels the
// issue asks for.
func TestDashboardModel(t *testing.T) {
	d := loadDashboard(t)
	if d.ID != nil {
		t.Errorf("id = %d; want null, so provisioning assigns one", *d.ID)
	}
	if d.UID == "" {
		t.Error("uid is empty; provisioning needs a stable uid")
	}
	if d.SchemaVersion < 36 || d.SchemaVersion > 41 {
		t.Errorf("schemaVersion = %d; want about 39", d.SchemaVersion)
	}

	hasDatasourceVar := false
	for _, v := range d.Templating.List {
		if v.Name == "datasource" && v.Type == "datasource" && string(v.Query) == `"prometheus"` {
			hasDatasourceVar = true
		}
	}
	if !hasDatasourceVar {
		t.Error(`no template variable "datasource" of type datasource for prometheus`)
	}

	wantDS := datasourceRef{Type: "prometheus", UID: "${datasource}"}
	seen := make(map[int]string)
	for _, p := range allPanels(d.Panels) {
		if other, dup := seen[p.ID]; dup {
			t.Errorf("panels %q and %q share id %d", p.Title, other, p.ID)
		}
		seen[p.ID] = p.Title
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X < 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: gridPos %+v is outside the 24-column grid", p.Title, p.GridPos)
		}
		if p.Type != "row" && (p.Datasource == nil || *p.Datasource != wantDS) {
			t.Errorf("panel %q: datasource %+v; want %+v", p.Title, p.Datasource, wantDS)
		}
	}

	// Every selector of a launcher metric filters on both variables, so the
	// dashboard shows one supervisor and nothing is hard-coded.
	selectorRE := regexp.MustCompile(`launcher_\w+(\{[^}]*\})?`)
	for _, q := range queries(t, d) {
		if q.datasource == nil || *q.datasource != wantDS {
			t.Errorf("%s: datasource %+v; want %+v", q.where, q.datasource, wantDS)
		}
		if strings.HasPrefix(q.where, "variable") {
			continue
		}
		for _, sel := range selectorRE.FindAllStringSubmatch(q.expr, -1) {
			if !strings.Contains(sel[1], `job=~"$job"`) || !strings.Contains(sel[1], `instance=~"$instance"`) {
				t.Errorf("%s: selector %s does not filter on job=~\"$job\" and instance=~\"$instance\"", q.where, sel[0])
			}
		}
	}

	// changes() of a counter counts its reset as a change: every restart
	// of the supervisor drew an "upgrade" of each result on the
	// annotations (a new user's trial). increase() reads a reset as none.
	counterRE := regexp.MustCompile(`changes\(\s*launcher_\w+_(total|count|sum|bucket)\b`)
	for _, q := range queries(t, d) {
		if m := counterRE.FindString(q.expr); m != "" {
			t.Errorf("%s: %s…: changes() of a counter counts its resets (a supervisor's restart) as changes; use increase()", q.where, m)
		}
	}

	titles := make(map[string]bool)
	for _, p := range allPanels(d.Panels) {
		titles[p.Title] = true
	}
	for _, want := range []string{
		"In-flight requests by generation",
		"Request rate by generation",
		"p99 latency by generation",
		"Open connections by generation",
		"Generation states",
		"Upgrade and drain duration",
		"Upgrade outcomes",
		"CPU by generation",
		"Memory by generation",
		"CPU per request by generation",
		"New-connection weight by generation",
		"Rollbacks by reason",
	} {
		if !titles[want] {
			t.Errorf("no panel titled %q", want)
		}
	}
}

// TestMetricNamesMatchContract checks that the rules, their unit tests and
// the dashboard name only series of the metrics contract, so a typo cannot
// make an alert that never fires or an empty panel.
func TestMetricNamesMatchContract(t *testing.T) {
	contract := newSampleSupervisor(t).contractNames(t)
	nameRE := regexp.MustCompile(`\blauncher_[a-z0-9_]+`)
	for _, path := range []string{
		"prometheus/launcher-rules.yml",
		"prometheus/launcher-rules.test.yml",
		dashboardPath,
	} {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("reading %s: %v", path, err)
		}
		used := 0
		for _, name := range nameRE.FindAllString(string(b), -1) {
			used++
			if !contract[name] {
				t.Errorf("%s uses %s, which is not in the metrics contract", path, name)
			}
		}
		if used == 0 {
			t.Errorf("%s uses no launcher_ metric", path)
		}
	}
}

// TestGenerationInfoStates checks that the rules and the dashboard ask
// launcher_generation_info only for the states it has series for:
// metrics.Supervisor exports it for generations with live processes, and
// counts exited and failed ones in launcher_generations alone. (The
// dashboard's state timeline mapped exited and failed, which never came.)
func TestGenerationInfoStates(t *testing.T) {
	infoStates := map[string]bool{"starting": true, "active": true, "standby": true, "draining": true}
	selRE := regexp.MustCompile(`launcher_generation_info\{[^}]*\bstate=~?\\?"([^"\\]+)\\?"`)
	// (The rules' unit tests may feed such series on purpose, to show
	// the rules would not count them.)
	for _, path := range []string{"prometheus/launcher-rules.yml", dashboardPath} {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range selRE.FindAllStringSubmatch(string(b), -1) {
			for _, st := range strings.Split(m[1], "|") {
				if !infoStates[st] {
					t.Errorf("%s asks launcher_generation_info for state %q, which has no series", path, st)
				}
			}
		}
	}
}
