package main

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"

	"github.com/xksproxy/xksproxy/cmd/xksproxy/internal/node"
	"github.com/xksproxy/xksproxy/hsm/softhsm"
	"github.com/xksproxy/xksproxy/internal/legacyvectors"
	"github.com/xksproxy/xksproxy/xksclient"
)

// sampleSettings is a settings.toml of AWS's sample proxy, as its
// configuration/settings_softhsmv2.toml lays one out, with the parts a test
// varies filled in.
func sampleSettings(metadataB64, extra string, stores ...string) string {
	s := `[server]
ip = "0.0.0.0"
port = 80
region = "us-east-1"
service = "kms-xks-proxy"
`
	if metadataB64 != "" {
		s += "ciphertext_metadata_b64 = \"" + metadataB64 + "\"\n"
	}
	s += `[server.tcp_keepalive]
tcp_keepalive_secs = 60

[security]
is_sigv4_auth_enabled = true
is_tls_enabled = true
is_mtls_enabled = true
` + extra + `
[tls]
tls_cert_pem = "tls/server_cert.pem"
tls_key_pem = "tls/server_key.pem"
mtls_client_ca_pem = "tls/client_ca.pem"
mtls_client_dns_name = "us-east-1.alpha.cks.kms.aws.internal.amazonaws.com"

[pkcs11]
session_pool_max_size = 30
user_pin = "` + samplePIN + `"
PKCS11_HSM_MODULE = "/usr/local/lib/softhsm/libsofthsm2.so"
context_read_timeout_milli = 10
`
	return s + strings.Join(stores, "")
}

const samplePIN = "pin-of-the-sample-proxy-4711"

func sampleStore(prefix, akid, secret string, keyIDs ...string) string {
	return `
[[external_key_stores]]
uri_path_prefix = "` + prefix + `"
sigv4_access_key_id = "` + akid + `"
sigv4_secret_access_key = "` + secret + `"
xks_key_id_set = ["` + strings.Join(keyIDs, `", "`) + `"]
`
}

func writeSettings(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// importKey puts key under label into the HSM token of each node named.
func importKey(t *testing.T, dir, label string, key []byte, nodes ...int) {
	t.Helper()
	for _, i := range nodes {
		var cfg node.Config
		if _, err := toml.DecodeFile(filepath.Join(dir, "node"+strconv.Itoa(i+1), "node.toml"), &cfg); err != nil {
			t.Fatal(err)
		}
		pin, err := os.ReadFile(cfg.HSM.PINFile)
		if err != nil {
			t.Fatal(err)
		}
		var env []string
		for k, v := range cfg.HSM.Env {
			env = append(env, k+"="+v)
		}
		if err := softhsm.ImportAESKey(cfg.HSM.Module, cfg.HSM.TokenLabel, strings.TrimSpace(string(pin)), label, key, env...); err != nil {
			t.Fatal(err)
		}
	}
}

// The move from AWS's sample proxy as the README's runbook has it, against
// a three-node dev cluster whose HSMs hold the sample proxy's keys: the
// dry run finds each planted problem and changes nothing; the migration
// keeps the URI path and credential; every ciphertext the sample proxy
// made (computed independently from its formula and known keys) decrypts
// on every node, and no tampered one does; new ciphertexts are in the
// sample proxy's format until the first rotation, ours after it; after
// a rotation to a new label and a full-cluster restart, both kinds still
// decrypt everywhere.
func TestMigrateFromTheAWSSampleProxy(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	port := freeLoopbackPort(t)
	p := start(t, bin, "dev", "--nodes", "3", "--data", dir, "--listen", "127.0.0.1:"+strconv.Itoa(port))
	dev := readClientFile(t, dir, p)
	all := []int{0, 1, 2}

	// The sample proxy's keys, in every node's HSM (its replica), except
	// one that only two of them hold.
	fooKey, barKey := make([]byte, 32), make([]byte, 32)
	rand.Read(fooKey)
	rand.Read(barKey)
	importKey(t, dir, "foo", fooKey, all...)
	importKey(t, dir, "bar", barKey, all...)
	importKey(t, dir, "only-two", barKey, 0, 1)

	// Planted problems: a URI path and an access key id in use, a label a
	// node lacks, static metadata shaped like ours.
	if out, err := cli(t, bin, dir, 0, "keystore", "create", "inuse", "--uri-path", "/in-use/prefix/kms/xks/v1", "--region", "us-east-1"); err != nil {
		t.Fatalf("keystore create: %v\n%s", err, out)
	}
	secretA := "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY42x"
	secretB := "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY00a"
	bad := writeSettings(t, "bad.toml", sampleSettings("AQAAAAE=", "",
		sampleStore("/in-use/prefix", "AKIAIOSFODNN7EXAMPLEA", secretA, "foo"),
		sampleStore("/another/prefix", dev.AccessKeyID, secretB, "only-two")))
	before, _ := cli(t, bin, dir, 0, "keystore", "list")
	for _, args := range [][]string{{"--dry-run"}, {}} {
		out, err := cli(t, bin, dir, 1, append([]string{"migrate", "aws-reference", bad}, args...)...)
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 {
			t.Fatalf("migrate %v of a plan with problems: %v (want exit status 1)\n%s", args, err, out)
		}
		for _, want := range []string{
			"URI path /in-use/prefix/kms/xks/v1 is already key store inuse's",
			"access key id " + dev.AccessKeyID + " is already a credential of key store " + dev.KeyStore,
			"HSM label only-two is missing on node3",
			`ciphertext_metadata_b64 "AQAAAAE=" could be mistaken for this proxy's own`,
		} {
			if !strings.Contains(out, want) {
				t.Errorf("migrate %v does not report %q:\n%s", args, want, out)
			}
		}
		if after, _ := cli(t, bin, dir, 0, "keystore", "list"); after != before {
			t.Fatalf("migrate %v with problems changed the key stores:\n%s\nthen\n%s", args, before, after)
		}
	}

	// The runbook: dry run, then migrate.
	static := []byte("v0.0.1")
	good := writeSettings(t, "settings.toml", sampleSettings("djAuMC4x", "",
		sampleStore("", "AKIAIOSFODNN7EXAMPLEA", secretA, "foo"),
		sampleStore("/tenant/finance", "AKIAI44QHZDHBEXAMPLEB", secretB, "bar")))
	for _, args := range [][]string{{"--dry-run"}, {}} {
		out, err := cli(t, bin, dir, 2, append([]string{"migrate", "aws-reference", good}, args...)...)
		if err != nil {
			t.Fatalf("migrate %v: %v\n%s", args, err, out)
		}
		for _, secret := range []string{secretA, secretB, samplePIN} {
			if strings.Contains(out, secret) {
				t.Fatalf("migrate %v printed a secret or the PIN:\n%s", args, out)
			}
		}
		for _, want := range []string{"key store aws-sample: URI path /kms/xks/v1", "key store aws-tenant-finance: URI path /tenant/finance/kms/xks/v1",
			"grants open", `tls_cert_file = "tls/server_cert.pem"`, `mtls_client_subject_cn = "us-east-1.alpha.cks.kms.aws.internal.amazonaws.com"`,
			`module = "/usr/local/lib/softhsm/libsofthsm2.so"`} {
			if !strings.Contains(out, want) {
				t.Errorf("migrate %v does not print %q:\n%s", args, want, out)
			}
		}
		t.Logf("migrate %v:\n%s", args, out)
	}

	// A second run finds the migration done and changes nothing.
	out, err := cli(t, bin, dir, 0, "migrate", "aws-reference", good)
	if err != nil || !strings.Contains(out, "created by an earlier run; keys already adopted: foo") || strings.Contains(out, "created key") {
		t.Fatalf("migrate again: %v\n%s", err, out)
	}

	// AWS KMS keeps its configuration: the same endpoints, URI paths and
	// credentials reach the imported keys on every node.
	sample := func(node int, uriPath, akid, secret string) *xksclient.Client {
		c := clientFrom(t, dev, node)
		c.URIPath, c.Creds = uriPath, xksclient.Credentials{AccessKeyID: akid, Secret: secret, Region: "us-east-1"}
		return c
	}
	fooVectors, err := legacyvectors.All(fooKey, static)
	if err != nil {
		t.Fatal(err)
	}
	barVectors, err := legacyvectors.All(barKey, static)
	if err != nil {
		t.Fatal(err)
	}
	decryptVector := func(c *xksclient.Client, keyID string, v legacyvectors.Vector) ([]byte, error) {
		body, err := v.DecryptBody(testMetadata("Decrypt"))
		if err != nil {
			t.Fatal(err)
		}
		var out struct {
			Plaintext []byte `json:"plaintext"`
		}
		err = c.Post(c.KeyPath(keyID, "decrypt"), body, &out)
		return out.Plaintext, err
	}
	var ours []*xksclient.EncryptResponse
	checkEverything := func(when string) {
		t.Helper()
		for i := range 3 {
			foo := sample(i, "/kms/xks/v1", "AKIAIOSFODNN7EXAMPLEA", secretA)
			bar := sample(i, "/tenant/finance/kms/xks/v1", "AKIAI44QHZDHBEXAMPLEB", secretB)
			for _, tc := range []struct {
				c       *xksclient.Client
				key     string
				vectors []legacyvectors.Vector
			}{{foo, "foo", fooVectors}, {bar, "bar", barVectors}} {
				for _, v := range tc.vectors {
					if got, err := decryptVector(tc.c, tc.key, v); err != nil || string(got) != string(v.Plaintext) {
						t.Fatalf("%s, node %d, key %s, %s: %q, %v", when, i+1, tc.key, v, got, err)
					}
				}
			}
			for _, enc := range ours {
				decrypt(t, foo, "foo", enc, "written after the migration")
			}
		}
	}
	checkEverything("after migrate")
	c0 := sample(0, "/kms/xks/v1", "AKIAIOSFODNN7EXAMPLEA", secretA)
	for _, v := range fooVectors {
		for _, bad := range v.Tampered() {
			_, err := decryptVector(c0, "foo", bad)
			var xe *xksclient.Error
			if !errors.As(err, &xe) || xe.Name != "InvalidCiphertextException" {
				t.Fatalf("%s: %v, want InvalidCiphertextException", bad, err)
			}
		}
	}
	encrypt := func(wantVersion uint32) {
		t.Helper()
		enc, err := c0.Encrypt("foo", &xksclient.EncryptRequest{RequestMetadata: testMetadata("Encrypt"), Plaintext: []byte("written after the migration")})
		if err != nil {
			t.Fatal(err)
		}
		if wantVersion == 1 {
			// Until the first rotation the cluster writes the sample
			// proxy's format, which that proxy opens: a rollback loses nothing.
			if string(enc.CiphertextMetadata) != string(static) {
				t.Fatalf("new ciphertext metadata %x before the first rotation, want the static %x", enc.CiphertextMetadata, static)
			}
			if got, err := legacyvectors.Open(fooKey, nil, enc.CiphertextMetadata, enc.IV, enc.Ciphertext, enc.Tag); err != nil || string(got) != "written after the migration" {
				t.Fatalf("the sample proxy's formula cannot open what the cluster wrote before the first rotation: %q, %v", got, err)
			}
		} else if md := enc.CiphertextMetadata; len(md) != 5 || md[0] != 1 || binary.BigEndian.Uint32(md[1:]) != wantVersion {
			t.Fatalf("new ciphertext metadata %x, want ours for version %d", md, wantVersion)
		}
		ours = append(ours, enc)
	}
	encrypt(1)
	checkEverything("after the first new encrypt")

	// Rotation adopts a new label every HSM holds, and only such a label.
	for _, args := range [][]string{{}, {"--hsm-label", "only-two"}} {
		out, err := cli(t, bin, dir, 1, append([]string{"key", "rotate", "aws-sample", "foo"}, args...)...)
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(out, "every HSM") && !strings.Contains(out, "not visible on node3") {
			t.Fatalf("key rotate %v of a shared key: %v (want a refusal)\n%s", args, err, out)
		}
	}
	newKey := make([]byte, 32)
	rand.Read(newKey)
	importKey(t, dir, "foo-2", newKey, all...)
	if out, err := cli(t, bin, dir, 1, "key", "rotate", "aws-sample", "foo", "--hsm-label", "foo-2"); err != nil {
		t.Fatalf("key rotate: %v\n%s", err, out)
	}
	encrypt(2)
	checkEverything("after rotation")

	// Full-cluster restart.
	p.stop(t)
	os.Remove(filepath.Join(dir, "client.json"))
	p = start(t, bin, "dev", "--data", dir)
	readClientFile(t, dir, p)
	checkEverything("after a full-cluster restart")
	encrypt(2)
	checkEverything("after a new encrypt on the restarted cluster")
	p.stop(t)
}
