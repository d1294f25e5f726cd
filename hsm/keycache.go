package hsm

import (
	"fmt"
	"slices"
	"strings"

	"github.com/miekg/pkcs11"
)

// cachedKey is one token key as the pool uses it: the token object, and per
// pool session a session-object copy of it made by that session.
//
// Operations use the copies. A token object costs SoftHSMv2 file I/O on
// every use (it re-reads the object's file to see whether another process
// changed it): about 30 µs per 32-byte AES-GCM encrypt on our machines,
// against about 11 µs for a session object. A copy is as protected as its
// original (C_CopyObject keeps CKA_SENSITIVE and CKA_EXTRACTABLE), lives
// in the HSM's memory, and dies with the session that made it, which is why
// each session uses only copies it made itself: a copy's handle is valid
// exactly as long as the session that holds it, so a handle number that an
// HSM hands out again after a session died can never be mistaken for a key.
type cachedKey struct {
	token pkcs11.ObjectHandle
	// copies is indexed by session; 0 (CK_INVALID_HANDLE) means none yet.
	copies []pkcs11.ObjectHandle
	// uncopyable: the HSM refused to copy the key (CKA_COPYABLE false, or
	// no C_CopyObject); sessions use the token object.
	uncopyable bool
}

// sessionCopy is the template of a copy: everything as the original, but a
// session object.
var sessionCopy = []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false)}

// keyHandle returns the handle s uses for the AES key labelled label: s's
// copy, made on first use, or the token object when the HSM refuses copies.
// It records the handle in s, so that a failure can tell which one failed.
func (h *HSM) keyHandle(s *session, label string) (pkcs11.ObjectHandle, error) {
	h.keysMu.RLock()
	k := h.keys[label]
	var handle, token pkcs11.ObjectHandle
	if k != nil {
		token = k.token
		handle = k.copies[s.idx]
		if handle == 0 && k.uncopyable {
			handle = token
		}
	}
	gen := h.keysGen
	h.keysMu.RUnlock()
	if handle != 0 {
		s.key = handle
		return handle, nil
	}
	if token == 0 {
		found, ok, err := h.find(s, label)
		if err != nil {
			return 0, err
		}
		if !ok {
			return 0, h.notFound(label)
		}
		token = found
	}
	s.key = token
	h.searchMu.RLock()
	copied, err := h.p11.CopyObject(s.h, token, sessionCopy)
	h.searchMu.RUnlock()
	uncopyable := isCopyRefusal(err)
	if err != nil && !uncopyable {
		return 0, err
	}
	if h.cacheCopy(s, label, token, copied, uncopyable, gen) {
		s.key = copied
		return copied, nil
	}
	if copied != 0 {
		// Not cached (a key was destroyed meanwhile): this call uses the
		// token object, and the copy must not outlive it.
		_ = h.p11.DestroyObject(s.h, copied)
	}
	return token, nil
}

// cacheCopy records token and s's copy of it (or that the key cannot be
// copied) and says whether the copy is s's to use. Nothing is cached if a
// key was destroyed since the lookup began at generation gen: some HSMs
// hand a destroyed object's handle to the next new object.
func (h *HSM) cacheCopy(s *session, label string, token, copied pkcs11.ObjectHandle, uncopyable bool, gen uint64) bool {
	h.keysMu.Lock()
	defer h.keysMu.Unlock()
	if h.keysGen != gen {
		return false
	}
	k := h.keys[label]
	if k == nil || k.token != token {
		k = &cachedKey{token: token, copies: make([]pkcs11.ObjectHandle, len(h.sessions))}
		h.keys[label] = k
	}
	if uncopyable {
		k.uncopyable = true
		return false
	}
	k.copies[s.idx] = copied
	return true
}

// isCopyRefusal tells an HSM that will not copy this key (by policy or for
// lack of C_CopyObject) from a failure of the call itself.
func isCopyRefusal(err error) bool {
	for _, rv := range [...]uint{pkcs11.CKR_ACTION_PROHIBITED, pkcs11.CKR_FUNCTION_NOT_SUPPORTED,
		pkcs11.CKR_ATTRIBUTE_READ_ONLY, pkcs11.CKR_TEMPLATE_INCONSISTENT, pkcs11.CKR_ATTRIBUTE_VALUE_INVALID} {
		if isCode(err, rv) {
			return true
		}
	}
	return false
}

// remember caches the token key just created as label; copies are made on
// first use.
func (h *HSM) remember(label string, token pkcs11.ObjectHandle) {
	h.keysMu.Lock()
	h.keys[label] = &cachedKey{token: token, copies: make([]pkcs11.ObjectHandle, len(h.sessions))}
	h.keysMu.Unlock()
}

// forget handles a stale handle that s just used for label. A dead copy of
// s's own is dropped alone; a dead token object takes the whole entry, and
// the other sessions' copies with it, since the key is no longer on the
// token. A handle that is no longer in the cache was dealt with already.
func (h *HSM) forget(s *session, label string) {
	h.keysMu.Lock()
	k := h.keys[label]
	var doomed []pkcs11.ObjectHandle
	switch {
	case k == nil:
	case k.copies[s.idx] == s.key:
		k.copies[s.idx] = 0
	case k.token == s.key:
		delete(h.keys, label)
		doomed = k.copies
	}
	h.keysMu.Unlock()
	h.destroyCopies(s, doomed)
}

// dropDestroyed forgets the key labelled label, which has just been
// destroyed on the token, destroys every session's copy of it, and stops
// lookups already under way from caching it again.
func (h *HSM) dropDestroyed(s *session, label string) {
	h.keysMu.Lock()
	var doomed []pkcs11.ObjectHandle
	if k := h.keys[label]; k != nil {
		doomed = k.copies
	}
	delete(h.keys, label)
	h.keysGen++
	h.keysMu.Unlock()
	h.destroyCopies(s, doomed)
}

// destroyCopies destroys copies through s; session objects are visible to
// every session of the application. A copy that cannot be destroyed still
// dies with the session that made it.
func (h *HSM) destroyCopies(s *session, copies []pkcs11.ObjectHandle) {
	for _, c := range copies {
		if c != 0 {
			_ = h.p11.DestroyObject(s.h, c)
		}
	}
}

// dropSessionCopies forgets s's copies, which died with its session.
func (h *HSM) dropSessionCopies(s *session) {
	h.keysMu.Lock()
	for _, k := range h.keys {
		k.copies[s.idx] = 0
	}
	h.keysMu.Unlock()
}

// clearKeys drops every cached handle: handles do not survive
// re-initialising the module.
func (h *HSM) clearKeys() {
	h.keysMu.Lock()
	clear(h.keys)
	h.keysMu.Unlock()
}

// revalidateBatch bounds the keys one deep check re-reads: on SoftHSMv2
// each read costs a token file access (~30 µs), and the check must stay well
// inside CallTimeout whatever the number of keys. Larger caches are covered
// over several checks, in label order.
const revalidateBatch = 256

// revalidate checks that cached keys are still on the token under their
// labels, up to revalidateBatch of them from where the last check stopped,
// and forgets (with its copies) each one that is not. Copies keep working
// after their original is destroyed, so without this an HSM administrator
// who destroys a key with the token's own tools would see it keep working
// until the proxy restarts; with it, for at most a few deep checks.
func (h *HSM) revalidate(s *session) error {
	type entry struct {
		label string
		token pkcs11.ObjectHandle
	}
	h.keysMu.RLock()
	entries := make([]entry, 0, len(h.keys))
	for label, k := range h.keys {
		entries = append(entries, entry{label, k.token})
	}
	h.keysMu.RUnlock()
	h.revalidateMu.Lock()
	defer h.revalidateMu.Unlock()
	slices.SortFunc(entries, func(a, b entry) int { return strings.Compare(a.label, b.label) })
	// Start after the last label checked, wrapping around.
	first, _ := slices.BinarySearchFunc(entries, h.revalidated, func(e entry, label string) int {
		if e.label <= label {
			return -1
		}
		return 1
	})
	for i := range min(len(entries), h.revalidateBatch) {
		e := entries[(first+i)%len(entries)]
		h.revalidated = e.label
		attrs, err := h.p11.GetAttributeValue(s.h, e.token, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_LABEL, nil)})
		switch {
		case classify(err) == classHandle:
		case err != nil:
			return fmt.Errorf("hsm: revalidate key %q: %w", e.label, err)
		case len(attrs) == 1 && string(attrs[0].Value) == e.label:
			continue
		}
		s.key = e.token
		h.forget(s, e.label)
	}
	return nil
}
