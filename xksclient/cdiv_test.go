package xksclient

import (
	"encoding/base64"
	"testing"
)

// TestCDIVAppendixC checks CDIV against the specification's worked example.
func TestCDIVAppendixC(t *testing.T) {
	b64 := func(s string) []byte {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	got := CDIV([]byte("project=nile,department=marketing"), []byte("key_version=1"),
		b64("HMrlRw85cAJUd5Ax"), b64("ghxkK1txeDNn3q8Y"), b64("vBxN2ncH1oEkR8WVXpmyYQ=="))
	if want := "qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc="; base64.StdEncoding.EncodeToString(got) != want {
		t.Fatalf("CDIV = %s, want %s", base64.StdEncoding.EncodeToString(got), want)
	}
}
