package xksapi_test

import (
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/xksproxy/xksproxy/fsm"
	"github.com/xksproxy/xksproxy/xksclient"
)

// notReadyDetail is what a cluster's readiness error says about a node that
// is catching up: other key stores' key ids and HSM labels, for our log only.
const notReadyDetail = "2 key version(s) are not in this node's HSM, first other-store/secret-key-id v1 (shared label secret-hsm-label)"

// A node that cannot serve yet — restarting with an empty view, catching up
// — answers every XKS operation, GetHealthStatus included, with 500
// InternalException, which AWS KMS retries; never 404 InvalidUriPathException,
// which KMS reads as a configuration error. What it tells KMS and the load
// balancer names no key or label; the log has the detail.
func TestNotReadyAnswersRetryableErrors(t *testing.T) {
	var notReady atomic.Bool
	notReady.Store(true)
	f := newFixture(t, fixtureOptions{ready: func() error {
		if notReady.Load() {
			return errors.New(notReadyDetail)
		}
		return nil
	}})
	c := f.clientA()
	check := func(what string) {
		t.Helper()
		md := metadata("Encrypt")
		md.KMSRequestID = "not-ready-" + strings.ReplaceAll(what, " ", "-")
		calls := map[string]error{}
		_, calls["encrypt"] = c.Encrypt("k1", &xksclient.EncryptRequest{RequestMetadata: md, Plaintext: []byte("p")})
		_, calls["decrypt"] = c.Decrypt("k1", &xksclient.DecryptRequest{RequestMetadata: md, Ciphertext: []byte("c"),
			CiphertextMetadata: []byte{1, 0, 0, 0, 1}, IV: make([]byte, 12), Tag: make([]byte, 16)})
		_, calls["metadata"] = c.Metadata("k1", md)
		_, calls["health"] = c.Health(md)
		for op, err := range calls {
			xe, ok := err.(*xksclient.Error)
			if !ok || xe.Status != 500 || xe.Name != "InternalException" {
				t.Errorf("%s, %s: want 500 InternalException, got %v", what, op, err)
				continue
			}
			for _, leak := range []string{"secret-key-id", "secret-hsm-label", "other-store"} {
				if strings.Contains(xe.Message, leak) {
					t.Errorf("%s, %s: the error message names %q: %s", what, op, leak, xe.Message)
				}
			}
		}
		if line := f.logs.Line(md.KMSRequestID); !strings.Contains(line, "secret-hsm-label") {
			t.Errorf("%s: the log line lacks the readiness detail: %s", what, line)
		}
	}
	check("store known")

	// Restarting: the view has not caught up yet and lacks the key store.
	v, err := fsm.Build(1, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.views.Publish(v)
	check("empty view")

	status, body := getJSON(t, http.DefaultClient, "http://"+f.health+"/ready")
	if status != 503 || body["ready"] != false || body["reason"] == "" {
		t.Fatalf("/ready while not ready: %d %v", status, body)
	}
	if r := body["reason"].(string); strings.Contains(r, "secret") || strings.Contains(r, "other-store") {
		t.Fatalf("/ready names a key or label: %q", r)
	}
	if !strings.Contains(f.logs.String(), "secret-hsm-label") {
		t.Fatal("the log lacks why the node is not ready")
	}

	// Caught up: it serves.
	notReady.Store(false)
	f.publish()
	if err := c.RoundTrip("k1", metadata("Encrypt"), []byte("served"), nil); err != nil {
		t.Fatal(err)
	}
}
