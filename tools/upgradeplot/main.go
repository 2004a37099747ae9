// Command upgradeplot draws one load run of `upgradebench --json`: OK
// responses per second of each version over time with the upgrades
// marked (command, new generation serving, old generation gone), failed
// requests, and the requests in flight per version.
//
//	go run ./cmd/upgradebench --json bench.json ...
//	cd tools/upgradeplot && go run . -o upgrade.svg bench.json
//
// upgradebench --plot FILE runs it. It is a module of its own so that its
// plotting library stays out of the launcher's module.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// report is the part of upgradebench's JSON that is drawn.
type report struct {
	ExecFloorMS float64 `json:"exec_floor_ms"`
	BucketMS    float64 `json:"bucket_ms"`
	Clients     int     `json:"clients"`
	DurationS   float64 `json:"duration_s"`
	Runs        []struct {
		Mode              string   `json:"mode"`
		Handover          string   `json:"handover"`
		Workers           int      `json:"workers"`
		Failed            int64    `json:"failed"`
		MinWindowCapacity *float64 `json:"min_window_capacity"` // null: undefined
		Upgrades          []struct {
			StartMS   float64 `json:"start_ms"`
			ServingMS float64 `json:"serving_ms"`
			OldGoneMS float64 `json:"old_gone_ms"`
		} `json:"upgrades"`
		Series struct {
			OK       map[string][]int64   `json:"ok"`
			Inflight map[string][]float64 `json:"inflight"`
			Failed   []int64              `json:"failed"`
		} `json:"series"`
	} `json:"runs"`
}

func main() {
	out := flag.String("o", "upgrade.svg", "output file: .svg or .png")
	run := flag.Int("run", 0, "index of the run in the JSON's runs to draw, from 0")
	from := flag.Float64("from", 0, "start of the time axis, seconds into the run")
	to := flag.Float64("to", 0, "end of the time axis, seconds into the run (0: the end)")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: upgradeplot [-o FILE.svg] [-run N] [-from S] [-to S] BENCH.json")
		os.Exit(2)
	}
	if err := draw1(flag.Arg(0), *out, *run, *from, *to); err != nil {
		fmt.Fprintln(os.Stderr, "upgradeplot:", err)
		if errors.As(err, new(usageError)) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// usageError is a command line that asks for what the run does not have.
type usageError struct{ error }

// checkRange returns a usageError unless [from, to] (seconds into the
// run; to 0 is the run's end) is a range that holds some of a run of end
// seconds.
func checkRange(from, to, end float64) error {
	switch {
	case from < 0 || to < 0 || (to > 0 && from >= to):
		return usageError{fmt.Errorf("-from %g -to %g: want 0 ≤ from < to (to 0: the run's end)", from, to)}
	case from >= end:
		return usageError{fmt.Errorf("-from %g: the run ends at %.1f s", from, end)}
	}
	return nil
}

var palette = []color.Color{
	color.RGBA{R: 31, G: 119, B: 180, A: 255},
	color.RGBA{R: 255, G: 127, B: 14, A: 255},
	color.RGBA{R: 44, G: 160, B: 44, A: 255},
	color.RGBA{R: 148, G: 103, B: 189, A: 255},
}

var red = color.RGBA{R: 214, G: 39, B: 40, A: 255}

// checkOut returns a usageError unless out names a file format drawn.
func checkOut(out string) error {
	if format := strings.TrimPrefix(filepath.Ext(out), "."); format != "svg" && format != "png" {
		return usageError{fmt.Errorf("-o %s: want a .svg or .png file", out)}
	}
	return nil
}

// fullBuckets is how many of n buckets of width seconds lie wholly in a
// run of duration seconds (0: unknown, all of them). A last bucket the
// run's end cut short holds a fraction of a bucket's responses: drawn as
// a whole one, it read as a fall of the rate to nothing (a new user's
// trial).
func fullBuckets(n int, width, duration float64) int {
	if duration <= 0 || width <= 0 {
		return n
	}
	full := int(duration/width + 1e-9)
	return min(n, full)
}

// steps turns one value a bucket into the points of a step line:
// each bucket's value from its start to its end (a line through the
// buckets' middles drew a version's rate rising before its upgrade).
func steps(vals []float64, width float64, inRange func(float64) bool) plotter.XYs {
	var xy plotter.XYs
	for k, v := range vals {
		if t := float64(k) * width; inRange(t) || inRange(t+width) {
			xy = append(xy, plotter.XY{X: t, Y: v})
		}
	}
	if len(xy) > 0 {
		last := xy[len(xy)-1]
		xy = append(xy, plotter.XY{X: last.X + width, Y: last.Y}) // the last bucket's end
	}
	return xy
}

func draw1(in, out string, index int, from, to float64) error {
	if err := checkOut(out); err != nil {
		return err
	}
	b, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	var rep report
	if err := json.Unmarshal(b, &rep); err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	if index < 0 || index >= len(rep.Runs) {
		return usageError{fmt.Errorf("%s has %d runs; no run %d (-run counts from 0)", in, len(rep.Runs), index)}
	}
	r := rep.Runs[index]
	width := rep.BucketMS / 1000 // seconds
	if err := checkRange(from, to, float64(len(r.Series.Failed))*width); err != nil {
		return err
	}
	inRange := func(t float64) bool { return t >= from && (to == 0 || t <= to) }
	versions := make([]string, 0, len(r.Series.OK))
	for v := range r.Series.OK {
		versions = append(versions, v)
	}
	slices.Sort(versions)

	rate := plot.New()
	capacity := "-"
	if c := r.MinWindowCapacity; c != nil {
		capacity = fmt.Sprintf("%.0f%%", 100**c)
	}
	rate.Title.Text = fmt.Sprintf("%s, %d clients, --workers %d, handover %s: %d failed, min capacity per %.0f ms window %s",
		r.Mode, rep.Clients, r.Workers, r.Handover, r.Failed, rep.BucketMS, capacity)
	rate.Y.Label.Text = "OK responses/s"
	rate.Legend.Top = true
	inflight := plot.New()
	inflight.X.Label.Text = "seconds into the run"
	inflight.Y.Label.Text = "requests in flight"
	inflight.Legend.Top = true

	buckets := fullBuckets(len(r.Series.Failed), width, rep.DurationS)
	var top float64
	for i, v := range versions {
		var rates, held []float64
		for k, n := range r.Series.OK[v][:min(buckets, len(r.Series.OK[v]))] {
			rates = append(rates, float64(n)/width)
			held = append(held, r.Series.Inflight[v][k])
			if inRange(float64(k)*width) || inRange(float64(k+1)*width) {
				top = max(top, float64(n)/width)
			}
		}
		xy, fl := steps(rates, width, inRange), steps(held, width, inRange)
		c := palette[i%len(palette)]
		for _, p := range []struct {
			p  *plot.Plot
			xy plotter.XYs
		}{{rate, xy}, {inflight, fl}} {
			l, err := plotter.NewLine(p.xy)
			if err != nil {
				return err
			}
			l.LineStyle.Color, l.LineStyle.Width = c, vg.Points(1)
			l.StepStyle = plotter.PostStep
			p.p.Add(l)
			p.p.Legend.Add(v, l)
		}
	}
	// The total: what the service answered, whichever version.
	var totals []float64
	for k := range buckets {
		var n int64
		for _, v := range versions {
			n += r.Series.OK[v][k]
		}
		totals = append(totals, float64(n)/width)
		if inRange(float64(k)*width) || inRange(float64(k+1)*width) {
			top = max(top, float64(n)/width)
		}
	}
	total := steps(totals, width, inRange)
	if len(total) == 0 {
		return usageError{fmt.Errorf("-from %g -to %g: no %.0f ms bucket of the run's in that range", from, to, rep.BucketMS)}
	}
	if tl, err := plotter.NewLine(total); err == nil {
		tl.StepStyle = plotter.PostStep
		tl.LineStyle.Color, tl.LineStyle.Width = color.Black, vg.Points(0.5)
		rate.Add(tl)
		rate.Legend.Add("total", tl)
	}
	var failed plotter.XYs
	for k, n := range r.Series.Failed {
		if t := (float64(k) + 0.5) * width; n > 0 && inRange(t) {
			failed = append(failed, plotter.XY{X: t, Y: float64(n) / width})
		}
	}
	if len(failed) > 0 {
		s, err := plotter.NewScatter(failed)
		if err != nil {
			return err
		}
		s.GlyphStyle.Color, s.GlyphStyle.Shape = red, draw.CrossGlyph{}
		rate.Add(s)
		rate.Legend.Add("failed/s", s)
	}
	// Each upgrade: the command (solid), the new generation serving
	// (dashed), the old one gone (dotted).
	marks := []struct {
		name   string
		dashes []vg.Length
		at     func(start, serving, gone float64) float64
	}{
		{"upgrade command", nil, func(s, _, _ float64) float64 { return s }},
		{"new serves", []vg.Length{vg.Points(3), vg.Points(2)}, func(s, v, _ float64) float64 { return s + v }},
		{"old gone", []vg.Length{vg.Points(1), vg.Points(2)}, func(s, _, g float64) float64 { return s + g }},
	}
	for i, m := range marks {
		for k, u := range r.Upgrades {
			t := m.at(u.StartMS, u.ServingMS, u.OldGoneMS) / 1000
			if !inRange(t) {
				continue
			}
			for _, p := range []*plot.Plot{rate, inflight} {
				l, err := plotter.NewLine(plotter.XYs{{X: t, Y: 0}, {X: t, Y: max(top*1.05, 1)}})
				if p == inflight {
					l, err = plotter.NewLine(plotter.XYs{{X: t, Y: 0}, {X: t, Y: float64(rep.Clients)}})
				}
				if err != nil {
					return err
				}
				l.LineStyle.Color = color.Gray{Y: uint8(60 + 40*i)}
				l.LineStyle.Width = vg.Points(0.6)
				l.LineStyle.Dashes = m.dashes
				p.Add(l)
				if k == 0 && p == rate {
					p.Legend.Add(m.name, l)
				}
			}
		}
	}
	// Headroom above the data for the legend.
	rate.Y.Min, inflight.Y.Min = 0, 0
	rate.Y.Max, inflight.Y.Max = max(top, 1)*1.5, float64(max(rep.Clients, 1))*1.3
	if to > 0 {
		rate.X.Min, rate.X.Max = from, to
	}
	inflight.X.Min, inflight.X.Max = rate.X.Min, rate.X.Max

	format := strings.TrimPrefix(filepath.Ext(out), ".")
	c, err := draw.NewFormattedCanvas(24*vg.Centimeter, 16*vg.Centimeter, format)
	if err != nil {
		return err
	}
	plots := [][]*plot.Plot{{rate}, {inflight}}
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadTop: vg.Points(4), PadBottom: vg.Points(4), PadLeft: vg.Points(4), PadRight: vg.Points(8), PadY: vg.Points(8)}
	canvases := plot.Align(plots, tiles, draw.New(c))
	rate.Draw(canvases[0][0])
	inflight.Draw(canvases[1][0])
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if _, err := c.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
