package fsm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"
)

// State is the replicated state at one applied index. It is immutable: a
// command produces a new State that shares every part it did not change, so
// that a snapshot is a pointer and readers never lock. Nothing reachable from
// a State may be modified, including what its accessors return.
type State struct {
	index  uint64
	seeded bool
	stores map[string]*StoredKeyStore // by name
	keys   map[string]map[string]*Key // by key store name, then key id
	grants map[string]*Grant          // by grant id
	// commandSet is the command set every voter reads (0 means 1).
	commandSet int
	// revokedNodes: node id -> certificates naming it issued before this
	// time are refused (RevokeNodeCertificates).
	revokedNodes map[string]time.Time
	operators    map[string]*Operator // by name
	// audit is the kept audit trail, oldest first; auditAnchor is where it
	// starts (audit.go).
	audit       []*AuditRecord
	auditAnchor AuditAnchor
}

// StoredKeyStore is a key store as the cluster replicates it: credentials
// carry secrets sealed by the HSM, never plaintext. The data plane's form,
// with plaintext, is KeyStore.
type StoredKeyStore struct {
	Name        string             `json:"name"`
	URIPath     string             `json:"uriPath"`
	Region      string             `json:"region"`
	Enabled     bool               `json:"enabled"`
	QuotaRPS    uint32             `json:"quotaRps"` // 0 = unlimited
	GrantsMode  GrantsMode         `json:"grantsMode"`
	KeyMode     KeyMode            `json:"keyMode"`
	Credentials []StoredCredential `json:"credentials"`
}

// StoredCredential is a SigV4 credential whose secret was sealed by the HSM
// before it reached the state. fsm never looks inside SealedSecret: only the
// unseal function given to BuildView does.
type StoredCredential struct {
	AccessKeyID  string    `json:"accessKeyId"`
	SealedSecret []byte    `json:"sealedSecret"`
	CreatedAt    time.Time `json:"createdAt"` // set by Apply from the command's At
	ExpiresAt    time.Time `json:"expiresAt,omitzero"`
}

// Format prints the access key id and expiry, never the sealed secret,
// whatever the verb.
func (c StoredCredential) Format(f fmt.State, _ rune) {
	fmt.Fprintf(f, "{AccessKeyID:%s SealedSecret:[redacted] ExpiresAt:%s}", c.AccessKeyID, expiry(c.ExpiresAt))
}

// activeAt reports whether the credential authenticates at t.
func (c *StoredCredential) activeAt(t time.Time) bool {
	return c.ExpiresAt.IsZero() || t.Before(c.ExpiresAt)
}

func newState() *State {
	return &State{
		stores:    map[string]*StoredKeyStore{},
		keys:      map[string]map[string]*Key{},
		grants:    map[string]*Grant{},
		operators: map[string]*Operator{},
	}
}

// Index is the Raft index of the last command applied to reach this state,
// whether or not that command changed anything else.
func (s *State) Index() uint64 { return s.index }

// CommandSet is the command set the cluster has reached: every voter reads
// it, so commands that need it may be proposed.
func (s *State) CommandSet() int { return max(s.commandSet, 1) }

// Seeded reports whether a Seed command has been applied.
func (s *State) Seeded() bool { return s.seeded }

// KeyStore returns the key store with this name, or nil.
func (s *State) KeyStore(name string) *StoredKeyStore { return s.stores[name] }

// KeyStores lists the key stores by name.
func (s *State) KeyStores() []*StoredKeyStore { return sortedValues(s.stores) }

// Key returns a key of a key store, or nil.
func (s *State) Key(keyStore, id string) *Key { return s.keys[keyStore][id] }

// Keys lists a key store's keys by id.
func (s *State) Keys(keyStore string) []*Key { return sortedValues(s.keys[keyStore]) }

// Grant returns the grant with this id, or nil.
func (s *State) Grant(id string) *Grant { return s.grants[id] }

// Grants lists every grant by id.
func (s *State) Grants() []*Grant { return sortedValues(s.grants) }

func sortedValues[V any](m map[string]*V) []*V {
	out := make([]*V, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, m[k])
	}
	return out
}

// withIndex is s unchanged but for the index: the result of a command that
// was refused or skipped.
func (s *State) withIndex(index uint64) *State {
	n := *s
	n.index = index
	return &n
}

// execute is the one way a command changes the state, for the FSM and for
// Build alike: check the rules, then apply to a copy-on-write successor.
func (s *State) execute(index uint64, c Command) (*State, error) {
	if a, ok := c.(Audited); ok {
		if err := CheckCommandSet(s, c); err != nil {
			return s.withIndex(index), err
		}
		return a.execute(s, index)
	}
	if err := CheckNamed(s, c); err != nil {
		return s.withIndex(index), err
	}
	if err := CheckCommandSet(s, c); err != nil {
		return s.withIndex(index), err
	}
	if err := c.Validate(s); err != nil {
		return s.withIndex(index), err
	}
	t := newTxn(s, index)
	c.applyTo(t)
	return t.next, nil
}

// txn builds the next State from a base without touching the base: a map is
// copied the first time the txn writes to it, and only then.
type txn struct {
	next      *State
	ownStores bool
	ownGrants bool
	ownOps    bool
	ownKeys   bool
	ownKeysOf map[string]bool
}

func newTxn(base *State, index uint64) *txn {
	return &txn{next: base.withIndex(index), ownKeysOf: map[string]bool{}}
}

func (t *txn) putStore(ks *StoredKeyStore) {
	if !t.ownStores {
		t.next.stores, t.ownStores = maps.Clone(t.next.stores), true
	}
	t.next.stores[ks.Name] = ks
}

func (t *txn) deleteStore(name string) {
	if !t.ownStores {
		t.next.stores, t.ownStores = maps.Clone(t.next.stores), true
	}
	delete(t.next.stores, name)
	if !t.ownKeys {
		t.next.keys, t.ownKeys = maps.Clone(t.next.keys), true
	}
	delete(t.next.keys, name)
}

func (t *txn) putKey(k *Key) {
	if !t.ownKeys {
		t.next.keys, t.ownKeys = maps.Clone(t.next.keys), true
	}
	if !t.ownKeysOf[k.KeyStore] {
		inner := maps.Clone(t.next.keys[k.KeyStore])
		if inner == nil {
			inner = map[string]*Key{}
		}
		t.next.keys[k.KeyStore], t.ownKeysOf[k.KeyStore] = inner, true
	}
	t.next.keys[k.KeyStore][k.ID] = k
}

func (t *txn) putGrant(g *Grant) {
	if !t.ownGrants {
		t.next.grants, t.ownGrants = maps.Clone(t.next.grants), true
	}
	t.next.grants[g.ID] = g
}

func (t *txn) deleteGrant(id string) {
	if !t.ownGrants {
		t.next.grants, t.ownGrants = maps.Clone(t.next.grants), true
	}
	delete(t.next.grants, id)
}

func (t *txn) putOperator(op *Operator) {
	if !t.ownOps {
		t.next.operators, t.ownOps = maps.Clone(t.next.operators), true
	}
	t.next.operators[op.Name] = op
}

func (t *txn) deleteOperator(name string) {
	if !t.ownOps {
		t.next.operators, t.ownOps = maps.Clone(t.next.operators), true
	}
	delete(t.next.operators, name)
}

// stateJSON is the State's serialised form, in snapshots: sorted lists, so
// that two replicas with the same state write the same bytes.
type stateJSON struct {
	Index     uint64            `json:"index"`
	Seeded    bool              `json:"seeded"`
	KeyStores []*StoredKeyStore `json:"keyStores"`
	Keys      []*Key            `json:"keys"`
	Grants    []*Grant          `json:"grants"`
	// CommandSet is left out while it is 1, so that builds from before
	// command sets, whose decoding is strict, read the snapshot.
	CommandSet int `json:"commandSet,omitempty"`
	// RevokedNodes is left out while empty, for the same reason.
	RevokedNodes []NodeRevocation `json:"revokedNodeCertificates,omitempty"`
	// Operators and Audit too.
	Operators []*Operator `json:"operators,omitempty"`
	Audit     *auditJSON  `json:"audit,omitempty"`
}

// MarshalJSON writes the state deterministically.
func (s *State) MarshalJSON() ([]byte, error) {
	out := stateJSON{Index: s.index, Seeded: s.seeded, KeyStores: s.KeyStores(), Keys: []*Key{}, Grants: s.Grants()}
	if s.commandSet > 1 {
		out.CommandSet = s.commandSet
	}
	if len(s.revokedNodes) > 0 {
		out.RevokedNodes = s.NodeRevocations()
	}
	for _, ks := range out.KeyStores {
		out.Keys = append(out.Keys, s.Keys(ks.Name)...)
	}
	out.Operators = s.Operators()
	if len(s.audit) > 0 || s.auditAnchor != (AuditAnchor{}) {
		out.Audit = &auditJSON{Anchor: s.auditAnchor, Records: s.audit}
	}
	return json.Marshal(out)
}

// UnmarshalJSON reads what MarshalJSON writes, strictly (an unknown field is
// a newer format, not something to drop), and checks the result as a whole
// (check): a snapshot that commands could not have built is corrupt or
// forged and must not be served. s changes only if everything passes.
func (s *State) UnmarshalJSON(b []byte) error {
	var in stateJSON
	if err := decodeStrict(b, &in); err != nil {
		return err
	}
	n := newState()
	if in.CommandSet < 0 || in.CommandSet > CommandSet {
		return fmt.Errorf("state: command set %d; this build reads up to %d, so upgrade it before it restores this state", in.CommandSet, CommandSet)
	}
	n.index, n.seeded, n.commandSet = in.Index, in.Seeded, in.CommandSet
	for _, ks := range in.KeyStores {
		if ks == nil || n.stores[ks.Name] != nil {
			return fmt.Errorf("state: a key store is null or listed twice")
		}
		n.stores[ks.Name] = ks
		n.keys[ks.Name] = map[string]*Key{}
	}
	for _, k := range in.Keys {
		if k == nil || n.keys[k.KeyStore] == nil || n.keys[k.KeyStore][k.ID] != nil {
			return fmt.Errorf("state: a key is null, listed twice or in a key store that does not exist")
		}
		n.keys[k.KeyStore][k.ID] = k
	}
	for _, g := range in.Grants {
		if g == nil || n.grants[g.ID] != nil || n.stores[g.KeyStore] == nil {
			return fmt.Errorf("state: a grant is null, listed twice or in a key store that does not exist")
		}
		n.grants[g.ID] = g
	}
	for _, r := range in.RevokedNodes {
		if _, twice := n.revokedNodes[r.NodeID]; twice {
			return fmt.Errorf("state: node %s is revoked twice", r.NodeID)
		}
		if n.revokedNodes == nil {
			n.revokedNodes = map[string]time.Time{}
		}
		n.revokedNodes[r.NodeID] = r.Before
	}
	for _, op := range in.Operators {
		if op == nil || n.operators[op.Name] != nil {
			return fmt.Errorf("state: an operator is null or listed twice")
		}
		n.operators[op.Name] = op
	}
	if in.Audit != nil {
		n.auditAnchor, n.audit = in.Audit.Anchor, slices.Clip(in.Audit.Records)
	}
	if err := n.check(); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	*s = *n
	return nil
}

// decodeStrict decodes exactly one JSON value, refusing unknown fields and
// trailing data: on a replica, a field this build would drop means a
// divergence, so it must be an error instead.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("unexpected data after the JSON value")
	}
	return nil
}
