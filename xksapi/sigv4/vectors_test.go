package sigv4

import (
	"encoding/hex"
	"testing"
	"time"
)

// TestDeriveKeyAWSExample checks the signing-key derivation against the
// example in AWS's SigV4 documentation ("Examples of how to derive a signing
// key"): secret wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, 20120215,
// us-east-1, iam. (The published secret has '+' where the S3 examples'
// otherwise identical secret has '/'; with '/' the key is 004aa806....)
func TestDeriveKeyAWSExample(t *testing.T) {
	got := deriveKey([]byte("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
		[]byte("20120215"), []byte("us-east-1"), []byte("iam"))
	const want = "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
	if hex.EncodeToString(got[:]) != want {
		t.Fatalf("signing key = %x, want %s", got, want)
	}
}

// TestAWSTestSuite runs whole requests from AWS's SigV4 test suite
// (get-vanilla, get-vanilla-query-order-key-case, post-vanilla) through the
// full verification path. They use service "service", which Verify itself
// refuses, hence the internal verify.
func TestAWSTestSuite(t *testing.T) {
	const secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
	at := time.Date(2015, 8, 30, 12, 36, 0, 0, time.UTC)
	for _, tc := range []struct {
		name, method, query, sig string
	}{
		{"get-vanilla", "GET", "", "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
		{"get-vanilla-query-order-key-case", "GET", "Param2=value2&Param1=value1",
			"b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"},
		{"post-vanilla", "POST", "", "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, " +
				"SignedHeaders=host;x-amz-date, Signature=" + tc.sig
			auth, err := ParseAuthorization([]byte(h))
			if err != nil {
				t.Fatal(err)
			}
			req := &Request{
				Method:  []byte(tc.method),
				RawPath: []byte("/"),
				Query:   []byte(tc.query),
				Header:  newHeaders("Host", "example.amazonaws.com", "X-Amz-Date", "20150830T123600Z"),
			}
			v := NewVerifier()
			wantErr(t, v.verify(req, &auth, []byte(secret), "us-east-1", "service", at), nil)
			wantErr(t, v.verify(req, &auth, []byte(secret+"x"), "us-east-1", "service", at), ErrSignature)
			// The public entry point insists on the XKS service name.
			wantErr(t, v.Verify(req, &auth, []byte(secret), "us-east-1", at), ErrScope)
		})
	}
}

// TestRefSignMatchesAWS pins the test's own reference signer to the same
// published vector, so that tests relying on it rest on AWS's numbers.
func TestRefSignMatchesAWS(t *testing.T) {
	got := refSign("GET", "/", "", map[string]string{"host": "example.amazonaws.com", "x-amz-date": "20150830T123600Z"},
		[]string{"host", "x-amz-date"}, bodyHash(nil), "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
		"20150830T123600Z", "us-east-1", "service")
	if got != "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31" {
		t.Fatalf("refSign = %s", got)
	}
}
