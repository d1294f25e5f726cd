package node

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/hsm"
	"github.com/xksproxy/xksproxy/hsm/softhsm"
)

// testModule is the SoftHSMv2 module holding the token importTestToken.
var testModule string

const (
	importTestToken = "import-test"
	importTestPIN   = "user-pin-1234"
)

func TestMain(m *testing.M) {
	os.Exit(func() int {
		tokens, err := softhsm.TestTokens("node-test-", importTestPIN, importTestToken, metricsTokenA, metricsTokenB)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer tokens.Remove()
		testModule = tokens.Module
		return m.Run()
	}())
}

// TestImportKeysFileIsDestroyedOnceImported: the ceremony material in
// import_keys_file unseals every secret of raft.db or a backup, so serve
// overwrites and removes it once the HSM holds the cluster keys, whether it
// imported them now or they were there already. A real SoftHSMv2 token.
func TestImportKeysFileIsDestroyedOnceImported(t *testing.T) {
	dir := t.TempDir()
	h, err := hsm.Open(hsm.Config{ModulePath: testModule, TokenLabel: importTestToken, PIN: importTestPIN,
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
