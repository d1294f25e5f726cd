package xksapi_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/xksproxy/xksproxy/hsm"
	"github.com/xksproxy/xksproxy/internal/testmetrics"
	"github.com/xksproxy/xksproxy/xksclient"
)

func getJSON(t *testing.T, client *http.Client, url string) (int, map[string]any) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("GET %s: body %q is not JSON", url, b)
	}
	return resp.StatusCode, m
}

func TestLoadBalancerProbes(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	tlsClient, err := xksclient.NewHTTPClient(f.caFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, base := range []struct {
		url    string
		client *http.Client
	}{{"https://" + f.addr, tlsClient}, {"http://" + f.health, http.DefaultClient}} {
		if status, body := getJSON(t, base.client, base.url+"/ping"); status != 200 || body["status"] != "ok" {
			t.Fatalf("%s/ping: %d %v", base.url, status, body)
		}
		if status, body := getJSON(t, base.client, base.url+"/ready"); status != 200 || body["ready"] != true {
			t.Fatalf("%s/ready: %d %v", base.url, status, body)
		}
	}
	if status, body := getJSON(t, http.DefaultClient, "http://"+f.health+"/a/kms/xks/v1/health"); status != 404 || body["errorName"] != "InvalidUriPathException" {
		t.Fatalf("the health port served an XKS path: %d %v", status, body)
	}
	resp, err := http.Post("http://"+f.health+"/ready", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Fatalf("POST /ready: %d", resp.StatusCode)
	}

	// No state loaded: not ready, and crypto is refused.
	f.views.Publish(nil)
	if status, body := getJSON(t, http.DefaultClient, "http://"+f.health+"/ready"); status != 503 || body["ready"] != false || body["reason"] == "" {
		t.Fatalf("/ready without state: %d %v", status, body)
	}
}

// faultyHSM injects HSM failures in front of the real one.
type faultyHSM struct {
	*hsm.HSM
	mu    sync.Mutex
	err   error
	delay time.Duration
}

func (h *faultyHSM) EncryptGCM(label string, iv, pt, aad []byte) ([]byte, []byte, error) {
	h.mu.Lock()
	err, delay := h.err, h.delay
	h.mu.Unlock()
	time.Sleep(delay)
	if err != nil {
		return nil, nil, err
	}
	return h.HSM.EncryptGCM(label, iv, pt, aad)
}

func (h *faultyHSM) set(err error, delay time.Duration) {
	h.mu.Lock()
	h.err, h.delay = err, delay
	h.mu.Unlock()
}

func TestHSMFailuresMapToSpecificationErrors(t *testing.T) {
	faulty := &faultyHSM{HSM: testHSM}
	f := newFixture(t, fixtureOptions{hsm: faulty, maxInFlight: 1})
	c := f.clientA()
	cases := []struct {
		err    error
		status int
		name   string
	}{
		{fmt.Errorf("wrapped: %w", hsm.ErrBusy), 429, "ThrottlingException"},
		{hsm.ErrTimeout, 503, "DependencyTimeoutException"},
		{hsm.ErrUnavailable, 500, "InternalException"},
		{hsm.ErrKeyNotFound, 500, "InternalException"},
		{errors.New("CKR_FUNCTION_FAILED"), 500, "InternalException"},
	}
	for _, tc := range cases {
		faulty.set(tc.err, 0)
		_, err := c.Encrypt("k1", &xksclient.EncryptRequest{RequestMetadata: metadata("Encrypt"), Plaintext: []byte("p")})
		wantXKSError(t, err, tc.status, tc.name)
	}
	if strings.Contains(f.logs.String(), "CKR_FUNCTION_FAILED") == false {
		t.Fatal("the HSM's own error is not in the log")
	}

	// Over MaxInFlight, a request is throttled at once instead of queueing.
	faulty.set(nil, 500*time.Millisecond)
	done := make(chan error, 1)
	go func() {
		_, err := c.Encrypt("k1", &xksclient.EncryptRequest{RequestMetadata: metadata("Encrypt"), Plaintext: []byte("slow")})
		done <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	var throttled bool
	for time.Now().Before(deadline) && !throttled {
		_, err := c.Metadata("k1", metadata("DescribeKey"))
		if xe, ok := err.(*xksclient.Error); ok && xe.Name == "ThrottlingException" && xe.Status == 429 {
			throttled = true
		}
	}
	if !throttled {
		t.Fatal("no ThrottlingException while the only in-flight slot was taken")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	faulty.set(nil, 0)
	if err := c.RoundTrip("k1", metadata("Encrypt"), []byte("after"), nil); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestHSMRecoversWithoutRestart(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	c := f.clientA()
	if err := c.RoundTrip("k1", metadata("Encrypt"), []byte("before"), nil); err != nil {
		t.Fatal(err)
	}

	// Every session of this process closed under the node.
	p := pkcs11.New(testModule)
	if err := p.Initialize(); err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
		t.Fatal(err)
	}
	slots, err := p.GetSlotList(true)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	for _, s := range slots {
		info, err := p.GetTokenInfo(s)
		if err == nil && strings.TrimSpace(info.Label) == testToken {
			if err := p.CloseAllSessions(s); err != nil {
				t.Fatal(err)
			}
			closed = true
		}
	}
	if !closed {
		t.Fatal("test token not found")
	}
	if err := c.RoundTrip("k1", metadata("Encrypt"), []byte("after C_CloseAllSessions"), nil); err != nil {
		t.Fatalf("first request after C_CloseAllSessions: %v", err)
	}

	// The token disappears: not ready, health UNAVAILABLE, crypto refused.
	tokenPath := testTokenPath(t)
	aside := filepath.Join(filepath.Dir(tokenDir), "token-aside")
	if err := os.Rename(tokenPath, aside); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if !restored {
			os.Rename(aside, tokenPath)
			restored = true
		}
	}
	t.Cleanup(restore)
	ready := func() int {
		status, _ := getJSON(t, http.DefaultClient, "http://"+f.health+"/ready")
		return status
	}
	waitFor(t, "/ready to turn 503 after the token was removed", 15*time.Second, func() bool { return ready() == 503 })
	h, err := c.Health(xksclient.RequestMetadata{KMSRequestID: "h", KMSOperation: "KmsHealthCheck"})
	if err != nil || h.Fleet[0].HealthStatus != "UNAVAILABLE" {
		t.Fatalf("health with the token gone: %+v %v", h, err)
	}
	_, err = c.Encrypt("k1", &xksclient.EncryptRequest{RequestMetadata: metadata("Encrypt"), Plaintext: []byte("p")})
	if xe, ok := err.(*xksclient.Error); !ok || xe.Status < 500 {
		t.Fatalf("encrypt with the token gone: %v", err)
	}

	// It comes back: the node recovers by itself.
	restore()
	waitFor(t, "/ready to turn 200 after the token came back", 15*time.Second, func() bool { return ready() == 200 })
	waitFor(t, "a round trip to succeed after the token came back", 15*time.Second, func() bool {
		return c.RoundTrip("k1", metadata("Encrypt"), []byte("recovered"), nil) == nil
	})
	h, err = c.Health(xksclient.RequestMetadata{KMSRequestID: "h", KMSOperation: "KmsHealthCheck"})
	if err != nil || h.Fleet[0].HealthStatus != "ACTIVE" {
		t.Fatalf("health after recovery: %+v %v", h, err)
	}
}

// A node short of CPU turns crypto requests away with 429 at once, keeps
// answering GetHealthStatus, and serves again as soon as the wait drops.
func TestShedsOnCPUWait(t *testing.T) {
	var wait atomic.Int64
	f := newFixture(t, fixtureOptions{overloadWait: 100 * time.Millisecond, cpuWait: func() time.Duration { return time.Duration(wait.Load()) }})
	c := f.clientA()
	wait.Store(int64(time.Second))
	md := metadata("Encrypt")
	_, err := c.Encrypt("k1", &xksclient.EncryptRequest{RequestMetadata: md, Plaintext: []byte("p")})
	wantXKSError(t, err, 429, "ThrottlingException")
	if _, err := c.Health(metadata("")); err != nil {
		t.Fatalf("GetHealthStatus while shedding: %v", err)
	}
	// Shed before its body was decoded, it is still logged with what
	// finds it in CloudTrail.
	line := f.logs.Line(md.KMSRequestID)
	for _, want := range []string{"overloaded", `"principal":"` + md.AWSPrincipalARN + `"`, `"kmsOperation":"Encrypt"`} {
		if !strings.Contains(line, want) {
			t.Errorf("the shed request's log line lacks %s: %s", want, line)
		}
	}
	wait.Store(int64(time.Millisecond))
	if err := c.RoundTrip("k1", metadata("Encrypt"), []byte("after"), nil); err != nil {
		t.Fatal(err)
	}
}

// A draining node fails /ready, so that a load balancer takes it out of
// rotation, and keeps serving, asking each client to reconnect elsewhere.
func TestDrainFailsReadyAndClosesConnections(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	f.server.Drain()
	if status, body := getJSON(t, http.DefaultClient, "http://"+f.health+"/ready"); status != 503 || !strings.Contains(fmt.Sprint(body["reason"]), "draining") {
		t.Fatalf("/ready while draining: %d %v", status, body)
	}
	tlsClient, err := xksclient.NewHTTPClient(f.caFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := f.clientA()
	c.HTTP = tlsClient
	if err := c.RoundTrip("k1", metadata("Encrypt"), []byte("still served"), nil); err != nil {
		t.Fatalf("a request while draining: %v", err)
	}
	resp, err := tlsClient.Get("https://" + f.addr + "/ping")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !resp.Close {
		t.Error("an answer while draining does not close its connection")
	}
}

// testTokenPath is the SoftHSMv2 directory of testToken: its token.object
// holds the label, blank padded to 32 bytes (secondToken's starts the same).
func testTokenPath(t *testing.T) string {
	t.Helper()
	entries, err := os.ReadDir(tokenDir)
	if err != nil {
		t.Fatal(err)
	}
	padded := []byte(testToken + strings.Repeat(" ", 32-len(testToken)))
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(tokenDir, e.Name(), "token.object"))
		if err == nil && bytes.Contains(b, padded) {
			return filepath.Join(tokenDir, e.Name())
		}
	}
	t.Fatalf("no directory in %s holds token %q", tokenDir, testToken)
	return ""
}

// A flood of shed requests logs at most the burst of throttled lines (ten
// seconds at ten a second), the first line after the flood says how many
// were dropped, and the shed counter counts them all.
func TestThrottledLogLinesAreRateLimited(t *testing.T) {
	now := time.Now()
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	var wait atomic.Int64
	wait.Store(int64(time.Second))
	f := newFixture(t, fixtureOptions{now: clock, overloadWait: 100 * time.Millisecond, cpuWait: func() time.Duration { return time.Duration(wait.Load()) }})
	c := f.clientA()
	for i := range 130 {
		md := metadata("Encrypt")
		md.KMSRequestID = fmt.Sprintf("shed-%d", i)
		_, err := c.Encrypt("k1", &xksclient.EncryptRequest{RequestMetadata: md, Plaintext: []byte("p")})
		wantXKSError(t, err, 429, "ThrottlingException")
	}
	if n := strings.Count(f.logs.String(), `"kmsRequestId":"shed-`); n != 100 {
		t.Fatalf("130 shed requests logged %d lines, want the burst of 100", n)
	}
	mu.Lock()
	now = now.Add(time.Second)
	mu.Unlock()
	md := metadata("Encrypt")
	_, err := c.Encrypt("k1", &xksclient.EncryptRequest{RequestMetadata: md, Plaintext: []byte("p")})
	wantXKSError(t, err, 429, "ThrottlingException")
	line := f.logs.Line(md.KMSRequestID)
	if !strings.Contains(line, `"dropped":30`) || !strings.Contains(line, `"principal":"`+md.AWSPrincipalARN+`"`) {
		t.Fatalf("the first shed line after the flood: %s; want dropped 30 and the principal", line)
	}
	_, m := testmetrics.Scrape(t, "http://"+f.health+"/metrics")
	if got := m.Value(t, "xksproxy_requests_shed_total", "reason", "cpu"); got != 131 {
		t.Errorf(`xksproxy_requests_shed_total{reason="cpu"} = %v, want 131`, got)
	}
	wait.Store(int64(time.Millisecond))
	md = metadata("Encrypt")
	if err := c.RoundTrip("k1", md, []byte("after"), nil); err != nil {
		t.Fatal(err)
	}
	if f.logs.Line(md.KMSRequestID) == "" {
		t.Fatal("a served request after the flood was not logged")
	}
}
