package node

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

func TestShippedExampleConfigLoads(t *testing.T) {
	c, err := LoadConfig("../../../../deploy/node.toml")
	if err != nil {
		t.Fatal(err)
	}
	if c.API.MTLSClientSubjectCN == "" || c.HSM.PINFile == "" || len(c.Bootstrap.KeyStores[0].Credentials) != 2 ||
		c.Bootstrap.KeyStores[0].Credentials[1].Expires.IsZero() || len(c.Cluster.Join) != 2 || c.Admin.TokenFile == "" {
		t.Fatalf("example lost settings: %+v", c)
	}
}

func TestConfigRefusesUnknownAndInconsistentSettings(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(dir, "n.toml")
		os.WriteFile(p, []byte(body), 0o600)
		return p
	}
	base := "data_dir='/d'\n[api]\ntls_cert_file='c'\ntls_key_file='k'\n[hsm]\ntoken_label='t'\n[cluster]\nca_file='ca'\ncert_file='c'\nkey_file='k'\n[admin]\ntoken_file='t'\n"
	if _, err := LoadConfig(write(base)); err != nil {
		t.Fatalf("minimal config: %v", err)
	}
	_, err := LoadConfig(write(base + "pool_sise = 4\n"))
	if err == nil || !strings.Contains(err.Error(), "pool_sise") {
		t.Fatalf("misspelt key: %v", err)
	}
	_, err = LoadConfig(write(strings.Replace(base, "tls_key_file='k'\n", "tls_key_file='k'\nmtls_client_ca_file='ca'\nmtls_client_subject_cn='x'\n", 1)))
	if err == nil || !strings.Contains(err.Error(), "health_listen") {
		t.Fatalf("mTLS without a health port: %v", err)
	}
	_, err = LoadConfig(write(strings.Replace(base, "tls_key_file='k'\n", "tls_key_file='k'\nhealth_listen='127.0.0.1:1'\nmtls_client_ca_file='ca'\n", 1)))
	if err == nil || !strings.Contains(err.Error(), "mtls_client_subject_cn") {
		t.Fatalf("an mTLS CA without the subject: %v", err)
	}
	_, err = LoadConfig(write(strings.Replace(base, "tls_key_file='k'\n", "tls_key_file='k'\nmax_conns=100\nmax_conns_per_ip=200\n", 1)))
	if err == nil || !strings.Contains(err.Error(), "max_conns_per_ip (200) is above api.max_conns (100)") {
		t.Fatalf("a per-address connection limit above the total: %v", err)
	}
	_, err = LoadConfig(write(base + "[log]\nlevel='verbose'\n"))
	if err == nil || !strings.Contains(err.Error(), `log.level "verbose"`) {
		t.Fatalf("an unknown log level: %v", err)
	}
}

func TestBootstrapSeedReadsSecretsFromFilesOrEnvironment(t *testing.T) {
	dir := t.TempDir()
	secret := "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ="
	os.WriteFile(filepath.Join(dir, "s"), []byte(secret+"\n"), 0o600)
	t.Setenv("XKS_TEST_SECRET", secret)
	c := Config{Bootstrap: BootstrapConfig{
		KeyStores: []BootstrapKeyStore{{Name: "a", URIPath: "/a/kms/xks/v1", Region: "us-east-1", Credentials: []BootstrapCredential{
			{AccessKeyID: "AAAAAAAAAAAAAAAAAAAAAAAA", SecretFile: filepath.Join(dir, "s")},
			{AccessKeyID: "BBBBBBBBBBBBBBBBBBBBBBBB", SecretEnv: "XKS_TEST_SECRET"},
		}}},
		Keys: []BootstrapKey{{KeyStore: "a", ID: "k"}},
	}}
	c.Defaults()
	spec, err := c.SeedSpec()
	if err != nil {
		t.Fatal(err)
	}
	ks := spec.KeyStores[0]
	if ks.GrantsMode != "closed" || ks.KeyMode != "replicated" || len(ks.Credentials) != 2 {
		t.Fatalf("seed key store = %+v", ks)
	}
	for _, cr := range ks.Credentials {
		if string(cr.Secret) != secret {
			t.Fatalf("credential %s secret not read", cr.AccessKeyID)
		}
	}
	if k := spec.Keys[0]; k.Usage == 0 || k.Disabled {
		t.Fatalf("seed key = %+v", k)
	}
	c.Bootstrap.KeyStores[0].Credentials[1].SecretEnv = "XKS_TEST_UNSET"
	if _, err := c.SeedSpec(); err == nil || strings.Contains(err.Error(), secret) {
		t.Fatalf("unset secret variable: %v", err)
	}
}

func TestExposedSecretFiles(t *testing.T) {
	dir := t.TempDir()
	private, shared := filepath.Join(dir, "pin"), filepath.Join(dir, "token")
	os.WriteFile(private, []byte("1234"), 0o600)
	os.WriteFile(shared, []byte("token-token-token"), 0o644)
	c := Config{HSM: HSMConfig{PINFile: private}, Admin: AdminConfig{TokenFile: shared}}
	got := c.ExposedSecretFiles()
	if len(got) != 1 || !strings.Contains(got[0], "admin.token_file") || !strings.Contains(got[0], "0644") {
		t.Fatalf("exposed secret files: %q", got)
	}
}

// TestConfigRoundTrip encodes configurations and reads them back: the
// shipped example with every setting, and a minimal one whose unset
// settings must stay out of the file (a "max_in_flight = 0" or
// "expires = 0001-01-01..." written out reads as a choice, not a default).
func TestConfigRoundTrip(t *testing.T) {
	dir := t.TempDir()
	full, err := LoadConfig("../../../../deploy/node.toml")
	if err != nil {
		t.Fatal(err)
	}
	minimal := &Config{DataDir: "/d", NodeID: "n1",
		API:       APIConfig{TLSCertFile: "c", TLSKeyFile: "k"},
		HSM:       HSMConfig{TokenLabel: "t", PINFile: "p"},
		Cluster:   ClusterConfig{CAFile: "ca", CertFile: "c", KeyFile: "k"},
		Admin:     AdminConfig{TokenFile: "t"},
		Bootstrap: BootstrapConfig{KeyStores: []BootstrapKeyStore{{Name: "a", URIPath: "/a/kms/xks/v1", Region: "us-east-1", Credentials: []BootstrapCredential{{AccessKeyID: "AKIDAKIDAKIDAKIDAKID", SecretFile: "s"}}}}},
	}
	for name, c := range map[string]*Config{"full": full, "minimal": minimal} {
		var b strings.Builder
		if err := toml.NewEncoder(&b).Encode(c); err != nil {
			t.Fatal(err)
		}
		if name == "minimal" {
			for _, zero := range []string{"= 0\n", "= 0.0\n", `= ""`, "= false", "0001-01-01", `"0s"`, "[log]"} {
				if strings.Contains(b.String(), zero) {
					t.Errorf("an unset setting was written (%q):\n%s", zero, b.String())
				}
			}
		}
		path := filepath.Join(dir, name+".toml")
		if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := LoadConfig(path)
		if err != nil {
			t.Fatalf("%s: %v\n%s", name, err, b.String())
		}
		c.Defaults()
		if !reflect.DeepEqual(got, c) {
			t.Errorf("%s does not read back as written:\n%+v\nwant\n%+v", name, got, c)
		}
	}
}
