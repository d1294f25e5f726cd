package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// [hsm] keeps working as it always did, and [[hsm]] lists several HSMs,
// each with its own settings and defaults; an unknown key in either form is
// refused.
func TestConfigOneOrSeveralHSMs(t *testing.T) {
	dir := t.TempDir()
	load := func(hsm string) (*Config, error) {
		p := filepath.Join(dir, "n.toml")
		body := "data_dir='/d'\n[api]\ntls_cert_file='c'\ntls_key_file='k'\n" + hsm +
			"[cluster]\nca_file='ca'\ncert_file='c'\nkey_file='k'\n[admin]\ntoken_file='t'\n"
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return LoadConfig(p)
	}

	c, err := load("[hsm]\ntoken_label='t'\npool_size=8\nwait_timeout='20ms'\n[hsm.env]\nSOFTHSM2_CONF='/s'\n")
	if err != nil {
		t.Fatal(err)
	}
	if hs := c.HSMs(); len(hs) != 1 || hs[0].TokenLabel != "t" || hs[0].PoolSize != 8 || hs[0].WaitTimeout != 20*time.Millisecond ||
		hs[0].Env["SOFTHSM2_CONF"] != "/s" || hs[0].Module == "" || hs[0].PINEnv != "XKSPROXY_HSM_PIN" {
		t.Fatalf("[hsm]: %+v", hs)
	}
	if c.HSM.More != nil { // dev compares the node.toml it wrote with what it meant, field by field
		t.Fatalf("[hsm] reads back with More %#v, not nil", c.HSM.More)
	}

	c, err = load("[[hsm]]\nmodule='/a.so'\ntoken_label='a'\npool_size=64\n[[hsm]]\nmodule='/b.so'\ntoken_label='b'\npin_file='/pin'\ncall_timeout='1s'\n")
	if err != nil {
		t.Fatal(err)
	}
	hs := c.HSMs()
	if len(hs) != 2 || hs[0].Module != "/a.so" || hs[0].TokenLabel != "a" || hs[0].PoolSize != 64 ||
		hs[1].Module != "/b.so" || hs[1].TokenLabel != "b" || hs[1].PINFile != "/pin" || hs[1].PINEnv != "" || hs[1].CallTimeout != time.Second {
		t.Fatalf("[[hsm]]: %+v %+v", hs[0], hs[1])
	}
	if c.HSM.TokenLabel != "a" {
		t.Fatalf("the first [[hsm]] is not the node's first HSM: %+v", c.HSM)
	}

	for _, bad := range []string{
		"[hsm]\ntoken_label='t'\npool_sise=4\n",
		"[[hsm]]\ntoken_label='a'\n[[hsm]]\ntoken_label='b'\npool_sise=4\n",
	} {
		if _, err := load(bad); err == nil || !strings.Contains(err.Error(), "hsm.pool_sise") {
			t.Errorf("misspelt key in %q: %v", bad, err)
		}
	}
	if _, err := load("[[hsm]]\ntoken_label='a'\n[[hsm]]\npool_size=4\n"); err == nil || !strings.Contains(err.Error(), "token_label is required (HSM 2)") {
		t.Errorf("second HSM without a token: %v", err)
	}
}
