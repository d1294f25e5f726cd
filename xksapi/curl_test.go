package xksapi_test

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/xksproxy/xksproxy/fsm"
)

// curl signs with its own SigV4 implementation: an independent check of the
// verifier, the way the README tells operators to call the proxy.
func curlXKS(t *testing.T, f *fixture, cred fsm.Credential, region, path string, body []byte) (int, []byte) {
	t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is not installed")
	}
	cmd := exec.Command("curl", "-sS", "--cacert", f.caFile,
		"--aws-sigv4", "aws:amz:"+region+":kms-xks-proxy",
		"--user", cred.AccessKeyID+":"+string(cred.Secret),
		"-H", "Content-Type: application/json",
		"--data-binary", "@-", "-w", "\n%{http_code}",
		"https://"+f.addr+path)
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("curl: %v: %s", err, out)
	}
	i := bytes.LastIndexByte(out, '\n')
	status, err := strconv.Atoi(strings.TrimSpace(string(out[i+1:])))
	if err != nil {
		t.Fatalf("curl output %q", out)
	}
	return status, out[:i]
}

func TestCurlSignedRoundTrip(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	md := `"requestMetadata":{"awsPrincipalArn":"arn:aws:iam::111122223333:user/alice","kmsKeyArn":"arn:aws:kms:us-east-1:111122223333:key/k","kmsOperation":"Encrypt","kmsRequestId":"curl-1"}`
	status, body := curlXKS(t, f, f.credsA[1], "us-east-1", "/a/kms/xks/v1/keys/k1/encrypt",
		[]byte(`{`+md+`,"plaintext":"SGVsbG8gV29ybGQh","additionalAuthenticatedData":"cHJvamVjdD1uaWxl","encryptionAlgorithm":"AES_GCM","ciphertextDataIntegrityValueAlgorithm":"SHA_256"}`))
	if status != 200 {
		t.Fatalf("curl encrypt: %d %s", status, body)
	}
	var enc map[string]string
	if err := json.Unmarshal(body, &enc); err != nil {
		t.Fatal(err)
	}
	dec := `{` + md + `,"ciphertext":"` + enc["ciphertext"] + `","ciphertextMetadata":"` + enc["ciphertextMetadata"] +
		`","initializationVector":"` + enc["initializationVector"] + `","authenticationTag":"` + enc["authenticationTag"] +
		`","additionalAuthenticatedData":"cHJvamVjdD1uaWxl","encryptionAlgorithm":"AES_GCM"}`
	status, body = curlXKS(t, f, f.credsA[0], "us-east-1", "/a/kms/xks/v1/keys/k1/decrypt", []byte(dec))
	if status != 200 || !bytes.Contains(body, []byte(`"plaintext":"SGVsbG8gV29ybGQh"`)) {
		t.Fatalf("curl decrypt: %d %s", status, body)
	}
	status, body = curlXKS(t, f, f.credB, "eu-west-1", "/kms/xks/v1/keys/k1/metadata", []byte(`{`+md+`}`))
	if status != 200 || !bytes.Contains(body, []byte(`"keyStatus":"ENABLED"`)) {
		t.Fatalf("curl metadata on the prefix-less key store: %d %s", status, body)
	}
	status, body = curlXKS(t, f, f.credB, "eu-west-1", "/kms/xks/v1/health", []byte(`{"requestMetadata":{"kmsRequestId":"h","kmsOperation":"KmsHealthCheck"}}`))
	if status != 200 || !bytes.Contains(body, []byte(`"xksProxyFleetSize":1`)) {
		t.Fatalf("curl health: %d %s", status, body)
	}
	// curl signing with the wrong region or another key store's credential is refused.
	status, body = curlXKS(t, f, f.credsA[0], "eu-west-1", "/a/kms/xks/v1/keys/k1/metadata", []byte(`{`+md+`}`))
	assertErrorBody(t, "curl wrong region", status, body, 401, "AuthenticationFailedException")
	status, body = curlXKS(t, f, f.credB, "us-east-1", "/a/kms/xks/v1/keys/k1/metadata", []byte(`{`+md+`}`))
	assertErrorBody(t, "curl other key store's credential", status, body, 401, "AuthenticationFailedException")
}
