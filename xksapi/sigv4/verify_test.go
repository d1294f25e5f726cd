package sigv4

import (
	"encoding/hex"
	"strings"
	"testing"
	"time"
)

func TestVerifyAcceptsSignedRequests(t *testing.T) {
	for _, tc := range []struct {
		name  string
		extra map[string]string
	}{
		{"host and x-amz-date, as AWS KMS signs", nil},
		{"content-type too, as curl signs", map[string]string{"content-type": "application/json"}},
		{"x-amz-content-sha256 with the body hash", map[string]string{"x-amz-content-sha256": bodyHash(testBody)}},
		{"x-amz-content-sha256 UNSIGNED-PAYLOAD, body still hashed",
			map[string]string{"x-amz-content-sha256": "UNSIGNED-PAYLOAD"}},
		{"a header name that needs no known-name shortcut", map[string]string{"x-custom-thing": "v"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, testTime, testBody, tc.extra)
			wantErr(t, NewVerifier().Verify(&f.req, &f.auth, []byte(testSecret), testRegion, testTime), nil)
			// Without PeekAll the verifier takes the first (only) value.
			f.req.Header = peekOnly{f.hdr}
			wantErr(t, NewVerifier().Verify(&f.req, &f.auth, []byte(testSecret), testRegion, testTime), nil)
		})
	}
}

func TestVerifyEmptyBody(t *testing.T) {
	f := newFixture(t, testTime, nil, nil)
	wantErr(t, NewVerifier().Verify(&f.req, &f.auth, []byte(testSecret), testRegion, testTime), nil)
}

func TestSignerRoundTrip(t *testing.T) {
	s := Signer{AccessKeyID: testAKID, Secret: []byte(testSecret), Region: testRegion}
	authz, amz, err := s.Sign("POST", testPath, testHost, testBody, testTime)
	if err != nil {
		t.Fatal(err)
	}
	// The signer must agree with the independent reference signer.
	ref := refSign("POST", testPath, "", map[string]string{"host": testHost, "x-amz-date": amz},
		[]string{"host", "x-amz-date"}, bodyHash(testBody), testSecret, amz, testRegion, Service)
	if !strings.HasSuffix(authz, "Signature="+ref) {
		t.Fatalf("Signer produced %q, reference signature %s", authz, ref)
	}
	auth, err := ParseAuthorization([]byte(authz))
	if err != nil {
		t.Fatal(err)
	}
	req := Request{Method: []byte("POST"), RawPath: []byte(testPath), Body: testBody,
		Header: newHeaders("Host", testHost, "X-Amz-Date", amz)}
	wantErr(t, NewVerifier().Verify(&req, &auth, []byte(testSecret), testRegion, testTime), nil)

	if _, _, err := s.Sign("POST", "/a//b", testHost, nil, testTime); err == nil {
		t.Fatal("Signer signed a path the verifier refuses")
	}
}

// TestClockSkew checks both directions just inside and just outside the
// 5-minute window. The request time is fixed and the server clock moves, so
// the scope date never changes.
func TestClockSkew(t *testing.T) {
	f := newFixture(t, testTime, testBody, nil)
	for _, tc := range []struct {
		offset time.Duration
		want   error
	}{
		{0, nil},
		{4*time.Minute + 59*time.Second, nil},
		{-(4*time.Minute + 59*time.Second), nil},
		{5 * time.Minute, nil},
		{-5 * time.Minute, nil},
		{5*time.Minute + time.Second, ErrClockSkew},
		{-(5*time.Minute + time.Second), ErrClockSkew},
		{24 * time.Hour, ErrClockSkew},
	} {
		t.Run(tc.offset.String(), func(t *testing.T) {
			err := NewVerifier().Verify(&f.req, &f.auth, []byte(testSecret), testRegion, testTime.Add(tc.offset))
			wantErr(t, err, tc.want)
			if err != nil && !strings.Contains(err.Error(), "is more than 5m0s from server time") {
				t.Fatalf("message %q does not explain the skew", err)
			}
		})
	}
	v := &Verifier{MaxSkew: time.Minute}
	wantErr(t, v.Verify(&f.req, &f.auth, []byte(testSecret), testRegion, testTime.Add(61*time.Second)), ErrClockSkew)
	wantErr(t, v.Verify(&f.req, &f.auth, []byte(testSecret), testRegion, testTime.Add(59*time.Second)), nil)
}

func TestScope(t *testing.T) {
	f := newFixture(t, testTime, testBody, nil)
	v := NewVerifier()
	check := func(name string, mutate func(a *Authorization), region string) {
		t.Run(name, func(t *testing.T) {
			a := f.auth
			mutate(&a)
			err := v.Verify(&f.req, &a, []byte(testSecret), region, testTime)
			wantErr(t, err, ErrScope)
		})
	}
	check("scope date is not the X-Amz-Date date", func(a *Authorization) { a.Date = []byte("20261109") }, testRegion)
	check("wrong region", func(a *Authorization) {}, "eu-west-1")
	check("wrong service", func(a *Authorization) { a.Service = []byte("kms") }, testRegion)
	check("region differs only in case", func(a *Authorization) { a.Region = []byte("US-EAST-1") }, testRegion)

	_, err := ParseAuthorization([]byte(strings.Replace(f.authHdr, "/aws4_request", "/aws5_request", 1)))
	wantErr(t, err, ErrScope)
}

func TestSignedHeaders(t *testing.T) {
	f := newFixture(t, testTime, testBody, map[string]string{"content-type": "application/json"})
	for _, tc := range []struct {
		signed string
		want   error
	}{
		{"content-type;host;x-amz-date", ErrSignature}, // control: well-formed, only the signature is off
		{"content-type;x-amz-date", ErrSignedHeaders},  // no host
		{"content-type;host", ErrSignedHeaders},        // no x-amz-date
		{"host;content-type;x-amz-date", ErrSignedHeaders},
		{"content-type;host;host;x-amz-date", ErrSignedHeaders},
		{"Content-Type;host;x-amz-date", ErrSignedHeaders},
		{"content-type;host;x-amz-date;x-absent", ErrSignedHeaders},
		{"accept;host;x-amz-date", ErrSignedHeaders}, // known name, not sent
	} {
		t.Run(tc.signed, func(t *testing.T) {
			a := f.auth
			a.SignedHeaders = []byte(tc.signed)
			a.Signature = []byte(strings.Repeat("0", 64))
			wantErr(t, NewVerifier().Verify(&f.req, &a, []byte(testSecret), testRegion, testTime), tc.want)
		})
	}
	// ParseAuthorization already refuses what is not a header-name list.
	for _, bad := range []string{"", "host;;x-amz-date", "host;x-amz-date;", "host x-amz-date", "host;x-amz-dat\u00e9"} {
		h := strings.Replace(f.authHdr, "SignedHeaders=content-type;host;x-amz-date", "SignedHeaders="+bad, 1)
		_, err := ParseAuthorization([]byte(h))
		wantErr(t, err, ErrMalformed)
	}
}

func TestSignedHeaderEmptyValueIsAbsent(t *testing.T) {
	f := newFixture(t, testTime, testBody, map[string]string{"x-empty": "v"})
	f.hdr.set("x-empty", "")
	wantErr(t, NewVerifier().Verify(&f.req, &f.auth, []byte(testSecret), testRegion, testTime), ErrSignedHeaders)
}

func TestMissing(t *testing.T) {
	f := newFixture(t, testTime, testBody, nil)
	v := NewVerifier()
	wantErr(t, v.Verify(&f.req, nil, []byte(testSecret), testRegion, testTime), ErrMissing)
	wantErr(t, v.Verify(&f.req, &Authorization{}, []byte(testSecret), testRegion, testTime), ErrMissing)
	wantErr(t, v.Verify(&Request{}, &f.auth, []byte(testSecret), testRegion, testTime), ErrMissing)
	delete(f.hdr, "x-amz-date")
	wantErr(t, v.Verify(&f.req, &f.auth, []byte(testSecret), testRegion, testTime), ErrMissing)
	_, err := ParseAuthorization(nil)
	wantErr(t, err, ErrMissing)
}

func TestMalformedAmzDate(t *testing.T) {
	for _, d := range []string{
		"20261110T123045", "20261110T123045z", "20261110t123045Z", "2026-11-10T12:30:45Z",
		"20261310T123045Z", "20261100T123045Z", "20260230T123045Z", "20261110T243045Z",
		"20261110T126045Z", "20261110T123060Z", " 20261110T123045Z", "20261110T123045Z ",
		"2026111OT123045Z", "+0261110T123045Z",
	} {
		t.Run(d, func(t *testing.T) {
			f := newFixture(t, testTime, testBody, nil)
			f.hdr.set("x-amz-date", d)
			wantErr(t, NewVerifier().Verify(&f.req, &f.auth, []byte(testSecret), testRegion, testTime), ErrMalformed)
		})
	}
	if tm, ok := parseAmzDate([]byte("20240229T235959Z")); !ok || !tm.Equal(time.Date(2024, 2, 29, 23, 59, 59, 0, time.UTC)) {
		t.Fatalf("leap day: %v %v", tm, ok)
	}
}

func TestTamperingFailsSignature(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(f *fixture)
	}{
		{"body byte", func(f *fixture) {
			b := append([]byte(nil), f.req.Body...)
			b[10] ^= 1
			f.req.Body = b
		}},
		{"body truncated", func(f *fixture) { f.req.Body = f.req.Body[:len(f.req.Body)-1] }},
		{"path", func(f *fixture) { f.req.RawPath = []byte("/kms/xks/v1/keys/key-1/decrypt") }},
		{"path case", func(f *fixture) { f.req.RawPath = []byte("/kms/xks/v1/keys/KEY-1/encrypt") }},
		{"method", func(f *fixture) { f.req.Method = []byte("PUT") }},
		{"query added", func(f *fixture) { f.req.Query = []byte("a=b") }},
		{"host", func(f *fixture) { f.hdr.set("host", "xks.example.org") }},
		{"host case", func(f *fixture) { f.hdr.set("host", "XKS.example.com") }},
		{"x-amz-date second", func(f *fixture) { f.hdr.set("x-amz-date", testTime.Add(time.Second).Format(AmzDateFormat)) }},
		{"signed header value", func(f *fixture) { f.hdr.set("content-type", "application/jsom") }},
		{"signature", func(f *fixture) {
			s := []byte(string(f.auth.Signature))
			s[0] = "01"[s[0]&1]
			f.auth.Signature = s
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, testTime, testBody, map[string]string{"content-type": "application/json"})
			tc.mutate(f)
			wantErr(t, NewVerifier().Verify(&f.req, &f.auth, []byte(testSecret), testRegion, testTime), ErrSignature)
		})
	}
	t.Run("secret", func(t *testing.T) {
		f := newFixture(t, testTime, testBody, nil)
		wantErr(t, NewVerifier().Verify(&f.req, &f.auth, []byte(otherSecret), testRegion, testTime), ErrSignature)
	})
}

func TestUnsignedHeadersDoNotMatter(t *testing.T) {
	f := newFixture(t, testTime, testBody, nil)
	f.hdr.set("content-type", "text/plain")
	f.hdr.add("x-extra", "1")
	f.hdr.add("x-extra", "2")
	wantErr(t, NewVerifier().Verify(&f.req, &f.auth, []byte(testSecret), testRegion, testTime), nil)
}

func TestHeaderValueCanonicalisation(t *testing.T) {
	// Signed as "a b c"; sent with extra blanks, which SigV4 trims and
	// collapses, so the signature still holds.
	f := newFixture(t, testTime, testBody, map[string]string{"x-note": "a b c"})
	f.hdr.set("x-note", " \ta   b\t\tc  ")
	wantErr(t, NewVerifier().Verify(&f.req, &f.auth, []byte(testSecret), testRegion, testTime), nil)

	// A newline could forge lines of the canonical request; refuse it.
	f.hdr.set("x-note", "a b\nc")
	wantErr(t, NewVerifier().Verify(&f.req, &f.auth, []byte(testSecret), testRegion, testTime), ErrMalformed)
}

func TestDuplicateSignedHeaders(t *testing.T) {
	for _, name := range []string{"host", "x-amz-date", "content-type"} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, testTime, testBody, map[string]string{"content-type": "application/json"})
			f.hdr.add(name, string(f.hdr.Peek(name)))
			wantErr(t, NewVerifier().Verify(&f.req, &f.auth, []byte(testSecret), testRegion, testTime), ErrMalformed)
			// A source that cannot report repeats sees the first value only.
			f.req.Header = peekOnly{f.hdr}
			wantErr(t, NewVerifier().Verify(&f.req, &f.auth, []byte(testSecret), testRegion, testTime), nil)
		})
	}
}

func TestContentSHA256(t *testing.T) {
	t.Run("hash of another body", func(t *testing.T) {
		f := newFixture(t, testTime, testBody, map[string]string{"x-amz-content-sha256": bodyHash([]byte("other"))})
		err := NewVerifier().Verify(&f.req, &f.auth, []byte(testSecret), testRegion, testTime)
		wantErr(t, err, ErrSignature)
		if !strings.Contains(err.Error(), "x-amz-content-sha256") {
			t.Fatalf("message %q does not name the header", err)
		}
	})
	t.Run("uppercase hash", func(t *testing.T) {
		f := newFixture(t, testTime, testBody, map[string]string{"x-amz-content-sha256": strings.ToUpper(bodyHash(testBody))})
		wantErr(t, NewVerifier().Verify(&f.req, &f.auth, []byte(testSecret), testRegion, testTime), ErrSignature)
	})
	t.Run("streaming", func(t *testing.T) {
		f := newFixture(t, testTime, testBody, map[string]string{"x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"})
		wantErr(t, NewVerifier().Verify(&f.req, &f.auth, []byte(testSecret), testRegion, testTime), ErrSignature)
	})
	t.Run("payload really unsigned", func(t *testing.T) {
		// S3-style: the literal UNSIGNED-PAYLOAD is the canonical request's
		// last line. The verifier always hashes the body, so this fails.
		amz := testTime.Format(AmzDateFormat)
		headers := map[string]string{"host": testHost, "x-amz-content-sha256": "UNSIGNED-PAYLOAD", "x-amz-date": amz}
		signed := []string{"host", "x-amz-content-sha256", "x-amz-date"}
		sig := refSign("POST", testPath, "", headers, signed, "UNSIGNED-PAYLOAD", testSecret, amz, testRegion, Service)
		auth, err := ParseAuthorization([]byte("AWS4-HMAC-SHA256 Credential=" + testAKID + "/" + amz[:8] + "/" +
			testRegion + "/" + Service + "/aws4_request, SignedHeaders=" + strings.Join(signed, ";") + ", Signature=" + sig))
		if err != nil {
			t.Fatal(err)
		}
		hdr := newHeaders("host", testHost, "x-amz-content-sha256", "UNSIGNED-PAYLOAD", "x-amz-date", amz)
		req := Request{Method: []byte("POST"), RawPath: []byte(testPath), Header: hdr, Body: testBody}
		wantErr(t, NewVerifier().Verify(&req, &auth, []byte(testSecret), testRegion, testTime), ErrSignature)
	})
}

func TestPathMustBePlain(t *testing.T) {
	for _, p := range []string{
		"", "kms/xks/v1", "//kms/xks/v1", "/kms//xks", "/kms/./xks", "/kms/../xks", "/.", "/..",
		"/kms/xks/v1/keys/a%2Fb/encrypt", "/kms/xks/v1/keys/a b/encrypt", "/kms?x", "/kms#x",
		"/kms/xks/v1/keys/a:b/encrypt", "/kms/\u00e9",
	} {
		t.Run(p, func(t *testing.T) {
			f := newFixture(t, testTime, testBody, nil)
			f.req.RawPath = []byte(p)
			wantErr(t, NewVerifier().Verify(&f.req, &f.auth, []byte(testSecret), testRegion, testTime), ErrMalformed)
		})
	}
	for _, p := range []string{"/", "/kms/xks/v1/", "/a-b_c.d~e/kms/xks/v1/keys/Key.1-x_y/metadata", "/.well-known"} {
		if !plainPath([]byte(p)) {
			t.Errorf("plainPath(%q) = false", p)
		}
	}
}

func TestMethodMustBeToken(t *testing.T) {
	for _, m := range []string{"", "PO ST", "POST\n", "P\x00"} {
		f := newFixture(t, testTime, testBody, nil)
		f.req.Method = []byte(m)
		wantErr(t, NewVerifier().Verify(&f.req, &f.auth, []byte(testSecret), testRegion, testTime), ErrMalformed)
	}
}

func TestCanonicalQuery(t *testing.T) {
	for _, tc := range []struct{ raw, want string }{
		{"b=2&a=1", "a=1&b=2"},
		{"a=2&a=1&A=3", "A=3&a=1&a=2"},
		{"flag", "flag="},
		{"a=1&&b=", "a=1&b="},
		{"k=a%20b", "k=a%20b"},
		{"k=a+b", "k=a%2Bb"},
		{"k=%7e%2f%41", "k=~%2FA"},
		{"k=caf\xc3\xa9", "k=caf%C3%A9"},
		{"k=a=b", "k=a%3Db"},
		{"%61=1", "a=1"},
	} {
		got, err := appendCanonicalQuery(nil, []byte(tc.raw))
		if err != nil || string(got) != tc.want {
			t.Errorf("appendCanonicalQuery(%q) = %q, %v; want %q", tc.raw, got, err, tc.want)
		}
	}
	for _, bad := range []string{"k=%", "k=%4", "k=%zz", "%g1=1"} {
		_, err := appendCanonicalQuery(nil, []byte(bad))
		wantErr(t, err, ErrMalformed)
	}
}

// TestQuerySignedByReference signs a request with a query using the
// reference signer's canonical form and verifies it from the raw form.
func TestQuerySignedByReference(t *testing.T) {
	amz := testTime.Format(AmzDateFormat)
	headers := map[string]string{"host": testHost, "x-amz-date": amz}
	signed := []string{"host", "x-amz-date"}
	sig := refSign("POST", testPath, "a=x%20y&b=1&b=2", headers, signed, bodyHash(testBody), testSecret, amz, testRegion, Service)
	auth, err := ParseAuthorization([]byte("AWS4-HMAC-SHA256 Credential=" + testAKID + "/" + amz[:8] + "/" +
		testRegion + "/" + Service + "/aws4_request, SignedHeaders=host;x-amz-date, Signature=" + sig))
	if err != nil {
		t.Fatal(err)
	}
	req := Request{Method: []byte("POST"), RawPath: []byte(testPath), Query: []byte("b=2&a=x%20y&b=1"),
		Header: newHeaders("host", testHost, "x-amz-date", amz), Body: testBody}
	wantErr(t, NewVerifier().Verify(&req, &auth, []byte(testSecret), testRegion, testTime), nil)
	req.Query = []byte("b=2&a=x%zzy&b=1")
	wantErr(t, NewVerifier().Verify(&req, &auth, []byte(testSecret), testRegion, testTime), ErrMalformed)
}

// TestErrorsCarryNoSecrets provokes every kind of failure and checks that no
// message contains the secret, the derived signing key or the expected
// signature, in any of the encodings a careless message might use.
func TestErrorsCarryNoSecrets(t *testing.T) {
	f := newFixture(t, testTime, testBody, map[string]string{"x-amz-content-sha256": bodyHash(testBody)})
	key := deriveKey([]byte(testSecret), []byte(testTime.Format("20060102")), []byte(testRegion), []byte(Service))
	forbidden := []string{testSecret, hex.EncodeToString(key[:]), string(key[:]), f.expected}
	v := NewVerifier()
	var errs []error
	add := func(err error) {
		if err == nil {
			t.Fatal("expected a failure")
		}
		errs = append(errs, err)
	}
	bad := f.auth
	bad.Signature = []byte(strings.Repeat("a", 64))
	add(v.Verify(&f.req, &bad, []byte(testSecret), testRegion, testTime))
	add(v.Verify(&f.req, &f.auth, []byte(otherSecret), testRegion, testTime))
	add(v.Verify(&f.req, &f.auth, []byte(testSecret), "eu-west-1", testTime))
	add(v.Verify(&f.req, &f.auth, []byte(testSecret), testRegion, testTime.Add(time.Hour)))
	g := *f
	g.req.Body = []byte("{}")
	add(v.Verify(&g.req, &g.auth, []byte(testSecret), testRegion, testTime))
	g.req.RawPath = []byte("/a//b")
	add(v.Verify(&g.req, &g.auth, []byte(testSecret), testRegion, testTime))
	_, err := ParseAuthorization([]byte(strings.Replace(f.authHdr, "Signature=", "Signature=X", 1)))
	add(err)
	for _, err := range errs {
		if n := sentinelCount(err); n != 1 {
			t.Errorf("%v matches %d sentinels", err, n)
		}
		for _, s := range forbidden {
			if strings.Contains(err.Error(), s) {
				t.Errorf("error %q leaks a secret value", err)
			}
		}
	}
}
