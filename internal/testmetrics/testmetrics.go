// Package testmetrics scrapes a Prometheus endpoint over HTTP in tests and
// reads samples out of the answer.
package testmetrics

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Families are the metric families of one scrape, by name.
type Families map[string]*dto.MetricFamily

// Scrape GETs url and returns the exposition as sent and parsed. It fails t
// unless the answer is 200 in the text format and passes promlint (base
// units, _total on counters, help on every metric).
func Scrape(t testing.TB, url string) (string, Families) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET %s: %s %s\n%s", url, resp.Status, resp.Header.Get("Content-Type"), b)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("GET %s: %v\n%s", url, err, b)
	}
	problems, err := promlint.New(bytes.NewReader(b)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	return string(b), families
}

// Value is the value of the sample of family name whose labels include
// pairs (name, value, name, value, ...): a counter's or gauge's value, a
// histogram's count. It fails t when no sample matches.
func (f Families) Value(t testing.TB, name string, pairs ...string) float64 {
	t.Helper()
	if mf, ok := f[name]; ok {
		for _, m := range mf.GetMetric() {
			if !hasLabels(m, pairs) {
				continue
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	t.Fatalf("no sample %s%v in the scrape", name, pairs)
	return 0
}

func hasLabels(m *dto.Metric, pairs []string) bool {
	for i := 0; i+1 < len(pairs); i += 2 {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == pairs[i] && l.GetValue() == pairs[i+1] {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
