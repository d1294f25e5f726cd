package hsm

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/miekg/pkcs11"
)

const (
	ivSize   = 12
	tagSize  = 16
	keyBytes = 32
)

var (
	probePlaintext = []byte("xksproxy health probe")
	probeAAD       = []byte("xksproxy-health")
)

// exec runs c on s, repairing what can be repaired: a dead session is
// re-opened (and logged in) and a stale key handle looked up again, each
// at most once; a failed device starts recovery; an ambiguous failure is
// settled by a probe.
func (h *HSM) exec(s *session, c *call) ([]byte, bool, error) {
	reopened, relooked := false, false
	for {
		out, found, err := h.attempt(s, c)
		if err == nil {
			return out, found, nil
		}
		switch classify(err) {
		case classFinal:
			return nil, false, err
		case classSession:
			if reopened {
				return nil, false, h.fail(err)
			}
			reopened = true
			if rerr := h.reopen(s, err); rerr != nil {
				return nil, false, h.fail(rerr)
			}
		case classHandle:
			if relooked {
				// A handle found a moment ago is invalid already: the
				// token changed under us.
				return nil, false, h.fail(err)
			}
			relooked = true
			h.forget(s, c.key())
		case classDevice:
			return nil, false, h.fail(err)
		case classSuspect:
			return nil, false, h.suspect(s, c, err)
		case classInput:
			return nil, false, fmt.Errorf("%w: %s with key %q: %w", ErrInvalidInput, c.op, c.label, err)
		default:
			if _, raw := err.(pkcs11.Error); raw {
				return nil, false, fmt.Errorf("hsm: %s with key %q: %w", c.op, c.label, err)
			}
			return nil, false, err
		}
	}
}

// suspect settles an ambiguous failure (SoftHSMv2 reports a GCM tag
// mismatch as CKR_GENERAL_ERROR): if a known-good round trip on the health
// key works, the HSM is fine and the input was bad; otherwise the HSM is sick.
func (h *HSM) suspect(s *session, c *call, err error) error {
	if c.op == opProbe {
		return h.fail(err)
	}
	if perr := h.probe(s); perr != nil {
		return h.fail(perr)
	}
	switch c.op {
	case opDecrypt, opUnseal:
		return fmt.Errorf("%w: %w", ErrInvalidCiphertext, err)
	case opUnwrap:
		return fmt.Errorf("%w: the blob for %q does not unwrap under this HSM's cluster KEK (other ceremony material, or a corrupted blob): %w", ErrInvalidCiphertext, c.label, err)
	}
	return fmt.Errorf("hsm: %s with key %q: %w", c.op, c.label, err)
}

// probe is the known-good round trip, skipped while a recent pass vouches
// for the HSM.
func (h *HSM) probe(s *session) error {
	if last := h.lastPass.Load(); last != 0 && h.now()-last < int64(probePassTTL) {
		return nil
	}
	pc := call{op: opProbe, label: h.cfg.HealthKeyLabel}
	_, _, err := h.exec(s, &pc)
	return err
}

// attempt performs c once. PKCS#11 errors come back raw for exec to classify.
func (h *HSM) attempt(s *session, c *call) ([]byte, bool, error) {
	switch c.op {
	case opEncrypt, opSeal:
		key, err := h.opKey(s, c)
		if err != nil {
			return nil, false, err
		}
		out, err := h.encrypt(s, key, c.iv, c.aad, c.in)
		return out, false, err
	case opDecrypt, opUnseal:
		key, err := h.opKey(s, c)
		if err != nil {
			return nil, false, err
		}
		c.buf = append(append(c.buf[:0], c.in...), c.tag...)
		out, err := h.decrypt(s, key, c.iv, c.aad, c.buf)
		return out, false, err
	case opGenerate:
		return nil, false, h.generate(s, c.label)
	case opHasKey:
		_, err := h.keyHandle(s, c.label)
		if errors.Is(err, ErrKeyNotFound) {
			return nil, false, nil
		}
		return nil, err == nil, err
	case opImportCluster:
		return nil, false, h.importClusterKeys(s, c.in)
	case opHasCluster:
		found, err := h.hasClusterKeys(s)
		return nil, found, err
	case opWrapNew:
		out, err := h.wrapNewKey(s)
		return out, false, err
	case opUnwrap:
		return nil, false, h.unwrap(s, c.in, c.label)
	case opDestroy:
		return nil, false, h.destroy(s, c.label)
	case opRevalidate:
		return nil, false, h.revalidate(s)
	}
	err := h.roundTrip(s)
	if err == nil {
		h.lastPass.Store(h.now())
	}
	return nil, false, err
}

// opKey returns the handle of the key c uses; a missing cluster key means
// the ceremony has not been done on this HSM.
func (h *HSM) opKey(s *session, c *call) (pkcs11.ObjectHandle, error) {
	if c.op == opSeal || c.op == opUnseal {
		return h.clusterKey(s, ClusterSealLabel)
	}
	return h.keyHandle(s, c.label)
}

// encrypt returns ciphertext||tag.
func (h *HSM) encrypt(s *session, key pkcs11.ObjectHandle, iv, aad, plaintext []byte) ([]byte, error) {
	params := pkcs11.NewGCMParams(iv, aad, tagSize*8)
	// The C copy of the parameters is freed only after the whole operation,
	// for modules that read them after C_EncryptInit.
	defer params.Free()
	s.mech[0] = pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, params)
	err := h.p11.EncryptInit(s.h, s.mech, key)
	s.mech[0] = nil
	if err != nil {
		return nil, err
	}
	// miekg/pkcs11 calls C_Encrypt twice (length query, then data) into a
	// C buffer and copies the result into a new Go slice; there is no
	// caller-supplied-buffer variant.
	out, err := h.p11.Encrypt(s.h, plaintext)
	if err != nil {
		return nil, err
	}
	if len(out) != len(plaintext)+tagSize {
		return nil, fmt.Errorf("hsm: encrypt returned %d bytes for %d bytes of input", len(out), len(plaintext))
	}
	return out, nil
}

// decrypt opens ciphertext||tag.
func (h *HSM) decrypt(s *session, key pkcs11.ObjectHandle, iv, aad, sealed []byte) ([]byte, error) {
	params := pkcs11.NewGCMParams(iv, aad, tagSize*8)
	defer params.Free()
	s.mech[0] = pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, params)
	err := h.p11.DecryptInit(s.h, s.mech, key)
	s.mech[0] = nil
	if err != nil {
		return nil, err
	}
	out, err := h.p11.Decrypt(s.h, sealed)
	if err != nil {
		return nil, err
	}
	if len(out) != len(sealed)-tagSize {
		return nil, fmt.Errorf("hsm: decrypt returned %d bytes for %d bytes of input", len(out), len(sealed))
	}
	return out, nil
}

// roundTrip encrypts and decrypts a fixed message under the health key with
// a fresh IV: the known-good probe. It never touches a customer key.
func (h *HSM) roundTrip(s *session) error {
	key, err := h.keyHandle(s, h.cfg.HealthKeyLabel)
	if err != nil {
		return err
	}
	iv := make([]byte, ivSize)
	// crypto/rand.Read never returns an error: it crashes the program
	// instead (Go 1.24+).
	rand.Read(iv)
	sealed, err := h.encrypt(s, key, iv, probeAAD, probePlaintext)
	if err != nil {
		return err
	}
	opened, err := h.decrypt(s, key, iv, probeAAD, sealed)
	if err != nil {
		return err
	}
	if !bytes.Equal(opened, probePlaintext) {
		return errors.New("hsm: probe round trip returned the wrong plaintext")
	}
	return nil
}

// reopen replaces s's session after a session-level error and logs in
// again when the token has logged us out.
func (h *HSM) reopen(s *session, cause error) error {
	h.dropSessionCopies(s)
	// An invalid or closed handle is gone already, and its number may have
	// been handed out again: closing it could close someone else's session.
	if !isCode(cause, pkcs11.CKR_SESSION_HANDLE_INVALID) && !isCode(cause, pkcs11.CKR_SESSION_CLOSED) {
		// The session is still open but unusable; failing to close it
		// leaks at most one session until the next recovery.
		_ = h.p11.CloseSession(s.h)
	}
	sh, err := h.p11.OpenSession(h.slot, sessionFlags)
	if err != nil {
		return fmt.Errorf("hsm: re-open session on token %q: %w", h.cfg.TokenLabel, err)
	}
	s.h = sh
	return h.login(sh)
}

// notFound tells a missing key from a missing token: SoftHSMv2 answers a
// search on a token whose storage has vanished with an empty result, not an
// error, so the token is checked before the label is blamed.
func (h *HSM) notFound(label string) error {
	if _, err := h.p11.GetTokenInfo(h.slot); err != nil {
		// Reported as CKR_TOKEN_NOT_PRESENT, which is what it means here,
		// so that exec classifies it as a device failure.
		return fmt.Errorf("hsm: token %q unreadable (%w): %w", h.cfg.TokenLabel, pkcs11.Error(pkcs11.CKR_TOKEN_NOT_PRESENT), err)
	}
	return fmt.Errorf("%w: %q", ErrKeyNotFound, label)
}

// find searches the token for AES secret keys labelled label.
func (h *HSM) find(s *session, label string) (pkcs11.ObjectHandle, bool, error) {
	template := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		// Not the pool's session-object copies (keycache.go).
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
	}
	h.searchMu.Lock()
	defer h.searchMu.Unlock()
	if err := h.p11.FindObjectsInit(s.h, template); err != nil {
		return 0, false, err
	}
	objs, _, err := h.p11.FindObjects(s.h, 2)
	// The search must be finished even when it failed, or the session
	// stays busy with it.
	ferr := h.p11.FindObjectsFinal(s.h)
	switch {
	case err != nil:
		return 0, false, err
	case ferr != nil:
		return 0, false, ferr
	case len(objs) == 0:
		return 0, false, nil
	case len(objs) > 1:
		return 0, false, fmt.Errorf("hsm: more than one AES key labelled %q (objects %d and %d)", label, objs[0], objs[1])
	}
	return objs[0], true, nil
}

// generate creates the AES-256 key labelled label unless the label is taken.
func (h *HSM) generate(s *session, label string) error {
	h.genMu.Lock()
	defer h.genMu.Unlock()
	_, found, err := h.find(s, label)
	if err != nil {
		return err
	}
	if found {
		return fmt.Errorf("%w: %q", ErrKeyExists, label)
	}
	s.mech[0] = pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)
	h.searchMu.RLock()
	key, err := h.p11.GenerateKey(s.h, s.mech, keyTemplate(label))
	h.searchMu.RUnlock()
	s.mech[0] = nil
	if err != nil {
		return err
	}
	h.remember(label, key)
	return nil
}

// keyTemplate describes a token-resident AES-256 key that never leaves the
// HSM in any form and serves only encrypt and decrypt.
func keyTemplate(label string) []*pkcs11.Attribute {
	return append(aesKeyAttributes(label, false), pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, keyBytes))
}

// aesKeyAttributes describes a private, sensitive, non-extractable AES token
// key labelled label, permitted either wrap and unwrap (wrapping) or encrypt
// and decrypt, never both: a key permitted unwrap and decrypt would turn
// any blob it wrapped into key material in the clear through C_Decrypt.
func aesKeyAttributes(label string, wrapping bool) []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, !wrapping),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, !wrapping),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, wrapping),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, wrapping),
	}
}
