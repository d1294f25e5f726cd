package bench

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// FindMaxConfig is a find-max search: the per-key rate goes up step by step
// (times Factor, or plus Step when Step > 0) until a step fails its budget,
// then Refine bisections between the last pass and the first failure narrow
// the answer.
type FindMaxConfig struct {
	StartRate    float64
	Factor       float64
	Step         float64
	MaxRate      float64
	StepDuration time.Duration
	MaxSteps     int
	Refine       int
}

// DefaultFindMax is what find-max's flags default to.
func DefaultFindMax() FindMaxConfig {
	return FindMaxConfig{StartRate: 200, Factor: 1.5, MaxRate: 100_000, StepDuration: 10 * time.Second, MaxSteps: 15, Refine: 2}
}

// Validate reports the first setting that cannot work.
func (f FindMaxConfig) Validate() error {
	switch {
	case !(f.StartRate > 0):
		return errors.New("--start-rate must be positive")
	case f.Step < 0:
		return errors.New("--step is negative")
	case f.Step == 0 && !(f.Factor > 1):
		return errors.New("--factor must be above 1 (or give --step)")
	case f.MaxRate < f.StartRate:
		return errors.New("--max-rate is below --start-rate")
	case f.StepDuration <= 0:
		return errors.New("--step-duration must be positive")
	case f.MaxSteps < 1:
		return errors.New("--max-steps must be at least 1")
	case f.Refine < 0:
		return errors.New("--refine is negative")
	}
	return nil
}

func (f FindMaxConfig) next(rate float64) float64 {
	if f.Step > 0 {
		return rate + f.Step
	}
	return rate * f.Factor
}

// stepTrial runs one step at a per-key rate.
type stepTrial func(rate float64) (info StepInfo, wrong bool, err error)

// searchMax is the find-max search, apart from the load so that it can be
// tested alone. Steps count against MaxSteps, refinements included.
func searchMax(f FindMaxConfig, try stepTrial) (FindMaxResult, error) {
	res := FindMaxResult{StartRate: f.StartRate, Factor: f.Factor, Step: f.Step, StepSeconds: f.StepDuration.Seconds(),
		MaxRate: f.MaxRate, Refine: f.Refine, BestStep: -1, Steps: []StepInfo{}}
	if f.Step > 0 {
		res.Factor = 0
	}
	var lastPass, firstFail float64
	stopped := false
	trial := func(rate float64) (string, error) {
		info, wrong, err := try(rate)
		if err != nil {
			return "", err
		}
		res.Steps = append(res.Steps, info)
		switch {
		case wrong:
			res.StopReason = fmt.Sprintf("wrong answers at %s/s per key: %s", fmtRate(rate), strings.Join(info.Reasons, "; "))
			stopped = true
		case info.Verdict == VerdictPass:
			if rate > lastPass {
				lastPass, res.BestStep = rate, len(res.Steps)-1
			}
		case info.Verdict == VerdictInvalid:
			res.StopReason = fmt.Sprintf("the bench could not generate %s/s per key faithfully (%s), so the limit found is the generator's, not the proxy's",
				fmtRate(rate), strings.Join(info.Reasons, "; "))
			stopped = true
		default:
			if firstFail == 0 || rate < firstFail {
				firstFail = rate
			}
		}
		return info.Verdict, nil
	}

	for rate := f.StartRate; ; {
		verdict, err := trial(rate)
		if err != nil {
			return res, err
		}
		if stopped {
			break
		}
		if verdict == VerdictFail {
			res.StopReason = fmt.Sprintf("%s/s per key failed: %s", fmtRate(rate), strings.Join(res.Steps[len(res.Steps)-1].Reasons, "; "))
			break
		}
		if len(res.Steps) >= f.MaxSteps {
			res.StopReason = fmt.Sprintf("--max-steps %d reached without exceeding the budget", f.MaxSteps)
			break
		}
		if rate >= f.MaxRate {
			res.StopReason = fmt.Sprintf("--max-rate %s/s reached without exceeding the budget", fmtRate(f.MaxRate))
			break
		}
		rate = min(f.next(rate), f.MaxRate)
	}
	for i := 0; i < f.Refine && !stopped && lastPass > 0 && firstFail > 0 && len(res.Steps) < f.MaxSteps; i++ {
		mid := (lastPass + firstFail) / 2
		verdict, err := trial(mid)
		if err != nil {
			return res, err
		}
		if verdict == VerdictPass {
			lastPass = mid
		} else {
			firstFail = mid
		}
	}
	res.MaxSustainableRate = lastPass
	if res.BestStep < 0 && len(res.Steps) > 0 {
		res.BestStep = 0
	}
	return res, nil
}

func fmtRate(r float64) string { return fmt.Sprintf("%.6g", r) }

// FindMax runs the search with the runner's configuration (its Duration is
// replaced by f.StepDuration; its Warmup precedes every step). The result's
// top-level figures are those of the best step; FindMax lists every step.
func (r *Runner) FindMax(ctx context.Context, f FindMaxConfig) (*Result, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	if len(r.cfg.Hooks) > 0 {
		return nil, errors.New("find-max takes no hooks")
	}
	started := time.Now().UTC()
	r.cfg.Duration = f.StepDuration
	var runs []*Result
	search, err := searchMax(f, func(rate float64) (StepInfo, bool, error) {
		if ctx.Err() != nil {
			return StepInfo{}, false, ctx.Err()
		}
		r.cfg.RatePerKey = rate
		res, err := r.Run(ctx)
		if err != nil {
			return StepInfo{}, false, err
		}
		// An interrupted step is no evidence either way.
		if ctx.Err() != nil {
			return StepInfo{}, false, ctx.Err()
		}
		runs = append(runs, res)
		t := res.Totals
		info := StepInfo{RatePerKey: rate, Verdict: res.Verdict.Result, Reasons: res.Verdict.Reasons,
			OfferedRate: t.OfferedRate, AchievedRate: t.AchievedRate, Errors: t.Errors, ErrorRate: t.ErrorRate,
			ErrorKinds: res.Errors, LatencyMs: t.LatencyMs}
		if info.Verdict == VerdictInvalid && !generatorLimited(res, r.cfg.Budget) {
			// The step fell short only because answers were so slow that
			// the in-flight bound filled up: the proxy did not sustain the
			// rate, which is what a failing step means.
			info.Verdict = VerdictFail
		}
		if r.cfg.Progress != nil {
			fmt.Fprintf(r.cfg.Progress, "step %d: %s/s per key: %s  p99 %s  errors %d  offered %.1f/s  achieved %.1f/s\n",
				len(runs), fmtRate(rate), info.Verdict, FormatMs(t.LatencyMs.P99), t.Errors, t.OfferedRate, t.AchievedRate)
		}
		return info, res.Verdict.ExitCode == ExitWrong, nil
	})
	if err != nil && len(runs) == 0 {
		return nil, err
	}
	interrupted := err != nil
	if interrupted && search.StopReason == "" {
		search.StopReason = "interrupted: " + err.Error()
	}
	out := runs[max(search.BestStep, 0)]
	out.Kind = "find-max"
	out.StartedAt = started
	out.FindMax = &search
	out.Verdict = findMaxVerdict(search, runs, interrupted)
	out.FinishedAt = time.Now().UTC()
	return out, nil
}

// generatorLimited says whether the bench itself failed to generate a run's
// load: it sent requests late (lag p99 over half the budget), or never sent
// them for reasons other than the in-flight bound.
func generatorLimited(res *Result, budget time.Duration) bool {
	t := res.Totals
	missed := t.Requested - t.Offered - t.ClientSaturated
	return res.GeneratorLagMs.P99 > ms(budget)/2 || float64(missed) > (1-minOfferedFraction)*float64(t.Requested) ||
		res.Measured.StoppedBy == "interrupted"
}

// findMaxVerdict: PASS when some rate was sustained, with the answer in the
// notes; wrong answers at any step fail the search.
func findMaxVerdict(s FindMaxResult, runs []*Result, interrupted bool) Verdict {
	v := Verdict{Result: VerdictPass, ExitCode: ExitPass, Reasons: []string{}, Notes: []string{}}
	for _, run := range runs {
		if run.Verdict.ExitCode == ExitWrong {
			v.Result, v.ExitCode = VerdictFail, ExitWrong
			v.Reasons = append(v.Reasons, run.Verdict.Reasons...)
			return v
		}
	}
	switch {
	case interrupted:
		v.Result, v.ExitCode = VerdictInvalid, ExitInvalid
		v.Reasons = append(v.Reasons, s.StopReason)
	case s.MaxSustainableRate == 0 && len(s.Steps) > 0 && s.Steps[0].Verdict == VerdictInvalid:
		v.Result, v.ExitCode = VerdictInvalid, ExitInvalid
		v.Reasons = append(v.Reasons, s.StopReason)
	case s.MaxSustainableRate == 0:
		v.Result, v.ExitCode = VerdictFail, ExitFail
		v.Reasons = append(v.Reasons, "no step stayed within the budget: "+s.StopReason)
	default:
		v.Notes = append(v.Notes, fmt.Sprintf("highest sustainable rate: %s/s per key; stopped because %s", fmtRate(s.MaxSustainableRate), s.StopReason))
	}
	return v
}
