package xksapi

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"

	"github.com/xksproxy/xksproxy/fsm"
)

// ciphertextMetadata records, inside every ciphertext we hand out, how it was
// made: a format byte and the key version. The tag covers it (see hsmAAD),
// so it cannot be altered, and a future format or a rotated key never makes an
// old ciphertext undecryptable.
//
//	byte 0     format: 1 = AES-256-GCM, 12-byte IV, AAD per the specification's
//	           length-prefixed formula
//	bytes 1-4  key version, big-endian
const (
	metadataFormatV1 = 1
	metadataV1Len    = 5
)

func encodeCiphertextMetadata(version uint32) []byte {
	m := make([]byte, metadataV1Len)
	m[0] = metadataFormatV1
	binary.BigEndian.PutUint32(m[1:], version)
	return m
}

// decodeCiphertextMetadata returns the key version a ciphertext was made
// with; ok is false for metadata this proxy never produced.
func decodeCiphertextMetadata(m []byte) (version uint32, ok bool) {
	if len(m) != metadataV1Len || m[0] != metadataFormatV1 {
		return 0, false
	}
	return binary.BigEndian.Uint32(m[1:]), true
}

// hsmAAD is the AAD given to the HSM: uint16be(len(aad)) || aad ||
// uint8(len(metadata)) || metadata. The lengths stop a caller from moving
// bytes between the two fields and still passing the tag check.
func hsmAAD(aad, metadata []byte) []byte {
	out := make([]byte, 0, 3+len(aad)+len(metadata))
	out = binary.BigEndian.AppendUint16(out, uint16(len(aad)))
	out = append(out, aad...)
	out = append(out, byte(len(metadata)))
	return append(out, metadata...)
}

// legacyCiphertext reports whether a decrypt with key k is of a ciphertext
// its previous proxy made: k remembers that proxy's format, and the
// metadata is absent, is that proxy's static value, or is anything this
// proxy never writes and could not confuse with its own AAD (the sample
// proxy returned whatever its configuration said at the time, and its
// configuration may have changed). Everything else is ours. The tag covers
// the metadata in both formulas; fsm.ConfusableWithOurs keeps the two
// formulas from ever producing the same bytes, so that no choice of AAD and
// metadata passes one kind of ciphertext off as the other.
func legacyCiphertext(k *fsm.Key, metadata []byte) bool {
	if k.Legacy == nil {
		return false
	}
	if metadata == nil || bytes.Equal(metadata, k.Legacy.StaticMetadata) {
		return true
	}
	return !fsm.ConfusableWithOurs(metadata)
}

// legacyAAD is the AAD AWS's sample proxy gives the HSM:
// uint16be(len(aad)) || SHA-256(aad) || uint8(len(metadata)) || metadata,
// the digest present whenever the request carries the AAD field (even
// empty, which the decoder keeps apart from absent: non-nil and empty).
func legacyAAD(aad, metadata []byte) []byte {
	out := make([]byte, 0, 2+sha256.Size+1+len(metadata))
	out = binary.BigEndian.AppendUint16(out, uint16(len(aad)))
	if aad != nil {
		digest := sha256.Sum256(aad)
		out = append(out, digest[:]...)
	}
	out = append(out, byte(len(metadata)))
	return append(out, metadata...)
}

// cdiv is the Ciphertext Data Integrity Value: SHA-256 over the decoded
// fields in this order, lengths not included (specification, Appendix C).
func cdiv(aad, metadata, iv, ciphertext, tag []byte) []byte {
	h := sha256.New()
	h.Write(aad)
	h.Write(metadata)
	h.Write(iv)
	h.Write(ciphertext)
	h.Write(tag)
	return h.Sum(make([]byte, 0, sha256.Size))
}
