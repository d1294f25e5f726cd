// Package fsm holds the proxy's replicated state: key stores, their SigV4
// credentials, keys and their versions, grants, the commands that change
// them, the raft.FSM that applies those commands, and the immutable read
// view that the data plane consults on every request. DESIGN.md says why it
// has this shape.
package fsm

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Usage is the set of operations a key may perform. Only ENCRYPT and
// DECRYPT open an operation of this proxy; the others are the PKCS#11
// usages the specification lets GetKeyMetadata report, so that a key may
// hold neither (AWS's conformance suites create such keys). Usage is
// encoded by name (MarshalJSON), so the bits may be renumbered, but a name
// once written must always decode.
type Usage uint8

const (
	UsageEncrypt Usage = 1 << iota
	UsageDecrypt
	UsageSign
	UsageVerify
	UsageWrap
	UsageUnwrap
	UsageDerive
)

// usageNames lists every usage in the order GetKeyMetadata reports them.
var usageNames = [...]struct {
	u    Usage
	name string
}{
	{UsageEncrypt, "ENCRYPT"}, {UsageDecrypt, "DECRYPT"}, {UsageSign, "SIGN"}, {UsageVerify, "VERIFY"},
	{UsageWrap, "WRAP"}, {UsageUnwrap, "UNWRAP"}, {UsageDerive, "DERIVE"},
}

// DefaultUsage is what a key holds when its creator names no usage: the two
// usages that open this proxy's operations.
const DefaultUsage = UsageEncrypt | UsageDecrypt

// usageAll is every usage a key may hold.
const usageAll = UsageEncrypt | UsageDecrypt | UsageSign | UsageVerify | UsageWrap | UsageUnwrap | UsageDerive

// ParseUsage turns the names used in configuration and in GetKeyMetadata
// ("ENCRYPT", "DECRYPT", "WRAP", ...) into a Usage.
func ParseUsage(names []string) (Usage, error) {
	u, err := usageOf(names)
	if err != nil {
		return 0, err
	}
	if u == 0 {
		return 0, fmt.Errorf("a key needs at least one usage")
	}
	return u, nil
}

func usageOf(names []string) (Usage, error) {
	var u Usage
next:
	for _, n := range names {
		for _, un := range usageNames {
			if strings.EqualFold(n, un.name) {
				u |= un.u
				continue next
			}
		}
		return 0, fmt.Errorf("unknown key usage %q (want ENCRYPT, DECRYPT, SIGN, VERIFY, WRAP, UNWRAP or DERIVE)", n)
	}
	return u, nil
}

// Names lists the usages in the order GetKeyMetadata reports them.
func (u Usage) Names() []string {
	var names []string
	for _, un := range usageNames {
		if u&un.u != 0 {
			names = append(names, un.name)
		}
	}
	return names
}

// MarshalJSON writes the usage as its names, so that the log and snapshots
// stay readable and do not depend on the bit layout.
func (u Usage) MarshalJSON() ([]byte, error) {
	names := u.Names()
	if names == nil {
		names = []string{}
	}
	return json.Marshal(names)
}

// UnmarshalJSON reads the names MarshalJSON writes. An empty list decodes
// to no usage, which the commands' Validate refuses with a clear message;
// an unknown name cannot be represented and fails the decode.
func (u *Usage) UnmarshalJSON(b []byte) error {
	var names []string
	if err := json.Unmarshal(b, &names); err != nil {
		return err
	}
	v, err := usageOf(names)
	if err != nil {
		return err
	}
	*u = v
	return nil
}

// GrantsMode says what happens to a key that no grant names.
type GrantsMode string

const (
	// GrantsOpen lets every authenticated caller use a key that no grant
	// names; a key that grants do name is usable only as they allow.
	GrantsOpen GrantsMode = "open"
	// GrantsClosed denies every request that no grant allows.
	GrantsClosed GrantsMode = "closed"
)

// KeyMode says where a key store's key material comes from.
type KeyMode string

const (
	// KeyModeReplicated: the leader's HSM generates each version and wraps
	// it under the cluster key-encryption key; the wrapped blob travels in
	// the state and every node's reconciler unwraps it into its own HSM.
	KeyModeReplicated KeyMode = "replicated"
	// KeyModeShared: every node's HSM already holds the same objects (a
	// network HSM, vendor replication); the state only maps ids to labels.
	KeyModeShared KeyMode = "shared"
)

// KeyStore is one logical external key store as the data plane sees it: its
// own URI path, region, plaintext credentials and keys. AWS KMS sees each as
// a separate proxy. The replicated form is StoredKeyStore.
type KeyStore struct {
	Name        string
	URIPath     string // "[/prefix]/kms/xks/v1", exactly as configured in AWS KMS
	Region      string // the SigV4 region AWS KMS signs with
	Enabled     bool
	QuotaRPS    uint32     // requests per second; 0 = unlimited
	GrantsMode  GrantsMode // "" means open for Build's callers
	KeyMode     KeyMode    // "" means shared for Build's callers
	Credentials []Credential
}

// Credential is one SigV4 access key of a key store with its plaintext
// secret. Several may be active at once so that rotation never needs a
// restart. It exists only in views, never in the replicated state.
type Credential struct {
	AccessKeyID string
	Secret      []byte `json:"-"`
	CreatedAt   time.Time
	ExpiresAt   time.Time // zero: never expires
}

// Format prints the access key id and expiry, never the secret, whatever
// the verb: a credential dropped into a log line or an error must not leak.
func (c Credential) Format(f fmt.State, _ rune) {
	fmt.Fprintf(f, "{AccessKeyID:%s Secret:[redacted] ExpiresAt:%s}", c.AccessKeyID, expiry(c.ExpiresAt))
}

func expiry(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format(time.RFC3339)
}

// Key is an external key as AWS KMS addresses it, with the HSM objects that
// hold its material, one per version. The same value is stored in the
// replicated state and read by the data plane.
type Key struct {
	KeyStore       string       `json:"keyStore"`
	ID             string       `json:"id"` // the externalKeyId in the URI
	Usage          Usage        `json:"usage"`
	Enabled        bool         `json:"enabled"`
	CurrentVersion uint32       `json:"currentVersion"` // the version Encrypt uses
	Versions       []KeyVersion `json:"versions"`       // in increasing Number order
	CreatedAt      time.Time    `json:"createdAt"`      // set by Apply from the command's At
	// DeletionDate, when set, is when the leader deletes the key; only a
	// disabled key may be scheduled, and it cannot be enabled until the
	// deletion is cancelled.
	DeletionDate time.Time `json:"deletionDate,omitzero"`
	// Deleted keys stay in the state as tombstones: their id is never
	// reused, and every node's reconciler destroys their HSM objects.
	Deleted bool `json:"deleted,omitempty"`
	// Legacy, on a key imported from another proxy, says how that proxy
	// made its ciphertexts, so that they decrypt for as long as the key
	// exists. Encrypt never uses it. Command set 3.
	Legacy *LegacyFormat `json:"legacy,omitempty"`
}

// LegacyFormatAWSSample is the ciphertext format of AWS's sample XKS proxy
// (aws-samples/aws-kms-xks-proxy): AES-256-GCM under the key's own label,
// with the AAD given to the HSM being uint16be(len(aad)) || SHA-256(aad),
// present only when the request carries additionalAuthenticatedData, ||
// uint8(len(metadata)) || metadata.
const LegacyFormatAWSSample = "aws-kms-xks-proxy"

// MaxCiphertextMetadata is the longest ciphertextMetadata the specification
// allows.
const MaxCiphertextMetadata = 20

// LegacyFormat is the format of the ciphertexts a key's material produced
// before this proxy served it.
type LegacyFormat struct {
	Format string `json:"format"`
	// Version is the key version whose HSM object made those ciphertexts:
	// always 1, the imported object.
	Version uint32 `json:"version"`
	// StaticMetadata is the ciphertextMetadata that proxy returned with
	// every Encrypt (empty: none).
	StaticMetadata []byte `json:"staticMetadata,omitempty"`
}

// ConfusableWithOurs reports whether legacy metadata md could make the
// legacy AAD formula produce the bytes of this proxy's own under the same
// HSM object. Ours (xksapi) ends with the metadata's length 5, format byte
// 1 and a 4-byte version; so md shaped like our metadata, or ending with
// those six bytes, is never the sample proxy's and is refused: with it, a
// caller who chose the AAD of one of our Encrypts could decrypt it under
// another AAD.
func ConfusableWithOurs(md []byte) bool {
	n := len(md)
	return n == 5 && md[0] == 1 || n >= 6 && md[n-6] == 5 && md[n-5] == 1
}

func (l *LegacyFormat) validate(k *Key) error {
	if l.Format != LegacyFormatAWSSample {
		return fmt.Errorf("key %s: unknown legacy ciphertext format %q (want %q)", k.ID, l.Format, LegacyFormatAWSSample)
	}
	// Version 1 always: the imported object is the key's first version. It
	// is also what keeps the two formulas apart for metadata of up to four
	// bytes (see ConfusableWithOurs): our AAD's last bytes are then
	// 05 01 00 00 00 01, which no legacy metadata that short can end with.
	if l.Version != 1 || k.Version(1) == nil {
		return fmt.Errorf("key %s: the legacy format names version %d; it must be version 1, the imported object, and the key must have it", k.ID, l.Version)
	}
	if len(l.StaticMetadata) > MaxCiphertextMetadata {
		return fmt.Errorf("key %s: legacy static ciphertext metadata is %d bytes; at most %d", k.ID, len(l.StaticMetadata), MaxCiphertextMetadata)
	}
	if ConfusableWithOurs(l.StaticMetadata) {
		return fmt.Errorf("key %s: legacy static ciphertext metadata %x has the shape of this proxy's own (or ends like its AAD), so ciphertexts of both kinds could not be told apart", k.ID, l.StaticMetadata)
	}
	return nil
}

// KeyVersion is one generation of a key's material. Versions are never
// removed while the key exists, so every ciphertext keeps decrypting.
type KeyVersion struct {
	Number   uint32 `json:"number"`
	HSMLabel string `json:"hsmLabel"`
	// WrappedMaterial is the version's key wrapped under the cluster
	// key-encryption key with WrapMechanism (for example
	// "CKM_AES_KEY_WRAP"); both are empty in shared mode.
	WrappedMaterial []byte    `json:"wrappedMaterial,omitempty"`
	WrapMechanism   string    `json:"wrapMechanism,omitempty"`
	CreatedAt       time.Time `json:"createdAt"` // set by Apply from the command's At
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

// Validate checks a key's identity, usage and versions, and that its current
// version exists. Rules that need the rest of the state (the key store, HSM
// labels used elsewhere) are the commands' Validate.
func (k *Key) Validate() error {
	if !keyIDPattern.MatchString(k.ID) {
		return fmt.Errorf("key id %q: use 1-128 characters of A-Z a-z 0-9 . _ -", k.ID)
	}
	if k.Usage == 0 || k.Usage&^usageAll != 0 {
		return fmt.Errorf("key %s: invalid usage", k.ID)
	}
	if len(k.Versions) == 0 {
		return fmt.Errorf("key %s: has no versions", k.ID)
	}
	var last uint32
	for _, v := range k.Versions {
		if v.Number == 0 {
			return fmt.Errorf("key %s: version numbers start at 1", k.ID)
		}
		if v.Number <= last {
			return fmt.Errorf("key %s: version %d appears twice or out of order (list versions in increasing order)", k.ID, v.Number)
		}
		last = v.Number
		if v.HSMLabel == "" {
			return fmt.Errorf("key %s: version %d has no HSM label", k.ID, v.Number)
		}
	}
	if k.Version(k.CurrentVersion) == nil {
		return fmt.Errorf("key %s: current version %d does not exist", k.ID, k.CurrentVersion)
	}
	if k.Legacy != nil {
		return k.Legacy.validate(k)
	}
	return nil
}
