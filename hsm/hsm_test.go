package hsm

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/pkcs11"
)

func TestConfigDefaults(t *testing.T) {
	cfg, err := Config{ModulePath: "m", TokenLabel: "t", PIN: "p"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	want := Config{ModulePath: "m", TokenLabel: "t", PIN: "p", PoolSize: 2, WaitTimeout: 50 * time.Millisecond,
		CallTimeout: 150 * time.Millisecond, HealthKeyLabel: "xksproxy-health", HealthInterval: 10 * time.Second}
	if cfg != want {
		t.Errorf("defaults = %+v, want %+v", cfg, want)
	}
	for name, bad := range map[string]Config{
		"no module":      {TokenLabel: "t", PIN: "p"},
		"no token":       {ModulePath: "m", PIN: "p"},
		"long token":     {ModulePath: "m", TokenLabel: strings.Repeat("x", 33), PIN: "p"},
		"no PIN":         {ModulePath: "m", TokenLabel: "t"},
		"negative pool":  {ModulePath: "m", TokenLabel: "t", PIN: "p", PoolSize: -1},
		"negative delay": {ModulePath: "m", TokenLabel: "t", PIN: "p", CallTimeout: -1},
	} {
		if _, err := bad.withDefaults(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestOpenErrors(t *testing.T) {
	cfg := testConfig("no-such-token")
	if _, err := Open(cfg); err == nil || !strings.Contains(err.Error(), "no-such-token") {
		t.Errorf("unknown token: err = %v", err)
	}
	cfg = testConfig(testToken)
	cfg.PIN = "wrong-pin-9999"
	_, err := Open(cfg)
	if !isCode(err, pkcs11.CKR_PIN_INCORRECT) {
		t.Errorf("wrong PIN: err = %v, want CKR_PIN_INCORRECT", err)
	}
	if err != nil && strings.Contains(err.Error(), cfg.PIN) {
		t.Errorf("error reveals the PIN: %v", err)
	}
	cfg.ModulePath = "/nonexistent/libpkcs11.so"
	if _, err := Open(cfg); err == nil {
		t.Error("missing module: accepted")
	}

	// Failed opens must not leave the token claimed, and a second HSM on
	// the same token in one process is refused.
	openT(t, testConfig(testToken))
	if _, err := Open(testConfig(testToken)); err == nil || !strings.Contains(err.Error(), "already open") {
		t.Errorf("second Open: err = %v", err)
	}
}

func TestRoundTrip(t *testing.T) {
	h := openT(t, testConfig(testToken))
	key := newKey(t, h)
	for _, tc := range []struct {
		name       string
		plain, aad int
		nilAAD     bool
	}{
		{name: "32B", plain: 32, aad: 64},
		{name: "max", plain: 4300, aad: 8192},
		{name: "no AAD", plain: 100, nilAAD: true},
		{name: "empty plaintext", plain: 0, aad: 16},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plain, aad, iv := randomBytes(tc.plain), randomBytes(tc.aad), randomBytes(12)
			if tc.nilAAD {
				aad = nil
			}
			ct, tag, err := h.EncryptGCM(key, iv, plain, aad)
			if err != nil {
				t.Fatal(err)
			}
			if len(ct) != len(plain) || len(tag) != 16 {
				t.Fatalf("len(ct)=%d len(tag)=%d, want %d and 16", len(ct), len(tag), len(plain))
			}
			if len(plain) > 0 && bytes.Equal(ct, plain) {
				t.Fatal("ciphertext equals plaintext")
			}
			got, err := h.DecryptGCM(key, iv, ct, tag, aad)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, plain) {
				t.Fatal("round trip changed the plaintext")
			}
			// A fresh IV must give a different ciphertext.
			ct2, tag2, err := h.EncryptGCM(key, randomBytes(12), plain, aad)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Equal(append(ct, tag...), append(ct2, tag2...)) {
				t.Fatal("two IVs gave the same output")
			}
		})
	}
}

// The proxy only encrypts with 12-byte IVs but must decrypt what other XKS
// proxies produced with 16-byte ones. The ciphertext is made directly
// through PKCS#11, since EncryptGCM refuses such IVs.
func TestDecrypt16ByteIV(t *testing.T) {
	h := openT(t, testConfig(testToken))
	label := newKey(t, h)
	iv, plain, aad := randomBytes(16), []byte("sixteen-byte IV"), []byte("aad")
	s := <-h.free
	key, err := h.keyHandle(s, label)
	var sealed []byte
	if err == nil {
		sealed, err = h.encrypt(s, key, iv, aad, plain)
	}
	h.free <- s
	if err != nil {
		t.Fatal(err)
	}
	got, err := h.DecryptGCM(label, iv, sealed[:len(plain)], sealed[len(plain):], aad)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("DecryptGCM = %q, %v", got, err)
	}
}

func TestEncryptRefusesBadIV(t *testing.T) {
	h := openT(t, testConfig(testToken))
	key := newKey(t, h)
	for _, n := range []int{-1, 0, 1, 8, 11, 13, 16} {
		var iv []byte
		if n >= 0 {
			iv = make([]byte, n)
		}
		if _, _, err := h.EncryptGCM(key, iv, []byte("p"), nil); !errors.Is(err, ErrInvalidInput) {
			t.Errorf("IV of %d bytes: err = %v, want ErrInvalidInput", n, err)
		}
	}
}

func TestDecryptRejectsTampering(t *testing.T) {
	h := openT(t, testConfig(testToken))
	key := newKey(t, h)
	other := uniqueLabel(key)
	if err := h.GenerateKey(other); err != nil {
		t.Fatal(err)
	}
	iv, plain, aad := randomBytes(12), randomBytes(64), randomBytes(32)
	ct, tag, err := h.EncryptGCM(key, iv, plain, aad)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(b []byte) []byte {
		c := bytes.Clone(b)
		c[len(c)/2] ^= 0x01
		return c
	}
	for _, tc := range []struct {
		name             string
		key              string
		iv, ct, tag, aad []byte
		want             error
	}{
		{"tag", key, iv, ct, flip(tag), aad, ErrInvalidCiphertext},
		{"ciphertext", key, iv, flip(ct), tag, aad, ErrInvalidCiphertext},
		{"AAD", key, iv, ct, tag, flip(aad), ErrInvalidCiphertext},
		{"missing AAD", key, iv, ct, tag, nil, ErrInvalidCiphertext},
		{"IV", key, flip(iv), ct, tag, aad, ErrInvalidCiphertext},
		{"truncated ciphertext", key, iv, ct[:10], tag, aad, ErrInvalidCiphertext},
		{"wrong key", other, iv, ct, tag, aad, ErrInvalidCiphertext},
		{"short tag", key, iv, ct, tag[:12], aad, ErrInvalidInput},
		{"short IV", key, iv[:8], ct, tag, aad, ErrInvalidInput},
	} {
		got, err := h.DecryptGCM(tc.key, tc.iv, tc.ct, tc.tag, tc.aad)
		if !errors.Is(err, tc.want) || got != nil {
			t.Errorf("%s: got %d bytes, err = %v, want %v", tc.name, len(got), err, tc.want)
		}
	}
	if hl := h.CheckNow(); hl.Status != StatusActive {
		t.Errorf("health after bad ciphertexts = %+v", hl)
	}
	if got, err := h.DecryptGCM(key, iv, ct, tag, aad); err != nil || !bytes.Equal(got, plain) {
		t.Errorf("genuine ciphertext after tampering: %v", err)
	}
}

func TestKeyNotFound(t *testing.T) {
	h := openT(t, testConfig(testToken))
	if _, _, err := h.EncryptGCM("no-such-key", randomBytes(12), []byte("p"), nil); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("EncryptGCM: err = %v", err)
	}
	if _, err := h.DecryptGCM("no-such-key", randomBytes(12), []byte("c"), randomBytes(16), nil); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("DecryptGCM: err = %v", err)
	}
	if ok, err := h.HasKey("no-such-key"); ok || err != nil {
		t.Errorf("HasKey = %v, %v", ok, err)
	}
	if _, _, err := h.EncryptGCM("", randomBytes(12), []byte("p"), nil); !errors.Is(err, ErrInvalidInput) {
		t.Errorf("empty label: err = %v", err)
	}
	if hl := h.Health(); hl.Status != StatusActive {
		t.Errorf("an unknown label must not look like a token failure: %+v", hl)
	}
}

func TestGenerateKey(t *testing.T) {
	h := openT(t, testConfig(testToken))
	label := uniqueLabel("generated")
	if ok, err := h.HasKey(label); ok || err != nil {
		t.Fatalf("HasKey before = %v, %v", ok, err)
	}
	if err := h.GenerateKey(label); err != nil {
		t.Fatal(err)
	}
	if ok, err := h.HasKey(label); !ok || err != nil {
		t.Fatalf("HasKey after = %v, %v", ok, err)
	}
	if err := h.GenerateKey(label); !errors.Is(err, ErrKeyExists) {
		t.Fatalf("second GenerateKey: err = %v", err)
	}

	checkFlags(t, h, label, encryptOnly)
	if n := attributes(t, h, label, pkcs11.CKA_VALUE_LEN)[0].Value[0]; n != 32 {
		t.Errorf("CKA_VALUE_LEN = %d, want 32", n)
	}
}

func TestHealthAndTokenInfo(t *testing.T) {
	h := openT(t, testConfig(testToken))
	first := h.Health()
	if first.Status != StatusActive || first.Err != "" || first.CheckedAt.IsZero() {
		t.Fatalf("Health after Open = %+v", first)
	}
	if ok, err := h.HasKey(DefaultHealthKeyLabel); !ok || err != nil {
		t.Errorf("health key: %v, %v", ok, err)
	}
	next := h.CheckNow()
	if next.Status != StatusActive || next.CheckedAt.Before(first.CheckedAt) {
		t.Errorf("CheckNow = %+v", next)
	}
	if h.Health() != next {
		t.Error("Health does not return the last check")
	}
	model, manufacturer, serial := h.TokenInfo()
	if model != "SoftHSM v2" || manufacturer != "SoftHSM project" || serial == "" {
		t.Errorf("TokenInfo = %q, %q, %q", model, manufacturer, serial)
	}
	for s, want := range map[Status]string{StatusActive: "ACTIVE", StatusDegraded: "DEGRADED", StatusUnavailable: "UNAVAILABLE", 0: "UNKNOWN"} {
		if s.String() != want {
			t.Errorf("Status(%d).String() = %q", s, s.String())
		}
	}
}

func TestBusy(t *testing.T) {
	cfg := testConfig(testToken)
	cfg.WaitTimeout = 20 * time.Millisecond
	h := openT(t, cfg)
	key := newKey(t, h)
	held := []*session{<-h.free, <-h.free}
	if st := h.Stats(); st.PoolSize != 2 || st.InUse != 2 || st.Waiting != 0 || st.ExpectedWait <= 0 {
		t.Errorf("stats with every session held = %+v", st)
	}
	_, _, err := h.EncryptGCM(key, randomBytes(12), []byte("p"), nil)
	for _, s := range held {
		h.free <- s
	}
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("with every session held: err = %v, want ErrBusy", err)
	}
	if _, _, err := h.EncryptGCM(key, randomBytes(12), []byte("p"), nil); err != nil {
		t.Fatalf("after sessions came back: %v", err)
	}
}

func TestShedsByExpectedWait(t *testing.T) {
	f := &faultModule{}
	cfg := testConfig(testToken)
	cfg.WaitTimeout = 100 * time.Millisecond
	cfg.CallTimeout = 5 * time.Second
	h := openWrapped(t, cfg, f.wrap)
	key := newKey(t, h)
	// Slow calls: 40 ms each on 2 sessions. A queue of 2 expects 40 ms (fits
	// the 100 ms budget); a queue of 10 expects 200 ms (does not). The
	// average follows the change within a few tens of calls; make them on
	// both sessions at once.
	f.onEncrypt(func() error { time.Sleep(40 * time.Millisecond); return nil })
	defer f.onEncrypt(nil)
	var warm sync.WaitGroup
	for range 2 {
		warm.Go(func() {
			for range callAverageWeight {
				if _, _, err := h.EncryptGCM(key, randomBytes(12), []byte("p"), nil); err != nil {
					t.Error(err)
				}
			}
		})
	}
	warm.Wait()
	if got := h.ExpectedWait(2); got < 20*time.Millisecond || got > 100*time.Millisecond {
		t.Fatalf("expected wait of a queue of 2 at 40 ms per call on 2 sessions: %v", got)
	}
	var wg sync.WaitGroup
	var busy, ok atomic.Int64
	for range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, err := h.EncryptGCM(key, randomBytes(12), []byte("p"), nil)
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, ErrBusy):
				busy.Add(1)
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if busy.Load() == 0 || ok.Load() < 2 {
		t.Fatalf("12 slow calls at once: %d served, %d shed; want some of each", ok.Load(), busy.Load())
	}
}

func TestConcurrentRoundTrips(t *testing.T) {
	h := openT(t, testConfig(testToken))
	key := newKey(t, h)
	const goroutines, rounds = 64, 10
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				plain := []byte{byte(g), byte(i)}
				aad := randomBytes(g)
				iv := randomBytes(12)
				ct, tag, err := h.EncryptGCM(key, iv, plain, aad)
				if err != nil {
					errs <- err
					return
				}
				got, err := h.DecryptGCM(key, iv, ct, tag, aad)
				if err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(got, plain) {
					errs <- errors.New("wrong plaintext")
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
	if n := len(h.free); n != 2 {
		t.Errorf("%d sessions free after the run, want 2", n)
	}
}

func TestClose(t *testing.T) {
	h, err := Open(testConfig(testToken))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, _, err := h.EncryptGCM("k", randomBytes(12), []byte("p"), nil); !errors.Is(err, ErrUnavailable) {
		t.Errorf("EncryptGCM after Close: err = %v", err)
	}
	if hl := h.CheckNow(); hl.Status != StatusUnavailable {
		t.Errorf("CheckNow after Close = %+v", hl)
	}
	// The module is released and can be opened again.
	openT(t, testConfig(testToken))
}
