package sigv4

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// testHeaders is a HeaderSource keyed by lowercase name that can hold
// repeated headers, so it also exercises the MultiHeaderSource path.
type testHeaders map[string][][]byte

func newHeaders(kv ...string) testHeaders {
	h := testHeaders{}
	for i := 0; i < len(kv); i += 2 {
		h.add(kv[i], kv[i+1])
	}
	return h
}

func (h testHeaders) add(name, value string) {
	n := strings.ToLower(name)
	h[n] = append(h[n], []byte(value))
}

func (h testHeaders) set(name, value string) { h[strings.ToLower(name)] = [][]byte{[]byte(value)} }

func (h testHeaders) Peek(name string) []byte {
	if v := h[strings.ToLower(name)]; len(v) > 0 {
		return v[0]
	}
	return nil
}

func (h testHeaders) PeekAll(name string) [][]byte { return h[strings.ToLower(name)] }

func (h testHeaders) clone() testHeaders {
	c := testHeaders{}
	for k, v := range h {
		c[k] = append([][]byte(nil), v...)
	}
	return c
}

// peekOnly hides PeekAll, like a transport that cannot report repeats.
type peekOnly struct{ h testHeaders }

func (p peekOnly) Peek(name string) []byte { return p.h.Peek(name) }

// Credentials in the specification's own format (Appendix A example file).
const (
	testAKID    = "AKIAI2SFODNN7EXAMPLE"
	testSecret  = "FYtE5EFA5FT0mCc3DrGUe2sti527BitkQ0Zr9MO9fvE"
	otherSecret = "Qm9iIGlzIG5vdCBBbGljZSwgYW5kIHRoaXMgaXMgbm90IGEga2V5Lg=="
	testRegion  = "us-east-1"
	testHost    = "xks.example.com"
	testPath    = "/kms/xks/v1/keys/key-1/encrypt"
)

// testTime is mid-day so that ±5 minutes never changes the scope date.
var testTime = time.Date(2026, 11, 10, 12, 30, 45, 0, time.UTC)

// testBody is a realistic ~600-byte Encrypt request.
var testBody = []byte(`{"requestMetadata":{"awsPrincipalArn":"arn:aws:iam::123456789012:user/Alice",` +
	`"kmsKeyArn":"arn:aws:kms:us-east-1:123456789012:key/b3c5f4e0-6c1d-4a3e-9f5b-2c7d8e9f0a1b",` +
	`"kmsOperation":"Encrypt","kmsRequestId":"4112f4d6-db54-4af4-ae30-c55a22a8dfae",` +
	`"kmsViaService":"ebs","awsSourceVpc":"vpc-0123456789abcdef0","awsSourceVpce":"vpce-0123456789abcdef0"},` +
	`"additionalAuthenticatedData":"cHJvamVjdD1uaWxlLGRlcGFydG1lbnQ9bWFya2V0aW5n",` +
	`"plaintext":"SGVsbG8gV29ybGQhIFRoaXMgaXMgYSAzMi1ieXRlIGRhdGEga2V5IGZvciB0ZXN0aW5nIHB1cnBvc2VzIG9ubHku",` +
	`"encryptionAlgorithm":"AES_GCM","ciphertextDataIntegrityValueAlgorithm":"SHA_256"}`)

// refSign is an independent, deliberately naive SigV4 signer written from
// AWS's documentation with strings and crypto/hmac only. It shares no code
// with the package, so agreement between the two means something. headers
// maps lowercase names to the canonical value to sign; payload is the last
// line of the canonical request (normally hex(sha256(body))).
func refSign(method, path, canonicalQuery string, headers map[string]string, signed []string,
	payload, secret, amzDate, region, service string) string {
	var cr strings.Builder
	cr.WriteString(method + "\n" + path + "\n" + canonicalQuery + "\n")
	for _, n := range signed {
		cr.WriteString(n + ":" + headers[n] + "\n")
	}
	cr.WriteString("\n" + strings.Join(signed, ";") + "\n" + payload)
	crHash := sha256.Sum256([]byte(cr.String()))
	date := amzDate[:8]
	sts := "AWS4-HMAC-SHA256\n" + amzDate + "\n" + date + "/" + region + "/" + service + "/aws4_request\n" +
		hex.EncodeToString(crHash[:])
	mac := func(key []byte, msg string) []byte {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(msg))
		return m.Sum(nil)
	}
	k := mac([]byte("AWS4"+secret), date)
	k = mac(k, region)
	k = mac(k, service)
	k = mac(k, "aws4_request")
	return hex.EncodeToString(mac(k, sts))
}

func bodyHash(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// fixture is a signed request together with what produced it, so tests can
// change one thing and re-sign or not.
type fixture struct {
	req      Request
	hdr      testHeaders
	auth     Authorization
	authHdr  string
	expected string // the correct signature, for the no-secrets-in-errors test
}

// newFixture builds a request signed by refSign over the given headers
// (lowercase name -> value); host and x-amz-date are added.
func newFixture(t testing.TB, at time.Time, body []byte, extra map[string]string) *fixture {
	t.Helper()
	amz := at.UTC().Format(AmzDateFormat)
	headers := map[string]string{"host": testHost, "x-amz-date": amz}
	for k, v := range extra {
		headers[k] = v
	}
	signed := make([]string, 0, len(headers))
	for k := range headers {
		signed = append(signed, k)
	}
	slices.Sort(signed)
	sig := refSign("POST", testPath, "", headers, signed, bodyHash(body), testSecret, amz, testRegion, Service)
	authHdr := "AWS4-HMAC-SHA256 Credential=" + testAKID + "/" + amz[:8] + "/" + testRegion + "/" + Service +
		"/aws4_request, SignedHeaders=" + strings.Join(signed, ";") + ", Signature=" + sig
	hdr := testHeaders{}
	for k, v := range headers {
		hdr.add(k, v)
	}
	hdr.add("authorization", authHdr)
	f := &fixture{hdr: hdr, authHdr: authHdr, expected: sig}
	f.req = Request{Method: []byte("POST"), RawPath: []byte(testPath), Header: hdr, Body: body}
	a, err := ParseAuthorization([]byte(authHdr))
	if err != nil {
		t.Fatalf("ParseAuthorization(%q): %v", authHdr, err)
	}
	f.auth = a
	return f
}

// wantErr fails unless err is, or wraps, want; want nil means success.
func wantErr(t testing.TB, err, want error) {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Fatalf("want success, got %v", err)
	case want != nil && !errors.Is(err, want):
		t.Fatalf("want %v, got %v", want, err)
	}
}

var sentinels = []error{ErrMissing, ErrMalformed, ErrScope, ErrSignedHeaders, ErrClockSkew, ErrSignature}

// sentinelCount is how many sentinel errors err matches; it should be one.
func sentinelCount(err error) int {
	n := 0
	for _, s := range sentinels {
		if errors.Is(err, s) {
			n++
		}
	}
	return n
}
