package xksapi_test

import (
	"strings"
	"testing"

	"github.com/xksproxy/xksproxy/xksclient"
)

// Key usage as the specification and AWS's conformance suites have it.
func TestKeyUsage(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	c := f.clientA()

	// A CDIV promises that decrypt will succeed: not for a key that may
	// not decrypt. Without a CDIV the encrypt-only key still encrypts.
	_, err := c.Encrypt("kenc", &xksclient.EncryptRequest{RequestMetadata: metadata("Encrypt"), Plaintext: []byte("p"), CDIVAlgorithm: "SHA_256"})
	wantXKSError(t, err, 400, "InvalidKeyUsageException")
	if _, err := c.Encrypt("kenc", &xksclient.EncryptRequest{RequestMetadata: metadata("Encrypt"), Plaintext: []byte("p")}); err != nil {
		t.Fatalf("encrypt-only key without a CDIV: %v", err)
	}

	// A key with neither ENCRYPT nor DECRYPT: metadata shows its usages,
	// crypto is refused for its usage.
	meta, err := c.Metadata("kwrap", metadata("DescribeKey"))
	if err != nil || strings.Join(meta.KeyUsage, ",") != "WRAP,UNWRAP" || meta.KeyStatus != "ENABLED" {
		t.Fatalf("metadata of a WRAP/UNWRAP key: %+v %v", meta, err)
	}
	_, err = c.Encrypt("kwrap", &xksclient.EncryptRequest{RequestMetadata: metadata("Encrypt"), Plaintext: []byte("p")})
	wantXKSError(t, err, 400, "InvalidKeyUsageException")
	_, err = c.Decrypt("kwrap", &xksclient.DecryptRequest{RequestMetadata: metadata("Decrypt"), Ciphertext: []byte("c"),
		CiphertextMetadata: []byte{1, 0, 0, 0, 1}, IV: make([]byte, 12), Tag: make([]byte, 16)})
	wantXKSError(t, err, 400, "InvalidKeyUsageException")
}

// GetHealthStatus without requestMetadata, or with an empty one, is refused
// as AWS's reference proxy and its conformance tests expect.
func TestHealthNeedsRequestMetadata(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	c := f.clientA()
	for _, body := range []string{`{}`, `{"requestMetadata":{}}`, `{"requestMetadata":null}`, `not json`} {
		wantXKSError(t, c.Post(c.URIPath+"/health", []byte(body), nil), 400, "ValidationException")
	}
	if _, err := c.Health(xksclient.RequestMetadata{KMSRequestID: "h", KMSOperation: "KmsHealthCheck"}); err != nil {
		t.Fatal(err)
	}
}
