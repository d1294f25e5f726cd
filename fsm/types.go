// Package fsm holds the proxy's replicated state: key stores, their SigV4
// credentials, keys and their versions, and the immutable read view that the
// data plane consults on every request.
package fsm

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Usage is the set of operations a key may perform.
type Usage uint8

const (
	UsageEncrypt Usage = 1 << iota
	UsageDecrypt
)

// ParseUsage turns the names used in configuration and in GetKeyMetadata
// ("ENCRYPT", "DECRYPT") into a Usage.
func ParseUsage(names []string) (Usage, error) {
	var u Usage
	for _, n := range names {
		switch strings.ToUpper(n) {
		case "ENCRYPT":
			u |= UsageEncrypt
		case "DECRYPT":
			u |= UsageDecrypt
		default:
			return 0, fmt.Errorf("unknown key usage %q (want ENCRYPT or DECRYPT)", n)
		}
	}
	if u == 0 {
		return 0, fmt.Errorf("a key needs at least one usage")
	}
	return u, nil
}

// Names lists the usages in the order GetKeyMetadata reports them.
func (u Usage) Names() []string {
	var names []string
	if u&UsageEncrypt != 0 {
		names = append(names, "ENCRYPT")
	}
	if u&UsageDecrypt != 0 {
		names = append(names, "DECRYPT")
	}
	return names
}

// KeyStore is one logical external key store: its own URI path, region,
// credentials and keys. AWS KMS sees each as a separate proxy.
type KeyStore struct {
	Name        string
	URIPath     string // "[/prefix]/kms/xks/v1", exactly as configured in AWS KMS
	Region      string // the SigV4 region AWS KMS signs with
	Enabled     bool
	Credentials []Credential
}

// Credential is one SigV4 access key of a key store. Several may be active at
// once so that rotation never needs a restart.
type Credential struct {
	AccessKeyID string
	Secret      []byte
	ExpiresAt   time.Time // zero: never expires
}

// Key is an external key as AWS KMS addresses it, with the HSM objects that
// hold its material, one per version.
type Key struct {
	KeyStore       string
	ID             string // the externalKeyId in the URI
	Usage          Usage
	Enabled        bool
	CurrentVersion uint32 // the version Encrypt uses
	Versions       []KeyVersion
}

// KeyVersion is one generation of a key's material. Versions are never
// removed while the key exists, so every ciphertext keeps decrypting.
type KeyVersion struct {
	Number   uint32
	HSMLabel string
}

// Version returns the version with number n, or nil.
func (k *Key) Version(n uint32) *KeyVersion {
	for i := range k.Versions {
		if k.Versions[i].Number == n {
			return &k.Versions[i]
		}
	}
	return nil
}

var (
	uriPathPattern     = regexp.MustCompile(`^(/[A-Za-z0-9_-]+)*/kms/xks/v1$`)
	keyIDPattern       = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)
	namePattern        = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)
	regionPattern      = regexp.MustCompile(`^[a-z0-9-]{1,32}$`)
	accessKeyIDPattern = regexp.MustCompile(`^[A-Z2-7]{20,30}$`)
	secretPattern      = regexp.MustCompile(`^[A-Za-z0-9+/=]{43,64}$`)
)

// MaxURIPathLen is the longest XksProxyUriPath AWS KMS accepts.
const MaxURIPathLen = 128

// Validate checks a key store against the XKS specification's rules.
func (ks *KeyStore) Validate() error {
	if !namePattern.MatchString(ks.Name) {
		return fmt.Errorf("key store name %q: use 1-64 characters of A-Z a-z 0-9 . _ -", ks.Name)
	}
	if len(ks.URIPath) > MaxURIPathLen || !uriPathPattern.MatchString(ks.URIPath) {
		return fmt.Errorf("key store %s: URI path %q must be [/prefix]/kms/xks/v1, at most %d characters of a-z A-Z 0-9 / - _", ks.Name, ks.URIPath, MaxURIPathLen)
	}
	if !regionPattern.MatchString(ks.Region) {
		return fmt.Errorf("key store %s: region %q is not an AWS region name", ks.Name, ks.Region)
	}
	seen := map[string]bool{}
	for _, c := range ks.Credentials {
		if err := c.Validate(); err != nil {
			return fmt.Errorf("key store %s: %w", ks.Name, err)
		}
		if seen[c.AccessKeyID] {
			return fmt.Errorf("key store %s: access key id %s appears twice", ks.Name, c.AccessKeyID)
		}
		seen[c.AccessKeyID] = true
	}
	return nil
}

// Validate checks a credential's shape; the message never includes the secret.
func (c *Credential) Validate() error {
	if !accessKeyIDPattern.MatchString(c.AccessKeyID) {
		return fmt.Errorf("access key id %q: use 20-30 characters of A-Z 2-7", c.AccessKeyID)
	}
	if !secretPattern.Match(c.Secret) {
		return fmt.Errorf("secret of access key id %s: use 43-64 characters of A-Z a-z 0-9 + / =", c.AccessKeyID)
	}
	return nil
}

// Validate checks a key's identity and that its current version exists.
func (k *Key) Validate() error {
	if !keyIDPattern.MatchString(k.ID) {
		return fmt.Errorf("key id %q: use 1-128 characters of A-Z a-z 0-9 . _ -", k.ID)
	}
	if k.Usage == 0 || k.Usage&^(UsageEncrypt|UsageDecrypt) != 0 {
		return fmt.Errorf("key %s: invalid usage", k.ID)
	}
	if len(k.Versions) == 0 {
		return fmt.Errorf("key %s: has no versions", k.ID)
	}
	seen := map[uint32]bool{}
	for _, v := range k.Versions {
		if v.Number == 0 {
			return fmt.Errorf("key %s: version numbers start at 1", k.ID)
		}
		if seen[v.Number] {
			return fmt.Errorf("key %s: version %d appears twice", k.ID, v.Number)
		}
		seen[v.Number] = true
		if v.HSMLabel == "" {
			return fmt.Errorf("key %s: version %d has no HSM label", k.ID, v.Number)
		}
	}
	if k.Version(k.CurrentVersion) == nil {
		return fmt.Errorf("key %s: current version %d does not exist", k.ID, k.CurrentVersion)
	}
	return nil
}
