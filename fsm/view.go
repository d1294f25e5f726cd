package fsm

import (
	"fmt"
	"sync/atomic"
	"time"
)

// View is an immutable picture of the state at one applied index. The data
// plane reads it without locks; a change builds a new View and swaps it in.
// Nothing reachable from a View may be modified after Build returns.
type View struct {
	index  uint64
	stores map[string]*StoreView // by URI path
	byName map[string]*StoreView
}

// StoreView is one key store inside a View, indexed for the request path.
type StoreView struct {
	KeyStore
	credentials map[string]*Credential
	keys        map[string]*Key
}

// Build validates stores and keys and indexes them into a View.
func Build(index uint64, stores []KeyStore, keys []Key) (*View, error) {
	v := &View{
		index:  index,
		stores: make(map[string]*StoreView, len(stores)),
		byName: make(map[string]*StoreView, len(stores)),
	}
	accessKeyOwner := map[string]string{}
	for _, ks := range stores {
		if err := ks.Validate(); err != nil {
			return nil, err
		}
		if _, dup := v.byName[ks.Name]; dup {
			return nil, fmt.Errorf("key store %s is defined twice", ks.Name)
		}
		if other, dup := v.stores[ks.URIPath]; dup {
			return nil, fmt.Errorf("key stores %s and %s share the URI path %s", other.Name, ks.Name, ks.URIPath)
		}
		sv := &StoreView{
			KeyStore:    cloneKeyStore(ks),
			credentials: make(map[string]*Credential, len(ks.Credentials)),
			keys:        map[string]*Key{},
		}
		for i := range sv.Credentials {
			c := &sv.Credentials[i]
			if owner, dup := accessKeyOwner[c.AccessKeyID]; dup {
				return nil, fmt.Errorf("access key id %s belongs to both %s and %s", c.AccessKeyID, owner, ks.Name)
			}
			accessKeyOwner[c.AccessKeyID] = ks.Name
			sv.credentials[c.AccessKeyID] = c
		}
		v.stores[ks.URIPath] = sv
		v.byName[ks.Name] = sv
	}
	for _, k := range keys {
		if err := k.Validate(); err != nil {
			return nil, err
		}
		sv, ok := v.byName[k.KeyStore]
		if !ok {
			return nil, fmt.Errorf("key %s names key store %q, which does not exist", k.ID, k.KeyStore)
		}
		if _, dup := sv.keys[k.ID]; dup {
			return nil, fmt.Errorf("key %s is defined twice in key store %s", k.ID, k.KeyStore)
		}
		kc := k
		kc.Versions = append([]KeyVersion(nil), k.Versions...)
		sv.keys[k.ID] = &kc
	}
	return v, nil
}

func cloneKeyStore(ks KeyStore) KeyStore {
	c := ks
	c.Credentials = make([]Credential, len(ks.Credentials))
	for i, cr := range ks.Credentials {
		cr.Secret = append([]byte(nil), cr.Secret...)
		c.Credentials[i] = cr
	}
	return c
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

// Key finds a key of this store by its external key id.
func (s *StoreView) Key(id []byte) *Key { return s.keys[string(id)] }

// Keys lists the store's keys, in no particular order.
func (s *StoreView) Keys() []*Key {
	out := make([]*Key, 0, len(s.keys))
	for _, k := range s.keys {
		out = append(out, k)
	}
	return out
}

// ViewHolder publishes the current View to the data plane.
type ViewHolder struct {
	p atomic.Pointer[View]
}

// Load returns the current view, or nil before the first one is published.
func (h *ViewHolder) Load() *View { return h.p.Load() }

// Publish makes v the view every later Load returns.
func (h *ViewHolder) Publish(v *View) { h.p.Store(v) }
