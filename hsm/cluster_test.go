package hsm

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"
)

// clusterMaterial is the ceremony material of the test cluster (nodes A
// and B); nodeC gets otherMaterial, as if it came from another ceremony.
// Both are made once per process, so that tests running again (-count)
// import the same material they imported before.
var (
	clusterMaterial = randomBytes(ClusterKeysSize)
	otherMaterial   = randomBytes(ClusterKeysSize)
)

func openCluster(t *testing.T, token string, material []byte) *HSM {
	t.Helper()
	h := openT(t, testConfig(token))
	if err := h.ImportClusterKeys(material); err != nil {
		t.Fatalf("ImportClusterKeys on %s: %v", token, err)
	}
	return h
}

// attributes reads attributes of the key labelled label.
func attributes(t *testing.T, h *HSM, label string, types ...uint) []*pkcs11.Attribute {
	t.Helper()
	s := <-h.free
	defer func() { h.free <- s }()
	key, found, err := h.find(s, label)
	if err != nil || !found {
		t.Fatalf("token object %q: %v, %v", label, found, err)
	}
	return handleAttributes(t, h, s, key, types...)
}

func handleAttributes(t *testing.T, h *HSM, s *session, key pkcs11.ObjectHandle, types ...uint) []*pkcs11.Attribute {
	t.Helper()
	template := make([]*pkcs11.Attribute, len(types))
	for i, typ := range types {
		template[i] = pkcs11.NewAttribute(typ, nil)
	}
	attrs, err := h.shared.ctx.GetAttributeValue(s.h, key, template)
	if err != nil {
		t.Fatalf("attributes of object %d: %v", key, err)
	}
	return attrs
}

// checkFlags compares boolean attributes of the token key labelled label,
// and of the session copy the pool uses, which must differ only in being
// a session object.
func checkFlags(t *testing.T, h *HSM, label string, want map[uint]bool) {
	t.Helper()
	var types []uint
	for typ := range want {
		types = append(types, typ)
	}
	for _, a := range attributes(t, h, label, types...) {
		if got := a.Value[0] == 1; got != want[a.Type] {
			t.Errorf("%q: attribute 0x%x = %v, want %v", label, a.Type, got, want[a.Type])
		}
	}
	s := <-h.free
	defer func() { h.free <- s }()
	key, err := h.keyHandle(s, label)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range handleAttributes(t, h, s, key, types...) {
		wantCopy := want[a.Type]
		if a.Type == pkcs11.CKA_TOKEN {
			wantCopy = false
		}
		if got := a.Value[0] == 1; got != wantCopy {
			t.Errorf("%q session copy: attribute 0x%x = %v, want %v", label, a.Type, got, wantCopy)
		}
	}
	if _, err := h.shared.ctx.GetAttributeValue(s.h, key, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)}); !isCode(err, pkcs11.CKR_ATTRIBUTE_SENSITIVE) {
		t.Errorf("%q: reading CKA_VALUE: err = %v, want CKR_ATTRIBUTE_SENSITIVE", label, err)
	}
}

// transportKeys counts the secret keys on h's token that are session
// objects without a label, such as GenerateWrappedKey's temporary key (the
// pool's copies of token keys carry their originals' labels).
func transportKeys(t *testing.T, h *HSM) int {
	t.Helper()
	s := <-h.free
	defer func() { h.free <- s }()
	return len(sessionObjects(t, h, s, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_LABEL, "")}))
}

// sessionObjects lists the secret keys that are session objects and match
// template.
func sessionObjects(t *testing.T, h *HSM, s *session, template []*pkcs11.Attribute) []pkcs11.ObjectHandle {
	t.Helper()
	ctx := h.shared.ctx
	if err := ctx.FindObjectsInit(s.h, append([]*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
	}, template...)); err != nil {
		t.Fatal(err)
	}
	objs, _, err := ctx.FindObjects(s.h, 100)
	if ferr := ctx.FindObjectsFinal(s.h); err == nil {
		err = ferr
	}
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func noSecret(t *testing.T, err error, secret []byte) {
	t.Helper()
	if err != nil && len(secret) >= 8 && (strings.Contains(err.Error(), hex.EncodeToString(secret[:8])) || bytes.Contains([]byte(err.Error()), secret[:8])) {
		t.Errorf("error reveals secret bytes: %v", err)
	}
}

var (
	wrapOnly    = map[uint]bool{pkcs11.CKA_TOKEN: true, pkcs11.CKA_PRIVATE: true, pkcs11.CKA_SENSITIVE: true, pkcs11.CKA_EXTRACTABLE: false, pkcs11.CKA_WRAP: true, pkcs11.CKA_UNWRAP: true, pkcs11.CKA_ENCRYPT: false, pkcs11.CKA_DECRYPT: false}
	encryptOnly = map[uint]bool{pkcs11.CKA_TOKEN: true, pkcs11.CKA_PRIVATE: true, pkcs11.CKA_SENSITIVE: true, pkcs11.CKA_EXTRACTABLE: false, pkcs11.CKA_WRAP: false, pkcs11.CKA_UNWRAP: false, pkcs11.CKA_ENCRYPT: true, pkcs11.CKA_DECRYPT: true}
)

func TestImportClusterKeys(t *testing.T) {
	h := openCluster(t, nodeA, clusterMaterial)
	// Idempotent, and it does not compare: the keys are not readable.
	for _, m := range [][]byte{clusterMaterial, otherMaterial} {
		if err := h.ImportClusterKeys(m); err != nil {
			t.Fatalf("import again: %v", err)
		}
	}
	if ok, err := h.HasClusterKeys(); !ok || err != nil {
		t.Fatalf("HasClusterKeys = %v, %v", ok, err)
	}
	for _, m := range [][]byte{nil, clusterMaterial[:32], clusterMaterial[:63], append(bytes.Clone(clusterMaterial), 0)} {
		err := h.ImportClusterKeys(m)
		if !errors.Is(err, ErrInvalidInput) {
			t.Errorf("%d bytes of material: err = %v", len(m), err)
		}
		noSecret(t, err, clusterMaterial)
	}
	for label, flags := range map[string]map[uint]bool{ClusterKEKLabel: wrapOnly, ClusterSealLabel: encryptOnly} {
		checkFlags(t, h, label, flags)
		if n := attributes(t, h, label, pkcs11.CKA_VALUE_LEN)[0].Value[0]; n != 32 {
			t.Errorf("%q: CKA_VALUE_LEN = %d, want 32", label, n)
		}
	}

	// Each key does only its one job.
	if _, _, err := h.EncryptGCM(ClusterKEKLabel, randomBytes(12), []byte("p"), nil); !isCode(err, pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED) {
		t.Errorf("encrypt under the KEK: err = %v, want CKR_KEY_FUNCTION_NOT_PERMITTED", err)
	}
	if hl := h.CheckNow(); hl.Status != StatusActive {
		t.Errorf("health = %+v", hl)
	}

	// The package's own keys are neither created nor destroyed by callers.
	for _, label := range []string{ClusterKEKLabel, ClusterSealLabel, DefaultHealthKeyLabel} {
		if err := h.GenerateKey(label); !errors.Is(err, ErrInvalidInput) {
			t.Errorf("GenerateKey(%q): err = %v", label, err)
		}
		if err := h.DestroyKey(label); !errors.Is(err, ErrInvalidInput) {
			t.Errorf("DestroyKey(%q): err = %v", label, err)
		}
		if err := h.UnwrapKey(make([]byte, 40), WrapMechanismAESKeyWrap, label); !errors.Is(err, ErrInvalidInput) {
			t.Errorf("UnwrapKey(%q): err = %v", label, err)
		}
	}
	if ok, err := h.HasClusterKeys(); !ok || err != nil {
		t.Errorf("HasClusterKeys after the refusals = %v, %v", ok, err)
	}
}

// A token holding one cluster key but not the other is refused, and
// nothing is created in it.
func TestImportClusterKeysHalfPresent(t *testing.T) {
	h := openT(t, testConfig(halfToken))
	s := <-h.free
	err := h.generate(s, ClusterKEKLabel)
	h.free <- s
	if err != nil && !errors.Is(err, ErrKeyExists) {
		t.Fatal(err)
	}
	if ok, err := h.HasClusterKeys(); ok || err != nil {
		t.Errorf("HasClusterKeys with one key = %v, %v", ok, err)
	}
	err = h.ImportClusterKeys(clusterMaterial)
	if err == nil || !strings.Contains(err.Error(), ClusterSealLabel) {
		t.Fatalf("import into a half-imported token: err = %v", err)
	}
	t.Logf("half-present: %v", err)
	noSecret(t, err, clusterMaterial)
	if ok, err := h.HasKey(ClusterSealLabel); ok || err != nil {
		t.Errorf("seal key after the refusal: %v, %v", ok, err)
	}
	if hl := h.Health(); hl.Status != StatusActive {
		t.Errorf("health = %+v", hl)
	}
}

// The point of the cluster KEK: a key generated in one HSM, carried as a
// wrapped blob, is the same key in every HSM that imported the same
// ceremony material, and no other.
func TestWrapUnwrapAcrossHSMs(t *testing.T) {
	a := openCluster(t, nodeA, clusterMaterial)
	b := openCluster(t, nodeB, clusterMaterial)
	c := openCluster(t, nodeC, otherMaterial)

	blob, mech, err := a.GenerateWrappedKey()
	if err != nil {
		t.Fatal(err)
	}
	if len(blob) != 40 || mech != WrapMechanismAESKeyWrap {
		t.Fatalf("GenerateWrappedKey = %d bytes, %q", len(blob), mech)
	}
	if n := transportKeys(t, a); n != 0 {
		t.Errorf("%d transport keys left after GenerateWrappedKey", n)
	}
	if again, _, err := a.GenerateWrappedKey(); err != nil || bytes.Equal(again, blob) {
		t.Errorf("second GenerateWrappedKey: same blob or %v", err)
	}

	label := uniqueLabel("replicated")
	for _, h := range []*HSM{a, b} {
		if err := h.UnwrapKey(blob, mech, label); err != nil {
			t.Fatalf("unwrap on %s: %v", h.cfg.TokenLabel, err)
		}
	}
	if err := b.UnwrapKey(blob, mech, label); !errors.Is(err, ErrKeyExists) {
		t.Errorf("unwrap twice: err = %v", err)
	}
	checkFlags(t, b, label, encryptOnly)
	crossCheck(t, a, b, label)

	// Other ceremony material: the blob does not unwrap, the HSM is fine,
	// and no key or debris is left.
	err = c.UnwrapKey(blob, mech, label)
	if !errors.Is(err, ErrInvalidCiphertext) {
		t.Fatalf("unwrap under another KEK: err = %v, want ErrInvalidCiphertext", err)
	}
	t.Logf("other KEK: %v", err)
	if ok, err := c.HasKey(label); ok || err != nil {
		t.Errorf("key after a failed unwrap: %v, %v", ok, err)
	}
	if n := transportKeys(t, c); n != 0 {
		t.Errorf("%d transport keys left after a failed unwrap", n)
	}
	if hl := c.CheckNow(); hl.Status != StatusActive {
		t.Errorf("health after a failed unwrap = %+v", hl)
	}

	tampered := bytes.Clone(blob)
	tampered[len(tampered)-1] ^= 1
	for name, tc := range map[string]struct {
		blob []byte
		mech string
		want error
	}{
		"tampered":          {tampered, mech, ErrInvalidCiphertext},
		"short":             {blob[:32], mech, ErrInvalidCiphertext},
		"long":              {append(bytes.Clone(blob), 0, 0, 0, 0, 0, 0, 0, 0), mech, ErrInvalidCiphertext},
		"empty":             {nil, mech, ErrInvalidCiphertext},
		"unknown mechanism": {blob, "CKM_AES_KEY_WRAP_PAD", ErrInvalidInput},
	} {
		if err := b.UnwrapKey(tc.blob, tc.mech, uniqueLabel("bad")); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", name, err, tc.want)
		}
	}

	// Scheduled deletion, then the key comes back from its blob.
	if err := b.DestroyKey(label); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.EncryptGCM(label, randomBytes(12), []byte("p"), nil); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("encrypt after DestroyKey: err = %v", err)
	}
	if err := b.UnwrapKey(blob, mech, label); err != nil {
		t.Fatal(err)
	}
	crossCheck(t, a, b, label)
}

// The blobs are plain RFC 3394, so any HSM holding the KEK can unwrap them,
// and the unwrapped key is exactly the wrapped one. Checked against an
// independent implementation with the test's KEK (the ceremony material,
// which is why a real cluster destroys it after the import). This also
// shows the key is 256 bits long: SoftHSMv2 leaves CKA_VALUE_LEN at 0 on
// unwrapped keys, so the attribute cannot.
func TestWrapIsRFC3394(t *testing.T) {
	a := openCluster(t, nodeA, clusterMaterial)
	b := openCluster(t, nodeB, clusterMaterial)
	kek := clusterMaterial[:32]

	// HSM to software: the key inside the blob encrypts what B produces.
	blob, mech, err := a.GenerateWrappedKey()
	if err != nil {
		t.Fatal(err)
	}
	key, ok := aesKeyUnwrap(kek, blob)
	if !ok || len(key) != 32 {
		t.Fatalf("the blob is not RFC 3394 under the KEK (%d bytes)", len(key))
	}
	label := uniqueLabel("kat")
	if err := b.UnwrapKey(blob, mech, label); err != nil {
		t.Fatal(err)
	}
	iv, plain, aad := randomBytes(12), randomBytes(40), randomBytes(8)
	ct, tag, err := b.EncryptGCM(label, iv, plain, aad)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := softwareGCM(key).Open(nil, iv, append(ct, tag...), aad); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("software decrypt of the HSM's ciphertext: %v", err)
	}

	// Software to HSM: a key wrapped elsewhere unwraps to the same key.
	key = randomBytes(32)
	label = uniqueLabel("kat")
	if err := b.UnwrapKey(aesKeyWrap(kek, key), WrapMechanismAESKeyWrap, label); err != nil {
		t.Fatal(err)
	}
	sealed := softwareGCM(key).Seal(nil, iv, plain, aad)
	if got, err := b.DecryptGCM(label, iv, sealed[:len(plain)], sealed[len(plain):], aad); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("HSM decrypt of a software ciphertext: %v", err)
	}
}

// The RFC 3394 section 4.6 vector checks the test's own implementation.
func TestAESKeyWrapVector(t *testing.T) {
	kek, _ := hex.DecodeString("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F")
	key, _ := hex.DecodeString("00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F")
	want, _ := hex.DecodeString("28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21")
	if got := aesKeyWrap(kek, key); !bytes.Equal(got, want) {
		t.Fatalf("wrap = %x", got)
	}
	if got, ok := aesKeyUnwrap(kek, want); !ok || !bytes.Equal(got, key) {
		t.Fatalf("unwrap = %x, %v", got, ok)
	}
	want[3] ^= 1
	if _, ok := aesKeyUnwrap(kek, want); ok {
		t.Fatal("a corrupted blob unwrapped")
	}
}

var keyWrapIV = [8]byte{0xA6, 0xA6, 0xA6, 0xA6, 0xA6, 0xA6, 0xA6, 0xA6}

// aesKeyWrap is RFC 3394 section 2.2.1, written from the RFC.
func aesKeyWrap(kek, key []byte) []byte {
	block, err := aes.NewCipher(kek)
	if err != nil {
		panic(err)
	}
	n := len(key) / 8
	out := make([]byte, 8+len(key))
	a := keyWrapIV
	copy(out[8:], key)
	var buf [16]byte
	for j := range 6 {
		for i := 1; i <= n; i++ {
			copy(buf[:8], a[:])
			copy(buf[8:], out[8*i:8*i+8])
			block.Encrypt(buf[:], buf[:])
			binary.BigEndian.PutUint64(a[:], binary.BigEndian.Uint64(buf[:8])^uint64(n*j+i))
			copy(out[8*i:], buf[8:])
		}
	}
	copy(out, a[:])
	return out
}

// aesKeyUnwrap is RFC 3394 section 2.2.2 with the integrity check.
func aesKeyUnwrap(kek, wrapped []byte) ([]byte, bool) {
	block, err := aes.NewCipher(kek)
	if err != nil {
		panic(err)
	}
	n := len(wrapped)/8 - 1
	r := bytes.Clone(wrapped)
	var a [8]byte
	copy(a[:], r[:8])
	var buf [16]byte
	for j := 5; j >= 0; j-- {
		for i := n; i >= 1; i-- {
			binary.BigEndian.PutUint64(buf[:8], binary.BigEndian.Uint64(a[:])^uint64(n*j+i))
			copy(buf[8:], r[8*i:8*i+8])
			block.Decrypt(buf[:], buf[:])
			copy(a[:], buf[:8])
			copy(r[8*i:], buf[8:])
		}
	}
	return r[8:], a == keyWrapIV
}

func softwareGCM(key []byte) cipher.AEAD {
	block, err := aes.NewCipher(key)
	if err != nil {
		panic(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return aead
}

// crossCheck encrypts in each HSM and decrypts in the other.
func crossCheck(t *testing.T, a, b *HSM, label string) {
	t.Helper()
	for _, pair := range [][2]*HSM{{a, b}, {b, a}} {
		iv, plain, aad := randomBytes(12), randomBytes(32), randomBytes(24)
		ct, tag, err := pair[0].EncryptGCM(label, iv, plain, aad)
		if err != nil {
			t.Fatal(err)
		}
		got, err := pair[1].DecryptGCM(label, iv, ct, tag, aad)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("encrypted on %s, decrypted on %s: %v", pair[0].cfg.TokenLabel, pair[1].cfg.TokenLabel, err)
		}
	}
}

func TestSealUnseal(t *testing.T) {
	a := openCluster(t, nodeA, clusterMaterial)
	b := openCluster(t, nodeB, clusterMaterial)
	c := openCluster(t, nodeC, otherMaterial)
	secret, aad := []byte("sigv4-secret-access-key-0123456789"), []byte("AKIDEXAMPLE")

	sealed, err := a.Seal(secret, aad)
	if err != nil {
		t.Fatal(err)
	}
	if len(sealed) != 1+12+len(secret)+16 || sealed[0] != 1 {
		t.Fatalf("sealed = %d bytes, format %d", len(sealed), sealed[0])
	}
	if bytes.Contains(sealed, secret[:8]) {
		t.Fatal("sealed output contains the secret")
	}
	for _, h := range []*HSM{a, b} {
		if got, err := h.Unseal(sealed, aad); err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("unseal on %s: %v", h.cfg.TokenLabel, err)
		}
	}
	if again, err := a.Seal(secret, aad); err != nil || bytes.Equal(again, sealed) {
		t.Errorf("second Seal: same output (IV reused) or %v", err)
	}
	if empty, err := a.Seal(nil, aad); err != nil {
		t.Error(err)
	} else if got, err := b.Unseal(empty, aad); err != nil || len(got) != 0 {
		t.Errorf("empty secret: %q, %v", got, err)
	}

	bad := map[string][]byte{"truncated": sealed[:len(sealed)-1], "too short": sealed[:28], "empty": nil}
	for i := range sealed {
		flipped := bytes.Clone(sealed)
		flipped[i] ^= 0x80
		bad[fmt.Sprintf("byte %d flipped", i)] = flipped
	}
	for name, s := range bad {
		if got, err := b.Unseal(s, aad); !errors.Is(err, ErrInvalidCiphertext) || got != nil {
			t.Errorf("%s: %d bytes, err = %v", name, len(got), err)
		}
	}
	for name, wrong := range map[string][]byte{"other aad": []byte("AKIDOTHER"), "no aad": nil} {
		if _, err := b.Unseal(sealed, wrong); !errors.Is(err, ErrInvalidCiphertext) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	if _, err := c.Unseal(sealed, aad); !errors.Is(err, ErrInvalidCiphertext) {
		t.Errorf("another cluster's seal key: err = %v", err)
	}
	for _, h := range []*HSM{a, b, c} {
		if hl := h.CheckNow(); hl.Status != StatusActive {
			t.Errorf("%s: %+v", h.cfg.TokenLabel, hl)
		}
	}
}

func TestNoClusterKeys(t *testing.T) {
	h := openT(t, testConfig(testToken))
	if ok, err := h.HasClusterKeys(); ok || err != nil {
		t.Fatalf("HasClusterKeys = %v, %v", ok, err)
	}
	if _, _, err := h.GenerateWrappedKey(); !errors.Is(err, ErrNoClusterKeys) {
		t.Errorf("GenerateWrappedKey: err = %v", err)
	}
	if err := h.UnwrapKey(make([]byte, 40), WrapMechanismAESKeyWrap, uniqueLabel("k")); !errors.Is(err, ErrNoClusterKeys) {
		t.Errorf("UnwrapKey: err = %v", err)
	}
	if _, err := h.Seal([]byte("s"), nil); !errors.Is(err, ErrNoClusterKeys) {
		t.Errorf("Seal: err = %v", err)
	}
	if _, err := h.Unseal(append([]byte{1}, make([]byte, 40)...), nil); !errors.Is(err, ErrNoClusterKeys) {
		t.Errorf("Unseal: err = %v", err)
	}
	if hl := h.Health(); hl.Status != StatusActive {
		t.Errorf("missing cluster keys must not look like a token failure: %+v", hl)
	}
}

func TestDestroyKey(t *testing.T) {
	h := openT(t, testConfig(testToken))
	label := uniqueLabel("doomed")
	if err := h.GenerateKey(label); err != nil {
		t.Fatal(err)
	}
	// Cache the handle first: DestroyKey must invalidate it.
	iv := randomBytes(12)
	ct, tag, err := h.EncryptGCM(label, iv, []byte("p"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.DestroyKey(label); err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.EncryptGCM(label, randomBytes(12), []byte("p"), nil); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("EncryptGCM after DestroyKey: err = %v", err)
	}
	if _, err := h.DecryptGCM(label, iv, ct, tag, nil); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("DecryptGCM after DestroyKey: err = %v", err)
	}
	if ok, err := h.HasKey(label); ok || err != nil {
		t.Errorf("HasKey after DestroyKey = %v, %v", ok, err)
	}
	if err := h.DestroyKey(label); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("DestroyKey twice: err = %v", err)
	}
	if err := h.DestroyKey(""); !errors.Is(err, ErrInvalidInput) {
		t.Errorf("empty label: err = %v", err)
	}
	// The label is free again, for a new key.
	if err := h.GenerateKey(label); err != nil {
		t.Fatal(err)
	}
	if _, err := h.DecryptGCM(label, iv, ct, tag, nil); !errors.Is(err, ErrInvalidCiphertext) {
		t.Errorf("old ciphertext under the new key: err = %v", err)
	}
	if err := h.DestroyKey(label); err != nil {
		t.Fatal(err)
	}
	if hl := h.CheckNow(); hl.Status != StatusActive {
		t.Errorf("health = %+v", hl)
	}
}
