package xksapi_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"testing"

	"github.com/xksproxy/xksproxy/fsm"
	"github.com/xksproxy/xksproxy/hsm/softhsm"
	"github.com/xksproxy/xksproxy/internal/legacyvectors"
	"github.com/xksproxy/xksproxy/xksclient"
)

// A key imported from AWS's sample proxy decrypts every ciphertext that
// proxy made (computed here by an independent implementation of its
// formula, from a known key imported into SoftHSMv2), before and after a
// rotation, refuses every tampered one, and encrypts in the sample proxy's
// format while the imported version is current (a rollback loses
// nothing), in this proxy's own after a rotation.
func TestLegacyCiphertextsOfAnImportedKey(t *testing.T) {
	material := make([]byte, 32)
	rand.Read(material)
	if err := softhsm.ImportAESKey(testModule, testToken, testPIN, "sample-proxy-key", material); err != nil {
		t.Fatal(err)
	}
	if err := testHSM.GenerateKey("a-imported-v2"); err != nil {
		t.Fatal(err)
	}
	static := []byte("v0.0.1")
	vectors, err := legacyvectors.All(material, static)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, fixtureOptions{})
	imported := fsm.Key{KeyStore: "a", ID: "imported", Usage: fsm.DefaultUsage, Enabled: true, CurrentVersion: 1,
		Versions: []fsm.KeyVersion{{Number: 1, HSMLabel: "sample-proxy-key"}},
		Legacy:   &fsm.LegacyFormat{Format: fsm.LegacyFormatAWSSample, Version: 1, StaticMetadata: static}}
	f.keys = append(f.keys, imported)
	f.publish()
	c := f.clientA()

	decryptVector := func(keyID string, v legacyvectors.Vector) ([]byte, error) {
		body, err := v.DecryptBody(metadata("Decrypt"))
		if err != nil {
			t.Fatal(err)
		}
		var out struct {
			Plaintext []byte `json:"plaintext"`
		}
		err = c.Post(c.KeyPath(keyID, "decrypt"), body, &out)
		return out.Plaintext, err
	}
	checkAll := func(when string) {
		t.Helper()
		for _, v := range vectors {
			got, err := decryptVector("imported", v)
			if err != nil || !bytes.Equal(got, v.Plaintext) {
				t.Fatalf("%s: %s: %q, %v", when, v, got, err)
			}
			for _, bad := range v.Tampered() {
				_, err := decryptVector("imported", bad)
				wantXKSError(t, err, 400, "InvalidCiphertextException")
			}
		}
	}
	checkAll("before rotation")
	// Only the imported key reads the legacy format: the same ciphertext
	// sent to another key is refused.
	_, err = decryptVector("k1", vectors[0])
	wantXKSError(t, err, 400, "InvalidCiphertextException")

	roundTrip := func(wantVersion uint32) *xksclient.EncryptResponse {
		t.Helper()
		enc, err := c.Encrypt("imported", &xksclient.EncryptRequest{RequestMetadata: metadata("Encrypt"), Plaintext: []byte("new data"), AAD: []byte("ctx"), CDIVAlgorithm: "SHA_256"})
		if err != nil {
			t.Fatal(err)
		}
		md := enc.CiphertextMetadata
		switch {
		case wantVersion == 1 && !bytes.Equal(md, static):
			t.Fatalf("new ciphertext metadata %x while the imported version is current: want the sample proxy's static %x", md, static)
		case wantVersion == 1:
			if got, err := legacyvectors.Open(material, []byte("ctx"), md, enc.IV, enc.Ciphertext, enc.Tag); err != nil || string(got) != "new data" {
				t.Fatalf("the sample proxy's formula cannot open a new ciphertext of the imported version: %q, %v", got, err)
			}
		case len(md) != 5 || md[0] != 1 || binary.BigEndian.Uint32(md[1:]) != wantVersion:
			t.Fatalf("new ciphertext metadata %x: want this proxy's format, version %d", md, wantVersion)
		}
		decrypt(t, c, "imported", enc, []byte("ctx"), "new data")
		return enc
	}
	before := roundTrip(1)

	imported.Versions = append(imported.Versions, fsm.KeyVersion{Number: 2, HSMLabel: "a-imported-v2"})
	imported.CurrentVersion = 2
	f.keys[len(f.keys)-1] = imported
	f.publish()
	checkAll("after rotation")
	roundTrip(2)
	decrypt(t, c, "imported", before, []byte("ctx"), "new data")
}

func decrypt(t *testing.T, c *xksclient.Client, keyID string, enc *xksclient.EncryptResponse, aad []byte, want string) {
	t.Helper()
	got, err := c.Decrypt(keyID, &xksclient.DecryptRequest{RequestMetadata: metadata("Decrypt"), Ciphertext: enc.Ciphertext,
		CiphertextMetadata: enc.CiphertextMetadata, AAD: aad, IV: enc.IV, Tag: enc.Tag})
	if err != nil || string(got) != want {
		t.Fatalf("decrypt: %q, %v", got, err)
	}
}

// Both formulas under one HSM object must never yield the same AAD: a
// caller who chose the AAD of an Encrypt made with the imported key's
// first version must not get the plaintext back through the legacy formula
// under another AAD. Two guards hold it: that version encrypts in the
// legacy format only (so no ciphertext of ours exists under its object),
// and decrypt never takes metadata shaped like ours to the legacy formula. Our AAD ends with the metadata's
// length 5, format 1 and the version; a legacy AAD ends with its metadata,
// so metadata ending that way is crafted, never the sample proxy's.
func TestLegacyFormulaCannotReopenOurCiphertextUnderAnotherAAD(t *testing.T) {
	if err := testHSM.GenerateKey("sample-proxy-key-2"); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, fixtureOptions{})
	f.keys = append(f.keys, fsm.Key{KeyStore: "a", ID: "imported2", Usage: fsm.DefaultUsage, Enabled: true, CurrentVersion: 1,
		Versions: []fsm.KeyVersion{{Number: 1, HSMLabel: "sample-proxy-key-2"}},
		Legacy:   &fsm.LegacyFormat{Format: fsm.LegacyFormatAWSSample, Version: 1}})
	f.publish()
	c := f.clientA()

	// claimed is the AAD the attacker wants to decrypt under; the AAD of
	// the Encrypt is built so that, with crafted metadata, the legacy
	// formula reproduces our formula's bytes:
	//   ours:   u16(40) || SHA-256(claimed) || 0x0d || "forged!" || 0x05 0x01 00000001
	//   legacy: u16(40) || SHA-256(claimed) || 0x0d || crafted
	claimed := []byte("a context the ciphertext was never for!!")
	sum := sha256.Sum256(claimed)
	aad := append(append(sum[:], 0x0d), "forged!"...)
	crafted := append([]byte("forged!"), 0x05, 0x01, 0, 0, 0, 1)
	if len(claimed) != 40 || len(aad) != 40 {
		t.Fatal("the construction needs 40-byte AADs")
	}
	enc, err := c.Encrypt("imported2", &xksclient.EncryptRequest{RequestMetadata: metadata("Encrypt"), Plaintext: []byte("secret"), AAD: aad})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Decrypt("imported2", &xksclient.DecryptRequest{RequestMetadata: metadata("Decrypt"), Ciphertext: enc.Ciphertext,
		CiphertextMetadata: crafted, AAD: claimed, IV: enc.IV, Tag: enc.Tag})
	if err == nil {
		t.Fatalf("our ciphertext decrypted (%q) under another AAD through the legacy formula", got)
	}
	wantXKSError(t, err, 400, "InvalidCiphertextException")
}
