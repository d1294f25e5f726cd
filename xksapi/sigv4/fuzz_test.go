package sigv4

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func FuzzParseAuthorization(f *testing.F) {
	for _, s := range []string{
		specAuth,
		strings.ReplaceAll(specAuth, ", ", ","),
		"AWS4-HMAC-SHA256 Signature=" + specSig + ", SignedHeaders=content-type;host;x-amz-date, " +
			"Credential=AKIAI2SFODNN7EXAMPLE/20261110/us-east-1/kms-xks-proxy/aws4_request",
		specAuth + ", Credential=A/20211009/r/s/aws4_request",
		strings.Replace(specAuth, "aws4_request", "aws4_reques", 1),
		strings.Replace(specAuth, specSig, strings.ToUpper(specSig), 1),
		"AWS4-HMAC-SHA256 Credential=////, SignedHeaders=;, Signature=",
		"AWS4-HMAC-SHA256 ,,,===",
		"AWS4-HMAC-SHA256",
		"Basic dXNlcjpwYXNz",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, h []byte) {
		a, err := ParseAuthorization(h)
		if err != nil {
			if n := sentinelCount(err); n != 1 {
				t.Fatalf("error %v matches %d sentinels", err, n)
			}
			return
		}
		for _, field := range [][]byte{a.AccessKeyID, a.Date, a.Region, a.Service, a.SignedHeaders, a.Signature} {
			if len(field) == 0 || !aliases(h, field) {
				t.Fatalf("field %q is empty or not a window into the input", field)
			}
		}
		rendered := appendAuthorization(nil, &a)
		b, err := ParseAuthorization(rendered)
		if err != nil {
			t.Fatalf("re-rendered %q does not parse: %v", rendered, err)
		}
		if !equalAuth(a, b) {
			t.Fatalf("round trip changed the fields:\n%+v\n%+v", a, b)
		}
		if again := appendAuthorization(nil, &b); !bytes.Equal(again, rendered) {
			t.Fatalf("rendering is not stable: %q then %q", rendered, again)
		}
	})
}

// aliases reports whether field lies inside buf's memory.
func aliases(buf, field []byte) bool {
	for i := 0; i+len(field) <= len(buf); i++ {
		if &buf[i] == &field[0] {
			return true
		}
	}
	return false
}

func equalAuth(a, b Authorization) bool {
	return bytes.Equal(a.AccessKeyID, b.AccessKeyID) && bytes.Equal(a.Date, b.Date) &&
		bytes.Equal(a.Region, b.Region) && bytes.Equal(a.Service, b.Service) &&
		bytes.Equal(a.SignedHeaders, b.SignedHeaders) && bytes.Equal(a.Signature, b.Signature)
}

// FuzzVerify feeds arbitrary requests and Authorization headers to Verify,
// which must never panic and must fail with exactly one sentinel. It also
// signs each request honestly with Signer: whatever Signer accepts, Verify
// must accept too.
func FuzzVerify(f *testing.F) {
	amz := testTime.Format(AmzDateFormat)
	good := newFixture(f, testTime, testBody, map[string]string{"content-type": "application/json"})
	f.Add("POST", testPath, "", testHost, amz, good.authHdr, testBody, "content-type", "application/json", int64(0))
	f.Add("POST", testPath, "b=2&a=1", testHost+":443", amz, specAuth, []byte("{}"), "x-amz-content-sha256", "UNSIGNED-PAYLOAD", int64(299))
	f.Add("GET", "/", "%zz", " h  o ", "20261110T123045", good.authHdr, []byte(nil), "x", "a\nb", int64(-301))
	f.Add("P\nOST", "/a/../b", "a", "\x00", "20260230T000000Z",
		strings.Replace(good.authHdr, "host;x-amz-date", "x-amz-date;host", 1), []byte("\xff"), "Host", "dup", int64(86400))
	f.Add("POST", "/kms//xks", "=", "h", amz, strings.Replace(good.authHdr, "content-type;", "", 1), testBody, "", "", int64(1))
	f.Fuzz(func(t *testing.T, method, path, query, host, amzDate, authz string, body []byte, extraName, extraValue string, skew int64) {
		now := testTime.Add(time.Duration(skew%100000) * time.Second)
		v := NewVerifier()
		hdr := newHeaders("host", host, "x-amz-date", amzDate)
		if extraName != "" {
			hdr.add(extraName, extraValue)
		}
		req := Request{Method: []byte(method), RawPath: []byte(path), Query: []byte(query), Header: hdr, Body: body}
		if auth, err := ParseAuthorization([]byte(authz)); err == nil {
			for _, h := range []HeaderSource{hdr, peekOnly{hdr}} {
				req.Header = h
				if err := v.Verify(&req, &auth, []byte(testSecret), testRegion, now); err != nil && sentinelCount(err) != 1 {
					t.Fatalf("error %v matches %d sentinels", err, sentinelCount(err))
				}
			}
		}

		s := Signer{AccessKeyID: testAKID, Secret: []byte(testSecret), Region: testRegion}
		signed, signedAt, err := s.Sign(method, path, host, body, testTime)
		if err != nil {
			if n := sentinelCount(err); n != 1 {
				t.Fatalf("Sign error %v matches %d sentinels", err, n)
			}
			return
		}
		auth, err := ParseAuthorization([]byte(signed))
		if err != nil {
			t.Fatalf("Signer produced %q, which does not parse: %v", signed, err)
		}
		honest := newHeaders("host", host, "x-amz-date", signedAt)
		if n := strings.ToLower(extraName); n != "" && n != "host" && n != "x-amz-date" {
			honest.add(n, extraValue) // unsigned, so it must not matter
		}
		req = Request{Method: []byte(method), RawPath: []byte(path), Header: honest, Body: body}
		if err := v.Verify(&req, &auth, []byte(testSecret), testRegion, testTime); err != nil {
			t.Fatalf("honestly signed request failed: %v", err)
		}
		if err := v.Verify(&req, &auth, []byte(otherSecret), testRegion, testTime); err == nil {
			t.Fatal("honestly signed request verified with another secret")
		}
	})
}
