package report

import (
	"encoding/csv"
	"io"
	"strconv"

	"github.com/xksproxy/xksproxy/bench"
)

// CSVHeader is the first line of timeseries.csv.
var CSVHeader = []string{"second", "op", "offered", "achieved", "errors", "count", "p50_ms", "p99_ms", "max_ms"}

// CSV writes the time series: one row per second and operation ("all"
// first), with the meaning bench.SecondRow documents.
func CSV(w io.Writer, res *bench.Result) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(CSVHeader); err != nil {
		return err
	}
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', 3, 64) }
	for _, r := range res.Timeseries {
		rec := []string{strconv.Itoa(r.Second), r.Op, strconv.FormatInt(r.Offered, 10), strconv.FormatInt(r.Achieved, 10),
			strconv.FormatInt(r.Errors, 10), strconv.FormatInt(r.Count, 10), f(r.P50Ms), f(r.P99Ms), f(r.MaxMs)}
		if err := cw.Write(rec); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}
