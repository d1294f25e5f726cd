package xksapi_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/xksclient"
)

func TestEveryOperation(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	c := f.clientA()

	meta, err := c.Metadata("k1", metadata("DescribeKey"))
	if err != nil {
		t.Fatal(err)
	}
	if meta.KeySpec != "AES_256" || strings.Join(meta.KeyUsage, ",") != "ENCRYPT,DECRYPT" || meta.KeyStatus != "ENABLED" {
		t.Fatalf("metadata = %+v", meta)
	}

	health, err := c.Health(xksclient.RequestMetadata{KMSRequestID: "h1", KMSOperation: "KmsHealthCheck"})
	if err != nil {
		t.Fatal(err)
	}
	if health.FleetSize != 1 || len(health.Fleet) != 1 || health.Fleet[0].HealthStatus != "ACTIVE" || health.Fleet[0].ID != "test-node" ||
		health.Vendor == "" || health.Model == "" || health.EKMVendor == "" || health.Fleet[0].Model == "" {
		t.Fatalf("health = %+v", health)
	}

	sizes := []struct{ pt, aad int }{{0, 0}, {32, 0}, {32, 64}, {4300, 8192}}
	for _, sz := range sizes {
		pt := bytes.Repeat([]byte{0xA5}, sz.pt)
		aad := bytes.Repeat([]byte{0x5A}, sz.aad)
		if sz.aad == 0 {
			aad = nil
		}
		enc, err := c.Encrypt("k1", &xksclient.EncryptRequest{RequestMetadata: metadata("GenerateDataKey"), Plaintext: pt, AAD: aad, CDIVAlgorithm: "SHA_256"})
		if err != nil {
			t.Fatalf("encrypt %d/%d: %v", sz.pt, sz.aad, err)
		}
		if len(enc.Ciphertext) != len(pt) || len(enc.IV) != 12 || len(enc.Tag) != 16 || len(enc.CiphertextMetadata) == 0 || len(enc.CiphertextMetadata) > 20 {
			t.Fatalf("encrypt %d/%d shapes: ct %d iv %d tag %d md %d", sz.pt, sz.aad, len(enc.Ciphertext), len(enc.IV), len(enc.Tag), len(enc.CiphertextMetadata))
		}
		h := sha256.New()
		for _, part := range [][]byte{aad, enc.CiphertextMetadata, enc.IV, enc.Ciphertext, enc.Tag} {
			h.Write(part)
		}
		if !bytes.Equal(h.Sum(nil), enc.CDIV) {
			t.Fatalf("encrypt %d/%d: CDIV does not match the specification's formula", sz.pt, sz.aad)
		}
		got, err := c.Decrypt("k1", &xksclient.DecryptRequest{RequestMetadata: metadata("Decrypt"), Ciphertext: enc.Ciphertext,
			CiphertextMetadata: enc.CiphertextMetadata, AAD: aad, IV: enc.IV, Tag: enc.Tag})
		if err != nil {
			t.Fatalf("decrypt %d/%d: %v", sz.pt, sz.aad, err)
		}
		if !bytes.Equal(got, pt) {
			t.Fatalf("decrypt %d/%d returned other plaintext", sz.pt, sz.aad)
		}
	}

	// Without a CDIV request there is no CDIV in the answer.
	enc, err := c.Encrypt("k1", &xksclient.EncryptRequest{RequestMetadata: metadata("Encrypt"), Plaintext: []byte("x")})
	if err != nil || enc.CDIV != nil {
		t.Fatalf("encrypt without CDIV: %v, cdiv %v", err, enc)
	}
	// Every encrypt draws a fresh IV.
	enc2, err := c.Encrypt("k1", &xksclient.EncryptRequest{RequestMetadata: metadata("Encrypt"), Plaintext: []byte("x")})
	if err != nil || bytes.Equal(enc.IV, enc2.IV) {
		t.Fatalf("two encrypts share an IV (%v)", err)
	}
}

func TestOldKeyVersionsKeepDecrypting(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	c := f.clientA()
	enc, err := c.Encrypt("k1", &xksclient.EncryptRequest{RequestMetadata: metadata("Encrypt"), Plaintext: []byte("v2 data")})
	if err != nil {
		t.Fatal(err)
	}
	// Make version 1 current: a v2 ciphertext must still decrypt.
	f.keys[0].CurrentVersion = 1
	f.publish()
	enc1, err := c.Encrypt("k1", &xksclient.EncryptRequest{RequestMetadata: metadata("Encrypt"), Plaintext: []byte("v1 data")})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(enc.CiphertextMetadata, enc1.CiphertextMetadata) {
		t.Fatal("ciphertextMetadata does not record the key version")
	}
	for _, e := range []struct {
		enc  *xksclient.EncryptResponse
		want string
	}{{enc, "v2 data"}, {enc1, "v1 data"}} {
		got, err := c.Decrypt("k1", &xksclient.DecryptRequest{RequestMetadata: metadata("Decrypt"), Ciphertext: e.enc.Ciphertext,
			CiphertextMetadata: e.enc.CiphertextMetadata, IV: e.enc.IV, Tag: e.enc.Tag})
		if err != nil || string(got) != e.want {
			t.Fatalf("decrypt %q: %q %v", e.want, got, err)
		}
	}
}

func TestTamperedCiphertextIsInvalidCiphertext(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	c := f.clientA()
	aad := []byte("project=nile,department=marketing")
	enc, err := c.Encrypt("k1", &xksclient.EncryptRequest{RequestMetadata: metadata("Encrypt"), Plaintext: []byte("data key"), AAD: aad})
	if err != nil {
		t.Fatal(err)
	}
	flip := func(b []byte) []byte { c := bytes.Clone(b); c[len(c)-1] ^= 1; return c }
	good := xksclient.DecryptRequest{RequestMetadata: metadata("Decrypt"), Ciphertext: enc.Ciphertext,
		CiphertextMetadata: enc.CiphertextMetadata, AAD: aad, IV: enc.IV, Tag: enc.Tag}
	cases := map[string]func(r *xksclient.DecryptRequest){
		"aad":         func(r *xksclient.DecryptRequest) { r.AAD = flip(r.AAD) },
		"missing aad": func(r *xksclient.DecryptRequest) { r.AAD = nil },
		"ciphertext":  func(r *xksclient.DecryptRequest) { r.Ciphertext = flip(r.Ciphertext) },
		"tag":         func(r *xksclient.DecryptRequest) { r.Tag = flip(r.Tag) },
		"iv":          func(r *xksclient.DecryptRequest) { r.IV = flip(r.IV) },
		"metadata":    func(r *xksclient.DecryptRequest) { r.CiphertextMetadata = flip(r.CiphertextMetadata) },
		"metadata format": func(r *xksclient.DecryptRequest) {
			r.CiphertextMetadata = append([]byte{9}, r.CiphertextMetadata[1:]...)
		},
		"other version": func(r *xksclient.DecryptRequest) {
			r.CiphertextMetadata = []byte{1, 0, 0, 0, 1}
		},
		"missing metadata": func(r *xksclient.DecryptRequest) { r.CiphertextMetadata = nil },
	}
	for name, mutate := range cases {
		r := good
		mutate(&r)
		_, err := c.Decrypt("k1", &r)
		if xe, ok := err.(*xksclient.Error); !ok || xe.Name != "InvalidCiphertextException" || xe.Status != 400 {
			t.Errorf("%s: %v", name, err)
		}
	}

	// The specification's length-binding case: encrypt without AAD, then
	// present the ciphertextMetadata as AAD and no ciphertextMetadata.
	enc, err = c.Encrypt("k1", &xksclient.EncryptRequest{RequestMetadata: metadata("Encrypt"), Plaintext: []byte("data key")})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Decrypt("k1", &xksclient.DecryptRequest{RequestMetadata: metadata("Decrypt"), Ciphertext: enc.Ciphertext,
		AAD: enc.CiphertextMetadata, IV: enc.IV, Tag: enc.Tag})
	wantXKSError(t, err, 400, "InvalidCiphertextException")

	// The node keeps serving after all of that.
	if err := c.RoundTrip("k1", metadata("Encrypt"), []byte("still fine"), nil); err != nil {
		t.Fatal(err)
	}
}

func TestRefusals(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	c := f.clientA()
	md := metadata("Encrypt")
	enc := func(key string) error {
		_, err := c.Encrypt(key, &xksclient.EncryptRequest{RequestMetadata: md, Plaintext: []byte("p")})
		return err
	}

	wantXKSError(t, enc("nope"), 404, "KeyNotFoundException")
	wantXKSError(t, enc("kdis"), 400, "InvalidStateException")
	wantXKSError(t, enc("kgone"), 500, "InternalException")
	meta, err := c.Metadata("kdis", metadata("DescribeKey"))
	if err != nil || meta.KeyStatus != "DISABLED" {
		t.Fatalf("metadata of a disabled key: %+v %v", meta, err)
	}
	encOnly, err := c.Encrypt("kenc", &xksclient.EncryptRequest{RequestMetadata: md, Plaintext: []byte("p")})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Decrypt("kenc", &xksclient.DecryptRequest{RequestMetadata: metadata("Decrypt"), Ciphertext: encOnly.Ciphertext,
		CiphertextMetadata: encOnly.CiphertextMetadata, IV: encOnly.IV, Tag: encOnly.Tag})
	wantXKSError(t, err, 400, "InvalidKeyUsageException")
	if meta, err := c.Metadata("kenc", metadata("DescribeKey")); err != nil || strings.Join(meta.KeyUsage, ",") != "ENCRYPT" {
		t.Fatalf("metadata of an encrypt-only key: %+v %v", meta, err)
	}

	// Signed but malformed bodies.
	wantXKSError(t, c.Post(c.KeyPath("k1", "encrypt"), []byte(`{"requestMetadata":`), nil), 400, "ValidationException")
	wantXKSError(t, c.Post(c.KeyPath("k1", "encrypt"), []byte(`{"requestMetadata":{"awsPrincipalArn":"a","kmsKeyArn":"k","kmsOperation":"Encrypt","kmsRequestId":"r"},"plaintext":"AA==","encryptionAlgorithm":"RSA"}`), nil), 501, "UnsupportedOperationException")
	huge := `{"requestMetadata":{"awsPrincipalArn":"a","kmsKeyArn":"k","kmsOperation":"Encrypt","kmsRequestId":"r"},"plaintext":"` + strings.Repeat("A", 200_000) + `","encryptionAlgorithm":"AES_GCM"}`
	wantXKSError(t, c.Post(c.KeyPath("k1", "encrypt"), []byte(huge), nil), 501, "UnsupportedOperationException")

	// Unknown paths and methods, unsigned.
	for _, p := range []string{"/", "/a/kms/xks/v1/keys/k1/sign", "/zz/kms/xks/v1/keys/k1/encrypt", "/a//kms/xks/v1/health", "/a/kms/xks/v1/keys/%6b1/encrypt"} {
		status, body := f.rawRequest(http.MethodPost, p, nil, []byte("{}"))
		assertErrorBody(t, p, status, body, 404, "InvalidUriPathException")
	}
	for _, p := range []string{"/a/kms/xks/v1/keys/k1/encrypt", "/a/kms/xks/v1/keys/k1/decrypt", "/a/kms/xks/v1/keys/k1/metadata", "/a/kms/xks/v1/health", "/zz/kms/xks/v1/health"} {
		status, body := f.rawRequest(http.MethodGet, p, nil, nil)
		assertErrorBody(t, "GET "+p, status, body, 405, "UnsupportedOperationException")
	}
	status, body := f.rawRequest(http.MethodPost, "/a/kms/xks/v1/health?x=1", nil, []byte("{}"))
	assertErrorBody(t, "query", status, body, 404, "InvalidUriPathException")

	// A disabled key store refuses everything, health included.
	f.stores[0].Enabled = false
	f.publish()
	wantXKSError(t, enc("k1"), 400, "InvalidStateException")
	_, err = c.Health(xksclient.RequestMetadata{KMSRequestID: "h", KMSOperation: "KmsHealthCheck"})
	wantXKSError(t, err, 400, "InvalidStateException")
}

func assertErrorBody(t *testing.T, what string, status int, body []byte, wantStatus int, wantName string) {
	t.Helper()
	var e struct {
		ErrorName    string `json:"errorName"`
		ErrorMessage string `json:"errorMessage"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("%s: body %q is not JSON", what, body)
	}
	if status != wantStatus || e.ErrorName != wantName {
		t.Fatalf("%s: %d %s (%s), want %d %s", what, status, e.ErrorName, e.ErrorMessage, wantStatus, wantName)
	}
}

func TestAuthentication(t *testing.T) {
	now := time.Now()
	var clock = func() time.Time { return now }
	f := newFixture(t, fixtureOptions{now: func() time.Time { return clock() }})

	// Both credentials of a work at once (rotation); b's credential works on b only.
	for _, cred := range f.credsA {
		if _, err := f.client("a", cred, nil).Metadata("k1", metadata("DescribeKey")); err != nil {
			t.Fatalf("credential %s: %v", cred.AccessKeyID, err)
		}
	}
	if _, err := f.client("b", f.credB, nil).Metadata("k1", metadata("DescribeKey")); err != nil {
		t.Fatal(err)
	}
	cross := f.client("a", f.credB, nil)
	cross.Creds.Region = "eu-west-1"
	_, err := cross.Metadata("k1", metadata("DescribeKey"))
	wantXKSError(t, err, 401, "AuthenticationFailedException")

	wrongSecret := f.clientA()
	wrongSecret.Creds.Secret = string(f.credsA[1].Secret)
	_, err = wrongSecret.Metadata("k1", metadata("DescribeKey"))
	wantXKSError(t, err, 401, "AuthenticationFailedException")

	wrongRegion := f.clientA()
	wrongRegion.Creds.Region = "us-west-2"
	_, err = wrongRegion.Metadata("k1", metadata("DescribeKey"))
	wantXKSError(t, err, 401, "AuthenticationFailedException")

	skewed := f.clientA()
	skewed.Now = func() time.Time { return now.Add(-6 * time.Minute) }
	_, err = skewed.Metadata("k1", metadata("DescribeKey"))
	wantXKSError(t, err, 401, "AuthenticationFailedException")
	skewed.Now = func() time.Time { return now.Add(4 * time.Minute) }
	if _, err = skewed.Metadata("k1", metadata("DescribeKey")); err != nil {
		t.Fatalf("4 minutes of skew refused: %v", err)
	}

	status, body := f.rawRequest(http.MethodPost, "/a/kms/xks/v1/keys/k1/metadata", nil, []byte(`{}`))
	assertErrorBody(t, "unsigned", status, body, 401, "AuthenticationFailedException")
	status, body = f.rawRequest(http.MethodPost, "/a/kms/xks/v1/keys/k1/metadata", map[string]string{"Authorization": "AWS4-HMAC-SHA256 garbage"}, []byte(`{}`))
	assertErrorBody(t, "garbage", status, body, 401, "AuthenticationFailedException")

	// A body changed after signing fails.
	body = []byte(`{"requestMetadata":{"awsPrincipalArn":"a","kmsOperation":"x","kmsRequestId":"r"}}`)
	amzDate, auth := xksclient.Credentials{AccessKeyID: f.credsA[0].AccessKeyID, Secret: string(f.credsA[0].Secret), Region: "us-east-1"}.
		Sign(f.addr, "/a/kms/xks/v1/keys/k1/metadata", body, now)
	status, resp := f.rawRequest(http.MethodPost, "/a/kms/xks/v1/keys/k1/metadata",
		map[string]string{"X-Amz-Date": amzDate, "Authorization": auth}, append(body[:len(body)-1:len(body)-1], ' ', '}'))
	assertErrorBody(t, "altered body", status, resp, 401, "AuthenticationFailedException")

	// An expired credential stops working by itself.
	f.stores[0].Credentials[0].ExpiresAt = now.Add(time.Minute)
	f.publish()
	if _, err := f.clientA().Metadata("k1", metadata("DescribeKey")); err != nil {
		t.Fatal(err)
	}
	clock = func() time.Time { return now.Add(2 * time.Minute) }
	c := f.clientA()
	c.Now = clock
	_, err = c.Metadata("k1", metadata("DescribeKey"))
	wantXKSError(t, err, 401, "AuthenticationFailedException")
}

func TestConcurrentRoundTrips(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	c := f.clientA()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pt := []byte(strings.Repeat(string(rune('a'+i%26)), 32))
			for range 5 {
				if err := c.RoundTrip("k1", metadata("Encrypt"), pt, []byte("ctx")); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestNothingSecretInLogs(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	c := f.clientA()
	plaintext := []byte("PLAINTEXT-CANARY-7f3a9c")
	aad := []byte("AAD-CANARY-51be")
	md := metadata("Encrypt")
	md.KMSRequestID = "log-check-request"
	if err := c.RoundTrip("k1", md, plaintext, aad); err != nil {
		t.Fatal(err)
	}
	bad := f.clientA()
	bad.Creds.Secret = string(f.credsA[1].Secret)
	bad.Metadata("k1", md)
	c.Encrypt("kdis", &xksclient.EncryptRequest{RequestMetadata: md, Plaintext: plaintext})

	logs := f.logs.String()
	for _, secret := range [][]byte{
		plaintext, []byte(base64.StdEncoding.EncodeToString(plaintext)), aad,
		f.credsA[0].Secret, f.credsA[1].Secret, f.credB.Secret,
	} {
		if strings.Contains(logs, string(secret)) {
			t.Fatalf("logs contain a secret value %q", secret)
		}
	}
	lines := 0
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		var entry map[string]any
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			t.Fatalf("log line is not JSON: %s", line)
		}
		if entry["kmsRequestId"] != "log-check-request" {
			continue
		}
		lines++
		for _, field := range []string{"op", "principal", "keyId", "keyStore", "outcome", "latency_ms", "kmsKeyArn", "kmsOperation", "status"} {
			if _, ok := entry[field]; !ok {
				t.Fatalf("log line lacks %s: %s", field, line)
			}
		}
	}
	if lines != 4 {
		t.Fatalf("want one log line per request (4), found %d in:\n%s", lines, logs)
	}
}
