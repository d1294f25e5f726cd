package sigv4

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestConcurrentVerify runs 64 goroutines over two credentials sharing one
// Verifier (run it with -race). Each goroutine also checks that a request
// signed with the other secret fails: a cache keyed without the secret would
// let one credential's key verify the other's requests.
func TestConcurrentVerify(t *testing.T) {
	v := NewVerifier()
	secrets := []string{testSecret, otherSecret}
	type signedReq struct {
		req  Request
		auth Authorization
	}
	reqs := make([]signedReq, len(secrets))
	for i, secret := range secrets {
		s := Signer{AccessKeyID: testAKID, Secret: []byte(secret), Region: testRegion}
		authz, amz, err := s.Sign("POST", testPath, testHost, testBody, testTime)
		if err != nil {
			t.Fatal(err)
		}
		auth, err := ParseAuthorization([]byte(authz))
		if err != nil {
			t.Fatal(err)
		}
		reqs[i] = signedReq{
			req:  Request{Method: []byte("POST"), RawPath: []byte(testPath), Body: testBody, Header: newHeaders("host", testHost, "x-amz-date", amz)},
			auth: auth,
		}
	}
	const goroutines, rounds = 64, 200
	errs := make(chan error, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			mine, theirs := g%2, 1-g%2
			for i := range rounds {
				now := testTime.Add(time.Duration(i) * time.Second)
				if err := v.Verify(&reqs[mine].req, &reqs[mine].auth, []byte(secrets[mine]), testRegion, now); err != nil {
					errs <- fmt.Errorf("goroutine %d round %d: %w", g, i, err)
					return
				}
				if err := v.Verify(&reqs[theirs].req, &reqs[theirs].auth, []byte(secrets[mine]), testRegion, now); err == nil {
					errs <- fmt.Errorf("goroutine %d round %d: the other credential's request verified", g, i)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := v.cache.len(); n != 2 {
		t.Fatalf("cache holds %d keys, want 2 (one per secret)", n)
	}
}

// TestCacheDropsExpiredDates moves the clock across days and checks that
// keys for dates outside the skew window are dropped.
func TestCacheDropsExpiredDates(t *testing.T) {
	v := NewVerifier()
	verifyAt := func(at time.Time, secret string) {
		t.Helper()
		s := Signer{AccessKeyID: testAKID, Secret: []byte(secret), Region: testRegion}
		authz, amz, err := s.Sign("POST", testPath, testHost, testBody, at)
		if err != nil {
			t.Fatal(err)
		}
		auth, _ := ParseAuthorization([]byte(authz))
		req := Request{Method: []byte("POST"), RawPath: []byte(testPath), Body: testBody,
			Header: newHeaders("host", testHost, "x-amz-date", amz)}
		wantErr(t, v.Verify(&req, &auth, []byte(secret), testRegion, at), nil)
	}
	day := time.Date(2026, 11, 10, 0, 0, 0, 0, time.UTC)
	for d := range 10 {
		verifyAt(day.AddDate(0, 0, d).Add(12*time.Hour), testSecret)
		verifyAt(day.AddDate(0, 0, d).Add(12*time.Hour), otherSecret)
		if n := v.cache.len(); n != 2 {
			t.Fatalf("day %d: cache holds %d keys, want 2", d, n)
		}
	}
	// Just after midnight the previous date is still inside the window
	// (a request signed at 23:58 is valid until 00:03), so both stay.
	midnight := day.AddDate(0, 0, 20)
	verifyAt(midnight.Add(-2*time.Minute), testSecret)
	verifyAt(midnight.Add(2*time.Minute), testSecret)
	if n := v.cache.len(); n != 2 {
		t.Fatalf("around midnight: cache holds %d keys, want 2", n)
	}
	verifyAt(midnight.Add(10*time.Minute), otherSecret)
	if n := v.cache.len(); n != 2 {
		t.Fatalf("after the window: cache holds %d keys, want 2", n)
	}
}

// TestCacheCap checks that MaxCachedKeys bounds the cache even when every
// entry is current, and that verification stays correct when it churns.
func TestCacheCap(t *testing.T) {
	v := &Verifier{MaxCachedKeys: 4}
	for i := range 50 {
		secret := fmt.Sprintf("%s%03d", testSecret[:40], i)
		s := Signer{AccessKeyID: testAKID, Secret: []byte(secret), Region: testRegion}
		authz, amz, err := s.Sign("POST", testPath, testHost, testBody, testTime)
		if err != nil {
			t.Fatal(err)
		}
		auth, _ := ParseAuthorization([]byte(authz))
		req := Request{Method: []byte("POST"), RawPath: []byte(testPath), Body: testBody,
			Header: newHeaders("host", testHost, "x-amz-date", amz)}
		wantErr(t, v.Verify(&req, &auth, []byte(secret), testRegion, testTime), nil)
		wantErr(t, v.Verify(&req, &auth, []byte(testSecret), testRegion, testTime), ErrSignature)
		if n := v.cache.len(); n > 4 {
			t.Fatalf("after %d secrets the cache holds %d keys, cap 4", i+1, n)
		}
	}
}

// TestCacheIDUnambiguous checks that moving bytes between region, service
// and secret changes the cache key.
func TestCacheIDUnambiguous(t *testing.T) {
	a := appendCacheID(nil, []byte("1secret"), &scope{date: []byte("20261110"), region: []byte("r"), service: []byte("s")})
	b := appendCacheID(nil, []byte("secret"), &scope{date: []byte("20261110"), region: []byte("r"), service: []byte("s1")})
	if string(a) == string(b) {
		t.Fatal("different scopes share a cache key")
	}
}
