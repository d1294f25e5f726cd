package node

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/hsm"
	"github.com/xksproxy/xksproxy/hsm/softhsm"
)

// TestImportKeysFileIsDestroyedOnceImported: the ceremony material in
// import_keys_file unseals every secret of raft.db or a backup, so serve
// overwrites and removes it once the HSM holds the cluster keys, whether it
// imported them now or they were there already. A real SoftHSMv2 token.
func TestImportKeysFileIsDestroyedOnceImported(t *testing.T) {
	dir := t.TempDir()
	conf, err := softhsm.WriteConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(softhsm.ConfigEnv, conf)
	module, err := softhsm.ModulePath()
	if err != nil {
		t.Fatal(err)
	}
	if err := softhsm.InitToken(module, "import-test", "so-pin-5678", "user-pin-1234"); err != nil {
		t.Fatal(err)
	}
	h, err := hsm.Open(hsm.Config{ModulePath: module, TokenLabel: "import-test", PIN: "user-pin-1234",
		WaitTimeout: 5 * time.Second, CallTimeout: 10 * time.Second, HealthInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()

	path := filepath.Join(dir, "cluster-keys")
	for round, what := range []string{"importing", "the keys already in the HSM"} {
		if err := GenerateClusterKeys(path); err != nil {
			t.Fatal(err)
		}
		destroyed, err := importClusterKeysFile(h, path)
		if err != nil || !destroyed {
			t.Fatalf("%s: %v %v", what, destroyed, err)
		}
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Fatalf("%s: the ceremony file is still there: %v", what, err)
		}
		if ok, err := h.HasClusterKeys(); !ok || err != nil {
			t.Fatalf("round %d: the HSM lacks the cluster keys: %v", round, err)
		}
	}
	// A restart after the file is gone: nothing to import, nothing to destroy.
	if destroyed, err := importClusterKeysFile(h, path); err != nil || destroyed {
		t.Fatalf("restart without the file: %v %v", destroyed, err)
	}
}
