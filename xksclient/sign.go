// Package xksclient speaks the XKS Proxy API as AWS KMS does: JSON bodies
// signed with SigV4. It is the bench harness's client and the test suites'
// second signer, written apart from the server's verifier so that a bug
// cannot hide by being shared: it imports none of the server's packages
// (scripts/check-imports.sh). It also owns client.json (ClientFile), which
// dev writes and the bench, the tests and outside tools read.
package xksclient

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"sync"
	"sync/atomic"
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
	var date [len(AmzDateFormat)]byte
	d := at.UTC().AppendFormat(date[:0], AmzDateFormat)
	return c.sign(host, path, body, d, newSigningKey(c, string(d[:8])))
}

// Signer signs as Credentials.Sign does, deriving the signing key once per
// day rather than once per request: the derivation is four HMACs, more than
// the rest of the signature, and its inputs (day, region, service) only
// change at midnight UTC. It is safe for concurrent use.
type Signer struct {
	creds Credentials
	key   atomic.Pointer[signingKey]
}

// NewSigner returns a Signer for c.
func NewSigner(c Credentials) *Signer { return &Signer{creds: c} }

// Sign is Credentials.Sign with the day's signing key reused.
func (s *Signer) Sign(host, path string, body []byte, at time.Time) (amzDate, authorization string) {
	var date [len(AmzDateFormat)]byte
	d := at.UTC().AppendFormat(date[:0], AmzDateFormat)
	key := s.key.Load()
	if key == nil || key.day != string(d[:8]) {
		// Requests that cross midnight together may each derive the new
		// key; they derive the same one, and the last stored stays.
		key = newSigningKey(s.creds, string(d[:8]))
		s.key.Store(key)
	}
	return s.creds.sign(host, path, body, d, key)
}

// signingKey is the SigV4 key of one day, region and service, with a pool
// of HMACs keyed with it: a reset HMAC restores its keyed state instead of
// hashing the key again.
type signingKey struct {
	day  string
	key  []byte
	macs sync.Pool
}

func newSigningKey(c Credentials, day string) *signingKey {
	key := hmacSHA256([]byte("AWS4"+c.Secret), day)
	key = hmacSHA256(key, c.Region)
	key = hmacSHA256(key, Service)
	key = hmacSHA256(key, "aws4_request")
	k := &signingKey{day: day, key: key}
	k.macs.New = func() any { return hmac.New(sha256.New, k.key) }
	return k
}

// sign computes the signature of a POST at amzDate (X-Amz-Date format) with
// the signing key of amzDate's day.
func (c Credentials) sign(host, path string, body []byte, amzDate []byte, key *signingKey) (string, string) {
	day := amzDate[:8]
	// One buffer holds the canonical request, then the string to sign; both
	// are a few hundred bytes, so this stays on the stack.
	var buf [512]byte
	bodyHash := sha256.Sum256(body)
	b := append(buf[:0], "POST\n"...)
	b = append(b, path...)
	b = append(b, "\n\nhost:"...)
	b = append(b, host...)
	b = append(b, "\nx-amz-date:"...)
	b = append(b, amzDate...)
	b = append(b, "\n\nhost;x-amz-date\n"...)
	b = hex.AppendEncode(b, bodyHash[:])
	canonicalHash := sha256.Sum256(b)

	b = append(buf[:0], "AWS4-HMAC-SHA256\n"...)
	b = append(b, amzDate...)
	b = append(b, '\n')
	scopeStart := len(b)
	b = append(b, day...)
	b = append(b, '/')
	b = append(b, c.Region...)
	b = append(b, "/"+Service+"/aws4_request"...)
	scope := b[scopeStart:]
	b = append(b, '\n')
	b = hex.AppendEncode(b, canonicalHash[:])

	mac := key.macs.Get().(hash.Hash)
	mac.Reset()
	mac.Write(b)
	var sum [sha256.Size]byte
	signature := mac.Sum(sum[:0])
	key.macs.Put(mac)

	auth := make([]byte, 0, 128+len(c.AccessKeyID)+len(scope))
	auth = append(auth, "AWS4-HMAC-SHA256 Credential="...)
	auth = append(auth, c.AccessKeyID...)
	auth = append(auth, '/')
	auth = append(auth, scope...)
	auth = append(auth, ", SignedHeaders=host;x-amz-date, Signature="...)
	auth = hex.AppendEncode(auth, signature)
	return string(amzDate), string(auth)
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}
