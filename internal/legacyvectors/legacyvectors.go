// Package legacyvectors makes ciphertexts the way AWS's sample XKS proxy
// (aws-samples/aws-kms-xks-proxy) does, from its published formula and
// Go's crypto/aes and crypto/cipher, sharing no code with this proxy's
// data plane. Tests decrypt them through the XKS API to prove that keys
// migrated from that proxy keep decrypting what it produced.
//
// The sample proxy encrypts with AES-GCM, a 12-byte IV and a 16-byte tag,
// giving the HSM this AAD:
//
//	uint16be(len(aad)) || SHA-256(aad) || uint8(len(md)) || md
//
// where the digest is present whenever the request carries
// additionalAuthenticatedData (even empty) and absent when it does not, and
// md is the static ciphertext_metadata_b64 of its configuration (empty when
// unset), which its Encrypt returns and AWS KMS sends back on Decrypt.
package legacyvectors

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
)

// Vector is one ciphertext in the sample proxy's format.
type Vector struct {
	Name      string
	Plaintext []byte
	// AAD nil: the requests carry no additionalAuthenticatedData; empty
	// and non-nil: they carry "".
	AAD []byte
	// Metadata nil: the Encrypt answer had no ciphertextMetadata, so the
	// Decrypt carries none.
	Metadata            []byte
	IV, Ciphertext, Tag []byte
}

// Seal encrypts plaintext under key as the sample proxy would.
func Seal(key []byte, name string, plaintext, aad, metadata []byte) (Vector, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return Vector{}, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return Vector{}, err
	}
	iv := make([]byte, gcm.NonceSize())
	rand.Read(iv)
	sealed := gcm.Seal(nil, iv, plaintext, proxyAAD(aad, metadata))
	n := len(plaintext)
	return Vector{Name: name, Plaintext: plaintext, AAD: aad, Metadata: metadata,
		IV: iv, Ciphertext: sealed[:n:n], Tag: sealed[n:]}, nil
}

// Open decrypts a ciphertext in the sample proxy's format as that proxy
// would: what it can open after a rollback to it.
func Open(key, aad, metadata, iv, ciphertext, tag []byte) ([]byte, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return gcm.Open(nil, iv, append(append([]byte(nil), ciphertext...), tag...), proxyAAD(aad, metadata))
}

func proxyAAD(aad, metadata []byte) []byte {
	var out []byte
	out = binary.BigEndian.AppendUint16(out, uint16(len(aad)))
	if aad != nil {
		sum := sha256.Sum256(aad)
		out = append(out, sum[:]...)
	}
	out = append(out, byte(len(metadata)))
	return append(out, metadata...)
}

// All is every case a migration must keep decrypting: with AAD, with an
// empty AAD and without one, each made without static metadata and with
// static (the sample proxy's configuration may have changed over time).
func All(key, static []byte) ([]Vector, error) {
	var out []Vector
	for _, md := range []struct {
		name  string
		value []byte
	}{{"no metadata", nil}, {"static metadata", static}} {
		for _, aad := range []struct {
			name  string
			value []byte
		}{{"AAD", []byte("encryption context of an S3 object")}, {"empty AAD", []byte{}}, {"no AAD", nil}} {
			name := aad.name + ", " + md.name
			v, err := Seal(key, name, []byte("data key written by the sample proxy: "+name), aad.value, md.value)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
	}
	return out, nil
}

// DecryptBody is v's Decrypt request with every field present exactly as
// v has it: encoding/json's omitempty would drop an empty AAD, which is
// not the same request.
func (v Vector) DecryptBody(requestMetadata any) ([]byte, error) {
	body := map[string]any{
		"requestMetadata":      requestMetadata,
		"encryptionAlgorithm":  "AES_GCM",
		"ciphertext":           v.Ciphertext,
		"initializationVector": v.IV,
		"authenticationTag":    v.Tag,
	}
	if v.AAD != nil {
		body["additionalAuthenticatedData"] = v.AAD
	}
	if v.Metadata != nil {
		body["ciphertextMetadata"] = v.Metadata
	}
	return json.Marshal(body)
}

// Tampered is v with each field changed in turn, none of which may
// decrypt: a flipped bit in the ciphertext, IV and tag, another AAD, an
// AAD dropped or added, and other metadata (dropped, added, changed, or
// shaped like this proxy's own).
func (v Vector) Tampered() []Vector {
	flip := func(b []byte) []byte {
		c := append([]byte(nil), b...)
		c[len(c)-1] ^= 0x01
		return c
	}
	var out []Vector
	add := func(what string, edit func(*Vector)) {
		t := v
		t.Name = v.Name + ", tampered " + what
		edit(&t)
		out = append(out, t)
	}
	add("ciphertext", func(t *Vector) { t.Ciphertext = flip(t.Ciphertext) })
	add("IV", func(t *Vector) { t.IV = flip(t.IV) })
	add("tag", func(t *Vector) { t.Tag = flip(t.Tag) })
	if v.AAD == nil {
		add("AAD added", func(t *Vector) { t.AAD = []byte{} })
	} else {
		add("AAD dropped", func(t *Vector) { t.AAD = nil })
		add("AAD", func(t *Vector) { t.AAD = append(append([]byte(nil), t.AAD...), 'x') })
	}
	if v.Metadata == nil {
		add("metadata added", func(t *Vector) { t.Metadata = []byte("v0") })
	} else {
		add("metadata dropped", func(t *Vector) { t.Metadata = nil })
		add("metadata", func(t *Vector) { t.Metadata = append(append([]byte(nil), t.Metadata...), 'x') })
	}
	add("metadata shaped like ours", func(t *Vector) { t.Metadata = []byte{1, 0, 0, 0, 1} })
	return out
}

// String names the vector for test messages.
func (v Vector) String() string { return fmt.Sprintf("vector %q", v.Name) }
