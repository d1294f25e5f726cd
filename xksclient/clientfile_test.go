package xksclient

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// TestClientFileContract: testdata/client.json and client-empty.json were
// written by dev before ClientFile existed (devenv's own type, with
// json.MarshalIndent). Scripts and tools outside this repository read that
// format, so ClientFile must read every field of it and write it back byte
// for byte: same names, same order, null for an absent list, no field left
// out when empty.
func TestClientFileContract(t *testing.T) {
	want := ClientFile{
		Endpoint:        "https://127.0.0.1:9443",
		Endpoints:       []string{"https://127.0.0.1:9443", "https://127.0.0.1:9444", "https://127.0.0.1:9445"},
		URIPath:         "/demo/kms/xks/v1",
		KeyStore:        "demo",
		AccessKeyID:     "XKSDEVEXAMPLE0001",
		SecretAccessKey: "example-secret-of-the-golden-file",
		Region:          "us-east-1",
		KeyID:           "demo-key",
		CACertFile:      "/home/alice/xksproxy/.xks3/tls/ca.pem",
		HealthEndpoints: []string{"http://127.0.0.1:9460", "http://127.0.0.1:9461", "http://127.0.0.1:9462"},
	}
	for name, want := range map[string]ClientFile{"client.json": want, "client-empty.json": {}} {
		golden := filepath.Join("testdata", name)
		got, err := LoadClientFile(golden)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s decoded as\n%+v\nwant\n%+v", name, got, want)
		}
		path := filepath.Join(t.TempDir(), "client.json")
		if err := got.Save(path); err != nil {
			t.Fatal(err)
		}
		wrote, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		old, err := os.ReadFile(golden)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(wrote, old) {
			t.Errorf("%s written back differs:\n%s\nwant\n%s", name, wrote, old)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v; want 0600 (it holds a secret)", name, fi.Mode().Perm())
		}
	}
}

func TestClientFileClient(t *testing.T) {
	f, err := LoadClientFile(filepath.Join("testdata", "client.json"))
	if err != nil {
		t.Fatal(err)
	}
	f.CACertFile = "" // the system roots: the golden file's CA does not exist here
	c, err := f.Client(2)
	if err != nil {
		t.Fatal(err)
	}
	want := Credentials{AccessKeyID: "XKSDEVEXAMPLE0001", Secret: "example-secret-of-the-golden-file", Region: "us-east-1"}
	if c.Endpoint != "https://127.0.0.1:9445" || c.URIPath != "/demo/kms/xks/v1" || c.Creds != want {
		t.Errorf("client = %+v", c)
	}
	if _, err := f.Client(3); err == nil {
		t.Error("a fourth endpoint of three was accepted")
	}
}
