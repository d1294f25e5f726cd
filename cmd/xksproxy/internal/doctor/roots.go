package doctor

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	_ "embed"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
)

// awsTrustedRoots is AWS's list of the root certificate authorities that
// KMS trusts for XKS proxy endpoints, as SHA-256 fingerprints (the file's
// header names its source and date). It ships in the binary so that doctor
// works offline; --trusted-roots replaces it.
//
//go:embed xks-trusted-roots.tsv
var awsTrustedRoots []byte

// Root is one trusted root certificate authority.
type Root struct {
	Alias   string
	Subject string
}

// TrustedRoots is a list of roots by the SHA-256 of their DER certificate.
type TrustedRoots struct {
	Source string // where the list came from, for the report
	roots  map[[sha256.Size]byte]Root
}

// Len is the number of roots on the list.
func (t *TrustedRoots) Len() int { return len(t.roots) }

// Lookup finds cert on the list.
func (t *TrustedRoots) Lookup(cert *x509.Certificate) (Root, bool) {
	r, ok := t.roots[sha256.Sum256(cert.Raw)]
	return r, ok
}

// AWSTrustedRoots is the list that ships with the binary.
func AWSTrustedRoots() *TrustedRoots {
	t, err := ParseTrustedRoots(awsTrustedRoots, "AWS KMS's list for XKS (built in)")
	if err != nil {
		panic("the built-in trusted roots: " + err.Error()) // a test parses it
	}
	return t
}

// LoadTrustedRoots reads a list from path: PEM certificates, or lines of
// "alias<TAB>sha256-hex[<TAB>subject]" (the built-in file's format) or of a
// bare fingerprint (hex, colons allowed); # starts a comment line.
func LoadTrustedRoots(path string) (*TrustedRoots, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	t, err := ParseTrustedRoots(data, path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

// ParseTrustedRoots parses a list in one of LoadTrustedRoots' formats.
func ParseTrustedRoots(data []byte, source string) (*TrustedRoots, error) {
	t := &TrustedRoots{Source: source, roots: map[[sha256.Size]byte]Root{}}
	if bytes.Contains(data, []byte("-----BEGIN CERTIFICATE-----")) {
		certs, err := parsePEMCertificates(data)
		if err != nil {
			return nil, err
		}
		for _, cert := range certs {
			t.roots[sha256.Sum256(cert.Raw)] = Root{Alias: cert.Subject.CommonName, Subject: cert.Subject.String()}
		}
	} else {
		s := bufio.NewScanner(bytes.NewReader(data))
		for line := 1; s.Scan(); line++ {
			text := strings.TrimSpace(s.Text())
			if text == "" || strings.HasPrefix(text, "#") {
				continue
			}
			fields := strings.Split(text, "\t")
			var r Root
			fp := fields[0]
			if len(fields) >= 2 {
				r.Alias, fp = fields[0], fields[1]
			}
			if len(fields) >= 3 {
				r.Subject = fields[2]
			}
			sum, err := hex.DecodeString(strings.ReplaceAll(strings.TrimSpace(fp), ":", ""))
			if err != nil || len(sum) != sha256.Size {
				return nil, fmt.Errorf("line %d: %q is not a SHA-256 fingerprint", line, fp)
			}
			t.roots[[sha256.Size]byte(sum)] = r
		}
		if err := s.Err(); err != nil {
			return nil, err
		}
	}
	if len(t.roots) == 0 {
		return nil, fmt.Errorf("no trusted root in it")
	}
	return t, nil
}
