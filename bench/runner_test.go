package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/bench/fakexks"
	"github.com/xksproxy/xksproxy/internal/testlog"
)

func fakeProxy(t *testing.T) (*fakexks.Server, Config) {
	t.Helper()
	srv, err := fakexks.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	cfg := DefaultConfig()
	cfg.Target = Target{Endpoints: []string{srv.URL}, URIPath: fakexks.URIPath, Region: fakexks.Region,
		AccessKeyID: fakexks.AccessKeyID, Secret: Secret(fakexks.Secret), CAFile: srv.CAFile, KeyIDs: []string{"k1"}}
	cfg.Warmup, cfg.Duration = 200*time.Millisecond, time.Second
	return srv, cfg
}

func mustRun(t *testing.T, r *Runner) *Result {
	t.Helper()
	res, err := r.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func newRunner(t *testing.T, cfg Config) *Runner {
	t.Helper()
	r, err := NewRunner(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

func TestRunAgainstFakeProxy(t *testing.T) {
	srv, cfg := fakeProxy(t)
	cfg.Keys, cfg.RatePerKey, cfg.CDIV = 2, 100, true
	cfg.Duration = 1500 * time.Millisecond
	// The verdict's latency half is not under test here: a shared machine
	// may be slow, but it must not make the bench lose or invent requests.
	cfg.Budget = time.Minute
	res := mustRun(t, newRunner(t, cfg))

	if res.Verdict.Result != VerdictPass {
		t.Fatalf("verdict %+v", res.Verdict)
	}
	tot := res.Totals
	// Requested is the schedule's arithmetic: 2 keys × 100/s × 1.5s.
	if tot.Requested != 300 || tot.RequestedRate != 200 {
		t.Fatalf("requested %d at %g/s, want 300 at 200/s", tot.Requested, tot.RequestedRate)
	}
	// Every request sent is accounted for, and none failed.
	if tot.Errors != 0 || tot.OK != tot.Offered || tot.LatencyMs.Count != tot.OK || tot.Offered > tot.Requested || tot.Offered < tot.Requested/2 {
		t.Fatalf("requested %d offered %d ok %d errors %d latencies %d", tot.Requested, tot.Offered, tot.OK, tot.Errors, tot.LatencyMs.Count)
	}
	var perOp int64
	for _, op := range []string{"encrypt", "decrypt", "metadata", "health"} {
		if res.Operations[op].OK == 0 {
			t.Errorf("no successful %s in %+v", op, res.Operations)
		}
		perOp += res.Operations[op].OK
	}
	if perOp != tot.OK {
		t.Errorf("operations add up to %d, totals say %d", perOp, tot.OK)
	}
	if len(res.Keys) != 2 || res.Keys[0].Key != "k1#1" || res.Keys[1].Key != "k1#2" || res.Keys[0].Requested != 150 ||
		res.Keys[0].OK+res.Keys[1].OK != tot.OK {
		t.Errorf("keys %+v", res.Keys)
	}
	if !res.Config.KeysShareIDs || !strings.Contains(strings.Join(res.Verdict.Notes, " "), "share") {
		t.Errorf("two logical keys on one key id not reported: %+v", res.Verdict.Notes)
	}
	// The time series adds up to the totals.
	var offered, achieved int64
	for _, row := range res.Timeseries {
		if row.Op == "all" {
			offered += row.Offered
			achieved += row.Achieved
		}
	}
	if offered != tot.Offered || achieved != tot.OK {
		t.Errorf("time series: offered %d achieved %d; totals %d %d", offered, achieved, tot.Offered, tot.OK)
	}
	// Preflight, warm-up and measured requests all reached the proxy.
	if srv.Requests() < tot.Offered+10 {
		t.Errorf("fake proxy saw %d requests", srv.Requests())
	}
}

// TestStallShowsAsLatency is the coordinated-omission test: the proxy
// stalls for one second in the middle of a three-second run. An open-loop
// bench must record the requests due during that second with latencies
// that run from their intended send time — about 1s for the first, falling
// to nothing for the last — and not just a handful of slow requests (one
// per connection), as a generator that waits for answers would.
func TestStallShowsAsLatency(t *testing.T) {
	for _, tc := range []struct {
		name        string
		maxInFlight int
	}{{"queued on connections", 4096}, {"client-saturated", 8}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, cfg := fakeProxy(t)
			cfg.RatePerKey, cfg.Duration, cfg.Connections, cfg.MaxInFlight = 200, 3*time.Second, 4, tc.maxInFlight
			cfg.Mix = Mix{1, 0, 0, 0}
			r := newRunner(t, cfg)
			r.onMeasureStart = func(start time.Time) { srv.Stall(start.Add(time.Second), start.Add(2*time.Second)) }
			res := mustRun(t, r)

			l := res.Totals.LatencyMs
			if l.P99 < 500 || l.Max < 800 {
				t.Errorf("p99 %.1fms, max %.1fms: the stall is hidden", l.P99, l.Max)
			}
			// About 200 requests were due during the stall, a third of the
			// run, with latencies spread from 1s down to 0: the slowest fifth
			// of the run must all be above 200ms.
			h, err := DecodeHistogram(res.Totals.HDR)
			if err != nil {
				t.Fatal(err)
			}
			if p80 := h.Percentile(80); p80 < 200*time.Millisecond {
				t.Errorf("p80 %v: only a handful of requests saw the stall", p80)
			}
			for _, row := range res.Timeseries {
				if row.Op == "all" && row.Second == 1 && (row.P50Ms < 200 || row.MaxMs < 800) {
					t.Errorf("second 1 (the stall) shows p50 %.1fms max %.1fms", row.P50Ms, row.MaxMs)
				}
			}
			if res.Verdict.Result == VerdictPass {
				t.Errorf("a 1s stall passed a 250ms budget: %+v", res.Verdict)
			}
			sat := res.Totals.ClientSaturated
			if tc.maxInFlight == 8 {
				if sat < 100 || res.Verdict.Result != VerdictInvalid || res.Verdict.ExitCode != ExitInvalid {
					t.Errorf("%d client-saturated, verdict %+v", sat, res.Verdict)
				}
				found := false
				for _, e := range res.Errors {
					found = found || (e.Name == errSaturated && e.Kind == kindClient && e.Count == sat)
				}
				if !found {
					t.Errorf("errors %+v lack client-saturated", res.Errors)
				}
			} else if sat != 0 {
				t.Errorf("%d client-saturated below the in-flight bound", sat)
			}
		})
	}
}

func TestWrongPlaintextFailsRun(t *testing.T) {
	t.Run("from the start", func(t *testing.T) {
		srv, cfg := fakeProxy(t)
		srv.WrongPlaintext(true)
		_, err := newRunner(t, cfg).Run(context.Background())
		if !errors.Is(err, ErrWrongAnswer) || !strings.Contains(err.Error(), errWrongPlaintext) {
			t.Fatalf("Run = %v, want a wrong-plaintext preflight failure", err)
		}
	})
	t.Run("during the run", func(t *testing.T) {
		srv, cfg := fakeProxy(t)
		r := newRunner(t, cfg)
		r.onMeasureStart = func(time.Time) { srv.WrongPlaintext(true) }
		res := mustRun(t, r)
		if res.Verdict.Result != VerdictFail || res.Verdict.ExitCode != ExitWrong {
			t.Fatalf("verdict %+v", res.Verdict)
		}
		var wrong int64
		for _, e := range res.Errors {
			if e.Name == errWrongPlaintext {
				wrong += e.Count
				if e.Op != "decrypt" || e.Kind != kindClient {
					t.Errorf("wrong-plaintext counted as %+v", e)
				}
			}
		}
		if wrong == 0 || wrong != res.Operations["decrypt"].Errors {
			t.Errorf("%d wrong-plaintext errors, decrypt errors %d", wrong, res.Operations["decrypt"].Errors)
		}
	})
}

func TestWrongCDIVFailsRun(t *testing.T) {
	srv, cfg := fakeProxy(t)
	cfg.CDIV = true
	r := newRunner(t, cfg)
	r.onMeasureStart = func(time.Time) { srv.WrongCDIV(true) }
	res := mustRun(t, r)
	if res.Verdict.ExitCode != ExitWrong || res.Operations["encrypt"].Errors == 0 || res.Errors[0].Name != errWrongCDIV {
		t.Fatalf("verdict %+v errors %+v", res.Verdict, res.Errors)
	}
}

func TestHooksRunAtTheirTime(t *testing.T) {
	_, cfg := fakeProxy(t)
	cfg.Hooks = []Hook{{At: 300 * time.Millisecond, Command: "echo started; echo $XKSBENCH_SECRET; exit 3"},
		{At: 400 * time.Millisecond, Command: "sleep 30"}}
	t.Setenv(SecretEnv, "must-not-reach-hooks")
	r := newRunner(t, cfg)
	r.hookGrace = 300 * time.Millisecond
	start := time.Now()
	res := mustRun(t, r)
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("a hanging hook held the run for %v", took)
	}
	h := res.Hooks[0]
	if !h.Ran || h.ExitCode != 3 || h.StartedSeconds < 0.3 || h.EndedSeconds < h.StartedSeconds || h.Output != "started" {
		t.Errorf("first hook %+v", h)
	}
	if k := res.Hooks[1]; !k.Ran || k.ExitCode != -1 || !strings.Contains(k.Error, "killed") {
		t.Errorf("hanging hook %+v", k)
	}
	if len(res.Verdict.Notes) < 2 {
		t.Errorf("hook failures not noted: %v", res.Verdict.Notes)
	}
}

func TestMaxRequestsShortensRun(t *testing.T) {
	_, cfg := fakeProxy(t)
	cfg.RatePerKey, cfg.Warmup, cfg.Duration, cfg.MaxRequests = 100, 500*time.Millisecond, time.Minute, 150
	res := mustRun(t, newRunner(t, cfg))
	if res.Measured.StoppedBy != "max-requests" || res.Measured.DurationSeconds != 1 || res.Totals.Requested != 100 {
		t.Fatalf("measured %+v, requested %d", res.Measured, res.Totals.Requested)
	}
	cfg.MaxRequests = 60
	if _, err := newRunner(t, cfg).Run(context.Background()); err == nil {
		t.Fatal("a cap that leaves no measured second was accepted")
	}
}

func TestPreflightNamesTheProblemWithoutTheSecret(t *testing.T) {
	_, cfg := fakeProxy(t)
	cfg.Target.Secret = "wrong-secret-value-0123456789abcdefghijklmnopq"
	_, err := newRunner(t, cfg).Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "401 AuthenticationFailedException") {
		t.Fatalf("Run = %v", err)
	}
	if strings.Contains(err.Error(), "wrong-secret-value") {
		t.Fatal("the error message holds the secret")
	}
}

func TestSecretNeverFormatted(t *testing.T) {
	tgt := Target{AccessKeyID: "AKID", Secret: "s3cr3t-value"}
	b, err := json.Marshal(tgt)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{fmt.Sprintf("%v %+v %#v %s", tgt, tgt, tgt, tgt.Secret), string(b)} {
		if strings.Contains(s, "s3cr3t") {
			t.Fatalf("secret printed: %s", s)
		}
	}
	if tgt.Secret.Reveal() != "s3cr3t-value" {
		t.Fatal("Reveal lost the secret")
	}
}

func TestSearchMax(t *testing.T) {
	trial := func(limit float64, invalidAt float64, wrongAt float64) (stepTrial, *[]float64) {
		var tried []float64
		return func(rate float64) (StepInfo, bool, error) {
			tried = append(tried, rate)
			v := VerdictPass
			switch {
			case invalidAt > 0 && rate >= invalidAt:
				v = VerdictInvalid
			case wrongAt > 0 && rate >= wrongAt:
				return StepInfo{RatePerKey: rate, Verdict: VerdictFail}, true, nil
			case rate > limit:
				v = VerdictFail
			}
			return StepInfo{RatePerKey: rate, Verdict: v}, false, nil
		}, &tried
	}
	f := FindMaxConfig{StartRate: 100, Factor: 2, MaxRate: 1e6, StepDuration: time.Second, MaxSteps: 20, Refine: 2}

	try, tried := trial(450, 0, 0)
	res, err := searchMax(f, try)
	if err != nil {
		t.Fatal(err)
	}
	// 100, 200, 400 pass; 800 fails; bisection: 600 fails, 500 fails.
	if fmt.Sprint(*tried) != "[100 200 400 800 600 500]" || res.MaxSustainableRate != 400 || res.BestStep != 2 {
		t.Errorf("tried %v, max %g, best %d", *tried, res.MaxSustainableRate, res.BestStep)
	}

	f.Refine = 3
	try, _ = trial(450, 0, 0)
	if res, _ = searchMax(f, try); res.MaxSustainableRate != 450 {
		t.Errorf("with 3 refinements max %g, want 450 (400..500 halved to 450)", res.MaxSustainableRate)
	}

	step := FindMaxConfig{StartRate: 100, Step: 100, MaxRate: 300, StepDuration: time.Second, MaxSteps: 20}
	try, tried = trial(1e9, 0, 0)
	res, _ = searchMax(step, try)
	if fmt.Sprint(*tried) != "[100 200 300]" || res.MaxSustainableRate != 300 || !strings.Contains(res.StopReason, "--max-rate") {
		t.Errorf("step mode tried %v, max %g, reason %q", *tried, res.MaxSustainableRate, res.StopReason)
	}

	try, tried = trial(1e9, 400, 0)
	res, _ = searchMax(f, try)
	if fmt.Sprint(*tried) != "[100 200 400]" || res.MaxSustainableRate != 200 || !strings.Contains(res.StopReason, "generator") {
		t.Errorf("generator limit: tried %v, max %g, reason %q", *tried, res.MaxSustainableRate, res.StopReason)
	}

	try, tried = trial(1e9, 0, 200)
	res, _ = searchMax(f, try)
	if fmt.Sprint(*tried) != "[100 200]" || !strings.Contains(res.StopReason, "wrong") {
		t.Errorf("wrong answers: tried %v, reason %q", *tried, res.StopReason)
	}

	f.MaxSteps = 3
	try, tried = trial(1e9, 0, 0)
	if res, _ = searchMax(f, try); len(*tried) != 3 || !strings.Contains(res.StopReason, "--max-steps") {
		t.Errorf("max steps: tried %v, reason %q", *tried, res.StopReason)
	}

	try, _ = trial(50, 0, 0)
	if res, _ = searchMax(f, try); res.MaxSustainableRate != 0 || res.BestStep != 0 {
		t.Errorf("failing first step: %+v", res)
	}
}

func TestFindMaxAgainstThrottlingProxy(t *testing.T) {
	srv, cfg := fakeProxy(t)
	srv.ThrottleAbove(300)
	// Only the proxy's 429s may end the search, not a slow shared machine.
	cfg.Warmup, cfg.Budget = 300*time.Millisecond, time.Minute
	res, err := newRunner(t, cfg).FindMax(context.Background(),
		FindMaxConfig{StartRate: 100, Factor: 4, MaxRate: 1000, StepDuration: 700 * time.Millisecond, MaxSteps: 5})
	if err != nil {
		t.Fatal(err)
	}
	fm := res.FindMax
	if res.Kind != "find-max" || fm == nil || fm.MaxSustainableRate != 100 || len(fm.Steps) != 2 {
		t.Fatalf("find-max %+v", fm)
	}
	if fm.Steps[1].Verdict != VerdictFail || fm.Steps[1].Errors == 0 || fm.BestStep != 0 || !strings.Contains(fm.StopReason, "400/s") {
		t.Errorf("steps %+v, stop %q", fm.Steps, fm.StopReason)
	}
	if res.Verdict.Result != VerdictPass || res.Config.RatePerKey != 100 || res.Totals.RequestedRate != 100 {
		t.Errorf("top level describes rate %g, verdict %+v", res.Config.RatePerKey, res.Verdict)
	}
}

func TestInterruptedRunIsInvalid(t *testing.T) {
	_, cfg := fakeProxy(t)
	cfg.Duration = time.Minute
	r := newRunner(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r.onMeasureStart = func(start time.Time) { time.AfterFunc(time.Until(start.Add(500*time.Millisecond)), cancel) }
	begun := time.Now()
	res, err := r.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(begun) > 20*time.Second {
		t.Errorf("an interrupt took %v to end the run", time.Since(begun))
	}
	if res.Measured.StoppedBy != "interrupted" || res.Verdict.Result != VerdictInvalid || res.Measured.DurationSeconds >= 30 {
		t.Fatalf("measured %+v, verdict %+v", res.Measured, res.Verdict)
	}
	// The window is cut where the run stopped, so rates stay honest.
	if res.Totals.Requested > 100*int64(res.Measured.DurationSeconds+1) {
		t.Errorf("requested %d in %gs", res.Totals.Requested, res.Measured.DurationSeconds)
	}
}

func TestGeneratorLimited(t *testing.T) {
	budget := 250 * time.Millisecond
	res := func(requested, offered, saturated int64, lagP99 float64) *Result {
		return &Result{Totals: Stats{Requested: requested, Offered: offered, ClientSaturated: saturated},
			GeneratorLagMs: LatencySummary{P99: lagP99}, Measured: Measured{StoppedBy: "duration"}}
	}
	for _, c := range []struct {
		name string
		res  *Result
		want bool
	}{
		{"all offered on time", res(1000, 1000, 0, 1), false},
		{"short only by the in-flight bound: the proxy was slow", res(1000, 700, 300, 1), false},
		{"never sent: the generator fell behind", res(1000, 900, 0, 1), true},
		{"sent, but late", res(1000, 1000, 0, 200), true},
	} {
		if got := generatorLimited(c.res, budget); got != c.want {
			t.Errorf("%s: generatorLimited = %v", c.name, got)
		}
	}
}

// A proxy that sheds the preflight's first requests (a small node still
// busy with the handshakes of --preconnect) is retried, not taken for a
// misconfiguration; the run then has every connection open.
func TestPreflightRetriesThrottling(t *testing.T) {
	srv, cfg := fakeProxy(t)
	srv.ThrottleAbove(2)
	// Measure only once the throttle's one-second window has forgotten
	// the preflight.
	cfg.Mix, cfg.RatePerKey, cfg.Connections, cfg.Warmup = Mix{OpEncrypt: 1}, 1, 3, 1500*time.Millisecond
	r := newRunner(t, cfg)
	res := mustRun(t, r) // without the retries, the preflight fails the run
	if res.Verdict.Result != VerdictPass {
		t.Fatalf("verdict %+v", res.Verdict)
	}
	ep := r.endpoints[0]
	ep.mu.Lock()
	defer ep.mu.Unlock()
	if ep.open != 3 {
		t.Errorf("%d connections open, want all 3", ep.open)
	}
}

// The live line shows every measured second, the last one included, even
// when every answer is in before that second's tick.
func TestProgressShowsEverySecond(t *testing.T) {
	_, cfg := fakeProxy(t)
	cfg.RatePerKey, cfg.Duration, cfg.Budget = 100, 2*time.Second, time.Minute
	var out testlog.Buffer
	cfg.Progress = &out
	mustRun(t, newRunner(t, cfg))
	for _, want := range []string{"  1/2s ", "  2/2s "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("no line for second %q in:\n%s", want, out.String())
		}
	}
}
