package xksclient

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

var testCreds = Credentials{AccessKeyID: "AKIDEXAMPLE", Secret: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", Region: "us-east-1"}

// TestSignKnownAnswers pins the signatures that the signer produced when
// the server's curl tests (xksapi) last vouched for it, so that making it
// faster cannot change what it signs.
func TestSignKnownAnswers(t *testing.T) {
	cases := []struct {
		host, path string
		body       []byte
		at         time.Time
		date, sig  string
	}{
		{"127.0.0.1:8443", "/demo/kms/xks/v1/keys/demo-key/encrypt",
			[]byte(`{"requestMetadata":{"kmsOperation":"Encrypt","kmsRequestId":"kat-1"},"plaintext":"SGVsbG8gV29ybGQh","encryptionAlgorithm":"AES_GCM"}`),
			time.Date(2026, 11, 23, 23, 59, 59, 0, time.UTC),
			"20261123T235959Z", "977abf63f3a306b4958ddcd31ff18cd5fb55ee8a5c6f2f9ac38c821304136d85"},
		// Signed in UTC whatever the zone of the time given.
		{"xks.example.com", "/kms/xks/v1/health", nil,
			time.Date(2026, 11, 24, 0, 0, 0, 0, time.FixedZone("UTC+1", 3600)),
			"20261123T230000Z", "26f846a527d1c21ff80a782f06336ac20dc8a48c62c16037606c6334c5852fc8"},
	}
	signer := NewSigner(testCreds)
	for _, c := range cases {
		wantAuth := "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/" + c.date[:8] + "/us-east-1/kms-xks-proxy/aws4_request, SignedHeaders=host;x-amz-date, Signature=" + c.sig
		for name, sign := range map[string]func(string, string, []byte, time.Time) (string, string){
			"Credentials.Sign": testCreds.Sign, "Signer.Sign": signer.Sign,
		} {
			date, auth := sign(c.host, c.path, c.body, c.at)
			if date != c.date || auth != wantAuth {
				t.Errorf("%s(%s) = %s, %s; want %s, %s", name, c.path, date, auth, c.date, wantAuth)
			}
		}
	}
}

// TestSignerMatchesUncached checks the cached signing key against deriving
// it every time, across midnights (the cache must follow the day, back and
// forth) and from concurrent goroutines.
func TestSignerMatchesUncached(t *testing.T) {
	signer := NewSigner(testCreds)
	midnight := time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for i := range 500 {
				at := midnight.Add(time.Duration(rng.IntN(4*3600)-2*3600) * time.Second)
				body := make([]byte, rng.IntN(300))
				for j := range body {
					body[j] = byte(rng.Uint32())
				}
				path := fmt.Sprintf("/p%d/kms/xks/v1/keys/k%d/encrypt", g, i)
				d1, a1 := signer.Sign("127.0.0.1:8443", path, body, at)
				d2, a2 := testCreds.Sign("127.0.0.1:8443", path, body, at)
				if d1 != d2 || a1 != a2 {
					t.Errorf("at %s: cached %s %s, uncached %s %s", at, d1, a1, d2, a2)
					return
				}
			}
		})
	}
	wg.Wait()
	// A different secret or region is a different key.
	other := testCreds
	other.Region = "eu-west-1"
	if _, a := NewSigner(other).Sign("h", "/p", nil, midnight); a == func() string { _, a := signer.Sign("h", "/p", nil, midnight); return a }() {
		t.Error("the region does not change the signature")
	}
}

func BenchmarkSign(b *testing.B) {
	body := make([]byte, 300)
	at := time.Now()
	b.Run("uncached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			testCreds.Sign("127.0.0.1:8443", "/demo/kms/xks/v1/keys/demo-key/encrypt", body, at)
		}
	})
	b.Run("signer", func(b *testing.B) {
		s := NewSigner(testCreds)
		b.ReportAllocs()
		for b.Loop() {
			s.Sign("127.0.0.1:8443", "/demo/kms/xks/v1/keys/demo-key/encrypt", body, at)
		}
	})
}
