package sigv4

import (
	"testing"
)

// benchFixture is a request as AWS KMS sends it: host;x-amz-date signed, a
// ~600-byte body. The headers hold []byte values so that the HeaderSource
// itself costs no allocations, as with fasthttp.
func benchFixture(b testing.TB) *fixture {
	f := newFixture(b, testTime, testBody, nil)
	if len(testBody) < 550 || len(testBody) > 650 {
		b.Fatalf("body is %d bytes, want about 600", len(testBody))
	}
	return f
}

func BenchmarkVerifyCached(b *testing.B) {
	f := benchFixture(b)
	v := NewVerifier()
	secret := []byte(testSecret)
	if err := v.Verify(&f.req, &f.auth, secret, testRegion, testTime); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(f.req.Body)))
	for b.Loop() {
		if err := v.Verify(&f.req, &f.auth, secret, testRegion, testTime); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyUncached derives the signing key on every call: a fresh
// Verifier per request is the worst case of a cold cache.
func BenchmarkVerifyUncached(b *testing.B) {
	f := benchFixture(b)
	secret := []byte(testSecret)
	b.ReportAllocs()
	b.SetBytes(int64(len(f.req.Body)))
	for b.Loop() {
		if err := new(Verifier).Verify(&f.req, &f.auth, secret, testRegion, testTime); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyCachedParallel(b *testing.B) {
	f := benchFixture(b)
	v := NewVerifier()
	secret := []byte(testSecret)
	b.ReportAllocs()
	b.SetBytes(int64(len(f.req.Body)))
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := v.Verify(&f.req, &f.auth, secret, testRegion, testTime); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkParseAuthorization(b *testing.B) {
	h := []byte(specAuth)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseAuthorization(h); err != nil {
			b.Fatal(err)
		}
	}
}

// TestVerifyCachedAllocations pins the hot path's allocation count, so a
// change that starts allocating per request fails here rather than in a
// load test.
func TestVerifyCachedAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector")
	}
	f := benchFixture(t)
	v := NewVerifier()
	secret := []byte(testSecret)
	var err error
	allocs := testing.AllocsPerRun(200, func() {
		err = v.Verify(&f.req, &f.auth, secret, testRegion, testTime)
	})
	if err != nil {
		t.Fatal(err)
	}
	if allocs != 0 {
		t.Fatalf("cached Verify allocates %.1f times per call, want 0", allocs)
	}
	h := []byte(specAuth)
	if allocs := testing.AllocsPerRun(200, func() { _, err = ParseAuthorization(h) }); allocs != 0 || err != nil {
		t.Fatalf("ParseAuthorization allocates %.1f times per call (err %v), want 0", allocs, err)
	}
}
