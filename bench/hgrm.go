package bench

import "io"

// hgrmTicksPerHalfDistance is the resolution of the .hgrm percentile
// table: HdrHistogram's own tools default to 5 lines per halving of the
// distance to 100%.
const hgrmTicksPerHalfDistance = 5

// WritePercentiles writes h in HdrHistogram's percentile distribution
// text form (a .hgrm file, as wrk2, HdrHistogram's plotter and other load
// tools write and read), values in milliseconds: the footer's Max and
// Total count are the same figures as the summary's.
func (h *Histogram) WritePercentiles(w io.Writer) error {
	_, err := h.h.PercentilesPrint(w, hgrmTicksPerHalfDistance, 1000) // recorded in µs
	return err
}
