package xksapi

import (
	"bytes"
	"encoding/base64"
	"testing"
)

func b64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The worked example of the specification's Appendix C.
func TestCDIVSpecificationVector(t *testing.T) {
	got := cdiv([]byte("project=nile,department=marketing"), []byte("key_version=1"),
		b64(t, "HMrlRw85cAJUd5Ax"), b64(t, "ghxkK1txeDNn3q8Y"), b64(t, "vBxN2ncH1oEkR8WVXpmyYQ=="))
	if want := "qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc="; base64.StdEncoding.EncodeToString(got) != want {
		t.Fatalf("CDIV = %s, want %s", base64.StdEncoding.EncodeToString(got), want)
	}
}

func TestHSMAADFormula(t *testing.T) {
	cases := []struct {
		aad, md, want []byte
	}{
		{nil, nil, []byte{0, 0, 0}},
		{[]byte("ab"), nil, []byte{0, 2, 'a', 'b', 0}},
		{nil, []byte{9, 8}, []byte{0, 0, 2, 9, 8}},
		{[]byte("x"), []byte("yz"), []byte{0, 1, 'x', 2, 'y', 'z'}},
	}
	for _, c := range cases {
		if got := hsmAAD(c.aad, c.md); !bytes.Equal(got, c.want) {
			t.Errorf("hsmAAD(%q, %q) = %v, want %v", c.aad, c.md, got, c.want)
		}
	}
	long := bytes.Repeat([]byte{7}, 8192)
	got := hsmAAD(long, nil)
	if got[0] != 0x20 || got[1] != 0x00 || len(got) != 8192+3 {
		t.Fatalf("8192-byte AAD prefix = %x, len %d", got[:2], len(got))
	}
	// The case the specification warns about: metadata moved into the AAD
	// field must not produce the same HSM input.
	md := encodeCiphertextMetadata(1)
	if bytes.Equal(hsmAAD(nil, md), hsmAAD(md, nil)) {
		t.Fatal("moving ciphertextMetadata into the AAD field gives the same HSM AAD")
	}
}

func TestCiphertextMetadataRoundTrip(t *testing.T) {
	for _, v := range []uint32{1, 2, 255, 1 << 31} {
		md := encodeCiphertextMetadata(v)
		if len(md) > maxMetadataLen {
			t.Fatalf("metadata is %d bytes, over the specification's 20", len(md))
		}
		got, ok := decodeCiphertextMetadata(md)
		if !ok || got != v {
			t.Fatalf("round trip of version %d = %d, %v", v, got, ok)
		}
	}
	for _, bad := range [][]byte{nil, {}, {1, 0, 0, 1}, {2, 0, 0, 0, 1}, {1, 0, 0, 0, 1, 0}} {
		if _, ok := decodeCiphertextMetadata(bad); ok {
			t.Errorf("decodeCiphertextMetadata(%v) accepted foreign metadata", bad)
		}
	}
}
