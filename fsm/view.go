package fsm

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"
)

// View is an immutable picture of the state at one applied index, indexed
// for the request path and holding plaintext credentials. The data plane
// reads it without locks; a change builds a new View and swaps it in.
// Nothing reachable from a View may be modified after it is built.
type View struct {
	index  uint64
	stores map[string]*StoreView // by URI path
	byName map[string]*StoreView
}

// StoreView is one key store inside a View, indexed for the request path.
type StoreView struct {
	KeyStore
	credentials map[string]*Credential
	keys        map[string]*Key // shared with the State, which never changes it
	grants      []*Grant        // by id, for Describe
	// keyGrants holds, for each key that grants name, those grants and the
	// key store's AllKeys grants, by id; every other key uses storeGrants.
	keyGrants   map[string][]*compiledGrant
	storeGrants []*compiledGrant
}

// BuildView indexes a State for the data plane. unseal turns a credential's
// sealed secret into plaintext (the HSM, in the caller), given the key store
// and access key id the seal must be bound to: it runs here, off
// the raft apply path, because Apply must be deterministic and free of I/O.
// A credential that fails to unseal, or whose secret is not a valid SigV4
// secret, is left out of the view and reported, so that one bad credential
// cannot take every key store down; the errors never contain secrets.
func BuildView(s *State, unseal func(keyStore, accessKeyID string, sealed []byte) ([]byte, error)) (*View, []error) {
	v := &View{
		index:  s.index,
		stores: make(map[string]*StoreView, len(s.stores)),
		byName: make(map[string]*StoreView, len(s.stores)),
	}
	var errs []error
	for _, ks := range s.KeyStores() {
		sv := &StoreView{
			KeyStore: KeyStore{
				Name: ks.Name, URIPath: ks.URIPath, Region: ks.Region, Enabled: ks.Enabled,
				QuotaRPS: ks.QuotaRPS, GrantsMode: ks.GrantsMode, KeyMode: ks.KeyMode,
				Credentials: make([]Credential, 0, len(ks.Credentials)),
			},
			credentials: make(map[string]*Credential, len(ks.Credentials)),
			keys:        s.keys[ks.Name],
			keyGrants:   map[string][]*compiledGrant{},
		}
		for _, sc := range ks.Credentials {
			secret, err := unseal(ks.Name, sc.AccessKeyID, sc.SealedSecret)
			if err != nil {
				errs = append(errs, fmt.Errorf("key store %s: credential %s left out of the view: unsealing failed: %w", ks.Name, sc.AccessKeyID, err))
				continue
			}
			c := Credential{AccessKeyID: sc.AccessKeyID, Secret: secret, CreatedAt: sc.CreatedAt, ExpiresAt: sc.ExpiresAt}
			if err := c.Validate(); err != nil {
				errs = append(errs, fmt.Errorf("key store %s: credential %s left out of the view: %w", ks.Name, sc.AccessKeyID, err))
				continue
			}
			sv.Credentials = append(sv.Credentials, c)
		}
		for i := range sv.Credentials {
			sv.credentials[sv.Credentials[i].AccessKeyID] = &sv.Credentials[i]
		}
		v.stores[ks.URIPath] = sv
		v.byName[ks.Name] = sv
	}
	for _, g := range s.Grants() {
		sv := v.byName[g.KeyStore]
		sv.grants = append(sv.grants, g)
		cg := compileGrant(g)
		if g.KeyID == AllKeys {
			sv.storeGrants = append(sv.storeGrants, cg)
		} else {
			sv.keyGrants[g.KeyID] = append(sv.keyGrants[g.KeyID], cg)
		}
	}
	for _, sv := range v.byName {
		for id, own := range sv.keyGrants {
			merged := slices.Concat(own, sv.storeGrants)
			slices.SortFunc(merged, func(a, b *compiledGrant) int { return cmp.Compare(a.id, b.id) })
			sv.keyGrants[id] = merged
		}
	}
	return v, errs
}

// Build makes a View straight from key stores with plaintext credentials
// and keys, for a node that runs without a cluster. It applies them as one
// Seed, so they obey exactly the rules replicated state obeys, with the
// plaintext standing in for the sealed secret. An empty grants mode means
// open and an empty key mode shared: these keys name objects already in the
// HSM, and nothing restricts them until grants exist.
func Build(index uint64, stores []KeyStore, keys []Key) (*View, error) {
	seed := Seed{At: time.Now().UTC(), Keys: keys}
	for _, ks := range stores {
		sks := StoredKeyStore{
			Name: ks.Name, URIPath: ks.URIPath, Region: ks.Region, Enabled: ks.Enabled, QuotaRPS: ks.QuotaRPS,
			GrantsMode: cmp.Or(ks.GrantsMode, GrantsOpen), KeyMode: cmp.Or(ks.KeyMode, KeyModeShared),
		}
		for _, c := range ks.Credentials {
			sks.Credentials = append(sks.Credentials, StoredCredential{AccessKeyID: c.AccessKeyID, SealedSecret: c.Secret, ExpiresAt: c.ExpiresAt})
		}
		seed.KeyStores = append(seed.KeyStores, sks)
	}
	// A node without a cluster is all of its voters: its build's command
	// set is in effect.
	alone := newState()
	alone.commandSet = CommandSet
	s, err := alone.execute(index, seed)
	if err != nil {
		return nil, err
	}
	v, errs := BuildView(s, func(_, _ string, secret []byte) ([]byte, error) { return secret, nil })
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return v, nil
}

// Index is the Raft index (or bootstrap generation) this view reflects.
func (v *View) Index() uint64 { return v.index }

// StoreByPath finds the key store whose URI path is exactly path.
func (v *View) StoreByPath(path []byte) *StoreView { return v.stores[string(path)] }

// StoreByName finds a key store by its name.
func (v *View) StoreByName(name string) *StoreView { return v.byName[name] }

// Stores lists every key store, in no particular order.
func (v *View) Stores() []*StoreView {
	out := make([]*StoreView, 0, len(v.byName))
	for _, s := range v.byName {
		out = append(out, s)
	}
	return out
}

// Credential returns the credential with this access key id if it is active
// at now. Expiry is decided here, at read time, so that an expired credential
// stops working without any write to the state.
func (s *StoreView) Credential(accessKeyID []byte, now time.Time) (*Credential, bool) {
	c, ok := s.credentials[string(accessKeyID)]
	if !ok {
		return nil, false
	}
	if !c.ExpiresAt.IsZero() && !now.Before(c.ExpiresAt) {
		return nil, false
	}
	return c, true
}

// Key finds a key of this store by its external key id; a deleted key is
// not found.
func (s *StoreView) Key(id []byte) *Key {
	if k := s.keys[string(id)]; k != nil && !k.Deleted {
		return k
	}
	return nil
}

// Keys lists the store's keys that are not deleted, in no particular order.
func (s *StoreView) Keys() []*Key {
	out := make([]*Key, 0, len(s.keys))
	for _, k := range s.keys {
		if !k.Deleted {
			out = append(out, k)
		}
	}
	return out
}

// KeyStoreInfo is a key store as an operator lists it: everything but
// secrets and wrapped material, in a stable order.
type KeyStoreInfo struct {
	Name        string           `json:"name"`
	URIPath     string           `json:"uriPath"`
	Region      string           `json:"region"`
	Enabled     bool             `json:"enabled"`
	QuotaRPS    uint32           `json:"quotaRps"`
	GrantsMode  GrantsMode       `json:"grantsMode"`
	KeyMode     KeyMode          `json:"keyMode"`
	Credentials []CredentialInfo `json:"credentials"` // those in the view, by access key id
	Keys        []KeyInfo        `json:"keys"`        // by id
	Grants      []Grant          `json:"grants"`      // by id
}

// CredentialInfo describes a credential without its secret.
type CredentialInfo struct {
	AccessKeyID string    `json:"accessKeyId"`
	CreatedAt   time.Time `json:"createdAt"`
	ExpiresAt   time.Time `json:"expiresAt,omitzero"`
}

// KeyInfo describes a key and its versions.
type KeyInfo struct {
	ID             string           `json:"id"`
	Usage          []string         `json:"usage"`
	Enabled        bool             `json:"enabled"`
	CurrentVersion uint32           `json:"currentVersion"`
	Versions       []KeyVersionInfo `json:"versions"`
	CreatedAt      time.Time        `json:"createdAt"`
}

// KeyVersionInfo describes a version; Wrapped says whether the cluster
// replicates its material, without the material.
type KeyVersionInfo struct {
	Number        uint32    `json:"number"`
	HSMLabel      string    `json:"hsmLabel"`
	Wrapped       bool      `json:"wrapped"`
	WrapMechanism string    `json:"wrapMechanism,omitempty"`
	CreatedAt     time.Time `json:"createdAt"`
}

// Describe lists every key store, by name, for the operator.
func (v *View) Describe() []KeyStoreInfo {
	out := make([]KeyStoreInfo, 0, len(v.byName))
	for _, s := range v.byName {
		out = append(out, s.Describe())
	}
	slices.SortFunc(out, func(a, b KeyStoreInfo) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// Describe lists the key store for the operator. The result is a copy: the
// caller may keep or change it.
func (s *StoreView) Describe() KeyStoreInfo {
	info := KeyStoreInfo{
		Name: s.Name, URIPath: s.URIPath, Region: s.Region, Enabled: s.Enabled, QuotaRPS: s.QuotaRPS,
		GrantsMode: s.GrantsMode, KeyMode: s.KeyMode,
		Credentials: make([]CredentialInfo, 0, len(s.Credentials)),
		Keys:        make([]KeyInfo, 0, len(s.keys)),
		Grants:      make([]Grant, 0, len(s.grants)),
	}
	for _, c := range s.Credentials {
		info.Credentials = append(info.Credentials, CredentialInfo{AccessKeyID: c.AccessKeyID, CreatedAt: c.CreatedAt, ExpiresAt: c.ExpiresAt})
	}
	slices.SortFunc(info.Credentials, func(a, b CredentialInfo) int { return cmp.Compare(a.AccessKeyID, b.AccessKeyID) })
	for _, k := range s.keys {
		ki := KeyInfo{ID: k.ID, Usage: k.Usage.Names(), Enabled: k.Enabled, CurrentVersion: k.CurrentVersion,
			Versions: make([]KeyVersionInfo, 0, len(k.Versions)), CreatedAt: k.CreatedAt}
		for _, kv := range k.Versions {
			ki.Versions = append(ki.Versions, KeyVersionInfo{Number: kv.Number, HSMLabel: kv.HSMLabel,
				Wrapped: len(kv.WrappedMaterial) > 0, WrapMechanism: kv.WrapMechanism, CreatedAt: kv.CreatedAt})
		}
		info.Keys = append(info.Keys, ki)
	}
	slices.SortFunc(info.Keys, func(a, b KeyInfo) int { return cmp.Compare(a.ID, b.ID) })
	for _, g := range s.grants {
		info.Grants = append(info.Grants, *cloneGrant(*g))
	}
	return info
}

// ViewHolder publishes the current View to the data plane.
type ViewHolder struct {
	p atomic.Pointer[View]
}

// Load returns the current view, or nil before the first one is published.
func (h *ViewHolder) Load() *View { return h.p.Load() }

// Publish makes v the view every later Load returns.
func (h *ViewHolder) Publish(v *View) { h.p.Store(v) }
