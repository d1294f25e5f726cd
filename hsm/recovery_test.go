package hsm

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Someone else in the process closes every session on the token (which also
// logs the application out and, in SoftHSMv2, invalidates private objects'
// handles). The next call must re-open its session, log in again, look its
// key up again and succeed, without a recovery.
func TestRecoverAfterSessionsClosed(t *testing.T) {
	h := openT(t, testConfig(testToken))
	key := newKey(t, h)
	iv := randomBytes(12)
	ct, tag, err := h.EncryptGCM(key, iv, []byte("before"), []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}

	closeAllSessions(t, testToken)

	// Enough calls to go through every session of the pool.
	for i := range 2 * h.cfg.PoolSize {
		ct2, tag2, err := h.EncryptGCM(key, randomBytes(12), []byte("after"), nil)
		if err != nil {
			t.Fatalf("encrypt %d after CloseAllSessions: %v", i, err)
		}
		if ct2 == nil || tag2 == nil {
			t.Fatal("empty output")
		}
		got, err := h.DecryptGCM(key, iv, ct, tag, []byte("aad"))
		if err != nil || string(got) != "before" {
			t.Fatalf("decrypt %d after CloseAllSessions = %q, %v", i, got, err)
		}
	}
	if hl := h.CheckNow(); hl.Status != StatusActive {
		t.Errorf("health = %+v", hl)
	}
}

// The token's storage disappears (its directory is moved away) and comes
// back. SoftHSMv2 then reports stale handles as invalid, finds no objects,
// and fails C_GetTokenInfo with CKR_GENERAL_ERROR until the library is
// finalized and initialised again. The HSM must report UNAVAILABLE, refuse
// crypto with ErrUnavailable, and recover by itself once the token is back.
func TestRecoverAfterTokenRemoved(t *testing.T) {
	cfg := testConfig(recoveryToken)
	cfg.HealthInterval = 100 * time.Millisecond
	h := openT(t, cfg)
	key := newKey(t, h)
	iv := randomBytes(12)
	ct, tag, err := h.EncryptGCM(key, iv, []byte("before"), nil)
	if err != nil {
		t.Fatal(err)
	}

	dir := tokenDir(t, recoveryToken)
	away := filepath.Join(testDir, "away")
	if err := os.Rename(dir, away); err != nil {
		t.Fatal(err)
	}
	moved := true
	t.Cleanup(func() {
		if moved {
			os.Rename(away, dir)
		}
	})

	hl := h.CheckNow()
	if hl.Status != StatusUnavailable || hl.Err == "" {
		t.Fatalf("health with the token gone = %+v", hl)
	}
	t.Logf("token gone: %s: %s", hl.Status, hl.Err)
	if _, _, err := h.EncryptGCM(key, randomBytes(12), []byte("p"), nil); !errors.Is(err, ErrUnavailable) {
		t.Errorf("encrypt with the token gone: err = %v", err)
	}
	if hl := h.CheckNow(); hl.Status != StatusUnavailable {
		t.Errorf("a recovery attempt without the token = %+v", hl)
	} else {
		t.Logf("recovery attempt without the token: %s", hl.Err)
	}
	if _, err := h.DecryptGCM(key, iv, ct, tag, nil); !errors.Is(err, ErrUnavailable) {
		t.Errorf("decrypt with the token gone: err = %v (must not blame the ciphertext)", err)
	}
	if _, err := h.HasKey(key); !errors.Is(err, ErrUnavailable) {
		t.Errorf("HasKey with the token gone: err = %v", err)
	}

	if err := os.Rename(away, dir); err != nil {
		t.Fatal(err)
	}
	moved = false
	// No CheckNow: the monitor must bring it back on its own.
	waitFor(t, "background recovery", 15*time.Second, func() bool { return h.Health().Status == StatusActive })
	got, err := h.DecryptGCM(key, iv, ct, tag, nil)
	if err != nil || !bytes.Equal(got, []byte("before")) {
		t.Fatalf("decrypt after recovery = %q, %v", got, err)
	}
	if _, _, err := h.EncryptGCM(key, randomBytes(12), []byte("p"), nil); err != nil {
		t.Fatalf("encrypt after recovery: %v", err)
	}
}

// tokenDir finds the SoftHSMv2 directory of the token labelled label: its
// token.object holds the blank-padded label.
func tokenDir(t *testing.T, label string) string {
	t.Helper()
	padded := []byte(fmt.Sprintf("%-32s", label))
	dirs, err := filepath.Glob(filepath.Join(testDir, "tokens", "*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "token.object"))
		if err == nil && bytes.Contains(b, padded) {
			return d
		}
	}
	t.Fatalf("no token directory for %q", label)
	return ""
}
