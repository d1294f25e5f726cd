package report

import (
	"errors"
	"io"

	"github.com/xksproxy/xksproxy/bench"
)

// HGRM writes the run's latency histogram over every measured request
// (result.json's totals.hdr) as an HdrHistogram .hgrm percentile table in
// milliseconds, so that results merge and plot with other tools'.
func HGRM(w io.Writer, res *bench.Result) error {
	if res.Totals.HDR == "" {
		return errors.New("the result holds no histogram")
	}
	h, err := bench.DecodeHistogram(res.Totals.HDR)
	if err != nil {
		return err
	}
	return h.WritePercentiles(w)
}
