package bench

import (
	"math"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in microseconds from 1 µs to 60 s with 3
// significant digits: any recorded value is reported within 0.1% of itself,
// the same precision from a 40 µs hit to a 30 s stall.
const (
	histLowest  = 1
	histHighest = 60_000_000
	histDigits  = 3
)

// Histogram is an HDR latency histogram. It is not safe for concurrent use.
type Histogram struct {
	h *hdrhistogram.Histogram
	// clipped counts values above 60 s, recorded as 60 s.
	clipped int64
}

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram {
	return &Histogram{h: hdrhistogram.New(histLowest, histHighest, histDigits)}
}

// Record adds one latency. Values under 1 µs count as 1 µs and values over
// 60 s as 60 s (and are counted as clipped), so that nothing is lost.
func (h *Histogram) Record(d time.Duration) {
	us := d.Microseconds()
	switch {
	case us < histLowest:
		us = histLowest
	case us > histHighest:
		us = histHighest
		h.clipped++
	}
	// Cannot fail: us is within the histogram's range.
	_ = h.h.RecordValue(us)
}

// Merge adds every value of o to h.
func (h *Histogram) Merge(o *Histogram) {
	h.h.Merge(o.h)
	h.clipped += o.clipped
}

// Count is the number of recorded values.
func (h *Histogram) Count() int64 { return h.h.TotalCount() }

// Percentile is the latency below or at which percent (0..100) of the
// values lie, rounded up to the histogram's precision; 0 when empty.
func (h *Histogram) Percentile(percent float64) time.Duration {
	return time.Duration(h.h.ValueAtPercentile(percent)) * time.Microsecond
}

// Max is the largest value, to the histogram's precision.
func (h *Histogram) Max() time.Duration { return time.Duration(h.h.Max()) * time.Microsecond }

// Min is the smallest value, to the histogram's precision.
func (h *Histogram) Min() time.Duration { return time.Duration(h.h.Min()) * time.Microsecond }

// Mean is the average value.
func (h *Histogram) Mean() time.Duration {
	return time.Duration(h.h.Mean() * float64(time.Microsecond))
}

// Summary condenses h into the figures the reports show.
func (h *Histogram) Summary() LatencySummary {
	if h.Count() == 0 {
		return LatencySummary{}
	}
	return LatencySummary{
		Count: h.Count(), Min: ms(h.Min()), Mean: ms(h.Mean()),
		P50: ms(h.Percentile(50)), P90: ms(h.Percentile(90)), P99: ms(h.Percentile(99)),
		P999: ms(h.Percentile(99.9)), Max: ms(h.Max()), Clipped: h.clipped,
	}
}

// Curve samples the percentile distribution for a chart: evenly spaced in
// "nines" (90%, 99%, 99.9% ... are equally far apart), as far out as the
// number of values supports, and always ending with the maximum.
func (h *Histogram) Curve() []CurvePoint {
	n := h.Count()
	if n == 0 {
		return nil
	}
	const perNine = 20
	steps := int(math.Ceil(math.Min(math.Log10(float64(n)), 6)*perNine - 1e-9))
	var out []CurvePoint
	for i := range steps {
		p := 100 * (1 - math.Pow(10, -float64(i)/perNine))
		out = append(out, CurvePoint{Percentile: round(p, 6), Ms: ms(h.Percentile(p))})
	}
	return append(out, CurvePoint{Percentile: 100, Ms: ms(h.Max())})
}

// Encode is the histogram in the HdrHistogram V2 compressed format, base64:
// any HdrHistogram implementation can decode it to re-derive figures.
func (h *Histogram) Encode() (string, error) {
	b, err := h.h.Encode(hdrhistogram.V2CompressedEncodingCookieBase)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// DecodeHistogram reverses Encode.
func DecodeHistogram(s string) (*Histogram, error) {
	h, err := hdrhistogram.Decode([]byte(s))
	if err != nil {
		return nil, err
	}
	return &Histogram{h: h}, nil
}

// ms converts a duration to milliseconds, rounded to the nanosecond.
func ms(d time.Duration) float64 { return round(float64(d)/1e6, 6) }

func round(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}
