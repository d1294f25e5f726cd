package hsm

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/pkcs11"
)

// sample is a ciphertext made before something happens to the HSM, to be
// decrypted afterwards.
type sample struct {
	key                     string
	iv, ct, tag, aad, plain []byte
}

func encryptSample(t *testing.T, h *HSM, key string) sample {
	t.Helper()
	smp := sample{key: key, iv: randomBytes(12), plain: randomBytes(32), aad: randomBytes(16)}
	var err error
	if smp.ct, smp.tag, err = h.EncryptGCM(key, smp.iv, smp.plain, smp.aad); err != nil {
		t.Fatalf("encrypt on %s: %v", h.cfg.TokenLabel, err)
	}
	return smp
}

// check decrypts the sample and makes a fresh round trip.
func (smp sample) check(h *HSM) error {
	got, err := h.DecryptGCM(smp.key, smp.iv, smp.ct, smp.tag, smp.aad)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, smp.plain) {
		return errors.New("decrypt returned the wrong plaintext")
	}
	iv, plain := randomBytes(12), randomBytes(20)
	ct, tag, err := h.EncryptGCM(smp.key, iv, plain, nil)
	if err != nil {
		return err
	}
	if got, err = h.DecryptGCM(smp.key, iv, ct, tag, nil); err != nil || !bytes.Equal(got, plain) {
		return errors.Join(errors.New("fresh round trip failed"), err)
	}
	return nil
}

func mustWork(t *testing.T, h *HSM, smp sample) {
	t.Helper()
	if err := smp.check(h); err != nil {
		t.Fatalf("token %s: %v", h.cfg.TokenLabel, err)
	}
}

// Several tokens of one module are open at once, each with its own login;
// the module is initialised once and finalized when the last one closes.
func TestSeveralTokensOfOneModule(t *testing.T) {
	a := openT(t, testConfig(nodeA))
	b := openT(t, testConfig(nodeB))
	if a.shared != b.shared {
		t.Fatal("two HSMs of one module do not share it")
	}
	sa, sb := encryptSample(t, a, newKey(t, a)), encryptSample(t, b, newKey(t, b))
	mustWork(t, a, sa)
	mustWork(t, b, sb)
	// The same label in two tokens names two different keys.
	if _, err := b.DecryptGCM(sa.key, sa.iv, sa.ct, sa.tag, sa.aad); !errors.Is(err, ErrInvalidCiphertext) {
		t.Errorf("A's ciphertext on B: err = %v", err)
	}

	// Both at once, from many goroutines.
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		h, smp := a, sa
		if g%2 == 1 {
			h, smp = b, sb
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				if err := smp.check(h); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	if _, err := Open(testConfig(nodeA)); err == nil || !strings.Contains(err.Error(), "already open") {
		t.Errorf("same token twice: err = %v", err)
	}
	// A failed Open of a third token must neither finalize the module nor
	// keep the token claimed.
	bad := testConfig(nodeC)
	bad.PIN = "wrong-pin-9999"
	if _, err := Open(bad); !isCode(err, pkcs11.CKR_PIN_INCORRECT) {
		t.Errorf("wrong PIN: err = %v", err)
	}
	mustWork(t, a, sa)
	c := openT(t, testConfig(nodeC))
	mustWork(t, c, encryptSample(t, c, newKey(t, c)))

	// Closing B logs B out and leaves the module to A and C.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.DecryptGCM(sb.key, sb.iv, sb.ct, sb.tag, sb.aad); !errors.Is(err, ErrUnavailable) {
		t.Errorf("closed B: err = %v", err)
	}
	mustWork(t, a, sa)
	if hl := a.CheckNow(); hl.Status != StatusActive {
		t.Errorf("A after B closed: %+v", hl)
	}
	b = openT(t, testConfig(nodeB))
	mustWork(t, b, sb)

	for _, h := range []*HSM{a, b, c} {
		if err := h.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.shared.ctx.GetSlotList(true); !isCode(err, pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED) {
		t.Errorf("after the last Close: GetSlotList err = %v, want CKR_CRYPTOKI_NOT_INITIALIZED", err)
	}
}

// One token's storage vanishes while another token of the module serves.
// The vanished token's recovery must re-initialise the module (SoftHSMv2
// needs that), which reconnects the healthy HSM too; the healthy one keeps
// serving, and both are ACTIVE once the storage is back.
func TestTokenRemovalWithSeveralTokens(t *testing.T) {
	rcfg := testConfig(recoveryToken)
	rcfg.HealthInterval = 100 * time.Millisecond
	fr, fa := &faultModule{}, &faultModule{}
	r := openWrapped(t, rcfg, fr.wrap)
	// A's own monitor stays idle: whatever reconnects A is R's recovery.
	a := openWrapped(t, testConfig(nodeA), fa.wrap)
	sr, sa := encryptSample(t, r, newKey(t, r)), encryptSample(t, a, newKey(t, a))

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
	inits, opens := fr.initializes.Load(), fa.opens.Load()
	if hl := r.CheckNow(); hl.Status != StatusUnavailable {
		t.Fatalf("R with its token gone = %+v", hl)
	}

	// R's monitor keeps re-initialising the module; each time A is
	// drained and reconnected. Serve from A meanwhile and count blips.
	var calls, failed int
	deadline := time.Now().Add(15 * time.Second)
	for fa.opens.Load() < opens+int64(3*a.cfg.PoolSize) {
		if time.Now().After(deadline) {
			t.Fatal("A was not reconnected by three re-initialisations")
		}
		calls++
		if err := sa.check(a); err != nil {
			failed++
			t.Logf("A during R's recovery attempts: %v", err)
		}
		// Paces the load; the loop ends on the reconnections, not on time.
		time.Sleep(2 * time.Millisecond)
	}
	t.Logf("A: %d of %d calls failed across %d module re-initialisations", failed, calls, fr.initializes.Load()-inits)
	waitFor(t, "A to serve after a shared re-initialisation", 10*time.Second, func() bool { return sa.check(a) == nil })
	waitFor(t, "A to report ACTIVE", 10*time.Second, func() bool { return a.Health().Status == StatusActive })
	if hl := r.Health(); hl.Status != StatusUnavailable {
		t.Errorf("R with its token still gone = %+v", hl)
	}
	if err := sr.check(r); !errors.Is(err, ErrUnavailable) {
		t.Errorf("R with its token gone: err = %v", err)
	}

	if err := os.Rename(away, dir); err != nil {
		t.Fatal(err)
	}
	moved = false
	waitFor(t, "R to recover", 15*time.Second, func() bool { return r.Health().Status == StatusActive })
	waitFor(t, "A to serve", 10*time.Second, func() bool { return sa.check(a) == nil })
	mustWork(t, r, sr)
	if hl := a.CheckNow(); hl.Status != StatusActive {
		t.Errorf("A after R recovered = %+v", hl)
	}
}

// C_CloseAllSessions on one token's slot ends that token's sessions and
// login only. Its HSM repairs itself in place; the other token's HSM does
// not notice, and nobody re-initialises the module.
func TestCloseAllSessionsOnOneToken(t *testing.T) {
	fa, fb := &faultModule{}, &faultModule{}
	a := openWrapped(t, testConfig(testToken), fa.wrap)
	b := openWrapped(t, testConfig(nodeB), fb.wrap)
	sa, sb := encryptSample(t, a, newKey(t, a)), encryptSample(t, b, newKey(t, b))
	aOpens, bOpens := fa.opens.Load(), fb.opens.Load()
	inits := fa.initializes.Load() + fb.initializes.Load()

	closeAllSessions(t, testToken)
	// Enough calls to go through every session of each pool.
	for range 2 * a.cfg.PoolSize {
		mustWork(t, a, sa)
		mustWork(t, b, sb)
	}
	if n := fa.opens.Load() - aOpens; n != int64(a.cfg.PoolSize) {
		t.Errorf("A re-opened %d sessions, want %d", n, a.cfg.PoolSize)
	}
	if n := fb.opens.Load() - bOpens; n != 0 {
		t.Errorf("B re-opened %d sessions, want none", n)
	}
	if n := fa.initializes.Load() + fb.initializes.Load() - inits; n != 0 {
		t.Errorf("the module was re-initialised %d times", n)
	}
	for _, h := range []*HSM{a, b} {
		if hl := h.CheckNow(); hl.Status != StatusActive {
			t.Errorf("%s: %+v", h.cfg.TokenLabel, hl)
		}
	}
}

// closeAllSessions does what another part of the process might: it closes
// every session on the token labelled label through its own handle on the
// module.
func closeAllSessions(t *testing.T, label string) {
	t.Helper()
	other := pkcs11.New(testModule)
	if other == nil {
		t.Fatal("cannot load the module a second time")
	}
	defer other.Destroy()
	if err := other.Initialize(); err != nil && !isCode(err, pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		t.Fatal(err)
	}
	slot, _, err := findToken(other, label)
	if err != nil {
		t.Fatal(err)
	}
	if err := other.CloseAllSessions(slot); err != nil {
		t.Fatal(err)
	}
}

// An HSM closed while one of its calls hangs stays registered with the
// module: no other HSM's recovery may finalize the module under that call.
// Once the call returns, the next re-initialisation retires the leftover,
// and the last Close finalizes the module again.
func TestHungCallHoldsOffSharedReinit(t *testing.T) {
	fh, fb := &faultModule{}, &faultModule{}
	h, err := open(testConfig(nodeC), fh.wrap)
	if err != nil {
		t.Fatal(err)
	}
	key := newKey(t, h)
	h.cfg.CallTimeout = 50 * time.Millisecond
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock)
	fh.onEncrypt(func() error {
		<-release
		return nil
	})
	if _, _, err := h.EncryptGCM(key, randomBytes(12), []byte("hangs"), nil); !errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	b := openWrapped(t, testConfig(nodeB), fb.wrap)
	smp := encryptSample(t, b, newKey(t, b))
	if err := h.Close(); err == nil || !strings.Contains(err.Error(), "left initialised") {
		t.Fatalf("Close with a hung call: err = %v", err)
	}
	member := func() bool {
		b.shared.mu.Lock()
		defer b.shared.mu.Unlock()
		return slices.Contains(b.shared.members, h)
	}
	if !member() {
		t.Fatal("the closed HSM with a hung call left the module")
	}

	var failed atomic.Bool
	fb.onEncrypt(func() error {
		if failed.CompareAndSwap(false, true) {
			return pkcs11.Error(pkcs11.CKR_DEVICE_ERROR)
		}
		return nil
	})
	if err := smp.check(b); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("after a device error: %v", err)
	}
	hl := b.CheckNow()
	if hl.Status != StatusUnavailable || !strings.Contains(hl.Err, "postponed") {
		t.Fatalf("recovery with another HSM's call hung = %+v", hl)
	}
	t.Logf("with a call hung: %s", hl.Err)

	unblock()
	waitFor(t, "B to recover", 15*time.Second, func() bool { return b.Health().Status == StatusActive })
	mustWork(t, b, smp)
	if member() {
		t.Error("the re-initialisation did not retire the leftover HSM")
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.shared.ctx.GetSlotList(true); !isCode(err, pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED) {
		t.Errorf("after the last Close: GetSlotList err = %v, want CKR_CRYPTOKI_NOT_INITIALIZED", err)
	}
}
