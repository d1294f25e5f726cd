package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"
)

// progressPrinter writes the live line: rewritten in place on a terminal,
// one line per second otherwise (a log keeps them all).
type progressPrinter struct {
	w   io.Writer
	tty bool
}

func newProgressPrinter(w io.Writer) *progressPrinter {
	if w == nil {
		return nil
	}
	p := &progressPrinter{w: w}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	return p
}

func (p *progressPrinter) line(s string) {
	if p.tty {
		fmt.Fprintf(p.w, "\r\x1b[K%s", s)
		return
	}
	fmt.Fprintln(p.w, s)
}

func (p *progressPrinter) end() {
	if p.tty {
		fmt.Fprintln(p.w)
	}
}

// progressSlack is how long after each second of the run the live line is
// printed, so that the second just past is (nearly) complete.
const progressSlack = 50 * time.Millisecond

// progressLoop, once a second of the run until ctx ends, condenses the
// seconds the schedule has left behind and prints the live line.
func (rn *run) progressLoop(ctx context.Context, p *progressPrinter, start, measureStart, measureEnd time.Time) {
	if p != nil {
		defer p.end()
	}
	clock := rn.r.clock
	seconds := int(measureEnd.Sub(measureStart) / time.Second)
	// Ticks fall on whole seconds from the start of the measured window,
	// warm-up seconds counting as negative, the first after one second.
	n := 1 - int(measureStart.Sub(start)/time.Second)
	for ; ; n++ {
		tick := measureStart.Add(time.Duration(n)*time.Second + progressSlack)
		if !tick.After(clock.Now()) {
			continue
		}
		if !clock.SleepUntil(ctx, tick) {
			// A run whose answers all came in before the last second's
			// tick (its last request is due before the second ends)
			// still shows that second.
			if p != nil && n == seconds {
				rn.printProgress(p, n, tick, start, measureStart, measureEnd)
			}
			return
		}
		rn.rec.closeBefore(time.Unix(0, rn.watermark.Load()))
		if p != nil {
			rn.printProgress(p, n, tick, start, measureStart, measureEnd)
		}
	}
}

// printProgress prints the live line for second n of the measured window
// (warm-up seconds are n <= 0), as of tick.
func (rn *run) printProgress(p *progressPrinter, n int, tick, start, measureStart, measureEnd time.Time) {
	pr := rn.rec.progress(tick)
	inFlight := rn.inflight.Load()
	switch {
	case n <= 0:
		p.line(fmt.Sprintf("warm-up %.0f/%.0fs  %d answers  in flight %d",
			tick.Sub(start).Seconds(), measureStart.Sub(start).Seconds(), pr.warmupDone, inFlight))
	case tick.Before(measureEnd.Add(time.Second)):
		errRate := 0.0
		if n := pr.ok + pr.errors; n > 0 {
			errRate = 100 * float64(pr.errors) / float64(n)
		}
		p.line(fmt.Sprintf("%3d/%.0fs  %6d ok/s  %d errors/s  errors %d (%.3f%%)  p50 %s  p99 %s  in flight %d",
			n, measureEnd.Sub(measureStart).Seconds(), pr.lastOK, pr.lastErrors,
			pr.errors, errRate, FormatMs(ms(pr.p50)), FormatMs(ms(pr.p99)), inFlight))
	default:
		p.line(fmt.Sprintf("draining: %d in flight", inFlight))
	}
}

// FormatMs prints milliseconds with a precision that suits their size.
func FormatMs(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v < 1:
		return fmt.Sprintf("%.3fms", v)
	case v < 100:
		return fmt.Sprintf("%.2fms", v)
	case v < 10000:
		return fmt.Sprintf("%.0fms", v)
	}
	return fmt.Sprintf("%.1fs", v/1000)
}
