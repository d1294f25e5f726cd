package xksapi_test

import (
	"encoding/json"
	"io"
	"net"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"

	"github.com/xksproxy/xksproxy/fsm"
	"github.com/xksproxy/xksproxy/hsm"
	"github.com/xksproxy/xksproxy/xksapi"
	"github.com/xksproxy/xksproxy/xksclient"
)

// signedEncrypt builds one signed Encrypt request (32-byte plaintext, 64-byte
// AAD) for key store a's key k1, signed at at.
func signedEncrypt(b testing.TB, cred fsm.Credential, at time.Time) (path string, header map[string]string, body []byte) {
	body, err := json.Marshal(xksclient.EncryptRequest{RequestMetadata: metadata("Encrypt"), Plaintext: make([]byte, 32), AAD: make([]byte, 64), Algorithm: "AES_GCM"})
	if err != nil {
		b.Fatal(err)
	}
	path = "/a/kms/xks/v1/keys/k1/encrypt"
	amzDate, auth := xksclient.Credentials{AccessKeyID: cred.AccessKeyID, Secret: string(cred.Secret), Region: "us-east-1"}.Sign("xks.example.com", path, body, at)
	return path, map[string]string{"Host": "xks.example.com", "X-Amz-Date": amzDate, "Authorization": auth, "Content-Type": "application/json"}, body
}

// nullHSM answers instantly, to measure everything but the HSM.
type nullHSM struct{ *hsm.HSM }

func (nullHSM) EncryptGCM(_ string, _, pt, _ []byte) ([]byte, []byte, error) {
	return make([]byte, len(pt)), make([]byte, 16), nil
}

// encryptOnce prepares one signed Encrypt and returns a function that runs
// it through the handler without sockets, failing unless it answers 200.
func encryptOnce(tb testing.TB, h xksapi.HSM, log zerolog.Logger) func() {
	return encryptOnceAnswering(tb, h, log, xksapi.Config{}, 200)
}

// encryptOnceAnswering is encryptOnce with the server built from cfg,
// failing unless the handler answers status.
func encryptOnceAnswering(tb testing.TB, h xksapi.HSM, log zerolog.Logger, cfg xksapi.Config, status int) func() {
	f := newFixture(tb, fixtureOptions{})
	at := time.Now()
	cfg.Now = func() time.Time { return at }
	s := xksapi.New(cfg, f.views, h, log)
	path, header, body := signedEncrypt(tb, f.credsA[0], at)
	handler := s.Handler()
	var ctx fasthttp.RequestCtx
	ctx.Init(&fasthttp.Request{}, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}, nil)
	return func() {
		ctx.Request.Reset()
		ctx.Response.Reset()
		ctx.Request.Header.SetMethod("POST")
		ctx.Request.SetRequestURI(path)
		for k, v := range header {
			ctx.Request.Header.Set(k, v)
		}
		ctx.Request.SetBody(body)
		handler(&ctx)
		if ctx.Response.StatusCode() != status {
			tb.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
		}
	}
}

// BenchmarkShedHandler is one Encrypt refused by the CPU-wait shedder,
// through the handler without sockets or TLS, with the log written as a
// node writes it (JSON, to a discarding writer): what a refusal costs in
// the proxy's own code (routing, SigV4, the refusal, its log line).
func BenchmarkShedHandler(b *testing.B) {
	cfg := xksapi.Config{OverloadWait: 100 * time.Millisecond, CPUWait: func() time.Duration { return time.Second }}
	run := encryptOnceAnswering(b, nullHSM{testHSM}, zerolog.New(io.Discard).With().Timestamp().Logger(), cfg, 429)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		run()
	}
}

func benchHandler(b *testing.B, h xksapi.HSM, log zerolog.Logger) {
	run := encryptOnce(b, h, log)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		run()
	}
}

// TestEncryptAllocations pins the proxy's own allocations per Encrypt
// (routing, SigV4, JSON, authorization, response, log line): the decoded
// binary fields, the IV, the metadata and the AAD buffer. A change that
// adds garbage to the hot path fails here, not in a load test.
func TestEncryptAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own")
	}
	run := encryptOnce(t, nullHSM{testHSM}, zerolog.New(io.Discard))
	if got := testing.AllocsPerRun(200, run); got > 12 {
		t.Fatalf("%.1f allocations per Encrypt, want at most 12", got)
	}
}

// BenchmarkEncryptHandler is one Encrypt through routing, SigV4, JSON,
// authorization, the HSM call and the log line, without sockets or TLS.
func BenchmarkEncryptHandler(b *testing.B) { benchHandler(b, testHSM, zerolog.New(io.Discard)) }

// BenchmarkEncryptHandlerNoHSM is the same with an instant HSM: the proxy's
// own cost per request.
func BenchmarkEncryptHandlerNoHSM(b *testing.B) {
	benchHandler(b, nullHSM{testHSM}, zerolog.New(io.Discard))
}

func (nullHSM) DecryptGCM(_ string, _, ct, _, _ []byte) ([]byte, error) {
	return make([]byte, len(ct)), nil
}

// decryptOnce is encryptOnce for a Decrypt of key k1 (no legacy format)
// with this proxy's metadata for version 2.
func decryptOnce(tb testing.TB, h xksapi.HSM) func() {
	f := newFixture(tb, fixtureOptions{})
	at := time.Now()
	s := xksapi.New(xksapi.Config{Now: func() time.Time { return at }}, f.views, h, zerolog.New(io.Discard))
	body, err := json.Marshal(xksclient.DecryptRequest{RequestMetadata: metadata("Decrypt"), Ciphertext: make([]byte, 32),
		CiphertextMetadata: []byte{1, 0, 0, 0, 2}, AAD: make([]byte, 64), IV: make([]byte, 12), Tag: make([]byte, 16), Algorithm: "AES_GCM"})
	if err != nil {
		tb.Fatal(err)
	}
	path := "/a/kms/xks/v1/keys/k1/decrypt"
	cred := f.credsA[0]
	amzDate, auth := xksclient.Credentials{AccessKeyID: cred.AccessKeyID, Secret: string(cred.Secret), Region: "us-east-1"}.Sign("xks.example.com", path, body, at)
	handler := s.Handler()
	var ctx fasthttp.RequestCtx
	ctx.Init(&fasthttp.Request{}, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}, nil)
	return func() {
		ctx.Request.Reset()
		ctx.Response.Reset()
		ctx.Request.Header.SetMethod("POST")
		ctx.Request.SetRequestURI(path)
		ctx.Request.Header.Set("Host", "xks.example.com")
		ctx.Request.Header.Set("X-Amz-Date", amzDate)
		ctx.Request.Header.Set("Authorization", auth)
		ctx.Request.Header.Set("Content-Type", "application/json")
		ctx.Request.SetBody(body)
		handler(&ctx)
		if ctx.Response.StatusCode() != 200 {
			tb.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
		}
	}
}

// TestDecryptAllocations pins the proxy's own allocations per Decrypt of a
// key without a legacy format: telling the two formats apart costs such a
// key nothing.
func TestDecryptAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own")
	}
	run := decryptOnce(t, nullHSM{testHSM})
	if got := testing.AllocsPerRun(200, run); got > 11 {
		t.Fatalf("%.1f allocations per Decrypt, want at most 11", got)
	}
}

// BenchmarkDecryptHandlerNoHSM is one Decrypt through the handler with an
// instant HSM: the proxy's own cost, format choice included.
func BenchmarkDecryptHandlerNoHSM(b *testing.B) {
	run := decryptOnce(b, nullHSM{testHSM})
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		run()
	}
}
