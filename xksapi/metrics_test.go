package xksapi_test

import (
	"encoding/base64"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/fsm"
	"github.com/xksproxy/xksproxy/internal/testmetrics"
	"github.com/xksproxy/xksproxy/xksclient"
)

// The label values metrics may carry: enums only, never anything a caller
// chose (key ids, principals, paths).
var allowedLabels = map[string][]string{
	"operation": {"none", "metadata", "encrypt", "decrypt", "health"},
	"outcome": {"ok", "ValidationException", "InvalidStateException", "InvalidCiphertextException",
		"InvalidKeyUsageException", "AuthenticationFailedException", "AccessDeniedException", "KeyNotFoundException",
		"InvalidUriPathException", "ThrottlingException", "UnsupportedOperationException",
		"DependencyTimeoutException", "InternalException"},
	"retryable": {"true", "false"},
	"key_store": {"", "a", "b"}, // the fixture's key stores, "" for a path naming none
	"reason":    {"cpu", "in_flight", "quota", "hsm_busy"},
	"listener":  {"api", "health"},
	"limit":     {"max_conns", "max_conns_per_ip"},
	"le":        nil, // histogram buckets: numbers
}

// Requests served, refused and shed show in GET /metrics on the health
// port, with bounded labels and without a secret or plaintext.
func TestMetricsEndpoint(t *testing.T) {
	var wait atomic.Int64
	f := newFixture(t, fixtureOptions{overloadWait: 100 * time.Millisecond, cpuWait: func() time.Duration { return time.Duration(wait.Load()) }})
	c := f.clientA()
	plaintext := []byte("metrics must never show this plaintext")
	enc, err := c.Encrypt("k1", &xksclient.EncryptRequest{RequestMetadata: metadata("Encrypt"), Plaintext: plaintext})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Decrypt("k1", &xksclient.DecryptRequest{RequestMetadata: metadata("Decrypt"), Ciphertext: enc.Ciphertext,
		CiphertextMetadata: enc.CiphertextMetadata, IV: enc.IV, Tag: enc.Tag}); err != nil {
		t.Fatal(err)
	}
	_, err = c.Encrypt("nokey", &xksclient.EncryptRequest{RequestMetadata: metadata("Encrypt"), Plaintext: plaintext})
	wantXKSError(t, err, 404, "KeyNotFoundException")
	wrong := f.credsA[0]
	wrong.Secret = fsm.GenerateCredential().Secret
	_, err = f.client("a", wrong, nil).Encrypt("k1", &xksclient.EncryptRequest{RequestMetadata: metadata("Encrypt"), Plaintext: plaintext})
	wantXKSError(t, err, 401, "AuthenticationFailedException")
	wait.Store(int64(time.Second))
	_, err = c.Encrypt("k1", &xksclient.EncryptRequest{RequestMetadata: metadata("Encrypt"), Plaintext: plaintext})
	wantXKSError(t, err, 429, "ThrottlingException")
	if _, err := c.Health(metadata("")); err != nil {
		t.Fatalf("GetHealthStatus while shedding: %v", err)
	}
	// Metrics are served on the health port only; on the XKS listener the
	// path is just another unroutable request.
	if status, _ := f.rawRequest("GET", "/metrics", nil, nil); status != 404 {
		t.Fatalf("GET /metrics on the XKS listener: %d", status)
	}
	base := "http://" + f.health
	if resp, err := http.Get(base + "/ping"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("/ping: %v %v", resp, err)
	}
	if resp, err := http.Post(base+"/metrics", "text/plain", nil); err != nil || resp.StatusCode != 405 || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Fatalf("POST /metrics: %v %v", resp, err)
	}

	body, m := testmetrics.Scrape(t, base+"/metrics")
	for _, tc := range []struct {
		op, outcome string
		want        float64
	}{
		{"encrypt", "ok", 1},
		{"decrypt", "ok", 1},
		{"encrypt", "KeyNotFoundException", 1},
		{"encrypt", "AuthenticationFailedException", 1},
		{"encrypt", "ThrottlingException", 1},
		{"health", "ok", 1},
		{"none", "InvalidUriPathException", 1},
		{"metadata", "ok", 0}, // every combination is exported from the start
	} {
		if got := m.Value(t, "xksproxy_requests_total", "operation", tc.op, "outcome", tc.outcome); got != tc.want {
			t.Errorf("requests{%s, %s} = %v, want %v", tc.op, tc.outcome, got, tc.want)
		}
	}
	// Per key store: what the path named, or "" (a path naming none).
	for _, tc := range []struct {
		keyStore, op, outcome string
		want                  float64
	}{
		{"a", "encrypt", "ok", 1},
		{"a", "decrypt", "ok", 1},
		{"a", "encrypt", "KeyNotFoundException", 1},
		{"a", "encrypt", "AuthenticationFailedException", 1},
		{"a", "encrypt", "ThrottlingException", 1},
		{"", "none", "InvalidUriPathException", 1},
		{"a", "metadata", "ok", 0},
	} {
		if got := m.Value(t, "xksproxy_key_store_requests_total", "key_store", tc.keyStore, "operation", tc.op, "outcome", tc.outcome); got != tc.want {
			t.Errorf("key store requests{%q, %s, %s} = %v, want %v", tc.keyStore, tc.op, tc.outcome, got, tc.want)
		}
	}
	var total float64
	for _, s := range m["xksproxy_requests_total"].GetMetric() {
		total += s.GetCounter().GetValue()
	}
	if total != 7 {
		t.Errorf("%v requests counted, want 7 (probes and scrapes are not XKS requests)", total)
	}
	for op, want := range map[string]float64{"encrypt": 4, "decrypt": 1, "health": 1, "none": 1, "metadata": 0} {
		if got := m.Value(t, "xksproxy_request_duration_seconds", "operation", op); got != want {
			t.Errorf("request duration count{%s} = %v, want %v", op, got, want)
		}
	}
	// AWS KMS retries InternalException, DependencyTimeoutException and
	// ThrottlingException; the label says which outcomes those are.
	for _, s := range m["xksproxy_requests_total"].GetMetric() {
		labels := map[string]string{}
		for _, l := range s.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		want := slices.Contains([]string{"InternalException", "DependencyTimeoutException", "ThrottlingException"}, labels["outcome"])
		if labels["retryable"] != strconv.FormatBool(want) {
			t.Errorf("requests%v: retryable should be %v", labels, want)
		}
	}
	// The buckets resolve 1 ms to AWS KMS's 250 ms budget in steps of at
	// most half an octave (×1.5, ×5/3 at 3→5 ms), so that a latency
	// quantile there is off by less than the step.
	var bounds []float64
	for _, s := range m["xksproxy_request_duration_seconds"].GetMetric()[0].GetHistogram().GetBucket() {
		bounds = append(bounds, s.GetUpperBound())
	}
	if !slices.Contains(bounds, 0.001) || !slices.Contains(bounds, 0.25) {
		t.Errorf("buckets %v: none at 1 ms or at AWS KMS's 250 ms budget", bounds)
	}
	for i := 1; i < len(bounds); i++ {
		if bounds[i-1] >= 0.001 && bounds[i] <= 0.25 && bounds[i] > bounds[i-1]*1.7 {
			t.Errorf("buckets %v: a step from %v to %v between 1 and 250 ms", bounds, bounds[i-1], bounds[i])
		}
	}
	for reason, want := range map[string]float64{"cpu": 1, "in_flight": 0, "quota": 0, "hsm_busy": 0} {
		if got := m.Value(t, "xksproxy_requests_shed_total", "reason", reason); got != want {
			t.Errorf("shed{%s} = %v, want %v", reason, got, want)
		}
	}
	for name, want := range map[string]float64{"xksproxy_cpu_wait_seconds": 1, "xksproxy_ready": 1, "xksproxy_requests_in_flight": 0} {
		if got := m.Value(t, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}

	for name, mf := range m {
		for _, s := range mf.GetMetric() {
			for _, l := range s.GetLabel() {
				allowed, ok := allowedLabels[l.GetName()]
				if !ok || allowed != nil && !slices.Contains(allowed, l.GetValue()) {
					t.Errorf("%s carries label %s=%q", name, l.GetName(), l.GetValue())
				}
			}
		}
	}
	md := metadata("Encrypt")
	for what, secret := range map[string]string{
		"SigV4 secret":       string(f.credsA[0].Secret),
		"wrong SigV4 secret": string(wrong.Secret),
		"access key id":      f.credsA[0].AccessKeyID,
		"plaintext":          string(plaintext),
		"base64 plaintext":   base64.StdEncoding.EncodeToString(plaintext),
		"ciphertext":         base64.StdEncoding.EncodeToString(enc.Ciphertext),
		"principal":          md.AWSPrincipalARN,
		"key ARN":            md.KMSKeyARN,
		"key id":             "nokey",
		"key store path":     "/a/kms/xks/v1",
	} {
		if strings.Contains(body, secret) {
			t.Errorf("the scrape contains the %s", what)
		}
	}
}
