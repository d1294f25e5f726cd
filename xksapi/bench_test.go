package xksapi_test

import (
	"encoding/json"
	"io"
	"net"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"

	"github.com/xksproxy/xksproxy/bench/xksclient"
	"github.com/xksproxy/xksproxy/fsm"
	"github.com/xksproxy/xksproxy/hsm"
	"github.com/xksproxy/xksproxy/xksapi"
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

func benchHandler(b *testing.B, h xksapi.HSM, log zerolog.Logger) {
	f := newFixture(b, fixtureOptions{})
	at := time.Now()
	s := xksapi.New(xksapi.Config{Now: func() time.Time { return at }}, f.views, h, log)
	path, header, body := signedEncrypt(b, f.credsA[0], at)
	handler := s.Handler()
	var ctx fasthttp.RequestCtx
	ctx.Init(&fasthttp.Request{}, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}, nil)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		ctx.Request.Reset()
		ctx.Response.Reset()
		ctx.Request.Header.SetMethod("POST")
		ctx.Request.SetRequestURI(path)
		for k, v := range header {
			ctx.Request.Header.Set(k, v)
		}
		ctx.Request.SetBody(body)
		handler(&ctx)
		if ctx.Response.StatusCode() != 200 {
			b.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
		}
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
