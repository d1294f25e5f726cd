package xksclient

import "crypto/sha256"

// CDIV is the ciphertextDataIntegrityValue the specification defines for an
// Encrypt answer: SHA-256 over the decoded aad || ciphertextMetadata || iv ||
// ciphertext || tag, lengths not included. Absent fields contribute nothing.
func CDIV(aad, ciphertextMetadata, iv, ciphertext, tag []byte) []byte {
	h := sha256.New()
	for _, part := range [][]byte{aad, ciphertextMetadata, iv, ciphertext, tag} {
		h.Write(part)
	}
	return h.Sum(nil)
}
