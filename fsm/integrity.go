package fsm

import (
	"fmt"
	"slices"
)

// check holds a state that arrived whole (a snapshot from a peer, a backup)
// to what commands guarantee of a state they built: every part obeys the
// rules of the command that makes it, and the parts fit together. A state
// that fails here would crash or mislead the data plane or the reconciler
// (a current version that does not exist, a deleted key naming a live
// key's HSM object), so it is refused whole, with the first problem in the
// sorted order of the snapshot, the same on every node.
func (s *State) check() error {
	paths := map[string]string{} // URI path -> key store
	akids := map[string]string{} // access key id -> key store
	for _, ks := range s.KeyStores() {
		if err := validKeyStore(ks); err != nil {
			return err
		}
		if other, ok := paths[ks.URIPath]; ok {
			return conflict("key stores %s and %s both serve the URI path %s", other, ks.Name, ks.URIPath)
		}
		paths[ks.URIPath] = ks.Name
		for _, cr := range ks.Credentials {
			if other, ok := akids[cr.AccessKeyID]; ok {
				return conflict("access key id %s belongs to both key stores %s and %s", cr.AccessKeyID, other, ks.Name)
			}
			akids[cr.AccessKeyID] = ks.Name
		}
	}
	type use struct {
		ref     string
		deleted bool
	}
	labels := map[string]use{}
	for _, ks := range s.KeyStores() {
		for _, k := range s.Keys(ks.Name) {
			if err := validKeyInState(ks, k); err != nil {
				return err
			}
			ref := fmt.Sprintf("%s/%s", ks.Name, k.ID)
			for i := range k.Versions {
				v := &k.Versions[i]
				if err := validVersionShape(ks, k.ID, v); err != nil {
					return err
				}
				here := use{fmt.Sprintf("version %d of %skey %s", v.Number, deletedWord(k.Deleted), ref), k.Deleted}
				if other, ok := labels[v.HSMLabel]; ok {
					if other.deleted != here.deleted {
						return conflict("HSM label %s is %s and %s: a deleted key must never name a live key's material, or deleting it destroys that material", v.HSMLabel, other.ref, here.ref)
					}
					return conflict("HSM label %s is both %s and %s: a label names one version of one key", v.HSMLabel, other.ref, here.ref)
				}
				labels[v.HSMLabel] = here
			}
		}
	}
	if err := s.checkOperatorsAndAudit(); err != nil {
		return err
	}
	for _, g := range s.Grants() {
		if err := g.validate(); err != nil {
			return err
		}
		if s.stores[g.KeyStore] == nil {
			return notFound("grant %s: no key store %s", g.ID, g.KeyStore)
		}
		// A grant may outlive its key's deletion: DeleteKey keeps it.
		if g.KeyID != AllKeys && s.keys[g.KeyStore][g.KeyID] == nil {
			return notFound("grant %s: key store %s has no key %s", g.ID, g.KeyStore, g.KeyID)
		}
	}
	return s.checkNodeRevocations()
}

// checkOperatorsAndAudit holds the operators to CreateOperator's rules and
// the audit trail to its chain: a state whose trail does not verify was
// edited, and a replica must not serve it.
func (s *State) checkOperatorsAndAudit() error {
	hashes := map[string]string{}
	for _, op := range s.Operators() {
		if err := validOperator(op); err != nil {
			return err
		}
		if other, ok := hashes[op.TokenHash]; ok {
			return conflict("operators %s and %s share a token", other, op.Name)
		}
		hashes[op.TokenHash] = op.Name
	}
	if len(s.operators) > MaxOperators {
		return invalid("%d operators; at most %d", len(s.operators), MaxOperators)
	}
	if len(s.audit) > MaxAuditRecords {
		return invalid("%d audit records; at most %d are kept", len(s.audit), MaxAuditRecords)
	}
	if b := VerifyAudit(s.auditAnchor, s.audit); b != nil {
		return invalid("the audit trail does not verify: %v", b)
	}
	return nil
}

func deletedWord(deleted bool) string {
	if deleted {
		return "deleted "
	}
	return ""
}

// validKeyInState checks a key of a snapshot: its own shape (Key.Validate,
// which CreateKey applies), its place, and the states deletion leaves it
// in: scheduled or deleted keys are disabled, and only a scheduled key is
// deleted.
func validKeyInState(ks *StoredKeyStore, k *Key) error {
	if err := k.Validate(); err != nil {
		return invalid("key store %s: %v", ks.Name, err)
	}
	ref := ks.Name + "/" + k.ID
	switch {
	case k.Deleted && k.DeletionDate.IsZero():
		return invalid("key %s is deleted without a deletion date", ref)
	case k.Enabled && !k.DeletionDate.IsZero():
		return invalid("key %s is enabled but scheduled for deletion (or deleted)", ref)
	}
	return nil
}

// DestroyableVersion is an HSM object the reconciler may destroy: a version
// of a key whose deletion has committed.
type DestroyableVersion struct {
	KeyStore string
	KeyID    string
	Number   uint32
	HSMLabel string
}

// DestroyableVersions lists the versions of deleted keys whose HSM label no
// live key names, by key store, key and version. The rules keep a deleted
// key's labels apart from every live key's; this is the reconciler's second
// line, because destroying material cannot be undone.
func (s *State) DestroyableVersions() []DestroyableVersion {
	live := map[string]bool{}
	for _, keys := range s.keys {
		for _, k := range keys {
			if !k.Deleted {
				for _, v := range k.Versions {
					live[v.HSMLabel] = true
				}
			}
		}
	}
	var out []DestroyableVersion
	for _, ks := range s.KeyStores() {
		for _, k := range s.Keys(ks.Name) {
			if !k.Deleted {
				continue
			}
			for _, v := range k.Versions {
				if !live[v.HSMLabel] {
					out = append(out, DestroyableVersion{KeyStore: ks.Name, KeyID: k.ID, Number: v.Number, HSMLabel: v.HSMLabel})
				}
			}
		}
	}
	return slices.Clip(out)
}
