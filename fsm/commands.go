package fsm

import (
	"bytes"
	"fmt"
	"slices"
	"time"
)

// MaxCredentials is the most credentials one key store may hold, expired
// ones included: enough for overlapping rotations, few enough to audit.
const MaxCredentials = 10

// maxSealedSecret bounds a sealed secret: a 64-byte secret sealed with any
// sane mechanism fits many times over.
const maxSealedSecret = 4096

// Seed is the one-time batch that turns a node's [bootstrap] configuration
// into replicated state. Every item obeys the rule of its own command
// (CreateKeyStore, CreateKey, AddGrant), in order: key stores, keys, grants.
// Once the state is seeded, Seed is refused with ErrAlreadySeeded, so every
// node may propose its configuration and only the first one counts.
type Seed struct {
	At        time.Time        `json:"at"`
	KeyStores []StoredKeyStore `json:"keyStores"`
	Keys      []Key            `json:"keys"`
	Grants    []Grant          `json:"grants"`
}

func (Seed) Type() CommandType { return CmdSeed }

func (c Seed) Validate(s *State) error {
	if s.seeded {
		return ErrAlreadySeeded
	}
	if err := requireTime(c.At); err != nil {
		return err
	}
	return c.run(newTxn(s, s.index))
}

func (c Seed) applyTo(t *txn) {
	if err := c.run(t); err != nil {
		panic("fsm: a Seed that validated failed to apply: " + err.Error())
	}
	t.next.seeded = true
}

// run applies the items in order, checking each against the state the items
// before it made.
func (c Seed) run(t *txn) error {
	var items []Command
	for _, ks := range c.KeyStores {
		items = append(items, CreateKeyStore{At: c.At, KeyStore: ks})
	}
	for _, k := range c.Keys {
		items = append(items, CreateKey{At: c.At, Key: k})
	}
	for _, g := range c.Grants {
		items = append(items, AddGrant{At: c.At, Grant: g})
	}
	for _, item := range items {
		if err := item.Validate(t.next); err != nil {
			return fmt.Errorf("seed: %w", err)
		}
		item.applyTo(t)
	}
	return nil
}

// CreateKeyStore adds a key store, optionally with its first credentials.
// A key store without credentials is allowed: nobody can use it until
// AddCredential, which fails closed.
type CreateKeyStore struct {
	At       time.Time      `json:"at"`
	KeyStore StoredKeyStore `json:"keyStore"`
}

func (CreateKeyStore) Type() CommandType { return CmdCreateKeyStore }

func (c CreateKeyStore) Validate(s *State) error {
	if err := requireTime(c.At); err != nil {
		return err
	}
	ks := &c.KeyStore
	if err := validKeyStore(ks); err != nil {
		return err
	}
	if s.stores[ks.Name] != nil {
		return conflict("key store %s already exists", ks.Name)
	}
	for _, other := range s.stores {
		if other.URIPath == ks.URIPath {
			return conflict("key store %s already serves the URI path %s", other.Name, ks.URIPath)
		}
	}
	for _, cr := range ks.Credentials {
		if err := accessKeyIDFree(s, cr.AccessKeyID); err != nil {
			return err
		}
	}
	return nil
}

// validKeyStore checks what a key store must be whatever else the state
// holds: its names, settings and credentials.
func validKeyStore(ks *StoredKeyStore) error {
	if !namePattern.MatchString(ks.Name) {
		return invalid("key store name %q: use 1-64 characters of A-Z a-z 0-9 . _ -", ks.Name)
	}
	if len(ks.URIPath) > MaxURIPathLen || !uriPathPattern.MatchString(ks.URIPath) {
		return invalid("key store %s: URI path %q must be [/prefix]/kms/xks/v1, at most %d characters of a-z A-Z 0-9 / - _", ks.Name, ks.URIPath, MaxURIPathLen)
	}
	if !regionPattern.MatchString(ks.Region) {
		return invalid("key store %s: region %q is not an AWS region name", ks.Name, ks.Region)
	}
	if err := validGrantsMode(ks.Name, ks.GrantsMode); err != nil {
		return err
	}
	if ks.KeyMode != KeyModeReplicated && ks.KeyMode != KeyModeShared {
		return invalid("key store %s: key mode %q: want %q or %q", ks.Name, ks.KeyMode, KeyModeReplicated, KeyModeShared)
	}
	if err := validQuota(ks.Name, ks.QuotaRPS); err != nil {
		return err
	}
	if len(ks.Credentials) > MaxCredentials {
		return invalid("key store %s: %d credentials; at most %d", ks.Name, len(ks.Credentials), MaxCredentials)
	}
	for i := range ks.Credentials {
		if err := validCredential(ks.Name, &ks.Credentials[i]); err != nil {
			return err
		}
		for _, other := range ks.Credentials[:i] {
			if other.AccessKeyID == ks.Credentials[i].AccessKeyID {
				return invalid("key store %s: access key id %s appears twice", ks.Name, other.AccessKeyID)
			}
		}
	}
	return nil
}

func (c CreateKeyStore) applyTo(t *txn) {
	ks := c.KeyStore
	ks.Credentials = make([]StoredCredential, len(c.KeyStore.Credentials))
	for i, cr := range c.KeyStore.Credentials {
		ks.Credentials[i] = stampCredential(cr, c.At)
	}
	t.putStore(&ks)
}

// UpdateKeyStore changes a key store's settings; a nil field stays as it is.
// The URI path, region and key mode are fixed at creation: AWS KMS and the
// keys' material depend on them.
type UpdateKeyStore struct {
	Name       string      `json:"name"`
	Enabled    *bool       `json:"enabled,omitempty"`
	QuotaRPS   *uint32     `json:"quotaRps,omitempty"`
	GrantsMode *GrantsMode `json:"grantsMode,omitempty"`
}

func (UpdateKeyStore) Type() CommandType { return CmdUpdateKeyStore }

func (c UpdateKeyStore) Validate(s *State) error {
	if c.Enabled == nil && c.QuotaRPS == nil && c.GrantsMode == nil {
		return invalid("update of key store %s changes nothing", c.Name)
	}
	if c.GrantsMode != nil {
		if err := validGrantsMode(c.Name, *c.GrantsMode); err != nil {
			return err
		}
	}
	if c.QuotaRPS != nil {
		if err := validQuota(c.Name, *c.QuotaRPS); err != nil {
			return err
		}
	}
	_, err := findStore(s, c.Name)
	return err
}

func (c UpdateKeyStore) applyTo(t *txn) {
	ks := *t.next.stores[c.Name]
	if c.Enabled != nil {
		ks.Enabled = *c.Enabled
	}
	if c.QuotaRPS != nil {
		ks.QuotaRPS = *c.QuotaRPS
	}
	if c.GrantsMode != nil {
		ks.GrantsMode = *c.GrantsMode
	}
	t.putStore(&ks)
}

// DeleteKeyStore removes a key store that has no keys, and its grants with
// it: they can protect nothing once the key store is gone, and a later key
// store of the same name must not inherit them.
type DeleteKeyStore struct {
	Name string `json:"name"`
}

func (DeleteKeyStore) Type() CommandType { return CmdDeleteKeyStore }

func (c DeleteKeyStore) Validate(s *State) error {
	if _, err := findStore(s, c.Name); err != nil {
		return err
	}
	if n := len(s.keys[c.Name]); n > 0 {
		return conflict("key store %s still has %d keys", c.Name, n)
	}
	return nil
}

func (c DeleteKeyStore) applyTo(t *txn) {
	t.deleteStore(c.Name)
	for _, g := range t.next.Grants() {
		if g.KeyStore == c.Name {
			t.deleteGrant(g.ID)
		}
	}
}

// AddCredential gives a key store another SigV4 credential. Its access key
// id must be unused by every key store, since SigV4 names only the id.
type AddCredential struct {
	At         time.Time        `json:"at"`
	KeyStore   string           `json:"keyStore"`
	Credential StoredCredential `json:"credential"`
}

func (AddCredential) Type() CommandType { return CmdAddCredential }

func (c AddCredential) Validate(s *State) error {
	if err := requireTime(c.At); err != nil {
		return err
	}
	if err := validCredential(c.KeyStore, &c.Credential); err != nil {
		return err
	}
	ks, err := findStore(s, c.KeyStore)
	if err != nil {
		return err
	}
	if len(ks.Credentials) >= MaxCredentials {
		return conflict("key store %s already has %d credentials, the most it may hold (expired ones count); remove one first", ks.Name, len(ks.Credentials))
	}
	return accessKeyIDFree(s, c.Credential.AccessKeyID)
}

func (c AddCredential) applyTo(t *txn) {
	ks := *t.next.stores[c.KeyStore]
	ks.Credentials = append(slices.Clip(ks.Credentials), stampCredential(c.Credential, c.At))
	t.putStore(&ks)
}

// RemoveCredential revokes a credential. It refuses to remove the key
// store's last credential that is active at At: a key store is then locked
// out of AWS KMS, which must never happen by accident. Add the replacement
// first, or disable the key store to stop it on purpose.
type RemoveCredential struct {
	At          time.Time `json:"at"`
	KeyStore    string    `json:"keyStore"`
	AccessKeyID string    `json:"accessKeyId"`
}

func (RemoveCredential) Type() CommandType { return CmdRemoveCredential }

func (c RemoveCredential) Validate(s *State) error {
	if err := requireTime(c.At); err != nil {
		return err
	}
	ks, err := findStore(s, c.KeyStore)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(ks.Credentials, func(cr StoredCredential) bool { return cr.AccessKeyID == c.AccessKeyID })
	if i < 0 {
		return notFound("key store %s has no credential %s", ks.Name, c.AccessKeyID)
	}
	if !ks.Credentials[i].activeAt(c.At) {
		return nil
	}
	for j := range ks.Credentials {
		if j != i && ks.Credentials[j].activeAt(c.At) {
			return nil
		}
	}
	return conflict("credential %s is the last active credential of key store %s; add its replacement first (or disable the key store)", c.AccessKeyID, ks.Name)
}

func (c RemoveCredential) applyTo(t *txn) {
	ks := *t.next.stores[c.KeyStore]
	ks.Credentials = slices.DeleteFunc(slices.Clone(ks.Credentials), func(cr StoredCredential) bool { return cr.AccessKeyID == c.AccessKeyID })
	t.putStore(&ks)
}

// CreateKey adds a key with its first version (or, to import a key, all of
// its versions). In a replicated key store every version carries wrapped
// material; in a shared one none does.
type CreateKey struct {
	At  time.Time `json:"at"`
	Key Key       `json:"key"`
}

func (CreateKey) Type() CommandType { return CmdCreateKey }

func (c CreateKey) Validate(s *State) error {
	if err := requireTime(c.At); err != nil {
		return err
	}
	k := &c.Key
	if err := k.Validate(); err != nil {
		return asInvalid(err)
	}
	ks, err := findStore(s, k.KeyStore)
	if err != nil {
		return err
	}
	if s.keys[ks.Name][k.ID] != nil {
		return conflict("key store %s already has a key %s", ks.Name, k.ID)
	}
	for i := range k.Versions {
		v := &k.Versions[i]
		for _, earlier := range k.Versions[:i] {
			if earlier.HSMLabel == v.HSMLabel {
				return invalid("key %s: versions %d and %d share the HSM label %s", k.ID, earlier.Number, v.Number, v.HSMLabel)
			}
		}
		if err := validVersion(s, ks, k.ID, v); err != nil {
			return err
		}
	}
	return nil
}

func (c CreateKey) applyTo(t *txn) {
	k := c.Key
	k.CreatedAt = c.At
	k.Versions = make([]KeyVersion, len(c.Key.Versions))
	for i, v := range c.Key.Versions {
		k.Versions[i] = stampVersion(v, c.At)
	}
	if c.Key.Legacy != nil {
		legacy := *c.Key.Legacy
		legacy.StaticMetadata = bytes.Clone(legacy.StaticMetadata)
		k.Legacy = &legacy
	}
	t.putKey(&k)
}

// SetKeyEnabled enables or disables a key: the kill switch.
type SetKeyEnabled struct {
	KeyStore string `json:"keyStore"`
	KeyID    string `json:"keyId"`
	Enabled  bool   `json:"enabled"`
}

func (SetKeyEnabled) Type() CommandType { return CmdSetKeyEnabled }

func (c SetKeyEnabled) Validate(s *State) error {
	k, err := findKey(s, c.KeyStore, c.KeyID)
	if err == nil && c.Enabled && !k.DeletionDate.IsZero() {
		return conflict("key %s/%s is scheduled for deletion; cancel the deletion before enabling it", c.KeyStore, c.KeyID)
	}
	return err
}

func (c SetKeyEnabled) applyTo(t *txn) {
	k := *t.next.keys[c.KeyStore][c.KeyID]
	k.Enabled = c.Enabled
	t.putKey(&k)
}

// AddKeyVersion adds the next version of a key's material, numbered one past
// the highest, without making it current: the reconciler must first put it
// in every node's HSM, then SetCurrentVersion switches Encrypt to it. A
// proposer that raced another rotation gets a conflict and retries.
type AddKeyVersion struct {
	At       time.Time  `json:"at"`
	KeyStore string     `json:"keyStore"`
	KeyID    string     `json:"keyId"`
	Version  KeyVersion `json:"version"`
}

func (AddKeyVersion) Type() CommandType { return CmdAddKeyVersion }

func (c AddKeyVersion) Validate(s *State) error {
	if err := requireTime(c.At); err != nil {
		return err
	}
	k, err := findKey(s, c.KeyStore, c.KeyID)
	if err != nil {
		return err
	}
	var highest uint32
	for _, v := range k.Versions {
		highest = max(highest, v.Number)
	}
	if next := highest + 1; c.Version.Number != next {
		return conflict("key %s: the next version is %d, not %d", k.ID, next, c.Version.Number)
	}
	if c.Version.HSMLabel == "" {
		return invalid("key %s: version %d has no HSM label", k.ID, c.Version.Number)
	}
	return validVersion(s, s.stores[c.KeyStore], k.ID, &c.Version)
}

func (c AddKeyVersion) applyTo(t *txn) {
	k := *t.next.keys[c.KeyStore][c.KeyID]
	k.Versions = append(slices.Clip(k.Versions), stampVersion(c.Version, c.At))
	t.putKey(&k)
}

// SetCurrentVersion makes an existing version the one Encrypt uses. Setting
// the version that is already current is accepted, so a retry is harmless.
type SetCurrentVersion struct {
	KeyStore string `json:"keyStore"`
	KeyID    string `json:"keyId"`
	Version  uint32 `json:"version"`
}

func (SetCurrentVersion) Type() CommandType { return CmdSetCurrentVersion }

func (c SetCurrentVersion) Validate(s *State) error {
	k, err := findKey(s, c.KeyStore, c.KeyID)
	if err != nil {
		return err
	}
	if k.Version(c.Version) == nil {
		return notFound("key %s has no version %d", k.ID, c.Version)
	}
	return nil
}

func (c SetCurrentVersion) applyTo(t *txn) {
	k := *t.next.keys[c.KeyStore][c.KeyID]
	k.CurrentVersion = c.Version
	t.putKey(&k)
}

// AddGrant adds a grant. A grant names an existing key (or AllKeys), so a
// mistyped key id is refused rather than silently matching nothing.
type AddGrant struct {
	At    time.Time `json:"at"`
	Grant Grant     `json:"grant"`
}

func (AddGrant) Type() CommandType { return CmdAddGrant }

func (c AddGrant) Validate(s *State) error {
	if err := requireTime(c.At); err != nil {
		return err
	}
	g := &c.Grant
	if err := g.validate(); err != nil {
		return err
	}
	if s.grants[g.ID] != nil {
		return conflict("grant %s already exists", g.ID)
	}
	if g.KeyID == AllKeys {
		_, err := findStore(s, g.KeyStore)
		return err
	}
	_, err := findKey(s, g.KeyStore, g.KeyID)
	return err
}

func (c AddGrant) applyTo(t *txn) {
	g := cloneGrant(c.Grant)
	g.CreatedAt = c.At
	t.putGrant(g)
}

// RemoveGrant removes a grant by id.
type RemoveGrant struct {
	ID string `json:"id"`
}

func (RemoveGrant) Type() CommandType { return CmdRemoveGrant }

func (c RemoveGrant) Validate(s *State) error {
	if s.grants[c.ID] == nil {
		return notFound("no grant %s", c.ID)
	}
	return nil
}

func (c RemoveGrant) applyTo(t *txn) { t.deleteGrant(c.ID) }

// requireTime refuses a command that would store a time but carries none:
// Apply may not read the clock, so the leader's time must be in the entry.
func requireTime(at time.Time) error {
	if at.IsZero() {
		return invalid("the command carries no time (at); the proposer must set it")
	}
	return nil
}

// MaxQuotaRPS is the largest request quota a key store may have: two orders
// of magnitude above what one node serves, so that a larger number can
// only be a mistake (or a truncated one).
const MaxQuotaRPS = 1_000_000

func validQuota(store string, q uint32) error {
	if q > MaxQuotaRPS {
		return invalid("key store %s: quota %d requests/s is out of range (0 for unlimited, at most %d)", store, q, MaxQuotaRPS)
	}
	return nil
}

func validGrantsMode(store string, m GrantsMode) error {
	if m != GrantsOpen && m != GrantsClosed {
		return invalid("key store %s: grants mode %q: want %q or %q", store, m, GrantsOpen, GrantsClosed)
	}
	return nil
}

// validCredential checks what fsm can see of a credential: the secret is
// sealed, so its shape is checked only when BuildView unseals it.
func validCredential(store string, c *StoredCredential) error {
	if !accessKeyIDPattern.MatchString(c.AccessKeyID) {
		return invalid("key store %s: access key id %q: use 20-30 characters of A-Z 2-7", store, c.AccessKeyID)
	}
	if len(c.SealedSecret) == 0 || len(c.SealedSecret) > maxSealedSecret {
		return invalid("key store %s: credential %s: the sealed secret must be 1-%d bytes", store, c.AccessKeyID, maxSealedSecret)
	}
	return nil
}

func accessKeyIDFree(s *State, id string) error {
	for _, ks := range s.stores {
		for _, cr := range ks.Credentials {
			if cr.AccessKeyID == id {
				return conflict("access key id %s already belongs to key store %s", id, ks.Name)
			}
		}
	}
	return nil
}

// validVersion checks a new version against its key store's key mode and
// every HSM label in use: a label names one version of one key, or a
// reconciler could put one key's material where another's is expected.
func validVersion(s *State, ks *StoredKeyStore, keyID string, v *KeyVersion) error {
	if err := validVersionShape(ks, keyID, v); err != nil {
		return err
	}
	for store, keys := range s.keys {
		for _, k := range keys {
			for _, other := range k.Versions {
				if other.HSMLabel == v.HSMLabel {
					return conflict("HSM label %s is already version %d of key %s in key store %s", v.HSMLabel, other.Number, k.ID, store)
				}
			}
		}
	}
	return nil
}

// reservedLabels are the HSM objects the hsm package manages itself: the
// cluster KEK, the cluster seal key and the health key (its default label;
// a node configured with another is protected by hsm's own refusal). A key
// naming one would have the data plane encrypt with the seal key, or a
// deletion destroy the cluster keys. fsm is a leaf and cannot import hsm;
// a cluster test checks that these match hsm's constants.
var reservedLabels = [...]string{"xksproxy-cluster-kek", "xksproxy-cluster-seal", "xksproxy-health"}

// validVersionShape checks what a version must be in its key store,
// whatever else the state holds.
func validVersionShape(ks *StoredKeyStore, keyID string, v *KeyVersion) error {
	hasMaterial, hasMechanism := len(v.WrappedMaterial) > 0, v.WrapMechanism != ""
	switch {
	case ks.KeyMode == KeyModeReplicated && (!hasMaterial || !hasMechanism):
		return invalid("key %s version %d: key store %s replicates material, so the version needs wrapped material and its wrap mechanism", keyID, v.Number, ks.Name)
	case ks.KeyMode == KeyModeShared && (hasMaterial || hasMechanism):
		return invalid("key %s version %d: key store %s uses shared HSM keys, so the version carries no wrapped material", keyID, v.Number, ks.Name)
	}
	for _, r := range reservedLabels {
		if v.HSMLabel == r {
			return invalid("key %s version %d: HSM label %s is reserved for the proxy's own keys", keyID, v.Number, v.HSMLabel)
		}
	}
	return nil
}

func findStore(s *State, name string) (*StoredKeyStore, error) {
	ks := s.stores[name]
	if ks == nil {
		return nil, notFound("no key store %s", name)
	}
	return ks, nil
}

func findKey(s *State, store, id string) (*Key, error) {
	if _, err := findStore(s, store); err != nil {
		return nil, err
	}
	k := s.keys[store][id]
	if k == nil || k.Deleted {
		return nil, notFound("key store %s has no key %s", store, id)
	}
	return k, nil
}

func stampCredential(c StoredCredential, at time.Time) StoredCredential {
	c.SealedSecret = bytes.Clone(c.SealedSecret)
	c.CreatedAt = at
	return c
}

func stampVersion(v KeyVersion, at time.Time) KeyVersion {
	v.WrappedMaterial = bytes.Clone(v.WrappedMaterial)
	v.CreatedAt = at
	return v
}

// Deletion windows, in days, as AWS KMS has them for its own keys.
const (
	MinDeletionDays = 7
	MaxDeletionDays = 30
)

// ScheduleDeletion schedules a disabled key for deletion Days after At.
type ScheduleDeletion struct {
	At       time.Time `json:"at"`
	KeyStore string    `json:"keyStore"`
	KeyID    string    `json:"keyId"`
	Days     int       `json:"days"`
}

func (ScheduleDeletion) Type() CommandType { return CmdScheduleDeletion }

func (c ScheduleDeletion) Validate(s *State) error {
	if err := requireTime(c.At); err != nil {
		return err
	}
	if c.Days < MinDeletionDays || c.Days > MaxDeletionDays {
		return invalid("a deletion window is %d to %d days, not %d", MinDeletionDays, MaxDeletionDays, c.Days)
	}
	k, err := findKey(s, c.KeyStore, c.KeyID)
	if err != nil {
		return err
	}
	if k.Enabled {
		return conflict("key %s/%s is enabled; disable it before scheduling its deletion", c.KeyStore, c.KeyID)
	}
	if !k.DeletionDate.IsZero() {
		return conflict("key %s/%s is already scheduled for deletion on %s", c.KeyStore, c.KeyID, k.DeletionDate.Format(time.RFC3339))
	}
	return nil
}

func (c ScheduleDeletion) applyTo(t *txn) {
	k := *t.next.keys[c.KeyStore][c.KeyID]
	k.DeletionDate = c.At.Add(time.Duration(c.Days) * 24 * time.Hour)
	t.putKey(&k)
}

// CancelDeletion cancels a scheduled deletion; the key stays disabled.
type CancelDeletion struct {
	KeyStore string `json:"keyStore"`
	KeyID    string `json:"keyId"`
}

func (CancelDeletion) Type() CommandType { return CmdCancelDeletion }

func (c CancelDeletion) Validate(s *State) error {
	k, err := findKey(s, c.KeyStore, c.KeyID)
	if err != nil {
		return err
	}
	if k.DeletionDate.IsZero() {
		return conflict("key %s/%s is not scheduled for deletion", c.KeyStore, c.KeyID)
	}
	return nil
}

func (c CancelDeletion) applyTo(t *txn) {
	k := *t.next.keys[c.KeyStore][c.KeyID]
	k.DeletionDate = time.Time{}
	t.putKey(&k)
}

// DeleteKey carries out a scheduled deletion. The leader proposes it with
// its own clock in At; Apply only checks that At is past the deletion date,
// so every node decides the same.
type DeleteKey struct {
	At       time.Time `json:"at"`
	KeyStore string    `json:"keyStore"`
	KeyID    string    `json:"keyId"`
}

func (DeleteKey) Type() CommandType { return CmdDeleteKey }

func (c DeleteKey) Validate(s *State) error {
	if err := requireTime(c.At); err != nil {
		return err
	}
	k, err := findKey(s, c.KeyStore, c.KeyID)
	if err != nil {
		return err
	}
	if k.DeletionDate.IsZero() {
		return conflict("key %s/%s is not scheduled for deletion", c.KeyStore, c.KeyID)
	}
	if c.At.Before(k.DeletionDate) {
		return conflict("key %s/%s is due for deletion on %s, not before", c.KeyStore, c.KeyID, k.DeletionDate.Format(time.RFC3339))
	}
	return nil
}

func (c DeleteKey) applyTo(t *txn) {
	k := *t.next.keys[c.KeyStore][c.KeyID]
	k.Deleted = true
	k.Enabled = false
	t.putKey(&k)
}
