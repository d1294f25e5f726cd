package node

import (
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"

	"github.com/xksproxy/xksproxy/hsm"
)

const (
	metricsTokenA = "metrics-a"
	metricsTokenB = "metrics-b"
)

// TestHSMMetricsNameEachHSM: with two HSMs every xksproxy_hsm_ series has
// one sample per HSM, labelled with its token label; the one that served
// counts it, and one that is out shows in_rotation 0 and UNAVAILABLE while
// the other stays in.
func TestHSMMetricsNameEachHSM(t *testing.T) {
	var members []*hsm.HSM
	for _, token := range []string{metricsTokenA, metricsTokenB} {
		h, err := hsm.Open(hsm.Config{ModulePath: testModule, TokenLabel: token, PIN: importTestPIN, PoolSize: 2,
			WaitTimeout: 5 * time.Second, CallTimeout: 10 * time.Second, HealthInterval: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		members = append(members, h)
	}
	g, err := hsm.NewGroup(members...)
	if err != nil {
		t.Fatal(err)
	}
	// The key is only in A: an encrypt tried on B first fails over to A.
	label := "metrics-test-key"
	if err := members[0].GenerateKey(label); err != nil && !errors.Is(err, hsm.ErrKeyExists) {
		t.Fatal(err)
	}
	iv := make([]byte, 12)
	for range 3 {
		rand.Read(iv)
		if _, _, err := g.EncryptGCM(label, iv, []byte("counted"), nil); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.CollectorFunc(func(ch chan<- prometheus.Metric) { collectHSM(ch, g) }))
	samples := gatherHSM(t, reg)
	for _, family := range []string{"xksproxy_hsm_sessions", "xksproxy_hsm_sessions_in_use", "xksproxy_hsm_waiting_callers",
		"xksproxy_hsm_expected_wait_seconds", "xksproxy_hsm_call_average_seconds", "xksproxy_hsm_stuck_calls",
		"xksproxy_hsm_call_timeouts_total", "xksproxy_hsm_in_rotation", "xksproxy_hsm_served_total"} {
		for _, token := range []string{metricsTokenA, metricsTokenB} {
			if _, ok := samples[family+"/"+token]; !ok {
				t.Errorf("no %s{hsm=%q}", family, token)
			}
		}
	}
	want := map[string]float64{
		"xksproxy_hsm_sessions/" + metricsTokenA: 2, "xksproxy_hsm_served_total/" + metricsTokenA: 3,
		"xksproxy_hsm_served_total/" + metricsTokenB: 0, "xksproxy_hsm_in_rotation/" + metricsTokenA: 1,
		"xksproxy_hsm_in_rotation/" + metricsTokenB: 1, "xksproxy_hsm_status/" + metricsTokenB + "/ACTIVE": 1,
	}
	for k, v := range want {
		if samples[k] != v {
			t.Errorf("%s = %v, want %v", k, samples[k], v)
		}
	}

	// B out (closed: down for good, the way a failed one is until it recovers).
	members[1].Close()
	samples = gatherHSM(t, reg)
	want = map[string]float64{
		"xksproxy_hsm_in_rotation/" + metricsTokenA: 1, "xksproxy_hsm_in_rotation/" + metricsTokenB: 0,
		"xksproxy_hsm_status/" + metricsTokenA + "/ACTIVE": 1, "xksproxy_hsm_status/" + metricsTokenB + "/UNAVAILABLE": 1,
		"xksproxy_hsm_status/" + metricsTokenB + "/ACTIVE": 0,
	}
	for k, v := range want {
		if samples[k] != v {
			t.Errorf("after closing B: %s = %v, want %v", k, samples[k], v)
		}
	}
}

// gatherHSM returns the registry's samples by family/hsm[/status].
func gatherHSM(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if problems, err := promlint.NewWithMetricFamilies(families).Lint(); err != nil || len(problems) > 0 {
		t.Fatalf("promlint: %v %v", problems, err)
	}
	out := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			key := []string{f.GetName()}
			for _, l := range m.GetLabel() {
				key = append(key, l.GetValue())
			}
			out[strings.Join(key, "/")] = value(m)
		}
	}
	return out
}

func value(m *dto.Metric) float64 {
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}
