package xksapi_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/hsm"
	"github.com/xksproxy/xksproxy/internal/testmetrics"
)

// panickyHSM crashes on one plaintext: a fault injected where a real bug
// would sit, deep in the request path.
type panickyHSM struct{ *hsm.HSM }

func (h panickyHSM) EncryptGCM(label string, iv, pt, aad []byte) ([]byte, []byte, error) {
	if string(pt) == "crash" {
		var m map[string]int
		m["boom"]++ // assignment to entry in nil map
	}
	return h.HSM.EncryptGCM(label, iv, pt, aad)
}

// A panic on the request path stops that request, not the node: 500
// InternalException with the JSON body, the connection closed, the stack
// logged once with the kmsRequestId, counted; the next request is served.
func TestPanicIsOneFailedRequest(t *testing.T) {
	var readyPanics atomic.Bool
	f := newFixture(t, fixtureOptions{hsm: panickyHSM{testHSM}, ready: func() error {
		if readyPanics.Load() {
			panic("readiness check crashed")
		}
		return nil
	}})
	c := f.clientA()

	// Signed by hand so that the answer's headers can be read.
	md := metadata("Encrypt")
	md.KMSRequestID = "panic-request-1"
	body, _ := json.Marshal(map[string]any{"requestMetadata": md, "plaintext": []byte("crash"), "encryptionAlgorithm": "AES_GCM"})
	path := "/a/kms/xks/v1/keys/k1/encrypt"
	amzDate, auth := c.Creds.Sign(f.addr, path, body, time.Now())
	req, _ := http.NewRequest(http.MethodPost, "https://"+f.addr+path, bytes.NewReader(body))
	req.Header.Set("X-Amz-Date", amzDate)
	req.Header.Set("Authorization", auth)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.HTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var answer bytes.Buffer
	answer.ReadFrom(resp.Body)
	resp.Body.Close()
	assertErrorBody(t, "a request that panics", resp.StatusCode, answer.Bytes(), 500, "InternalException")
	if !resp.Close {
		t.Error("the connection of a request that panicked stays open")
	}

	// The next request, on a new connection, is served.
	if err := c.RoundTrip("k1", metadata("Encrypt"), []byte("after the crash"), nil); err != nil {
		t.Fatalf("the request after a panic: %v", err)
	}

	var lines []string
	for _, line := range strings.Split(strings.TrimSpace(f.logs.String()), "\n") {
		if strings.Contains(line, "panic-request-1") {
			lines = append(lines, line)
		}
	}
	if len(lines) != 1 || !strings.Contains(lines[0], `"level":"error"`) || !strings.Contains(lines[0], "panickyHSM") ||
		!strings.Contains(lines[0], "assignment to entry in nil map") {
		t.Fatalf("want one error line with the panic and its stack for the request, got:\n%s", strings.Join(lines, "\n"))
	}

	// The health port recovers as well.
	readyPanics.Store(true)
	hresp, err := http.Get("http://" + f.health + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	answer.Reset()
	answer.ReadFrom(hresp.Body)
	hresp.Body.Close()
	assertErrorBody(t, "/ready that panics", hresp.StatusCode, answer.Bytes(), 500, "InternalException")
	_, err = c.Metadata("k1", metadata("DescribeKey"))
	wantXKSError(t, err, 500, "InternalException")
	readyPanics.Store(false)
	if status, _ := getJSON(t, http.DefaultClient, "http://"+f.health+"/ready"); status != 200 {
		t.Fatalf("/ready after a panic: %d", status)
	}

	_, m := testmetrics.Scrape(t, "http://"+f.health+"/metrics")
	if got := m.Value(t, "xksproxy_panics_total", "listener", "api"); got != 2 {
		t.Errorf("xksproxy_panics_total{listener=api} = %v, want 2", got)
	}
	if got := m.Value(t, "xksproxy_panics_total", "listener", "health"); got != 1 {
		t.Errorf("xksproxy_panics_total{listener=health} = %v, want 1", got)
	}
	if got := m.Value(t, "xksproxy_requests_total", "operation", "encrypt", "outcome", "InternalException"); got != 1 {
		t.Errorf("the panicked encrypt is not counted as InternalException: %v", got)
	}
}
