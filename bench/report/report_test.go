package report

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"html"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/bench"
	"github.com/xksproxy/xksproxy/bench/fakexks"
)

var (
	realOnce sync.Once
	realRes  *bench.Result
	realErr  error
)

// realResult is one short real run against the fake proxy, with a hook and
// CDIV, shared by the tests: every field filled the way a run fills it.
func realResult(t *testing.T) *bench.Result {
	t.Helper()
	realOnce.Do(func() {
		dir, err := os.MkdirTemp("", "xksbench-report")
		if err != nil {
			realErr = err
			return
		}
		defer os.RemoveAll(dir)
		srv, err := fakexks.Start(dir)
		if err != nil {
			realErr = err
			return
		}
		defer srv.Close()
		cfg := bench.DefaultConfig()
		cfg.Target = bench.Target{Endpoints: []string{srv.URL}, URIPath: fakexks.URIPath, Region: fakexks.Region,
			AccessKeyID: fakexks.AccessKeyID, Secret: bench.Secret(fakexks.Secret), CAFile: srv.CAFile, KeyIDs: []string{"k1"}}
		cfg.Warmup, cfg.Duration, cfg.RatePerKey, cfg.CDIV = 200*time.Millisecond, 1500*time.Millisecond, 200, true
		// A PASS however slow the shared machine: the reports are under
		// test here, not the latency.
		cfg.Budget = time.Minute
		cfg.Hooks = []bench.Hook{{At: 500 * time.Millisecond, Command: "echo hook-ran"}}
		r, err := bench.NewRunner(cfg)
		if err != nil {
			realErr = err
			return
		}
		defer r.Close()
		realRes, realErr = r.Run(context.Background())
	})
	if realErr != nil {
		t.Fatal(realErr)
	}
	return realRes
}

// documentedFields are the result.json fields bench/README.md documents,
// as paths ("[]" steps into the first element of an array). The test checks
// that a real result has every one and that the README names each.
var documentedFields = []string{
	"schemaVersion", "tool", "kind", "startedAt", "finishedAt",
	"host.hostname", "host.os", "host.arch", "host.cpus", "host.cpuModel", "host.goVersion", "host.gomaxprocs",
	"target.endpoints", "target.uriPath", "target.keyStore", "target.region", "target.keyIds",
	"config.ratePerKey", "config.keys", "config.keyIds", "config.keysShareIds", "config.mix", "config.plaintextBytes",
	"config.aadBytes", "config.cdiv", "config.warmupSeconds", "config.durationSeconds", "config.maxRequests",
	"config.connections", "config.spread", "config.maxInFlight", "config.timeoutSeconds", "config.budgetMs",
	"config.maxErrorRate", "config.ringSize", "config.hooks[].atSeconds", "config.hooks[].command",
	"verdict.result", "verdict.exitCode", "verdict.reasons", "verdict.notes",
	"measured.warmupSeconds", "measured.durationSeconds", "measured.stoppedBy",
	"totals.requested", "totals.offered", "totals.ok", "totals.errors", "totals.clientSaturated",
	"totals.requestedRate", "totals.offeredRate", "totals.achievedRate", "totals.errorRate",
	"totals.latencyMs.count", "totals.latencyMs.min", "totals.latencyMs.mean", "totals.latencyMs.p50",
	"totals.latencyMs.p90", "totals.latencyMs.p99", "totals.latencyMs.p99_9", "totals.latencyMs.max",
	"totals.percentileCurve[].percentile", "totals.percentileCurve[].ms", "totals.hdr",
	"operations.encrypt.latencyMs.p99", "operations.decrypt.ok",
	"keys[].key", "keys[].keyId", "keys[].offeredRate",
	"generatorLagMs.p99",
	"timeseries[].second", "timeseries[].op", "timeseries[].offered", "timeseries[].achieved", "timeseries[].errors",
	"timeseries[].count", "timeseries[].p50Ms", "timeseries[].p99Ms", "timeseries[].maxMs",
	"timeseries[].lagP99Ms", "timeseries[].lagMaxMs",
	"hooks[].atSeconds", "hooks[].command", "hooks[].ran", "hooks[].startedSeconds", "hooks[].endedSeconds",
	"hooks[].exitCode", "hooks[].output",
}

// Fields that a passing run leaves out, checked on a synthetic result.
var documentedOptionalFields = []string{
	"errors[].op", "errors[].kind", "errors[].status", "errors[].name", "errors[].count", "errors[].sample",
	"findMax.startRate", "findMax.factor", "findMax.stepSeconds", "findMax.maxRate", "findMax.refine",
	"findMax.maxSustainableRatePerKey", "findMax.stopReason", "findMax.bestStep",
	"findMax.steps[].ratePerKey", "findMax.steps[].verdict", "findMax.steps[].reasons", "findMax.steps[].offeredRate",
	"findMax.steps[].achievedRate", "findMax.steps[].errors", "findMax.steps[].errorRate", "findMax.steps[].latencyMs",
}

func lookup(doc any, path string) bool {
	for _, part := range strings.Split(path, ".") {
		arr := strings.HasSuffix(part, "[]")
		m, ok := doc.(map[string]any)
		if !ok {
			return false
		}
		if doc, ok = m[strings.TrimSuffix(part, "[]")]; !ok {
			return false
		}
		if arr {
			a, ok := doc.([]any)
			if !ok || len(a) == 0 {
				return false
			}
			doc = a[0]
		}
	}
	return true
}

func TestResultJSONRoundTripsWithTheDocumentedFields(t *testing.T) {
	res := realResult(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "result.json")
	if err := res.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	back, err := bench.ReadResult(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(res, back) {
		a, _ := json.Marshal(res)
		b, _ := json.Marshal(back)
		t.Fatalf("result.json does not round-trip:\n%s\n%s", a, b)
	}

	withExtras := *res
	withExtras.Errors = []bench.ErrorCount{{Op: "encrypt", Kind: "http", Status: 429, Name: "ThrottlingException", Count: 3, Sample: "slow down"}}
	withExtras.FindMax = &bench.FindMaxResult{StartRate: 100, Factor: 1.5, StepSeconds: 10, MaxRate: 1e5, Refine: 2,
		MaxSustainableRate: 150, StopReason: "x", BestStep: 1,
		Steps: []bench.StepInfo{{RatePerKey: 100, Verdict: "PASS", Reasons: []string{}}, {RatePerKey: 150, Verdict: "PASS", Reasons: []string{}}}}
	if err := withExtras.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range append(documentedFields, documentedOptionalFields...) {
		if !lookup(doc, f) {
			t.Errorf("result.json lacks documented field %s", f)
		}
		last := f[strings.LastIndex(f, ".")+1:]
		last = strings.TrimSuffix(last, "[]")
		if !bytes.Contains(readme, []byte("`"+last+"`")) {
			t.Errorf("bench/README.md does not document `%s` (%s)", last, f)
		}
	}
	if bytes.Contains(data, []byte(fakexks.Secret)) {
		t.Fatal("result.json holds the secret")
	}

	old := strings.Replace(string(data), `"schemaVersion": 1`, `"schemaVersion": 99`, 1)
	if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := bench.ReadResult(path); err == nil {
		t.Fatal("a result of an unknown schema version was read")
	}
}

func TestWriteAll(t *testing.T) {
	res := realResult(t)
	dir := filepath.Join(t.TempDir(), "out")
	if err := WriteAll(dir, res); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"result.json", "summary.txt", "timeseries.csv", "report.html", "latency.hgrm"} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(data, []byte(fakexks.Secret)) {
			t.Errorf("%s holds the secret", name)
		}
	}

	f, err := os.Open(filepath.Join(dir, "timeseries.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(rows[0], CSVHeader) || len(rows) != len(res.Timeseries)+1 || rows[1][1] != "all" {
		t.Errorf("CSV header %v, %d rows for %d points", rows[0], len(rows)-1, len(res.Timeseries))
	}

	checkHGRM(t, filepath.Join(dir, "latency.hgrm"), res.Totals.LatencyMs)

	summary, _ := os.ReadFile(filepath.Join(dir, "summary.txt"))
	for _, want := range []string{"xksbench run: PASS", "requested/s", "encrypt", "decrypt", "errors: none",
		"hook at 0.5s: echo hook-ran", "exit 0: hook-ran", "verdict: PASS", "generator lag"} {
		if !strings.Contains(string(summary), want) {
			t.Errorf("summary lacks %q:\n%s", want, summary)
		}
	}
}

func TestHTMLIsSelfContained(t *testing.T) {
	res := realResult(t)
	var b bytes.Buffer
	if err := HTML(&b, res); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	// Four charts: latency over time, throughput, generator lag, distribution.
	if n := strings.Count(page, "<svg "); n != 4 || strings.Count(page, "</svg>") != 4 {
		t.Errorf("%d charts", n)
	}
	for _, banned := range []string{"<script", " src=", "<link", "url(", "@import"} {
		if strings.Contains(page, banned) {
			t.Errorf("report fetches or runs something: contains %q", banned)
		}
	}
	for _, want := range []string{`class="pill pass"`, `class="marker"`, "echo hook-ran", "budget 60.0s", "Latency distribution", "polyline", "Generator lag"} {
		if !strings.Contains(page, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

// TestHTMLAgreesWithTheTables: the distribution chart's hover gives, for
// every percentile the tables show and for the maximum, the tables' very
// figures; the generator lag chart has a second's figures; max, budget and
// errors are drawn in colours of their own.
func TestHTMLAgreesWithTheTables(t *testing.T) {
	res := realResult(t)
	var b bytes.Buffer
	if err := HTML(&b, res); err != nil {
		t.Fatal(err)
	}
	page := html.UnescapeString(b.String())
	figures := func(name string) string {
		i := strings.Index(page, "<title>"+name+": ")
		if i < 0 {
			t.Fatalf("no hover for %s", name)
		}
		return page[i+len("<title>"+name+": ") : i+strings.Index(page[i:], "</title>")]
	}
	stats := map[string]bench.Stats{"all": res.Totals}
	for op, s := range res.Operations {
		stats[op] = s
	}
	for name, pick := range map[string]func(bench.LatencySummary) float64{
		"p50": func(l bench.LatencySummary) float64 { return l.P50 }, "p90": func(l bench.LatencySummary) float64 { return l.P90 },
		"p99": func(l bench.LatencySummary) float64 { return l.P99 }, "p99.9": func(l bench.LatencySummary) float64 { return l.P999 },
		"max": func(l bench.LatencySummary) float64 { return l.Max },
	} {
		hover := figures(name)
		for op, s := range stats {
			if want := op + " " + bench.FormatMs(pick(s.LatencyMs)); !strings.Contains(hover, want) {
				t.Errorf("the %s hover says %q, the table %q", name, hover, want)
			}
		}
	}

	lagged := 0
	for _, r := range res.Timeseries {
		if r.Op == "all" && r.LagMaxMs > 0 {
			lagged++
			if r.LagP99Ms > r.LagMaxMs {
				t.Errorf("second %d: lag p99 %v over max %v", r.Second, r.LagP99Ms, r.LagMaxMs)
			}
		} else if r.Op != "all" && (r.LagMaxMs != 0 || r.LagP99Ms != 0) {
			t.Errorf("an operation row carries the lag: %+v", r)
		}
	}
	if lagged == 0 || !strings.Contains(page, "requests sent late by p99") {
		t.Errorf("no second with a generator lag (%d), or no hover for it", lagged)
	}

	colour := func(class string) string {
		m := regexp.MustCompile(`\.` + class + ` \{ color:var\(--([a-z0-9]+)\); \}`).FindStringSubmatch(pageHTML)
		if m == nil {
			t.Fatalf("no colour for .%s", class)
		}
		v := regexp.MustCompile(`--` + m[1] + `:(#[0-9a-f]{6})`).FindStringSubmatch(pageHTML)
		if v == nil {
			t.Fatalf("--%s is not defined", m[1])
		}
		return v[1]
	}
	seen := map[string]string{}
	for _, class := range []string{"l-max", "l-budget", "l-errors", "l-p50", "l-p99", "l-hook"} {
		c := colour(class)
		if other, ok := seen[c]; ok {
			t.Errorf(".%s and .%s share the colour %s", class, other, c)
		}
		seen[c] = class
	}
}

func TestHTMLOfFindMax(t *testing.T) {
	res := *realResult(t)
	res.Kind = "find-max"
	res.FindMax = &bench.FindMaxResult{StartRate: 100, Factor: 2, StepSeconds: 1, MaxRate: 1000, MaxSustainableRate: 200, BestStep: 1,
		StopReason: "400/s per key exceeded the budget",
		Steps: []bench.StepInfo{
			{RatePerKey: 100, Verdict: "PASS", LatencyMs: bench.LatencySummary{P50: 1, P99: 2, Max: 3}},
			{RatePerKey: 200, Verdict: "PASS", LatencyMs: bench.LatencySummary{P50: 1, P99: 5, Max: 9}},
			{RatePerKey: 400, Verdict: "FAIL", Reasons: []string{"p99 300ms is over the 250ms budget"}, LatencyMs: bench.LatencySummary{P50: 100, P99: 300, Max: 900}},
		}}
	var b bytes.Buffer
	if err := HTML(&b, &res); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(b.String(), "<svg "); n != 5 || !strings.Contains(b.String(), "max sustainable 200/s") {
		t.Errorf("find-max report has %d charts", n)
	}
	var s bytes.Buffer
	if err := Summary(&s, &res); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(s.String(), "highest sustainable rate 200/s per key") || !strings.Contains(s.String(), "PASS *") {
		t.Errorf("find-max summary:\n%s", s.String())
	}
}

func TestCompare(t *testing.T) {
	a := *realResult(t)
	b := a
	b.Verdict = bench.Verdict{Result: "FAIL"}
	b.Totals.LatencyMs.P99 = a.Totals.LatencyMs.P99 * 2
	b.Totals.Errors = 7
	b.Totals.ErrorRate = 0.0125
	b.Errors = []bench.ErrorCount{{Op: "encrypt", Kind: "http", Status: 429, Name: "ThrottlingException", Count: 7}}
	// B did not run encrypt at all, and only A is a find-max result.
	b.Operations = map[string]bench.Stats{}
	for op, st := range a.Operations {
		if op != "encrypt" {
			b.Operations[op] = st
		}
	}
	a.FindMax = &bench.FindMaxResult{MaxSustainableRate: 1600}
	var out bytes.Buffer
	if err := Compare(&out, "a.json", &a, "b.json", &b); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	lines := map[string]string{}
	for _, l := range strings.Split(text, "\n") {
		if f := strings.Fields(l); len(f) > 0 && lines[f[0]] == "" {
			lines[f[0]] = l
		}
	}
	if !strings.Contains(lines["verdict"], "PASS") || !strings.Contains(lines["verdict"], "FAIL") {
		t.Errorf("verdict row %q", lines["verdict"])
	}
	if !strings.HasSuffix(strings.TrimSpace(lines["p99"]), "+100.0%") {
		t.Errorf("p99 row %q", lines["p99"])
	}
	if !strings.HasSuffix(strings.TrimSpace(lines["p50"]), "=") {
		t.Errorf("p50 row %q", lines["p50"])
	}
	if !strings.HasSuffix(strings.TrimSpace(lines["errors"]), "+7") {
		t.Errorf("errors row %q", lines["errors"])
	}
	if got := strings.Fields(lines["error"]); len(got) < 2 || got[len(got)-1] != "pp" || got[len(got)-2] != "+1.250" {
		t.Errorf("error rate row %q, want the change in percentage points", lines["error"])
	}
	rows := strings.Split(text, "\n")
	for i, l := range rows {
		switch {
		case strings.HasPrefix(strings.TrimSpace(l), "max sustainable/key") && !strings.HasSuffix(strings.TrimSpace(l), "—"):
			t.Errorf("a find-max figure against a plain run: %q, want B as — and no change", l)
		case strings.TrimSpace(l) == "encrypt" && i+1 < len(rows):
			if f := strings.Fields(rows[i+1]); f[0] != "requested" || f[len(f)-1] != "—" {
				t.Errorf("encrypt, run by A only: %q, want B as — and no change", rows[i+1])
			}
		}
	}
	if !strings.Contains(text, "encrypt HTTP 429 ThrottlingException") {
		t.Errorf("no error table in:\n%s", text)
	}
}

func TestDelta(t *testing.T) {
	for _, c := range []struct {
		a, b float64
		want string
	}{{1, 1, "="}, {2, 3, "+50.0%"}, {4, 1, "-75.0%"}, {0, 5, "+5"}} {
		if got := delta(c.a, c.b); got != c.want {
			t.Errorf("delta(%g, %g) = %s, want %s", c.a, c.b, got, c.want)
		}
	}
	if got := pointsDelta(0.001, 0.002); got != "+0.100 pp" {
		t.Errorf("pointsDelta(0.1%%, 0.2%%) = %s", got)
	}
}

// checkHGRM reads a .hgrm file as HdrHistogram's tools do: a table of
// value (ms), percentile, total count and 1/(1-percentile), rising to 100%,
// and a footer whose Max and Total count are the summary's.
func checkHGRM(t *testing.T, path string, want bench.LatencySummary) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if strings.TrimSpace(lines[0]) != "Value\tPercentile\tTotalCount\t1/(1-Percentile)" {
		t.Fatalf("not a .hgrm header: %q", lines[0])
	}
	var last [3]float64
	rows := 0
	for _, line := range lines[1:] {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		var value, percentile, count float64
		var inverse string
		if _, err := fmt.Sscan(line, &value, &percentile, &count, &inverse); err != nil {
			t.Fatalf(".hgrm row %q: %v", line, err)
		}
		if value < last[0] || percentile < last[1] || count < last[2] {
			t.Fatalf(".hgrm row %q goes down after %v", line, last)
		}
		last = [3]float64{value, percentile, count}
		rows++
	}
	if rows < 10 || last[1] != 1 || int64(last[2]) != want.Count {
		t.Errorf(".hgrm: %d rows ending at percentile %v with count %v, want 1 and %d", rows, last[1], last[2], want.Count)
	}
	var mean, stddev, max float64
	var count int64
	footer := strings.Join(lines[len(lines)-3:len(lines)-1], "\n")
	if _, err := fmt.Sscanf(footer, "#[Mean    = %f, StdDeviation   = %f]\n#[Max     = %f, Total count    = %d]", &mean, &stddev, &max, &count); err != nil {
		t.Fatalf(".hgrm footer %q: %v", footer, err)
	}
	if count != want.Count || math.Abs(max-want.Max) > 0.0005 || math.Abs(mean-want.Mean) > 0.0005 {
		t.Errorf(".hgrm footer says max %v ms, mean %v ms, count %d; the summary %v, %v, %d", max, mean, count, want.Max, want.Mean, want.Count)
	}
}
