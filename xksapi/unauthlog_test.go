package xksapi_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/internal/testmetrics"
	"github.com/xksproxy/xksproxy/xksapi"
)

// unauthLines are the log lines about requests refused before
// authentication, parsed.
func unauthLines(t *testing.T, f *fixture) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(f.logs.String()), "\n") {
		var entry map[string]any
		if json.Unmarshal([]byte(line), &entry) == nil && entry["authenticated"] == false && entry["message"] == "xks request" {
			out = append(out, entry)
		}
	}
	return out
}

// A request refused before authentication says what anyone may claim, at
// any size a body allows: its log line is bounded and marked.
func TestUnauthenticatedLogLinesAreBounded(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	huge := strings.Repeat("P", 200_000)
	body := `{"requestMetadata":{"awsPrincipalArn":"arn:` + huge + `","kmsRequestId":"huge-body","kmsOperation":"Encrypt"}}`
	status, resp := f.rawRequest(http.MethodPost, "/a/kms/xks/v1/keys/k1/encrypt", map[string]string{"Authorization": "AWS4-HMAC-SHA256 " + huge[:8000]}, []byte(body))
	assertErrorBody(t, "200 KB body", status, resp, 501, "UnsupportedOperationException")
	line := f.logs.Line("huge-body")
	if line == "" || len(line) > 2048 {
		t.Fatalf("the log line of a 200 KB unauthenticated body is %d bytes:\n%.3000s", len(line), line)
	}
	if !strings.Contains(line, `"authenticated":false`) || !strings.Contains(line, `"principal":"arn:PPP`) {
		t.Fatalf("the line is not marked unauthenticated or lost the principal's start: %s", line)
	}
}

// A flood of unauthenticated requests logs at most the rate limit's burst;
// the next line logged says how many were dropped; the metrics count them
// all.
func TestUnauthenticatedLogLinesAreRateLimited(t *testing.T) {
	now := time.Now()
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	f := newFixture(t, fixtureOptions{now: clock, configure: func(c *xksapi.Config) { c.UnauthenticatedLogRate = 1 }}) // bursts of 10
	for range 40 {
		status, body := f.rawRequest(http.MethodPost, "/zz/kms/xks/v1/health", nil, []byte(`{"requestMetadata":{"kmsRequestId":"flood"}}`))
		assertErrorBody(t, "unknown key store", status, body, 404, "InvalidUriPathException")
	}
	if n := len(unauthLines(t, f)); n != 10 {
		t.Fatalf("a flood of 40 logged %d lines, want the burst of 10", n)
	}
	mu.Lock()
	now = now.Add(time.Second)
	mu.Unlock()
	f.rawRequest(http.MethodPost, "/zz/kms/xks/v1/health", nil, []byte(`{"requestMetadata":{"kmsRequestId":"after-the-flood"}}`))
	lines := unauthLines(t, f)
	last := lines[len(lines)-1]
	if len(lines) != 11 || last["kmsRequestId"] != "after-the-flood" || last["dropped"] != float64(30) {
		t.Fatalf("after the flood: %d lines, last %v; want 11, the last saying 30 were dropped", len(lines), last)
	}
	_, m := testmetrics.Scrape(t, "http://"+f.health+"/metrics")
	if got := m.Value(t, "xksproxy_requests_unauthenticated_total"); got != 41 {
		t.Errorf("xksproxy_requests_unauthenticated_total = %v, want 41", got)
	}
	if got := m.Value(t, "xksproxy_unauthenticated_log_lines_dropped_total"); got != 30 {
		t.Errorf("xksproxy_unauthenticated_log_lines_dropped_total = %v, want 30", got)
	}
}
