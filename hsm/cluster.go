package hsm

import (
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/miekg/pkcs11"
)

// The cluster keys are the same in every node's HSM: they come from one
// key ceremony (see DESIGN.md). The KEK carries customer key material
// between nodes in wrapped form; the seal key protects secrets the cluster
// replicates (SigV4 secrets). They are two keys because each may do only
// one thing: a key permitted both unwrap and decrypt would turn any wrapped
// key into plaintext for whoever can call C_Decrypt.
const (
	// ClusterKEKLabel is the cluster key-encryption key: AES-256,
	// CKA_WRAP/CKA_UNWRAP only, sensitive, non-extractable.
	ClusterKEKLabel = "xksproxy-cluster-kek"
	// ClusterSealLabel is the cluster seal key: AES-256,
	// CKA_ENCRYPT/CKA_DECRYPT only, sensitive, non-extractable.
	ClusterSealLabel = "xksproxy-cluster-seal"
	// ClusterKeysSize is the size of the ceremony material: the 32-byte
	// KEK followed by the 32-byte seal key.
	ClusterKeysSize = 64
	// WrapMechanismAESKeyWrap names CKM_AES_KEY_WRAP (RFC 3394). Callers
	// record it next to every wrapped blob, so that a later change of
	// mechanism can still unwrap old blobs.
	WrapMechanismAESKeyWrap = "CKM_AES_KEY_WRAP"
)

// ErrNoClusterKeys: this HSM does not hold the cluster keys; the ceremony
// material has not been imported into it.
var ErrNoClusterKeys = errors.New("hsm: cluster keys not in this HSM (ceremony material not imported)")

const (
	// wrappedKeySize is an AES-256 key wrapped with RFC 3394, which adds
	// one 64-bit integrity block.
	wrappedKeySize = keyBytes + 8
	// sealFormat is the first byte of Seal's output, so that the format
	// can change without guessing.
	sealFormat   = 1
	sealOverhead = 1 + ivSize + tagSize
)

var (
	errSealed     = fmt.Errorf("%w: not a sealed secret of format %d", ErrInvalidCiphertext, sealFormat)
	errWrappedLen = fmt.Errorf("%w: a wrapped AES-256 key is %d bytes", ErrInvalidCiphertext, wrappedKeySize)
)

// reserved reports whether label belongs to a key this package manages
// itself, which callers may neither create nor destroy.
func (h *HSM) reserved(label string) bool {
	return label == h.cfg.HealthKeyLabel || label == ClusterKEKLabel || label == ClusterSealLabel
}

// ImportClusterKeys creates the cluster KEK and seal key from the 64 bytes
// of ceremony material (KEK first). If both exist already it returns nil
// without comparing them with material; if only one exists it refuses, since
// creating the other could pair keys from two ceremonies. The material never
// appears in errors. After ErrTimeout, call it again.
func (h *HSM) ImportClusterKeys(material []byte) error {
	if len(material) != ClusterKeysSize {
		return fmt.Errorf("%w: cluster key material must be %d bytes, not %d", ErrInvalidInput, ClusterKeysSize, len(material))
	}
	c := getCall(opImportCluster, ClusterKEKLabel)
	c.in = material
	_, _, err := h.do(c, h.cfg.WaitTimeout)
	return err
}

// HasClusterKeys reports whether both cluster keys are present. It reports
// false when only one is; ImportClusterKeys then says which.
func (h *HSM) HasClusterKeys() (bool, error) {
	_, found, err := h.do(getCall(opHasCluster, ClusterKEKLabel), h.cfg.WaitTimeout)
	return found, err
}

// GenerateWrappedKey generates a fresh AES-256 key and returns it wrapped
// under the cluster KEK with CKM_AES_KEY_WRAP (a 40-byte blob), together
// with the mechanism's name. The key exists in the clear in no HSM: it is
// made as a temporary session object, the only extractable key this package
// creates, and destroyed right after wrapping. Install it with UnwrapKey.
func (h *HSM) GenerateWrappedKey() (wrapped []byte, mechanism string, err error) {
	out, _, err := h.do(getCall(opWrapNew, ClusterKEKLabel), h.cfg.WaitTimeout)
	if err != nil {
		return nil, "", err
	}
	return out, WrapMechanismAESKeyWrap, nil
}

// UnwrapKey unwraps a blob made by GenerateWrappedKey (in this HSM or any
// other holding the same cluster KEK) into a token key labelled label: AES-256,
// sensitive, non-extractable, encrypt and decrypt only. A label in use gives
// ErrKeyExists, which callers replaying an operation can treat as done. A
// blob that does not unwrap (another KEK, or corrupted) gives
// ErrInvalidCiphertext; an unknown mechanism ErrInvalidInput. After
// ErrTimeout the key may or may not exist: ask HasKey.
func (h *HSM) UnwrapKey(wrapped []byte, mechanism, label string) error {
	switch {
	case label == "":
		return errEmptyLabel
	case h.reserved(label):
		return fmt.Errorf("%w: %q is reserved", ErrInvalidInput, label)
	case mechanism != WrapMechanismAESKeyWrap:
		return fmt.Errorf("%w: unknown wrap mechanism %q", ErrInvalidInput, mechanism)
	case len(wrapped) != wrappedKeySize:
		// Also keeps an empty blob away from miekg/pkcs11, which indexes
		// its first byte.
		return errWrappedLen
	}
	c := getCall(opUnwrap, label)
	c.in = wrapped
	_, _, err := h.do(c, h.cfg.WaitTimeout)
	return err
}

// Seal encrypts a small secret under the cluster seal key with AES-256-GCM
// and a fresh random 12-byte IV, binding aad. The output is the format byte
// (1), the IV, the ciphertext and the 16-byte tag. If Seal returns
// ErrTimeout the HSM may still be reading plaintext and aad: do not modify
// or reuse them.
func (h *HSM) Seal(plaintext, aad []byte) ([]byte, error) {
	iv := make([]byte, ivSize)
	// crypto/rand.Read never returns an error: it crashes the program
	// instead (Go 1.24+).
	rand.Read(iv)
	c := getCall(opSeal, ClusterSealLabel)
	c.iv, c.in, c.aad = iv, plaintext, aad
	out, _, err := h.do(c, h.cfg.WaitTimeout)
	if err != nil {
		return nil, err
	}
	sealed := make([]byte, 0, 1+ivSize+len(out))
	return append(append(append(sealed, sealFormat), iv...), out...), nil
}

// Unseal reverses Seal. A wrong aad, a sealed secret from another cluster
// or any change to it gives ErrInvalidCiphertext. If Unseal returns
// ErrTimeout the HSM may still be reading sealed and aad.
func (h *HSM) Unseal(sealed, aad []byte) ([]byte, error) {
	if len(sealed) < sealOverhead || sealed[0] != sealFormat {
		return nil, errSealed
	}
	c := getCall(opUnseal, ClusterSealLabel)
	c.iv, c.in, c.aad = sealed[1:1+ivSize], sealed[1+ivSize:], aad
	out, _, err := h.do(c, h.cfg.WaitTimeout)
	return out, err
}

// DestroyKey destroys the token key labelled label; ErrKeyNotFound if there
// is none. The health key and the cluster keys are refused with
// ErrInvalidInput. After ErrTimeout the key may or may not exist: ask
// HasKey.
func (h *HSM) DestroyKey(label string) error {
	switch {
	case label == "":
		return errEmptyLabel
	case h.reserved(label):
		return fmt.Errorf("%w: %q is reserved", ErrInvalidInput, label)
	}
	_, _, err := h.do(getCall(opDestroy, label), h.cfg.WaitTimeout)
	return err
}

// clusterKey is keyHandle for a cluster key, whose absence means the
// ceremony was not done here.
func (h *HSM) clusterKey(s *session, label string) (pkcs11.ObjectHandle, error) {
	key, err := h.keyHandle(s, label)
	if errors.Is(err, ErrKeyNotFound) {
		return 0, fmt.Errorf("%w: no key %q", ErrNoClusterKeys, label)
	}
	return key, err
}

func (h *HSM) importClusterKeys(s *session, material []byte) error {
	h.genMu.Lock()
	defer h.genMu.Unlock()
	_, haveKEK, err := h.find(s, ClusterKEKLabel)
	if err != nil {
		return err
	}
	_, haveSeal, err := h.find(s, ClusterSealLabel)
	if err != nil {
		return err
	}
	switch {
	case haveKEK && haveSeal:
		return nil
	case haveKEK || haveSeal:
		present, missing := ClusterKEKLabel, ClusterSealLabel
		if haveSeal {
			present, missing = missing, present
		}
		return fmt.Errorf("hsm: token %q holds cluster key %q but not %q; refusing to import into a half-imported token: destroy %q with the token's own tools and import again",
			h.cfg.TokenLabel, present, missing, present)
	}
	h.searchMu.RLock()
	kek, err := h.p11.CreateObject(s.h, append(aesKeyAttributes(ClusterKEKLabel, true),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE, material[:keyBytes])))
	if err != nil {
		h.searchMu.RUnlock()
		return err
	}
	seal, err := h.p11.CreateObject(s.h, append(aesKeyAttributes(ClusterSealLabel, false),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE, material[keyBytes:])))
	h.searchMu.RUnlock()
	if err != nil {
		// A lone KEK would make every later import refuse. If this fails
		// too, that refusal names the key to remove.
		_ = h.p11.DestroyObject(s.h, kek)
		return err
	}
	h.remember(ClusterKEKLabel, kek)
	h.remember(ClusterSealLabel, seal)
	return nil
}

func (h *HSM) hasClusterKeys(s *session) (bool, error) {
	for _, label := range [...]string{ClusterKEKLabel, ClusterSealLabel} {
		_, err := h.keyHandle(s, label)
		if errors.Is(err, ErrKeyNotFound) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
	}
	return true, nil
}

// wrapNewKey generates a temporary key and returns it wrapped under the KEK.
func (h *HSM) wrapNewKey(s *session) ([]byte, error) {
	kek, err := h.clusterKey(s, ClusterKEKLabel)
	if err != nil {
		return nil, err
	}
	s.mech[0] = pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)
	tmp, err := h.p11.GenerateKey(s.h, s.mech, transportKeyTemplate())
	s.mech[0] = nil
	if err != nil {
		return nil, err
	}
	s.mech[0] = pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_WRAP, nil)
	wrapped, err := h.p11.WrapKey(s.h, s.mech, kek, tmp)
	s.mech[0] = nil
	// Destroyed whatever happened: it is extractable. If destroying fails,
	// the session object still ends with its session, at the latest at the
	// next recovery or Close.
	derr := h.p11.DestroyObject(s.h, tmp)
	switch {
	case err != nil:
		return nil, err
	case derr != nil:
		return nil, derr
	case len(wrapped) != wrappedKeySize:
		return nil, fmt.Errorf("hsm: key wrap returned %d bytes, want %d", len(wrapped), wrappedKeySize)
	}
	return wrapped, nil
}

// transportKeyTemplate describes the temporary key GenerateWrappedKey
// makes: a session object (gone with the session at the latest), sensitive
// so its value can never be read in the clear, extractable only so that
// C_WrapKey accepts it, and permitted nothing else.
func transportKeyTemplate() []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, keyBytes),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, true),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false),
	}
}

// unwrap installs wrapped as the token key labelled label.
func (h *HSM) unwrap(s *session, wrapped []byte, label string) error {
	h.genMu.Lock()
	defer h.genMu.Unlock()
	_, found, err := h.find(s, label)
	if err != nil {
		return err
	}
	if found {
		return fmt.Errorf("%w: %q", ErrKeyExists, label)
	}
	kek, err := h.clusterKey(s, ClusterKEKLabel)
	if err != nil {
		return err
	}
	s.mech[0] = pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_WRAP, nil)
	// No CKA_VALUE_LEN: the length comes from the blob, and SoftHSMv2
	// refuses the attribute on unwrap (CKR_ATTRIBUTE_READ_ONLY), leaving an
	// empty session object behind.
	h.searchMu.RLock()
	key, err := h.p11.UnwrapKey(s.h, s.mech, kek, wrapped, aesKeyAttributes(label, false))
	h.searchMu.RUnlock()
	s.mech[0] = nil
	if err != nil {
		return err
	}
	h.remember(label, key)
	return nil
}

// destroy removes the token key labelled label. It searches afresh rather
// than trusting the cache: destroying is the one operation where a stale
// handle could hit the wrong object.
func (h *HSM) destroy(s *session, label string) error {
	h.genMu.Lock()
	defer h.genMu.Unlock()
	key, found, err := h.find(s, label)
	if err != nil {
		return err
	}
	if !found {
		return h.notFound(label)
	}
	if err := h.p11.DestroyObject(s.h, key); err != nil {
		return err
	}
	h.dropDestroyed(s, label)
	return nil
}
