// Package report turns a bench.Result into what people and tools read: a
// text summary, result.json, a per-second CSV, a self-contained HTML report,
// and a side-by-side comparison of two results.
package report

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/xksproxy/xksproxy/bench"
)

// WriteAll writes result.json, summary.txt, timeseries.csv, report.html
// and latency.hgrm into dir, creating it.
func WriteAll(dir string, res *bench.Result) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := res.WriteJSON(filepath.Join(dir, "result.json")); err != nil {
		return err
	}
	writers := map[string]func(io.Writer, *bench.Result) error{
		"summary.txt": Summary, "timeseries.csv": CSV, "report.html": HTML, "latency.hgrm": HGRM,
	}
	for name, write := range writers {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		err = write(f, res)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

// Headline gives the three figures a verdict rests on (or, for find-max,
// the answer).
func Headline(res *bench.Result) string {
	if fm := res.FindMax; fm != nil {
		return fmt.Sprintf("highest sustainable rate %s/s per key (%s/s in all) · p99 budget %s",
			rate(fm.MaxSustainableRate), rate(fm.MaxSustainableRate*float64(res.Config.Keys)), bench.FormatMs(res.Config.BudgetMs))
	}
	t := res.Totals
	offered := 0.0
	if t.Requested > 0 {
		offered = 100 * float64(t.Offered) / float64(t.Requested)
	}
	return fmt.Sprintf("p99 %s (budget %s) · errors %d (%.3f%%, allowed %.3f%%) · offered %.1f/s of %.1f/s requested (%.1f%%)",
		bench.FormatMs(t.LatencyMs.P99), bench.FormatMs(res.Config.BudgetMs),
		t.Errors, 100*t.ErrorRate, 100*res.Config.MaxErrorRate, t.OfferedRate, t.RequestedRate, offered)
}

func rate(r float64) string { return fmt.Sprintf("%.6g", r) }

// Summary writes the human summary.
func Summary(w io.Writer, res *bench.Result) error {
	c, t := res.Config, res.Target
	fmt.Fprintf(w, "xksbench %s: %s  %s\n\n", res.Kind, res.Verdict.Result, Headline(res))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	store := "region " + t.Region
	if t.KeyStore != "" {
		// Known from client.json only: flags name no key store.
		store = fmt.Sprintf("key store %q, %s", t.KeyStore, store)
	}
	fmt.Fprintf(tw, "target\t%s  %s  (%s)\n", strings.Join(t.Endpoints, " "), t.URIPath, store)
	keys := fmt.Sprintf("%d keys (%s)", c.Keys, strings.Join(uniq(c.KeyIDs), ", "))
	if c.Keys == 1 {
		keys = fmt.Sprintf("1 key (%s)", c.KeyIDs[0])
	}
	if c.KeysShareIDs {
		keys += ", sharing key ids"
	}
	fmt.Fprintf(tw, "load\t%s/s per key × %s = %s/s in all; mix %s\n", rate(c.RatePerKey), keys, rate(c.RatePerKey*float64(c.Keys)), mixString(c.Mix))
	cdiv := "off"
	if c.CDIV {
		cdiv = "on"
	}
	fmt.Fprintf(tw, "\t%d B plaintext, %d B AAD, CDIV %s; %d connections per endpoint, %s; at most %d in flight; timeout %gs\n",
		c.PlaintextBytes, c.AADBytes, cdiv, c.Connections, c.Spread, c.MaxInFlight, c.TimeoutSeconds)
	fmt.Fprintf(tw, "window\twarm-up %gs (not counted), measured %gs (stopped by %s)\n", res.Measured.WarmupSeconds, res.Measured.DurationSeconds, res.Measured.StoppedBy)
	fmt.Fprintf(tw, "host\t%s: %d CPUs, %s, %s, started %s\n", res.Host.Hostname, res.Host.CPUs, res.Host.CPUModel, res.Host.GoVersion, res.StartedAt.Format("2006-01-02 15:04:05Z07:00"))
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(w, "\nlatency counts from each request's intended send time (open loop)")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\trequested/s\toffered/s\tachieved/s\terrors\tp50\tp90\tp99\tp99.9\tmax\t")
	row := func(name string, s bench.Stats) {
		l := s.LatencyMs
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%.1f\t%d\t%s\t%s\t%s\t%s\t%s\t\n", name, s.RequestedRate, s.OfferedRate, s.AchievedRate, s.Errors,
			bench.FormatMs(l.P50), bench.FormatMs(l.P90), bench.FormatMs(l.P99), bench.FormatMs(l.P999), bench.FormatMs(l.Max))
	}
	row("all", res.Totals)
	for _, op := range opOrder(res.Operations) {
		row(op, res.Operations[op])
	}
	if len(res.Keys) > 1 {
		for _, k := range res.Keys {
			row("key "+k.Key, k.Stats)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(w)
	if len(res.Errors) == 0 {
		fmt.Fprintln(w, "errors: none")
	} else {
		fmt.Fprintln(w, "errors:")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  count\top\tkind\tstatus\tname\tfirst message")
		for _, e := range res.Errors {
			status := "-"
			if e.Status != 0 {
				status = fmt.Sprint(e.Status)
			}
			fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\t%s\n", e.Count, e.Op, e.Kind, status, e.Name, e.Sample)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	g := res.GeneratorLagMs
	fmt.Fprintf(w, "generator lag (sent after intended time): p50 %s, p99 %s, max %s\n", bench.FormatMs(g.P50), bench.FormatMs(g.P99), bench.FormatMs(g.Max))
	for _, h := range res.Hooks {
		fmt.Fprintf(w, "hook at %gs: %s\n  %s\n", h.AtSeconds, h.Command, hookOutcome(h))
	}
	if fm := res.FindMax; fm != nil {
		fmt.Fprintln(w, "\nfind-max steps:")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "step\trate/key\tverdict\toffered/s\tachieved/s\terrors\tp50\tp99\tmax\t")
		for i, s := range fm.Steps {
			mark := ""
			if i == fm.BestStep && fm.MaxSustainableRate > 0 {
				mark = " *"
			}
			fmt.Fprintf(tw, "%d\t%s\t%s%s\t%.1f\t%.1f\t%d\t%s\t%s\t%s\t\n", i+1, rate(s.RatePerKey), s.Verdict, mark, s.OfferedRate, s.AchievedRate,
				s.Errors, bench.FormatMs(s.LatencyMs.P50), bench.FormatMs(s.LatencyMs.P99), bench.FormatMs(s.LatencyMs.Max))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintf(w, "stopped: %s\n", fm.StopReason)
	}
	fmt.Fprintf(w, "\nverdict: %s\n", res.Verdict.Result)
	for _, r := range res.Verdict.Reasons {
		fmt.Fprintf(w, "  - %s\n", r)
	}
	for _, n := range res.Verdict.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
	return nil
}

func hookOutcome(h bench.HookRecord) string {
	if !h.Ran {
		return h.Error
	}
	s := fmt.Sprintf("ran %.3fs–%.3fs, exit %d", h.StartedSeconds, h.EndedSeconds, h.ExitCode)
	if h.Error != "" {
		s += " (" + h.Error + ")"
	}
	if h.Output != "" {
		out := h.Output
		if i := strings.LastIndexByte(out, '\n'); i >= 0 {
			out = "..." + out[i+1:]
		}
		s += ": " + out
	}
	return s
}

// opOrder lists the operations of a result in the usual order.
func opOrder(ops map[string]bench.Stats) []string {
	var out []string
	for _, op := range bench.Ops() {
		if _, ok := ops[op.String()]; ok {
			out = append(out, op.String())
		}
	}
	return out
}

func mixString(m map[string]int) string {
	var parts []string
	for _, op := range bench.Ops() {
		if w, ok := m[op.String()]; ok {
			parts = append(parts, fmt.Sprintf("%s=%d", op, w))
		}
	}
	return strings.Join(parts, ",")
}

func uniq(ss []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range ss {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}
