// Package xksclient speaks the XKS Proxy API as AWS KMS does: JSON bodies
// signed with SigV4. It is the bench harness's client and the test suites'
// second signer, written apart from the server's verifier so that a bug
// cannot hide by being shared.
package xksclient

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"time"
)

// Service is the SigV4 service name of the XKS Proxy API.
const Service = "kms-xks-proxy"

// AmzDateFormat is the layout of the X-Amz-Date header.
const AmzDateFormat = "20060102T150405Z"

// Credentials are one SigV4 access key of a key store.
type Credentials struct {
	AccessKeyID string
	Secret      string
	Region      string
}

// Sign returns the X-Amz-Date and Authorization header values for a POST of
// body to path at host, signing exactly the host and x-amz-date headers.
func (c Credentials) Sign(host, path string, body []byte, at time.Time) (amzDate, authorization string) {
	at = at.UTC()
	amzDate = at.Format(AmzDateFormat)
	day := amzDate[:8]
	bodyHash := sha256.Sum256(body)
	canonical := strings.Join([]string{
		"POST",
		path,
		"",
		"host:" + host,
		"x-amz-date:" + amzDate,
		"",
		"host;x-amz-date",
		hex.EncodeToString(bodyHash[:]),
	}, "\n")
	canonicalHash := sha256.Sum256([]byte(canonical))
	scope := day + "/" + c.Region + "/" + Service + "/aws4_request"
	stringToSign := "AWS4-HMAC-SHA256\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(canonicalHash[:])

	key := hmacSHA256([]byte("AWS4"+c.Secret), day)
	key = hmacSHA256(key, c.Region)
	key = hmacSHA256(key, Service)
	key = hmacSHA256(key, "aws4_request")
	signature := hex.EncodeToString(hmacSHA256(key, stringToSign))
	authorization = "AWS4-HMAC-SHA256 Credential=" + c.AccessKeyID + "/" + scope +
		", SignedHeaders=host;x-amz-date, Signature=" + signature
	return amzDate, authorization
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}
