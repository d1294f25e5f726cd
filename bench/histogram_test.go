package bench

import (
	"math"
	"testing"
	"time"
)

func within(t *testing.T, what string, got, want time.Duration, rel float64) {
	t.Helper()
	if math.Abs(float64(got-want)) > rel*float64(want) {
		t.Errorf("%s = %v, want %v ±%.2f%%", what, got, want, 100*rel)
	}
}

func TestHistogramUniformPercentiles(t *testing.T) {
	h := NewHistogram()
	for us := 1; us <= 100000; us++ {
		h.Record(time.Duration(us) * time.Microsecond)
	}
	if h.Count() != 100000 {
		t.Fatalf("count %d", h.Count())
	}
	// 3 significant digits: every figure within 0.1%.
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Millisecond}, {90, 90 * time.Millisecond}, {99, 99 * time.Millisecond}, {99.9, 99900 * time.Microsecond}} {
		within(t, "p"+trimFloat(c.p), h.Percentile(c.p), c.want, 0.001)
	}
	within(t, "max", h.Max(), 100*time.Millisecond, 0.001)
	within(t, "mean", h.Mean(), 50*time.Millisecond, 0.001)
	if h.Min() != time.Microsecond {
		t.Errorf("min %v", h.Min())
	}
}

func trimFloat(v float64) string { return time.Duration(v * float64(time.Second)).String() }

func TestHistogramBimodal(t *testing.T) {
	// 990 fast answers and 10 one-second stalls: p99 is still fast, p99.9
	// and max see the stalls. This is the shape coordinated omission hides.
	h := NewHistogram()
	for range 990 {
		h.Record(time.Millisecond)
	}
	for range 10 {
		h.Record(time.Second)
	}
	within(t, "p50", h.Percentile(50), time.Millisecond, 0.001)
	within(t, "p99", h.Percentile(99), time.Millisecond, 0.001)
	within(t, "p99.9", h.Percentile(99.9), time.Second, 0.001)
	within(t, "max", h.Max(), time.Second, 0.001)
	s := h.Summary()
	if s.Count != 1000 || math.Abs(s.P99-1) > 0.001 || math.Abs(s.P999-1000) > 1 || math.Abs(s.Mean-10.99) > 0.02 {
		t.Errorf("summary %+v", s)
	}
}

func TestHistogramMergeEqualsWhole(t *testing.T) {
	whole, odd, even := NewHistogram(), NewHistogram(), NewHistogram()
	for i := 1; i <= 50000; i++ {
		d := time.Duration(i*i%977+1) * 37 * time.Microsecond
		whole.Record(d)
		if i%2 == 1 {
			odd.Record(d)
		} else {
			even.Record(d)
		}
	}
	odd.Merge(even)
	if odd.Count() != whole.Count() {
		t.Fatalf("merged count %d, whole %d", odd.Count(), whole.Count())
	}
	for _, p := range []float64{0, 10, 50, 90, 99, 99.9, 99.99, 100} {
		if a, b := odd.Percentile(p), whole.Percentile(p); a != b {
			t.Errorf("p%g: merged %v, whole %v", p, a, b)
		}
	}
}

func TestHistogramClampsAndRoundTrips(t *testing.T) {
	h := NewHistogram()
	h.Record(0)
	h.Record(2 * time.Minute)
	h.Record(5 * time.Millisecond)
	if h.Min() != time.Microsecond {
		t.Errorf("0 recorded as %v, want 1µs", h.Min())
	}
	within(t, "max", h.Max(), time.Minute, 0.001)
	if s := h.Summary(); s.Clipped != 1 {
		t.Errorf("clipped %d, want 1", s.Clipped)
	}
	enc, err := h.Encode()
	if err != nil {
		t.Fatal(err)
	}
	back, err := DecodeHistogram(enc)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []float64{0, 50, 100} {
		if a, b := back.Percentile(p), h.Percentile(p); a != b {
			t.Errorf("p%g after round trip %v, before %v", p, a, b)
		}
	}
}

func TestHistogramCurve(t *testing.T) {
	h := NewHistogram()
	for us := 1; us <= 10000; us++ {
		h.Record(time.Duration(us) * time.Microsecond)
	}
	c := h.Curve()
	if c[0].Percentile != 0 || c[len(c)-1].Percentile != 100 || c[len(c)-1].Ms != ms(h.Max()) {
		t.Fatalf("curve from %+v to %+v", c[0], c[len(c)-1])
	}
	for i := 1; i < len(c); i++ {
		if c[i].Percentile < c[i-1].Percentile || c[i].Ms < c[i-1].Ms {
			t.Fatalf("curve not monotonic at %d: %+v after %+v", i, c[i], c[i-1])
		}
	}
	// 10,000 values support four nines and no more.
	if last := c[len(c)-2].Percentile; last < 99.98 || last >= 99.99 {
		t.Errorf("last sampled percentile %g", last)
	}
}
