package softhsm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"
)

func TestModulePath(t *testing.T) {
	p, err := ModulePath()
	if err != nil {
		t.Fatalf("SoftHSMv2 must be installed for these tests: %v", err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatal(err)
	}
}

func TestWriteConfig(t *testing.T) {
	dir := t.TempDir()
	// Relative paths are made absolute: SoftHSMv2 must not depend on the
	// working directory.
	t.Chdir(dir)
	conf, err := WriteConfig("hsm")
	if err != nil {
		t.Fatal(err)
	}
	if conf != filepath.Join(dir, "hsm", "softhsm2.conf") {
		t.Errorf("config path = %s", conf)
	}
	body, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	tokens := filepath.Join(dir, "hsm", "tokens")
	for _, line := range []string{"directories.tokendir = " + tokens, "objectstore.backend = file", "log.level = ERROR"} {
		if !strings.Contains(string(body), line+"\n") {
			t.Errorf("config lacks %q:\n%s", line, body)
		}
	}
	fi, err := os.Stat(tokens)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("token directory mode = %v, want 0700", fi.Mode().Perm())
	}
	// Rewriting an existing setup is fine.
	if _, err := WriteConfig(filepath.Join(dir, "hsm")); err != nil {
		t.Fatal(err)
	}
}

func TestInitToken(t *testing.T) {
	module, err := ModulePath()
	if err != nil {
		t.Fatal(err)
	}
	conf, err := WriteConfig(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(ConfigEnv, conf)

	for _, label := range []string{"first", "second", "first"} {
		if err := InitToken(module, label, "so-pin-1", "user-pin-1"); err != nil {
			t.Fatalf("InitToken(%q): %v", label, err)
		}
	}
	for name, args := range map[string][3]string{
		"empty label": {"", "so", "user"},
		"long label":  {strings.Repeat("x", 33), "so", "user"},
		"no SO PIN":   {"third", "", "user"},
		"no user PIN": {"third", "so", ""},
	} {
		if err := InitToken(module, args[0], args[1], args[2]); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}

	// InitToken left the module finalized; check the result from scratch.
	ctx := pkcs11.New(module)
	defer ctx.Destroy()
	if err := ctx.Initialize(); err != nil {
		t.Fatalf("Initialize after InitToken: %v (InitToken must finalize what it initialised)", err)
	}
	defer ctx.Finalize()
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]uint{}
	for _, s := range slots {
		ti, err := ctx.GetTokenInfo(s)
		if err == nil && ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED != 0 {
			if _, dup := found[ti.Label]; dup {
				t.Errorf("token %q created twice", ti.Label)
			}
			found[ti.Label] = s
		}
	}
	if len(found) != 2 {
		t.Fatalf("tokens = %v, want first and second", found)
	}
	sh, err := ctx.OpenSession(found["second"], pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	if err := ctx.Login(sh, pkcs11.CKU_USER, "user-pin-1"); err != nil {
		t.Errorf("user login: %v", err)
	}

	// With the module initialised by someone else in the process, InitToken
	// works and leaves it initialised.
	if err := InitToken(module, "third", "so-pin-1", "user-pin-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := ctx.GetSlotList(true); err != nil {
		t.Errorf("InitToken finalized a module it did not initialise: %v", err)
	}
}

func TestTestTokens(t *testing.T) {
	t.Setenv(ConfigEnv, "") // restored after the test: TestTokens sets it for the process
	tok, err := TestTokens("softhsm-test-", "user-pin-1", "one", "two")
	if err != nil {
		t.Fatal(err)
	}
	if got := os.Getenv(ConfigEnv); got != filepath.Join(tok.Dir, "softhsm2.conf") {
		t.Errorf("%s = %q", ConfigEnv, got)
	}
	if module, _ := ModulePath(); tok.Module != module {
		t.Errorf("module = %q, want %q", tok.Module, module)
	}
	tokens, err := os.ReadDir(tok.TokenDir())
	if err != nil || len(tokens) != 2 {
		t.Errorf("token directory holds %d entries (%v), want one per label", len(tokens), err)
	}
	// The tokens take the user PIN.
	ctx := pkcs11.New(tok.Module)
	defer ctx.Destroy()
	if err := ctx.Initialize(); err != nil {
		t.Fatal(err)
	}
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		t.Fatal(err)
	}
	logins := 0
	for _, s := range slots {
		if ti, err := ctx.GetTokenInfo(s); err != nil || ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			continue
		}
		sh, err := ctx.OpenSession(s, pkcs11.CKF_SERIAL_SESSION)
		if err != nil {
			t.Fatal(err)
		}
		if err := ctx.Login(sh, pkcs11.CKU_USER, "user-pin-1"); err != nil {
			t.Errorf("user login: %v", err)
		} else {
			logins++
		}
		ctx.CloseSession(sh)
	}
	ctx.Finalize()
	if logins != 2 {
		t.Errorf("logged in to %d tokens, want 2", logins)
	}
	if err := tok.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tok.Dir); !os.IsNotExist(err) {
		t.Errorf("Remove left %s: %v", tok.Dir, err)
	}
}

// ImportAESKey writes into the token labelled exactly as asked, also when
// other tokens' labels start with that label (pkcs11-tool's --token-label
// takes the first token whose label starts with it; slots come in the
// order of SoftHSMv2's token directories, which is random).
func TestImportAESKeyGoesToTheTokenNamed(t *testing.T) {
	module, err := ModulePath()
	if err != nil {
		t.Fatal(err)
	}
	conf, err := WriteConfig(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(ConfigEnv, conf)
	labels := []string{"imp-2", "imp-3", "imp-4", "imp"}
	for _, label := range labels {
		if err := InitToken(module, label, "so-pin-1", "user-pin-1"); err != nil {
			t.Fatal(err)
		}
	}
	for _, label := range labels {
		if err := ImportAESKey(module, label, "user-pin-1", "key-of-"+label, make([]byte, 32)); err != nil {
			t.Fatal(err)
		}
	}
	ctx := pkcs11.New(module)
	defer ctx.Destroy()
	if err := ctx.Initialize(); err != nil {
		t.Fatal(err)
	}
	defer ctx.Finalize()
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range slots {
		ti, err := ctx.GetTokenInfo(s)
		if err != nil || ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			continue
		}
		sh, err := ctx.OpenSession(s, pkcs11.CKF_SERIAL_SESSION)
		if err != nil {
			t.Fatal(err)
		}
		if err := ctx.Login(sh, pkcs11.CKU_USER, "user-pin-1"); err != nil {
			t.Fatal(err)
		}
		if err := ctx.FindObjectsInit(sh, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY)}); err != nil {
			t.Fatal(err)
		}
		handles, _, err := ctx.FindObjects(sh, 10)
		ctx.FindObjectsFinal(sh)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, h := range handles {
			attrs, err := ctx.GetAttributeValue(sh, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_LABEL, nil)})
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, string(attrs[0].Value))
		}
		if want := "key-of-" + ti.Label; len(got) != 1 || got[0] != want {
			t.Errorf("token %q holds %v, want only %s", ti.Label, got, want)
		}
		ctx.CloseSession(sh)
	}
}
