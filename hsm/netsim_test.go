package hsm

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/hsm/netsim"
)

// The simulated network HSM is built once per test process, with the system
// C compiler. It forwards to the same SoftHSMv2 library as testModule, and
// in one process that is one SoftHSMv2 instance: a test opens HSMs through
// one of the two paths at a time.
var (
	netsimOnce sync.Once
	netsimPath string
	netsimConf string
	netsimErr  error
)

// netsimModule builds the module (or skips, loudly, without a C compiler)
// and writes its settings; it returns the module path.
func netsimModule(t testing.TB, cfg netsim.Config) string {
	t.Helper()
	netsimOnce.Do(func() {
		netsimPath = filepath.Join(testDir, netsim.LibraryName)
		netsimConf = filepath.Join(testDir, "netsim.conf")
		netsimErr = netsim.Build(netsimPath)
		os.Setenv(netsim.ConfigEnv, netsimConf)
	})
	if errors.Is(netsimErr, netsim.ErrNoCompiler) {
		fmt.Fprintf(os.Stderr, "\n*** %s SKIPPED: %v ***\n\n", t.Name(), netsimErr)
		t.Skip(netsimErr)
	}
	if netsimErr != nil {
		t.Fatal(netsimErr)
	}
	setNetsim(t, cfg)
	t.Cleanup(func() { setNetsim(t, netsim.Config{}) })
	return netsimPath
}

// netsimCheck is how often the module looks at its settings in these tests.
const netsimCheck = 2 * time.Millisecond

// setNetsim switches the module's settings and waits until any call made
// from now on sees them: past one check interval, the next call re-reads.
func setNetsim(t testing.TB, cfg netsim.Config) {
	t.Helper()
	cfg.CheckInterval = netsimCheck
	if err := cfg.Write(netsimConf); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * netsimCheck)
}

func netsimConfig(t testing.TB, token string, cfg netsim.Config) Config {
	c := testConfig(token)
	c.ModulePath = netsimModule(t, cfg)
	return c
}

// TestNetsimLatencyAndCap: through the module, operations work, each one
// takes at least the configured latency, and with at most two in flight,
// eight concurrent encrypts on eight sessions take at least four latencies.
func TestNetsimLatencyAndCap(t *testing.T) {
	const latency = 30 * time.Millisecond
	cfg := netsimConfig(t, testToken, netsim.Config{})
	cfg.PoolSize = 8
	h := openT(t, cfg)
	label := newKey(t, h)

	setNetsim(t, netsim.Config{Latency: latency, MaxInFlight: 2})
	iv, pt, aad := randomBytes(12), []byte("through a network HSM"), []byte("aad")
	start := time.Now()
	ct, tag, err := h.EncryptGCM(label, iv, pt, aad)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < latency {
		t.Errorf("an encrypt took %v, less than the module's latency %v", took, latency)
	}
	got, err := h.DecryptGCM(label, iv, ct, tag, aad)
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("decrypt: %q, %v", got, err)
	}

	start = time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, err := h.EncryptGCM(label, randomBytes(12), pt, aad)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if took := time.Since(start); took < 4*latency {
		t.Errorf("8 encrypts with at most 2 in flight took %v, less than 4 latencies (%v): the cap did not hold", took, 4*latency)
	}
}

// TestNetsimErrorFault: a device error takes the HSM down at once; once the
// fault is switched off, the deep check brings it back.
func TestNetsimErrorFault(t *testing.T) {
	h := openT(t, netsimConfig(t, testToken, netsim.Config{}))
	label := newKey(t, h)

	setNetsim(t, netsim.Config{Fault: netsim.FaultError})
	if _, _, err := h.EncryptGCM(label, randomBytes(12), []byte("x"), nil); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("encrypt under a device error: %v, want ErrUnavailable", err)
	}
	if st := h.Health().Status; st != StatusUnavailable {
		t.Fatalf("health %v after a device error, want UNAVAILABLE", st)
	}
	if st := h.CheckNow().Status; st != StatusUnavailable {
		t.Fatalf("deep check with the fault still on: %v", st)
	}

	setNetsim(t, netsim.Config{})
	if hl := h.CheckNow(); hl.Status != StatusActive {
		t.Fatalf("deep check after the fault was switched off: %v (%s)", hl.Status, hl.Err)
	}
	if _, _, err := h.EncryptGCM(label, randomBytes(12), []byte("x"), nil); err != nil {
		t.Fatalf("encrypt after recovery: %v", err)
	}
}

// TestNetsimHangFault: a hung HSM call gives ErrTimeout after CallTimeout,
// is counted as stuck while it hangs, and frees its session once the HSM
// answers again.
func TestNetsimHangFault(t *testing.T) {
	cfg := netsimConfig(t, testToken, netsim.Config{})
	cfg.CallTimeout = 200 * time.Millisecond
	h := openT(t, cfg)
	label := newKey(t, h)

	setNetsim(t, netsim.Config{Fault: netsim.FaultHang})
	if _, _, err := h.EncryptGCM(label, randomBytes(12), []byte("x"), nil); !errors.Is(err, ErrTimeout) {
		t.Fatalf("encrypt on a hung HSM: %v, want ErrTimeout", err)
	}
	if st := h.Stats(); st.Stuck != 1 {
		t.Fatalf("stuck calls %d, want 1", st.Stuck)
	}

	setNetsim(t, netsim.Config{})
	waitFor(t, "the hung call to finish", 10*time.Second, func() bool { return h.Stats().Stuck == 0 })
	if _, _, err := h.EncryptGCM(label, randomBytes(12), []byte("x"), nil); err != nil {
		t.Fatalf("encrypt after the hang: %v", err)
	}
}

// TestNetsimDroppedSession: an HSM that drops a session is repaired in
// place (a new session, logged in again, a new key copy): the call that met
// the dropped session still succeeds.
func TestNetsimDroppedSession(t *testing.T) {
	cfg := netsimConfig(t, testToken, netsim.Config{})
	cfg.PoolSize = 1
	f := &faultModule{}
	h := openWrapped(t, cfg, f.wrap)
	label := newKey(t, h)
	iv, pt := randomBytes(12), []byte("survives a dropped session")
	ct, tag, err := h.EncryptGCM(label, iv, pt, nil)
	if err != nil {
		t.Fatal(err)
	}

	opens := f.opens.Load()
	setNetsim(t, netsim.Config{Fault: netsim.FaultDrop, FaultCount: 1})
	got, err := h.DecryptGCM(label, iv, ct, tag, nil)
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("decrypt across a dropped session: %q, %v", got, err)
	}
	if n := f.opens.Load() - opens; n != 1 {
		t.Fatalf("%d sessions opened after the drop, want 1 (the drop did not happen, or the repair was not in place)", n)
	}
	if st := h.Health().Status; st != StatusActive {
		t.Fatalf("health %v after an in-place repair, want ACTIVE", st)
	}
}

// TestNetsimFaultOnOneToken: a fault limited to one token's sessions leaves
// another token of the same module alone.
func TestNetsimFaultOnOneToken(t *testing.T) {
	a := openT(t, netsimConfig(t, nodeA, netsim.Config{}))
	b := openT(t, netsimConfig(t, nodeB, netsim.Config{}))
	labelA, labelB := newKey(t, a), newKey(t, b)

	setNetsim(t, netsim.Config{Fault: netsim.FaultError, FaultToken: nodeA})
	if _, _, err := a.EncryptGCM(labelA, randomBytes(12), []byte("x"), nil); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("encrypt on the faulty token: %v, want ErrUnavailable", err)
	}
	if _, _, err := b.EncryptGCM(labelB, randomBytes(12), []byte("x"), nil); err != nil {
		t.Fatalf("encrypt on the healthy token: %v", err)
	}
}

// TestRecoveryLeavesTheOtherTokenAlone: while another token of the module
// serves, a token that fails its operations (a partition answering
// CKR_DEVICE_ERROR) is recovered on its own, without re-initialising the
// module under the healthy token: the healthy token's sessions stay open
// and its calls go on, however many recovery attempts the fault lasts.
func TestRecoveryLeavesTheOtherTokenAlone(t *testing.T) {
	a := openT(t, netsimConfig(t, nodeA, netsim.Config{}))
	fb := &faultModule{}
	b := openWrapped(t, netsimConfig(t, nodeB, netsim.Config{}), fb.wrap)
	labelA, labelB := newKey(t, a), newKey(t, b)
	opens := fb.opens.Load()

	setNetsim(t, netsim.Config{Fault: netsim.FaultError, FaultToken: nodeA})
	if _, _, err := a.EncryptGCM(labelA, randomBytes(12), []byte("x"), nil); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("encrypt on the faulty token: %v, want ErrUnavailable", err)
	}
	for range 3 {
		if hl := a.CheckNow(); hl.Status != StatusUnavailable {
			t.Fatalf("recovery with the fault still on: %v", hl.Status)
		}
		if _, _, err := b.EncryptGCM(labelB, randomBytes(12), []byte("x"), nil); err != nil {
			t.Fatalf("encrypt on the healthy token while the other recovers: %v", err)
		}
	}
	if n := fb.opens.Load() - opens; n != 0 {
		t.Fatalf("the healthy token opened %d sessions while the other recovered: the module was re-initialised under it", n)
	}

	setNetsim(t, netsim.Config{})
	if hl := a.CheckNow(); hl.Status != StatusActive {
		t.Fatalf("recovery once the fault is off: %v (%s)", hl.Status, hl.Err)
	}
	if _, _, err := a.EncryptGCM(labelA, randomBytes(12), []byte("x"), nil); err != nil {
		t.Fatalf("encrypt on the recovered token: %v", err)
	}
	if n := fb.opens.Load() - opens; n != 0 {
		t.Fatalf("the healthy token opened %d sessions during the other's recovery", n)
	}
}
