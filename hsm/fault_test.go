package hsm

import (
	"bytes"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/pkcs11"
)

// faultModule wraps the real SoftHSMv2 module to inject faults: a hook runs
// before C_EncryptInit / C_DecryptInit / C_WrapKey / C_CopyObject and may block or fail
// the call. It also counts calls that show what a recovery did. Everything
// else goes to the real module.
type faultModule struct {
	module
	encryptHook  atomic.Pointer[func() error]
	decryptHook  atomic.Pointer[func() error]
	wrapHook     atomic.Pointer[func() error]
	copyHook     atomic.Pointer[func() error]
	encryptInits atomic.Int64
	initializes  atomic.Int64
	opens        atomic.Int64
}

func (f *faultModule) wrap(m module) module {
	f.module = m
	return f
}

func (f *faultModule) onEncrypt(hook func() error) { f.encryptHook.Store(&hook) }
func (f *faultModule) onDecrypt(hook func() error) { f.decryptHook.Store(&hook) }
func (f *faultModule) onWrap(hook func() error)    { f.wrapHook.Store(&hook) }
func (f *faultModule) onCopy(hook func() error)    { f.copyHook.Store(&hook) }

func runHook(p *atomic.Pointer[func() error]) error {
	if hook := p.Load(); hook != nil && *hook != nil {
		return (*hook)()
	}
	return nil
}

func (f *faultModule) Initialize(opts ...pkcs11.InitializeOption) error {
	f.initializes.Add(1)
	return f.module.Initialize(opts...)
}

func (f *faultModule) OpenSession(slotID uint, flags uint) (pkcs11.SessionHandle, error) {
	f.opens.Add(1)
	return f.module.OpenSession(slotID, flags)
}

func (f *faultModule) WrapKey(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, wrappingkey, key pkcs11.ObjectHandle) ([]byte, error) {
	if err := runHook(&f.wrapHook); err != nil {
		return nil, err
	}
	return f.module.WrapKey(sh, m, wrappingkey, key)
}

func (f *faultModule) CopyObject(sh pkcs11.SessionHandle, o pkcs11.ObjectHandle, temp []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	if err := runHook(&f.copyHook); err != nil {
		return 0, err
	}
	return f.module.CopyObject(sh, o, temp)
}

func (f *faultModule) EncryptInit(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, o pkcs11.ObjectHandle) error {
	f.encryptInits.Add(1)
	if err := runHook(&f.encryptHook); err != nil {
		return err
	}
	return f.module.EncryptInit(sh, m, o)
}

func (f *faultModule) DecryptInit(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, o pkcs11.ObjectHandle) error {
	if err := runHook(&f.decryptHook); err != nil {
		return err
	}
	return f.module.DecryptInit(sh, m, o)
}

func TestTimeout(t *testing.T) {
	f := &faultModule{}
	h := openWrapped(t, testConfig(testToken), f.wrap)
	key := newKey(t, h)
	// Set up with generous deadlines, then shorten the one under test.
	h.cfg.CallTimeout = 50 * time.Millisecond

	release := make(chan struct{})
	var blocked atomic.Bool
	f.onEncrypt(func() error {
		if blocked.CompareAndSwap(false, true) {
			<-release
		}
		return nil
	})
	if _, _, err := h.EncryptGCM(key, randomBytes(12), []byte("slow"), nil); !errors.Is(err, ErrTimeout) {
		t.Fatalf("blocked call: err = %v, want ErrTimeout", err)
	}
	if st := h.Stats(); st.Stuck != 1 || st.Timeouts != 1 || st.InUse < 1 {
		t.Errorf("stats with a call stuck = %+v, want 1 stuck, 1 timeout, a session in use", st)
	}
	// The other session still works, but the HSM is not fully healthy.
	if hl := h.CheckNow(); hl.Status != StatusDegraded {
		t.Errorf("health with a call stuck = %+v, want DEGRADED", hl)
	}

	close(release)
	waitFor(t, "the stuck call to finish and free its session", 10*time.Second, func() bool {
		st := h.Stats()
		return st.Stuck == 0 && st.InUse == 0
	})
	if st := h.Stats(); st.Timeouts == 0 {
		t.Errorf("stats once the call finished = %+v, want the timeout still counted", st)
	}
	h.cfg.CallTimeout = 10 * time.Second
	if _, _, err := h.EncryptGCM(key, randomBytes(12), []byte("fast"), nil); err != nil {
		t.Fatalf("after release: %v", err)
	}
	if hl := h.CheckNow(); hl.Status != StatusActive {
		t.Errorf("health after release = %+v", hl)
	}
}

// A device error on a live call makes the HSM unavailable at once, and the
// monitor re-initialises the module in the background without a re-Open.
func TestDeviceErrorRecoversInBackground(t *testing.T) {
	f := &faultModule{}
	h := openWrapped(t, testConfig(testToken), f.wrap)
	key := newKey(t, h)
	iv := randomBytes(12)
	ct, tag, err := h.EncryptGCM(key, iv, []byte("before"), nil)
	if err != nil {
		t.Fatal(err)
	}

	var failed atomic.Bool
	f.onEncrypt(func() error {
		if failed.CompareAndSwap(false, true) {
			return pkcs11.Error(pkcs11.CKR_DEVICE_ERROR)
		}
		return nil
	})
	inits := f.initializes.Load()
	_, _, err = h.EncryptGCM(key, randomBytes(12), []byte("p"), nil)
	if !errors.Is(err, ErrUnavailable) || !isCode(err, pkcs11.CKR_DEVICE_ERROR) {
		t.Fatalf("err = %v, want ErrUnavailable wrapping CKR_DEVICE_ERROR", err)
	}
	if hl := h.Health(); hl.Status != StatusUnavailable || hl.Err == "" {
		t.Errorf("health right after the failure = %+v", hl)
	}
	// HealthInterval is an hour: only the failure's wake-up can drive this.
	waitFor(t, "background recovery", 10*time.Second, func() bool { return h.Health().Status == StatusActive })
	if f.initializes.Load() == inits {
		t.Error("recovery did not re-initialise the module")
	}
	if got, err := h.DecryptGCM(key, iv, ct, tag, nil); err != nil || string(got) != "before" {
		t.Fatalf("decrypt after recovery = %q, %v", got, err)
	}
}

// CKR_GENERAL_ERROR on decrypt is a bad tag only if the HSM is otherwise
// fine; when the probe fails too, the HSM is sick.
func TestAmbiguousDecryptWithSickHSM(t *testing.T) {
	f := &faultModule{}
	h := openWrapped(t, testConfig(testToken), f.wrap)
	key := newKey(t, h)
	iv := randomBytes(12)
	ct, tag, err := h.EncryptGCM(key, iv, []byte("genuine"), nil)
	if err != nil {
		t.Fatal(err)
	}
	h.lastPass.Store(0) // forget Open's passing probe, so the probe runs
	f.onDecrypt(func() error { return pkcs11.Error(pkcs11.CKR_GENERAL_ERROR) })
	if _, err := h.DecryptGCM(key, iv, ct, tag, nil); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if hl := h.Health(); hl.Status != StatusUnavailable {
		t.Errorf("health = %+v", hl)
	}
	f.onDecrypt(nil)
	waitFor(t, "recovery", 10*time.Second, func() bool { return h.CheckNow().Status == StatusActive })
	if got, err := h.DecryptGCM(key, iv, ct, tag, nil); err != nil || string(got) != "genuine" {
		t.Fatalf("after recovery = %q, %v", got, err)
	}
}

// A flood of bad tags must not add a probe per request.
func TestBadTagFloodProbesSparingly(t *testing.T) {
	f := &faultModule{}
	h := openWrapped(t, testConfig(testToken), f.wrap)
	key := newKey(t, h)
	iv := randomBytes(12)
	ct, tag, err := h.EncryptGCM(key, iv, []byte("genuine"), nil)
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(tag)
	bad[0] ^= 1
	h.lastPass.Store(0)
	before := f.encryptInits.Load()
	start := time.Now()
	const n = 50
	for range n {
		if _, err := h.DecryptGCM(key, iv, ct, bad, nil); !errors.Is(err, ErrInvalidCiphertext) {
			t.Fatalf("err = %v", err)
		}
	}
	// Only probes encrypt here (the monitor is idle): at least one, and at
	// most one per probePassTTL that passed.
	probes := f.encryptInits.Load() - before
	if limit := 1 + int64(time.Since(start)/probePassTTL); probes < 1 || probes > limit {
		t.Errorf("%d probes for %d bad tags, want 1..%d", probes, n, limit)
	}
}

// The temporary key GenerateWrappedKey makes is extractable, so it must be
// destroyed when wrapping fails too.
func TestGenerateWrappedKeyCleansUpOnError(t *testing.T) {
	f := &faultModule{}
	h := openWrapped(t, testConfig(nodeA), f.wrap)
	if err := h.ImportClusterKeys(clusterMaterial); err != nil {
		t.Fatal(err)
	}
	f.onWrap(func() error { return pkcs11.Error(pkcs11.CKR_KEY_NOT_WRAPPABLE) })
	if _, _, err := h.GenerateWrappedKey(); !isCode(err, pkcs11.CKR_KEY_NOT_WRAPPABLE) {
		t.Fatalf("err = %v, want CKR_KEY_NOT_WRAPPABLE", err)
	}
	if n := transportKeys(t, h); n != 0 {
		t.Errorf("%d transport keys left after a failed wrap", n)
	}
	f.onWrap(nil)
	if blob, _, err := h.GenerateWrappedKey(); err != nil || len(blob) != 40 {
		t.Fatalf("after the fault: %d bytes, %v", len(blob), err)
	}
	if hl := h.Health(); hl.Status != StatusActive {
		t.Errorf("health = %+v", hl)
	}
}
