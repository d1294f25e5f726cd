package report

import (
	"fmt"
	"io"
	"math"
	"text/tabwriter"

	"github.com/xksproxy/xksproxy/bench"
)

// Compare writes two results side by side with the change from A to B.
func Compare(w io.Writer, nameA string, a *bench.Result, nameB string, b *bench.Result) error {
	fmt.Fprintf(w, "A: %s  (%s %s, %s)\nB: %s  (%s %s, %s)\n\n",
		nameA, a.Kind, a.StartedAt.Format("2006-01-02 15:04"), a.Host.CPUModel,
		nameB, b.Kind, b.StartedAt.Format("2006-01-02 15:04"), b.Host.CPUModel)
	if ma, mb := mixString(a.Config.Mix), mixString(b.Config.Mix); ma == mb {
		fmt.Fprintf(w, "mix: %s\n\n", ma)
	} else {
		fmt.Fprintf(w, "mix: A %s, B %s\n\n", ma, mb)
	}
	// Figures align right; names, padded to one width, read as left-aligned.
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	label := func(name string) string { return fmt.Sprintf("%-20s", name) }
	fmt.Fprintf(tw, "%s\tA\tB\tchange\t\n", label(""))
	text := func(name, va, vb string) { fmt.Fprintf(tw, "%s\t%s\t%s\t\t\n", label(name), va, vb) }
	// row writes one figure of each side; a side that does not have it
	// (an operation it did not run, a find-max figure of a plain run)
	// shows "—" and the change is left blank rather than read as a fall
	// to zero.
	row := func(name string, va float64, okA bool, vb float64, okB bool, format func(float64) string, change func(a, b float64) string) {
		fa, fb, c := "—", "—", ""
		if okA {
			fa = format(va)
		}
		if okB {
			fb = format(vb)
		}
		if okA && okB {
			c = change(va, vb)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", label(name), fa, fb, c)
	}
	num := func(name string, va, vb float64, format func(float64) string) {
		row(name, va, true, vb, true, format, delta)
	}
	perSec := func(v float64) string { return fmt.Sprintf("%.1f/s", v) }
	count := func(v float64) string { return fmt.Sprintf("%.0f", v) }
	pct := func(v float64) string { return fmt.Sprintf("%.3f%%", 100*v) }

	text("verdict", a.Verdict.Result, b.Verdict.Result)
	if a.FindMax != nil || b.FindMax != nil {
		row("max sustainable/key", maxRate(a), a.FindMax != nil, maxRate(b), b.FindMax != nil, perSec, delta)
	}
	num("rate per key", a.Config.RatePerKey, b.Config.RatePerKey, perSec)
	num("keys", float64(a.Config.Keys), float64(b.Config.Keys), count)
	num("budget", a.Config.BudgetMs, b.Config.BudgetMs, bench.FormatMs)
	stats := func(prefix string, sa bench.Stats, okA bool, sb bench.Stats, okB bool) {
		ms := func(name string, va, vb float64) { row(prefix+name, va, okA, vb, okB, bench.FormatMs, delta) }
		rate := func(name string, va, vb float64) { row(prefix+name, va, okA, vb, okB, perSec, delta) }
		rate("requested", sa.RequestedRate, sb.RequestedRate)
		rate("offered", sa.OfferedRate, sb.OfferedRate)
		rate("achieved", sa.AchievedRate, sb.AchievedRate)
		ms("p50", sa.LatencyMs.P50, sb.LatencyMs.P50)
		ms("p90", sa.LatencyMs.P90, sb.LatencyMs.P90)
		ms("p99", sa.LatencyMs.P99, sb.LatencyMs.P99)
		ms("p99.9", sa.LatencyMs.P999, sb.LatencyMs.P999)
		ms("max", sa.LatencyMs.Max, sb.LatencyMs.Max)
		row(prefix+"errors", float64(sa.Errors), okA, float64(sb.Errors), okB, count, delta)
		row(prefix+"error rate", sa.ErrorRate, okA, sb.ErrorRate, okB, pct, pointsDelta)
	}
	stats("", a.Totals, true, b.Totals, true)
	num("generator lag p99", a.GeneratorLagMs.P99, b.GeneratorLagMs.P99, bench.FormatMs)
	for _, op := range bench.Ops() {
		sa, okA := a.Operations[op.String()]
		sb, okB := b.Operations[op.String()]
		if okA || okB {
			fmt.Fprintf(tw, "%s\t\t\t\t\n", label(op.String()))
			stats("  ", sa, okA, sb, okB)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	errorNames := map[string][2]int64{}
	var order []string
	for i, r := range []*bench.Result{a, b} {
		for _, e := range r.Errors {
			key := fmt.Sprintf("%s %s %s", e.Op, e.Kind, e.Name)
			if e.Status != 0 {
				key = fmt.Sprintf("%s HTTP %d %s", e.Op, e.Status, e.Name)
			}
			if _, ok := errorNames[key]; !ok {
				order = append(order, key)
			}
			c := errorNames[key]
			c[i] += e.Count
			errorNames[key] = c
		}
	}
	if len(order) > 0 {
		fmt.Fprintln(w, "\nerrors:")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		width := 0
		for _, k := range order {
			width = max(width, len(k))
		}
		fmt.Fprintf(tw, "%-*s\tA\tB\t\n", width, "")
		for _, k := range order {
			fmt.Fprintf(tw, "%-*s\t%d\t%d\t\n", width, k, errorNames[k][0], errorNames[k][1])
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

func maxRate(r *bench.Result) float64 {
	if r.FindMax == nil {
		return 0
	}
	return r.FindMax.MaxSustainableRate
}

// pointsDelta is the change from a to b of a fraction shown as a
// percentage, in percentage points: relative changes of error rates read
// badly (0.1% to 0.2% is "+100%").
func pointsDelta(a, b float64) string {
	if a == b {
		return "="
	}
	return fmt.Sprintf("%+.3f pp", 100*(b-a))
}

// delta is the change from a to b, relative when a is not zero.
func delta(a, b float64) string {
	switch {
	case a == b:
		return "="
	case a == 0:
		return fmt.Sprintf("%+.4g", b-a)
	}
	rel := 100 * (b - a) / math.Abs(a)
	return fmt.Sprintf("%+.1f%%", rel)
}
