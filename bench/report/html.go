package report

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"sort"
	"strings"

	"github.com/xksproxy/xksproxy/bench"
)

// HTML writes the self-contained report: no script, no stylesheet or font
// to fetch, charts as inline SVG.
func HTML(w io.Writer, res *bench.Result) error {
	p := page{Res: res, Headline: Headline(res), VerdictClass: strings.ToLower(res.Verdict.Result)}
	t := res.Totals
	p.Cards = []card{
		{"offered", fmt.Sprintf("%.0f/s", t.OfferedRate), fmt.Sprintf("of %.0f/s requested", t.RequestedRate), ""},
		{"achieved", fmt.Sprintf("%.0f/s", t.AchievedRate), "successful answers", ""},
		{"p50", bench.FormatMs(t.LatencyMs.P50), "median", ""},
		{"p99", bench.FormatMs(t.LatencyMs.P99), "budget " + bench.FormatMs(res.Config.BudgetMs), overIf(t.LatencyMs.P99 > res.Config.BudgetMs)},
		{"p99.9", bench.FormatMs(t.LatencyMs.P999), "", ""},
		{"max", bench.FormatMs(t.LatencyMs.Max), "", ""},
		{"errors", fmt.Sprint(t.Errors), fmt.Sprintf("%.3f%% of answers", 100*t.ErrorRate), overIf(t.ErrorRate > res.Config.MaxErrorRate)},
	}
	if fm := res.FindMax; fm != nil {
		p.Cards = append([]card{{"max sustainable", rate(fm.MaxSustainableRate) + "/s", "per key", ""}}, p.Cards...)
		p.FindMaxChart = findMaxChart(res)
	}
	p.LatencyChart = latencyChart(res)
	p.ThroughputChart = throughputChart(res)
	p.LagChart = lagChart(res)
	p.DistChart = distributionChart(res)
	p.OpRows = append(p.OpRows, statRow{"all", res.Totals})
	for _, op := range opOrder(res.Operations) {
		p.OpRows = append(p.OpRows, statRow{op, res.Operations[op]})
	}
	for _, k := range res.Keys {
		p.KeyRows = append(p.KeyRows, statRow{k.Key, k.Stats})
	}
	for _, op := range append([]string{"all"}, opOrder(res.Operations)...) {
		p.Legend = append(p.Legend, legendItem{op, "op-" + op})
	}
	return pageTemplate.Execute(w, p)
}

type page struct {
	Res                           *bench.Result
	Headline, VerdictClass        string
	Cards                         []card
	LatencyChart, ThroughputChart template.HTML
	LagChart                      template.HTML
	DistChart, FindMaxChart       template.HTML
	OpRows, KeyRows               []statRow
	Legend                        []legendItem
}

type card struct{ Label, Value, Sub, Class string }

type statRow struct {
	Name string
	bench.Stats
}

type legendItem struct{ Name, Class string }

func overIf(over bool) string {
	if over {
		return "over"
	}
	return ""
}

// series pulls one operation's rows out of the time series.
func series(res *bench.Result, op string) []bench.SecondRow {
	var out []bench.SecondRow
	for _, r := range res.Timeseries {
		if r.Op == op {
			out = append(out, r)
		}
	}
	return out
}

func nanIfEmpty(count int64, v float64) float64 {
	if count == 0 {
		return math.NaN()
	}
	return v
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

// markers puts the hooks on a time chart.
func markers(c *chart, res *bench.Result) {
	for _, h := range res.Hooks {
		at := h.AtSeconds
		if h.Ran {
			at = h.StartedSeconds
		}
		tip := fmt.Sprintf("hook at %gs: %s\n%s", h.AtSeconds, h.Command, hookOutcome(h))
		c.marker(at, "⚑ "+shorten(h.Command, 32), tip)
	}
}

func secondTicks(n float64) []float64 {
	return axis{min: 0, max: n}.ticks()
}

// window splits the time series of "all" into the seconds of the measured
// window and those after it, which hold only the answers of the drain: a
// rate drawn for them would look like a collapse that never happened.
func window(res *bench.Result) (in, after []bench.SecondRow, seconds float64) {
	seconds = math.Ceil(res.Measured.DurationSeconds)
	for _, r := range series(res, "all") {
		if float64(r.Second) < seconds {
			in = append(in, r)
		} else {
			after = append(after, r)
		}
	}
	return in, after, seconds
}

func latencyChart(res *bench.Result) template.HTML {
	rows, _, n := window(res)
	if len(rows) == 0 {
		return ""
	}
	var xs, p50, p99, mx, values []float64
	for _, r := range rows {
		xs = append(xs, float64(r.Second)+0.5)
		p50 = append(p50, nanIfEmpty(r.Count, r.P50Ms))
		p99 = append(p99, nanIfEmpty(r.Count, r.P99Ms))
		mx = append(mx, nanIfEmpty(r.Count, r.MaxMs))
		values = append(values, r.P50Ms, r.MaxMs)
	}
	lo, hi := logRange(values, res.Config.BudgetMs)
	c := newChart(960, 320, 0, n, false, lo, hi, true)
	c.frame(secondTicks(n), func(v float64) string { return fmt.Sprintf("%gs", v) }, "second of the measured run (by intended send time)",
		fmtLatency, "latency")
	for _, r := range rows {
		if r.Errors > 0 {
			c.printf(`<rect class="err-band" x="%.1f" y="%.1f" width="%.1f" height="%.1f"/>`,
				c.x.pos(float64(r.Second)), c.top, c.x.pos(float64(r.Second+1))-c.x.pos(float64(r.Second)), c.h-c.top-c.bottom)
		}
	}
	c.line(xs, mx, "s-max")
	c.line(xs, p99, "s-p99")
	c.line(xs, p50, "s-p50")
	c.hline(res.Config.BudgetMs, "budget", "budget "+bench.FormatMs(res.Config.BudgetMs))
	markers(c, res)
	for _, r := range rows {
		c.hover(float64(r.Second), float64(r.Second+1), fmt.Sprintf("second %d: p50 %s · p99 %s · max %s (%d requests due)\noffered %d · achieved %d · errors %d",
			r.Second, bench.FormatMs(r.P50Ms), bench.FormatMs(r.P99Ms), bench.FormatMs(r.MaxMs), r.Count, r.Offered, r.Achieved, r.Errors))
	}
	return c.svg("latency over time")
}

func throughputChart(res *bench.Result) template.HTML {
	rows, after, n := window(res)
	if len(rows) == 0 {
		return ""
	}
	// Errors in the drain (timeouts of requests sent at the end) are shown,
	// in a shaded band after the window.
	var drainErrors []bench.SecondRow
	for _, r := range after {
		if r.Errors > 0 {
			drainErrors = append(drainErrors, r)
		}
	}
	end := n
	if len(drainErrors) > 0 {
		end = float64(drainErrors[len(drainErrors)-1].Second + 1)
	}
	top := res.Totals.RequestedRate
	var xs, offered, achieved []float64
	for _, r := range rows {
		xs = append(xs, float64(r.Second)+0.5)
		offered = append(offered, float64(r.Offered))
		achieved = append(achieved, float64(r.Achieved))
		top = math.Max(top, math.Max(float64(r.Offered), float64(r.Achieved)))
	}
	c := newChart(960, 240, 0, end, false, 0, math.Max(top*1.15, 1), false)
	c.frame(secondTicks(end), func(v float64) string { return fmt.Sprintf("%gs", v) }, "second of the measured run",
		func(v float64) string { return fmt.Sprintf("%g", v) }, "requests per second")
	if end > n {
		c.printf(`<rect class="drain" x="%.1f" y="%.1f" width="%.1f" height="%.1f"><title>after the measured window: answers of requests still in flight</title></rect>`,
			c.x.pos(n), c.top, c.x.pos(end)-c.x.pos(n), c.h-c.top-c.bottom)
	}
	for _, r := range append(rows, drainErrors...) {
		if r.Errors > 0 {
			c.bar(float64(r.Second), float64(r.Second+1), float64(r.Errors), "s-errors", fmt.Sprintf("second %d: %d errors", r.Second, r.Errors))
		}
	}
	c.hline(res.Totals.RequestedRate, "requested", fmt.Sprintf("requested %.0f/s", res.Totals.RequestedRate))
	c.line(xs, offered, "s-offered")
	c.line(xs, achieved, "s-achieved")
	markers(c, res)
	return c.svg("throughput over time")
}

// lagChart draws, per second, how late the bench sent the requests due
// in it: a bench that falls behind delays every request it sends, and the
// delay counts in the latencies, so a rise here is the generator's, not the
// proxy's.
func lagChart(res *bench.Result) template.HTML {
	rows, _, n := window(res)
	var xs, p99, mx, values []float64
	for _, r := range rows {
		xs = append(xs, float64(r.Second)+0.5)
		p99 = append(p99, nanIfEmpty(int64(math.Ceil(r.LagMaxMs)), r.LagP99Ms))
		mx = append(mx, nanIfEmpty(int64(math.Ceil(r.LagMaxMs)), r.LagMaxMs))
		values = append(values, r.LagP99Ms, r.LagMaxMs)
	}
	if len(rows) == 0 || res.GeneratorLagMs.Count == 0 {
		return ""
	}
	lo, hi := logRange(values)
	c := newChart(960, 220, 0, n, false, lo, hi, true)
	c.frame(secondTicks(n), func(v float64) string { return fmt.Sprintf("%gs", v) }, "second of the measured run (by intended send time)",
		fmtLatency, "sent late by")
	c.line(xs, mx, "s-max")
	c.line(xs, p99, "s-p99")
	markers(c, res)
	for _, r := range rows {
		c.hover(float64(r.Second), float64(r.Second+1), fmt.Sprintf("second %d: requests sent late by p99 %s · max %s",
			r.Second, bench.FormatMs(r.LagP99Ms), bench.FormatMs(r.LagMaxMs)))
	}
	return c.svg("generator lag over time")
}

// nines maps a percentile to its distance in "nines": 90% is 1, 99% is 2.
func nines(p float64) float64 { return -math.Log10(1 - p/100) }

func distributionChart(res *bench.Result) template.HTML {
	type curve struct {
		name string
		pts  []bench.CurvePoint
	}
	curves := []curve{{"all", withSummary(res.Totals)}}
	for _, op := range opOrder(res.Operations) {
		curves = append(curves, curve{op, withSummary(res.Operations[op])})
	}
	var values []float64
	top := 1.0
	for _, cv := range curves {
		for _, p := range cv.pts {
			values = append(values, p.Ms)
			if p.Percentile < 100 {
				top = math.Max(top, math.Ceil(nines(p.Percentile)))
			}
		}
	}
	if len(values) == 0 {
		return ""
	}
	maxX := top + 0.5
	lo, hi := logRange(values, res.Config.BudgetMs)
	c := newChart(960, 320, 0, maxX, false, lo, hi, true)
	var ticks []float64
	for i := 0.0; i <= top; i++ {
		ticks = append(ticks, i)
	}
	ticks = append(ticks, maxX)
	c.frame(ticks, func(v float64) string {
		if v == maxX {
			return "max"
		}
		return trim(100*(1-math.Pow(10, -v))) + "%"
	}, "percentile", fmtLatency, "latency")
	c.hline(res.Config.BudgetMs, "budget", "budget "+bench.FormatMs(res.Config.BudgetMs))
	for i := len(curves) - 1; i >= 0; i-- {
		var xs, ys []float64
		for _, p := range curves[i].pts {
			x := maxX
			if p.Percentile < 100 {
				x = nines(p.Percentile)
			}
			xs, ys = append(xs, x), append(ys, p.Ms)
		}
		c.line(xs, ys, "op-"+curves[i].name)
	}
	for _, p := range []float64{50, 90, 99, 99.9} {
		if nines(p) <= top {
			var parts []string
			for _, cv := range curves {
				parts = append(parts, fmt.Sprintf("%s %s", cv.name, bench.FormatMs(valueAt(cv.pts, p))))
			}
			x := nines(p)
			c.hover(x-0.05, x+0.05, fmt.Sprintf("p%g: %s", p, strings.Join(parts, " · ")))
		}
	}
	var maxes []string
	for _, cv := range curves {
		maxes = append(maxes, fmt.Sprintf("%s %s", cv.name, bench.FormatMs(cv.pts[len(cv.pts)-1].Ms)))
	}
	c.hover(maxX-0.05, maxX, "max: "+strings.Join(maxes, " · "))
	return c.svg("latency distribution")
}

// valueAt is the latency of the curve point at p: with withSummary's
// points, exactly the tables' figure.
func valueAt(pts []bench.CurvePoint, p float64) float64 {
	for _, pt := range pts {
		if pt.Percentile >= p-1e-9 {
			return pt.Ms
		}
	}
	return math.NaN()
}

// summaryPercentiles are the percentiles the tables show, with their
// figures in a LatencySummary.
var summaryPercentiles = []struct {
	p  float64
	ms func(bench.LatencySummary) float64
}{
	{50, func(l bench.LatencySummary) float64 { return l.P50 }},
	{90, func(l bench.LatencySummary) float64 { return l.P90 }},
	{99, func(l bench.LatencySummary) float64 { return l.P99 }},
	{99.9, func(l bench.LatencySummary) float64 { return l.P999 }},
}

// withSummary is s's percentile curve with the tables' percentiles put in
// at their exact places (the curve is sampled evenly in nines, and 50% is
// not one of its points), so that the line passes through, and the hover
// shows, the very figures of the tables.
func withSummary(s bench.Stats) []bench.CurvePoint {
	if len(s.PercentileCurve) == 0 {
		return nil
	}
	var pts []bench.CurvePoint
	for _, pt := range s.PercentileCurve {
		exact := false
		for _, sp := range summaryPercentiles {
			exact = exact || math.Abs(pt.Percentile-sp.p) < 1e-6
		}
		if !exact {
			pts = append(pts, pt)
		}
	}
	for _, sp := range summaryPercentiles {
		pts = append(pts, bench.CurvePoint{Percentile: sp.p, Ms: sp.ms(s.LatencyMs)})
	}
	sort.SliceStable(pts, func(i, j int) bool { return pts[i].Percentile < pts[j].Percentile })
	return pts
}

func findMaxChart(res *bench.Result) template.HTML {
	steps := append([]bench.StepInfo(nil), res.FindMax.Steps...)
	if len(steps) == 0 {
		return ""
	}
	sort.Slice(steps, func(i, j int) bool { return steps[i].RatePerKey < steps[j].RatePerKey })
	var xs, p50, p99, mx, values []float64
	top := 0.0
	for _, s := range steps {
		xs = append(xs, s.RatePerKey)
		p50, p99, mx = append(p50, s.LatencyMs.P50), append(p99, s.LatencyMs.P99), append(mx, s.LatencyMs.Max)
		values = append(values, s.LatencyMs.P50, s.LatencyMs.Max)
		top = math.Max(top, s.RatePerKey)
	}
	lo, hi := logRange(values, res.Config.BudgetMs)
	c := newChart(960, 300, 0, top*1.1, false, lo, hi, true)
	c.frame(axis{min: 0, max: top * 1.1}.ticks(), func(v float64) string { return fmt.Sprintf("%g", v) }, "requests per second per key",
		fmtLatency, "latency")
	c.hline(res.Config.BudgetMs, "budget", "budget "+bench.FormatMs(res.Config.BudgetMs))
	if m := res.FindMax.MaxSustainableRate; m > 0 {
		c.marker(m, fmt.Sprintf("max sustainable %s/s", rate(m)), "the highest per-key rate that stayed within the budget")
	}
	c.line(xs, mx, "s-max")
	c.line(xs, p99, "s-p99")
	c.line(xs, p50, "s-p50")
	for _, s := range steps {
		c.printf(`<circle class="step %s" cx="%.1f" cy="%.1f" r="5"><title>%s/s per key: %s · p50 %s · p99 %s · errors %d · offered %.0f/s · achieved %.0f/s</title></circle>`,
			strings.ToLower(s.Verdict), c.x.pos(s.RatePerKey), c.y.pos(math.Max(s.LatencyMs.P99, lo)), rate(s.RatePerKey), s.Verdict,
			bench.FormatMs(s.LatencyMs.P50), bench.FormatMs(s.LatencyMs.P99), s.Errors, s.OfferedRate, s.AchievedRate)
	}
	return c.svg("find-max steps")
}

var pageTemplate = template.Must(template.New("report").Funcs(template.FuncMap{
	"ms":   bench.FormatMs,
	"pct":  func(v float64) string { return fmt.Sprintf("%.3f%%", 100*v) },
	"rate": func(v float64) string { return fmt.Sprintf("%.1f", v) },
	"num":  rate,
	"inc":  func(i int) int { return i + 1 },
	"status": func(s int) string {
		if s == 0 {
			return ""
		}
		return fmt.Sprint(s)
	},
	"join": strings.Join,
	"mix":  mixString,
	"onoff": func(b bool) string {
		if b {
			return "on"
		}
		return "off"
	},
}).Parse(pageHTML))
