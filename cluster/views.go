package cluster

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/xksproxy/xksproxy/fsm"
	"github.com/xksproxy/xksproxy/hsm"
	"github.com/xksproxy/xksproxy/internal/noderpc"
)

// buildViews turns every new replicated state into the data plane's view
// and publishes it at once. It runs beside Raft, not inside FSM.Apply,
// because unsealing a new credential asks the HSM; making the HSM hold the
// key material is the reconciler's (reconcileHSM), which runs after and
// apart: a kill switch must not wait for another key's unwrap. A version
// whose material has not arrived makes only its key fail on this node,
// with an error KMS retries. Changes arriving meanwhile coalesce into one
// rebuild.
func (n *Node) buildViews() {
	defer n.wg.Done()
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-n.stateDirty:
		case <-retry.C:
		}
		st := n.fsm.State()
		view, errs := fsm.BuildView(st, n.unseal)
		n.forgetRemovedSecrets(st)
		for _, err := range errs {
			n.log.Error().Err(err).Msg("left a credential out of the view")
		}
		n.views.Publish(view)
		n.viewed.Advance(st.Index())
		notify(n.viewChanged)
		notify(n.hsmDirty)
		if n.gossip != nil {
			n.gossip.Refresh()
		}
		if len(errs) > 0 {
			// The HSM may come back: unseal again without waiting for
			// the next change.
			retry.Reset(2 * time.Second)
		}
	}
}

// reconcileHSM makes the local HSM match each new state (reconcile), and
// records what is still missing; it retries while something is.
func (n *Node) reconcileHSM() {
	defer n.wg.Done()
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-n.hsmDirty:
		case <-retry.C:
		}
		current := n.freshnessError() == nil
		st := n.fsm.State()
		missing := n.reconcile(st)
		n.missing.Store(&missing)
		n.reconciled.Advance(st.Index())
		if current && !n.hsmWarm.Swap(true) {
			notify(n.viewChanged) // readiness changed: let the tracker log it
		}
		if n.gossip != nil {
			n.gossip.Refresh()
		}
		if len(missing) > 0 {
			// A token re-inserted, the ceremony done: try again without
			// waiting for the next change.
			retry.Reset(2 * time.Second)
		}
	}
}

// notify signals a coalescing channel without blocking.
func notify(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// MissingVersion is a key version whose material this node's HSM lacks
// (nodes report it to one another).
type MissingVersion = noderpc.MissingVersion

// Sealed credentials come in two formats, told apart by their first byte.
//   - sealedV2 (2), then hsm.Seal's output: the AAD binds the key store and
//     the access key id (credentialAAD). Every seal this build makes.
//   - hsm.Seal's output alone, whose first byte is hsm's own format byte
//     (1): the AAD binds the access key id only (legacyCredentialAAD).
//     Earlier builds wrote these, and they live on in logs and snapshots,
//     so they stay readable.
//
// Keeping the older format readable is safe: a sealed blob moves between
// key stores only by editing state outside the commands (no command moves
// a credential, and access key ids are unique across key stores), and
// backups, the one place such an edit could come from, are authenticated.
// A v2 seal cannot be passed off as an older one: its AAD differs, so
// stripping the format byte leaves a blob that fails to unseal.
const sealedV2 = fsm.SealBoundToKeyStore

func credentialAAD(keyStore, accessKeyID string) []byte {
	return []byte("xksproxy credential v2\x00" + keyStore + "\x00" + accessKeyID)
}

func legacyCredentialAAD(accessKeyID string) []byte {
	return []byte("xksproxy credential\x00" + accessKeyID)
}

// sealSecret seals a credential's secret for the state, bound to its key
// store and access key id — or, until every voter's build can open such a
// seal (the cluster's command set, see upgrade.go), to its access key id
// only, as older builds do.
func (n *Node) sealSecret(keyStore, accessKeyID string, secret []byte) ([]byte, error) {
	if n.fsm.State().CommandSet() < 2 {
		return n.hsm.Seal(secret, legacyCredentialAAD(accessKeyID))
	}
	sealed, err := n.hsm.Seal(secret, credentialAAD(keyStore, accessKeyID))
	if err != nil {
		return nil, err
	}
	return append([]byte{sealedV2}, sealed...), nil
}

// unseal opens a credential's secret with the cluster seal key, remembering
// the result: the HSM is asked once per sealed blob, not once per view.
func (n *Node) unseal(keyStore, accessKeyID string, sealed []byte) ([]byte, error) {
	cacheKey := unsealCacheKey(keyStore, accessKeyID, sealed)
	if v, ok := n.unsealed.Load(cacheKey); ok {
		return v.([]byte), nil
	}
	aad := legacyCredentialAAD(accessKeyID)
	if len(sealed) > 0 && sealed[0] == sealedV2 {
		sealed, aad = sealed[1:], credentialAAD(keyStore, accessKeyID)
	}
	secret, err := n.hsm.Unseal(sealed, aad)
	if err != nil {
		return nil, fmt.Errorf("unsealing the secret of %s: %w", accessKeyID, err)
	}
	n.unsealed.Store(cacheKey, secret)
	return secret, nil
}

func unsealCacheKey(keyStore, accessKeyID string, sealed []byte) string {
	return keyStore + "\x00" + accessKeyID + "\x00" + string(sealed)
}

// forgetRemovedSecrets drops from the unseal cache every secret st no
// longer holds, so that a removed credential's secret does not stay in
// memory. (Views already replaced may still hold it until the requests
// using them finish; the garbage collector then frees it.)
func (n *Node) forgetRemovedSecrets(st *fsm.State) {
	keep := map[string]bool{}
	for _, ks := range st.KeyStores() {
		for _, c := range ks.Credentials {
			keep[unsealCacheKey(ks.Name, c.AccessKeyID, c.SealedSecret)] = true
		}
	}
	n.unsealed.Range(func(k, _ any) bool {
		if !keep[k.(string)] {
			n.unsealed.Delete(k)
		}
		return true
	})
}

// reconcile makes the local HSM hold every key version of the state: wrapped
// versions are unwrapped under the cluster KEK; shared-mode versions can only
// be checked. It returns the versions still missing. It destroys only the
// material of keys whose deletion has committed, and never a label a live
// key names; an object the state merely stopped naming is kept: a restored
// older snapshot must not erase keys.
func (n *Node) reconcile(st *fsm.State) []MissingVersion {
	var missing []MissingVersion
	for _, ks := range st.KeyStores() {
		for _, k := range st.Keys(ks.Name) {
			if k.Deleted {
				continue
			}
			for _, v := range k.Versions {
				if n.present(v.HSMLabel) {
					continue
				}
				ref := fmt.Sprintf("%s/%s v%d", ks.Name, k.ID, v.Number)
				lacks := MissingVersion{KeyStore: ks.Name, KeyID: k.ID, Version: v.Number}
				if len(v.WrappedMaterial) == 0 {
					lacks.Reason = "shared label " + v.HSMLabel + " not in this HSM"
					missing = append(missing, lacks)
					continue
				}
				err := n.unwrapKey(v.WrappedMaterial, v.WrapMechanism, v.HSMLabel)
				if err != nil && !errors.Is(err, hsm.ErrKeyExists) {
					n.log.Error().Err(err).Str("key", ref).Msg("could not unwrap a replicated key into this HSM")
					lacks.Reason = err.Error()
					missing = append(missing, lacks)
					continue
				}
				n.log.Info().Str("key", ref).Str("hsmLabel", v.HSMLabel).Msg("key material is in this node's HSM")
				n.presentLabels.Store(v.HSMLabel, true)
			}
		}
	}
	for _, d := range st.DestroyableVersions() {
		n.destroyDeleted(d)
	}
	sort.Slice(missing, func(i, j int) bool { return missing[i].String() < missing[j].String() })
	return missing
}

// present reports whether the HSM holds label, asking it once per label.
func (n *Node) present(label string) bool {
	if _, ok := n.presentLabels.Load(label); ok {
		return true
	}
	ok, err := n.hsm.HasKey(label)
	if err != nil || !ok {
		return false
	}
	n.presentLabels.Store(label, true)
	return true
}

// destroyDeleted destroys the HSM object of a deleted key's version, once
// per label. Only a committed DeleteKey leads here (fsm's
// DestroyableVersions): a key the state merely stopped naming is never
// destroyed, nor a label a live key still names.
func (n *Node) destroyDeleted(d fsm.DestroyableVersion) {
	if _, done := n.destroyed.Load(d.HSMLabel); done {
		return
	}
	ref := fmt.Sprintf("%s/%s v%d", d.KeyStore, d.KeyID, d.Number)
	err := n.hsm.DestroyKey(d.HSMLabel)
	if err != nil && !errors.Is(err, hsm.ErrKeyNotFound) {
		n.log.Error().Err(err).Str("key", ref).Msg("could not destroy a deleted key's material; will retry")
		return
	}
	n.destroyed.Store(d.HSMLabel, true)
	n.presentLabels.Delete(d.HSMLabel)
	n.log.Warn().Str("key", ref).Str("hsmLabel", d.HSMLabel).Msg("destroyed a deleted key's material in this node's HSM")
}

// deleteDueKeys is the leader's side of scheduled deletion: once a key's
// deletion date has passed on the leader's clock, it commits DeleteKey with
// that time, and every node then destroys the material.
func (n *Node) deleteDueKeys() {
	defer n.wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-tick.C:
		}
		if !n.IsLeader() {
			continue
		}
		now := n.cfg.Now().UTC()
		st := n.fsm.State()
		for _, ks := range st.KeyStores() {
			for _, k := range st.Keys(ks.Name) {
				if k.Deleted || k.DeletionDate.IsZero() || now.Before(k.DeletionDate) {
					continue
				}
				ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ApplyTimeout)
				_, err := n.Apply(ctx, fsm.DeleteKey{At: now, KeyStore: ks.Name, KeyID: k.ID})
				cancel()
				if err != nil {
					n.log.Error().Err(err).Str("key", ks.Name+"/"+k.ID).Msg("scheduled deletion failed; will retry")
					continue
				}
				n.log.Warn().Str("key", ks.Name+"/"+k.ID).Msg("deleted a key whose deletion date passed")
			}
		}
	}
}
