package report

import (
	"fmt"
	"html"
	"html/template"
	"math"
	"strings"
)

// The charts are drawn here as inline SVG: the report then needs no script,
// no network and no library, prints as it shows, and keeps working in ten
// years. Hovering a point shows its figures through SVG <title> elements.

// axis maps data values to pixels, linearly or by powers of ten.
type axis struct {
	min, max float64
	log      bool
	lo, hi   float64 // pixel range
}

func (a axis) pos(v float64) float64 {
	lo, hi := a.min, a.max
	if a.log {
		v = math.Log10(math.Max(v, a.min))
		lo, hi = math.Log10(a.min), math.Log10(a.max)
	}
	if hi == lo {
		return a.lo
	}
	return a.lo + (v-lo)/(hi-lo)*(a.hi-a.lo)
}

// ticks are round values inside the axis.
func (a axis) ticks() []float64 {
	var out []float64
	if a.log {
		decades := math.Log10(a.max / a.min)
		steps := []float64{1, 2, 5}
		if decades > 3 {
			steps = []float64{1}
		}
		for p := math.Floor(math.Log10(a.min)); p <= math.Ceil(math.Log10(a.max)); p++ {
			for _, s := range steps {
				v := s * math.Pow(10, p)
				if v >= a.min*0.999 && v <= a.max*1.001 {
					out = append(out, v)
				}
			}
		}
		return out
	}
	step := niceStep((a.max - a.min) / 6)
	for v := math.Ceil(a.min/step) * step; v <= a.max+step/1e6; v += step {
		out = append(out, v)
	}
	return out
}

func niceStep(raw float64) float64 {
	if raw <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

// logRange is a log axis range around values (and extras such as the
// budget), widened to whole decades.
func logRange(values []float64, extra ...float64) (float64, float64) {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range append(values, extra...) {
		if v > 0 && !math.IsNaN(v) {
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
	}
	if math.IsInf(lo, 1) {
		return 0.1, 1000
	}
	lo = math.Pow(10, math.Floor(math.Log10(lo)))
	hi = math.Pow(10, math.Ceil(math.Log10(hi*1.0001)))
	if hi/lo < 100 {
		hi = lo * 100
	}
	return lo, hi
}

// chart draws one SVG chart.
type chart struct {
	w, h                     float64
	left, right, top, bottom float64
	x, y                     axis
	b                        strings.Builder
}

func newChart(w, h float64, xmin, xmax float64, xlog bool, ymin, ymax float64, ylog bool) *chart {
	c := &chart{w: w, h: h, left: 64, right: 16, top: 16, bottom: 40}
	c.x = axis{min: xmin, max: xmax, log: xlog, lo: c.left, hi: w - c.right}
	c.y = axis{min: ymin, max: ymax, log: ylog, lo: h - c.bottom, hi: c.top}
	return c
}

func (c *chart) printf(format string, args ...any) { fmt.Fprintf(&c.b, format, args...) }

// frame draws the grid, the tick labels and the axis titles.
func (c *chart) frame(xTicks []float64, xfmt func(float64) string, xTitle string, yfmt func(float64) string, yTitle string) {
	for _, v := range c.y.ticks() {
		y := c.y.pos(v)
		c.printf(`<line class="grid" x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`, c.left, y, c.w-c.right, y)
		c.printf(`<text class="tick" x="%.1f" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>`, c.left-6, y, esc(yfmt(v)))
	}
	for _, v := range xTicks {
		x := c.x.pos(v)
		c.printf(`<line class="grid" x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`, x, c.top, x, c.h-c.bottom)
		c.printf(`<text class="tick" x="%.1f" y="%.1f" text-anchor="middle">%s</text>`, x, c.h-c.bottom+16, esc(xfmt(v)))
	}
	c.printf(`<rect class="plot" x="%.1f" y="%.1f" width="%.1f" height="%.1f"/>`, c.left, c.top, c.w-c.left-c.right, c.h-c.top-c.bottom)
	c.printf(`<text class="axis-title" x="%.1f" y="%.1f" text-anchor="middle">%s</text>`, (c.left+c.w-c.right)/2, c.h-4, esc(xTitle))
	c.printf(`<text class="axis-title" transform="translate(14 %.1f) rotate(-90)" text-anchor="middle">%s</text>`, (c.top+c.h-c.bottom)/2, esc(yTitle))
}

// line draws a polyline through the points, broken where y is NaN.
func (c *chart) line(xs, ys []float64, class string) {
	var seg []string
	flush := func() {
		if len(seg) > 1 {
			c.printf(`<polyline class="%s" points="%s"/>`, class, strings.Join(seg, " "))
		} else if len(seg) == 1 {
			var x, y float64
			fmt.Sscanf(seg[0], "%f,%f", &x, &y)
			c.printf(`<circle class="%s dot" cx="%.1f" cy="%.1f" r="2"/>`, class, x, y)
		}
		seg = seg[:0]
	}
	for i := range xs {
		if math.IsNaN(ys[i]) {
			flush()
			continue
		}
		seg = append(seg, fmt.Sprintf("%.1f,%.1f", c.x.pos(xs[i]), c.y.pos(ys[i])))
	}
	flush()
}

// hline draws a labelled horizontal line at y = v.
func (c *chart) hline(v float64, class, label string) {
	if v < c.y.min || v > c.y.max {
		return
	}
	y := c.y.pos(v)
	c.printf(`<line class="%s" x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`, class, c.left, y, c.w-c.right, y)
	c.printf(`<text class="%s-label" x="%.1f" y="%.1f" text-anchor="end">%s</text>`, class, c.w-c.right-4, y-4, esc(label))
}

// marker draws a labelled vertical line at x = v, with a tooltip.
func (c *chart) marker(v float64, label, tooltip string) {
	if v < c.x.min || v > c.x.max {
		return
	}
	x := c.x.pos(v)
	c.printf(`<g class="marker"><title>%s</title><line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`, esc(tooltip), x, c.top, x, c.h-c.bottom)
	c.printf(`<text x="%.1f" y="%.1f">%s</text></g>`, x+4, c.top+12, esc(label))
}

// hover adds an invisible band from x0 to x1 that shows tooltip.
func (c *chart) hover(x0, x1 float64, tooltip string) {
	a, b := c.x.pos(x0), c.x.pos(x1)
	c.printf(`<rect class="hover" x="%.1f" y="%.1f" width="%.1f" height="%.1f"><title>%s</title></rect>`,
		a, c.top, math.Max(b-a, 1), c.h-c.top-c.bottom, esc(tooltip))
}

// bar draws a bar from y = 0 up to v (at least 2 px when v > 0).
func (c *chart) bar(x0, x1, v float64, class, tooltip string) {
	a, b := c.x.pos(x0), c.x.pos(x1)
	base := c.y.pos(c.y.min)
	top := math.Min(c.y.pos(v), base-2)
	c.printf(`<rect class="%s" x="%.1f" y="%.1f" width="%.1f" height="%.1f"><title>%s</title></rect>`,
		class, a+1, top, math.Max(b-a-2, 1), base-top, esc(tooltip))
}

func (c *chart) svg(title string) template.HTML {
	return template.HTML(fmt.Sprintf(`<svg viewBox="0 0 %.0f %.0f" role="img" aria-label="%s">%s</svg>`,
		c.w, c.h, esc(title), c.b.String()))
}

func esc(s string) string { return html.EscapeString(s) }

// fmtLatency labels a latency axis tick given in milliseconds.
func fmtLatency(v float64) string {
	switch {
	case v >= 1000:
		return trim(v/1000) + "s"
	case v >= 1:
		return trim(v) + "ms"
	}
	return trim(v*1000) + "µs"
}

func trim(v float64) string {
	return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.3f", v), "0"), ".")
}
