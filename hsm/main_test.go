package hsm

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/hsm/softhsm"
)

// The tests run against a real SoftHSMv2 with tokens in a temporary
// directory. SoftHSMv2 reads SOFTHSM2_CONF at C_Initialize, which is per
// process, so the configuration and tokens are set up once here.
const (
	testToken     = "xks-test"
	recoveryToken = "xks-recovery"
	// Three nodes' HSMs, as a replicated cluster test has them: one module,
	// one token each.
	nodeA = "xks-node-a"
	nodeB = "xks-node-b"
	nodeC = "xks-node-c"
	// halfToken is left holding only one of the cluster keys.
	halfToken = "xks-half"
	userPIN   = "user-pin-7305"
)

var (
	testModule string
	testDir    string
)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	tokens, err := softhsm.TestTokens("hsm-test-", userPIN, testToken, recoveryToken, nodeA, nodeB, nodeC, halfToken)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer tokens.Remove()
	testModule, testDir = tokens.Module, tokens.Dir
	return m.Run()
}

// testConfig uses generous timeouts: the tests are about behaviour, on a
// shared machine where a SoftHSMv2 call can stall; tests about timeouts set
// their own. The monitor is kept quiet unless a test wants it.
func testConfig(token string) Config {
	return Config{
		ModulePath:     testModule,
		TokenLabel:     token,
		PIN:            userPIN,
		WaitTimeout:    10 * time.Second,
		CallTimeout:    10 * time.Second,
		HealthInterval: time.Hour,
	}
}

func openT(t testing.TB, cfg Config) *HSM {
	t.Helper()
	return openWrapped(t, cfg, nil)
}

func openWrapped(t testing.TB, cfg Config, wrap func(module) module) *HSM {
	t.Helper()
	h, err := open(cfg, wrap)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return h
}

// newKey creates a key named after the test, or reuses it when the test
// runs again in the same process (-count, benchmarks).
func newKey(t testing.TB, h *HSM) string {
	t.Helper()
	label := strings.NewReplacer("/", "-", " ", "-").Replace(t.Name())
	if err := h.GenerateKey(label); err != nil && !errors.Is(err, ErrKeyExists) {
		t.Fatalf("GenerateKey(%q): %v", label, err)
	}
	return label
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, deadline time.Duration, cond func() bool) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out after %v waiting for %s", deadline, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func uniqueLabel(prefix string) string {
	return prefix + "-" + hex.EncodeToString(randomBytes(8))
}
