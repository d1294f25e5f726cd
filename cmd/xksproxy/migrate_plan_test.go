package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

func plan(t *testing.T, content string) *migrationPlan {
	t.Helper()
	var s awsSampleSettings
	if _, err := toml.Decode(content, &s); err != nil {
		t.Fatal(err)
	}
	return planAWSReference("settings.toml", &s)
}

func contains(list []string, want string) bool {
	for _, s := range list {
		if strings.Contains(s, want) {
			return true
		}
	}
	return false
}

// What the settings alone decide: Oso closes the grants with a warning that
// names the policy; prefixes, credentials, key ids and static metadata
// obey the rules both proxies share; a key in two key stores is one HSM
// object, which this cluster adopts once.
func TestMigrationPlanFromSettings(t *testing.T) {
	secret := "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY42x"
	oso := `secondary_auth = "Oso"
[security.oso]
polar_file_path = "configuration/oso.polar"
`
	p := plan(t, sampleSettings("", oso, sampleStore("/tenant/a/b", "AKIAIOSFODNN7EXAMPLEA", secret, "k1", "k0")))
	if len(p.Problems) != 0 || len(p.KeyStores) != 1 {
		t.Fatalf("problems %q, key stores %+v", p.Problems, p.KeyStores)
	}
	ks := p.KeyStores[0]
	if ks.Name != "aws-tenant-a-b" || ks.URIPath != "/tenant/a/b/kms/xks/v1" || ks.GrantsMode != "closed" || strings.Join(ks.KeyIDs, ",") != "k0,k1" {
		t.Fatalf("planned %+v", ks)
	}
	if !contains(p.Warnings, "configuration/oso.polar") || !contains(p.Warnings, "closed grants") {
		t.Fatalf("no warning about the untranslated Polar policy: %q", p.Warnings)
	}
	if b, err := json.Marshal(p); err != nil || strings.Contains(string(b), samplePIN) || strings.Contains(string(b), secret) {
		t.Fatalf("the plan (--json) holds a secret or the PIN: %v\n%s", err, b)
	}

	logger := `
[pkcs11_logger]
PKCS11_LOGGER_LIBRARY_PATH = "/usr/lib/vendor/libvendorhsm.so"
`
	p = plan(t, sampleSettings("djAuMC4x", "", sampleStore("", "AKIAIOSFODNN7EXAMPLEA", secret, "k"))+logger)
	if len(p.Problems) != 0 || p.KeyStores[0].GrantsMode != "open" || p.KeyStores[0].Name != "aws-sample" || p.KeyStores[0].StaticMetadataB64 != "djAuMC4x" {
		t.Fatalf("problems %q, key stores %+v", p.Problems, p.KeyStores)
	}
	if strings.Contains(p.NodeTOML, "max_aad_bytes") {
		t.Fatalf("a line for a bound the sample proxy did not raise:\n%s", p.NodeTOML)
	}
	limits := `
[limits]
max_plaintext_in_base64 = 8192
max_aad_in_base64 = 16384
`
	if p := plan(t, sampleSettings("", "", sampleStore("", "AKIAIOSFODNN7EXAMPLEA", secret, "k"))+limits); !strings.Contains(p.NodeTOML, "max_aad_bytes = 12288") || !strings.Contains(p.NodeTOML, "max_plaintext_bytes = 6144") {
		t.Fatalf("the sample proxy's larger bounds are not carried over:\n%s", p.NodeTOML)
	}
	if !strings.Contains(p.NodeTOML, `module = "/usr/lib/vendor/libvendorhsm.so"`) {
		t.Fatalf("the module behind pkcs11-logger is not the one printed:\n%s", p.NodeTOML)
	}

	for name, tc := range map[string]struct {
		settings, want string
	}{
		"short prefix":       {sampleSettings("", "", sampleStore("/short", "AKIAIOSFODNN7EXAMPLEA", secret, "k")), "9-117 characters"},
		"bad access key id":  {sampleSettings("", "", sampleStore("", "akia-lower", secret, "k")), "access key id"},
		"short secret":       {sampleSettings("", "", sampleStore("", "AKIAIOSFODNN7EXAMPLEA", "tooshort", "k")), "secret of access key id"},
		"bad key id":         {sampleSettings("", "", sampleStore("", "AKIAIOSFODNN7EXAMPLEA", secret, "has space")), "key id"},
		"metadata too long":  {sampleSettings("MDEyMzQ1Njc4OTAxMjM0NTY3ODkw", "", sampleStore("", "AKIAIOSFODNN7EXAMPLEA", secret, "k")), "at most 20"},
		"metadata like ours": {sampleSettings("AQAAAAI=", "", sampleStore("", "AKIAIOSFODNN7EXAMPLEA", secret, "k")), "mistaken for this proxy's own"},
		"a key in two key stores": {sampleSettings("", "", sampleStore("", "AKIAIOSFODNN7EXAMPLEA", secret, "foo", "cat"),
			sampleStore("/example/uri/path/prefix", "AKIAI44QHZDHBEXAMPLEB", secret, "foo", "bar")), "key foo is also in #1"},
		"one access key id twice": {sampleSettings("", "", sampleStore("", "AKIAIOSFODNN7EXAMPLEA", secret, "a"),
			sampleStore("/example/uri/path/prefix", "AKIAIOSFODNN7EXAMPLEA", secret, "b")), "is also #1's"},
	} {
		if p := plan(t, tc.settings); !contains(p.Problems, tc.want) {
			t.Errorf("%s: problems %q, want one saying %q", name, p.Problems, tc.want)
		}
	}
}
