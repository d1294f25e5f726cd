package bench

import "fmt"

// minOfferedFraction is the share of the requested requests the bench must
// actually send for its figures to describe the requested load.
const minOfferedFraction = 0.99

type judgeInput struct {
	wrong                    int64
	interrupted              bool
	warmupDone, warmupErrors int64
}

// judge decides a run's verdict. Wrong answers fail it whatever else
// happened; a run that could not offer its load is INVALID, since its
// figures describe another load; otherwise p99 and the error rate are held
// against the budget.
func judge(res *Result, cfg Config, in judgeInput) Verdict {
	v := Verdict{Result: VerdictPass, ExitCode: ExitPass, Reasons: []string{}, Notes: []string{}}
	worse := func(result string, code int) {
		if code > v.ExitCode {
			v.Result, v.ExitCode = result, code
		}
	}
	t := res.Totals
	if in.wrong > 0 {
		worse(VerdictFail, ExitWrong)
		v.Reasons = append(v.Reasons, fmt.Sprintf("%d wrong answers (%s or %s): the proxy answered, but wrongly", in.wrong, errWrongPlaintext, errWrongCDIV))
	}
	if in.interrupted {
		worse(VerdictInvalid, ExitInvalid)
		v.Reasons = append(v.Reasons, "interrupted before the end of the run")
	}
	if t.OK+t.Errors == 0 {
		worse(VerdictInvalid, ExitInvalid)
		v.Reasons = append(v.Reasons, "no request was measured")
	} else if t.Requested > 0 && float64(t.Offered) < minOfferedFraction*float64(t.Requested) {
		worse(VerdictInvalid, ExitInvalid)
		why := fmt.Sprintf("generator lag p99 %s", FormatMs(res.GeneratorLagMs.P99))
		if t.ClientSaturated > 0 {
			why = fmt.Sprintf("%d requests found --max-in-flight %d reached", t.ClientSaturated, cfg.MaxInFlight)
		}
		v.Reasons = append(v.Reasons, fmt.Sprintf("the bench offered %.1f/s of the %.1f/s requested (%.1f%%; %s): the figures do not describe the requested load",
			t.OfferedRate, t.RequestedRate, 100*float64(t.Offered)/float64(t.Requested), why))
	}
	budget := ms(cfg.Budget)
	if lag := res.GeneratorLagMs.P99; lag > budget/2 {
		worse(VerdictInvalid, ExitInvalid)
		v.Reasons = append(v.Reasons, fmt.Sprintf("the generator sent requests late (lag p99 %s, over half the %s budget): its own lateness, not the proxy, would decide the verdict",
			FormatMs(lag), FormatMs(budget)))
	}
	if t.OK+t.Errors > 0 && t.LatencyMs.P99 > budget {
		worse(VerdictFail, ExitFail)
		v.Reasons = append(v.Reasons, fmt.Sprintf("p99 %s is over the %s budget", FormatMs(t.LatencyMs.P99), FormatMs(budget)))
	}
	if t.ErrorRate > cfg.MaxErrorRate {
		worse(VerdictFail, ExitFail)
		v.Reasons = append(v.Reasons, fmt.Sprintf("error rate %.4f%% (%d errors) is over the %.4f%% allowed", 100*t.ErrorRate, t.Errors, 100*cfg.MaxErrorRate))
	}

	if res.Config.KeysShareIDs {
		v.Notes = append(v.Notes, fmt.Sprintf("%d logical keys share %d key id(s): each has its own schedule, but the proxy sees the same key", res.Config.Keys, len(cfg.Target.KeyIDs)))
	}
	if lag := res.GeneratorLagMs.P99; lag > budget/10 && lag <= budget/2 {
		v.Notes = append(v.Notes, fmt.Sprintf("the generator sent requests late (lag p99 %s, more than a tenth of the budget): latencies include that lag", FormatMs(lag)))
	}
	if in.warmupErrors > 0 {
		v.Notes = append(v.Notes, fmt.Sprintf("%d of %d warm-up requests failed (not counted)", in.warmupErrors, in.warmupDone))
	}
	if t.LatencyMs.Clipped > 0 {
		v.Notes = append(v.Notes, fmt.Sprintf("%d latencies above 60s were counted as 60s", t.LatencyMs.Clipped))
	}
	if res.Measured.StoppedBy == "max-requests" {
		v.Notes = append(v.Notes, fmt.Sprintf("--max-requests shortened the measured run to %.1fs", res.Measured.DurationSeconds))
	}
	for _, h := range res.Hooks {
		switch {
		case h.Error != "":
			v.Notes = append(v.Notes, fmt.Sprintf("hook at %gs (%s): %s", h.AtSeconds, h.Command, h.Error))
		case h.ExitCode != 0:
			v.Notes = append(v.Notes, fmt.Sprintf("hook at %gs (%s) exited %d", h.AtSeconds, h.Command, h.ExitCode))
		}
	}
	return v
}
