package cluster

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/xksproxy/xksproxy/fsm"
	"github.com/xksproxy/xksproxy/hsm"
)

// buildViews turns every new replicated state into the data plane's view.
// It runs beside Raft, not inside FSM.Apply, because it talks to the HSM:
// first the reconciler makes the local HSM hold every replicated key
// version, then sealed secrets are unsealed and the view is swapped in.
// Changes arriving meanwhile coalesce into one rebuild.
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
		missing := n.reconcile(st)
		n.missing.Store(&missing)
		view, errs := fsm.BuildView(st, n.unseal)
		for _, err := range errs {
			n.log.Error().Err(err).Msg("left a credential out of the view")
		}
		n.views.Publish(view)
		n.viewIndex.Store(st.Index())
		select {
		case n.viewChanged <- struct{}{}:
		default:
		}
		if n.gossip != nil {
			n.gossip.Refresh()
		}
		if len(missing) > 0 || len(errs) > 0 {
			// The HSM may come back (a token re-inserted, the ceremony
			// done): try again without waiting for the next change.
			retry.Reset(2 * time.Second)
		}
	}
}

// credentialAAD binds a sealed secret to its access key id, so that a sealed
// blob cannot be moved to another credential.
func credentialAAD(accessKeyID string) []byte {
	return []byte("xksproxy credential\x00" + accessKeyID)
}

// unseal opens a credential's secret with the cluster seal key, remembering
// the result: the HSM is asked once per sealed blob, not once per view.
func (n *Node) unseal(accessKeyID string, sealed []byte) ([]byte, error) {
	cacheKey := accessKeyID + "\x00" + string(sealed)
	if v, ok := n.unsealed.Load(cacheKey); ok {
		return v.([]byte), nil
	}
	secret, err := n.hsm.Unseal(sealed, credentialAAD(accessKeyID))
	if err != nil {
		return nil, fmt.Errorf("unsealing the secret of %s: %w", accessKeyID, err)
	}
	n.unsealed.Store(cacheKey, secret)
	return secret, nil
}

// reconcile makes the local HSM hold every key version of the state: wrapped
// versions are unwrapped under the cluster KEK; shared-mode versions can only
// be checked. It returns the versions still missing. It never destroys an
// HSM object because the state does not name it: a restored older snapshot
// must not erase keys.
func (n *Node) reconcile(st *fsm.State) []string {
	var missing []string
	for _, ks := range st.KeyStores() {
		for _, k := range st.Keys(ks.Name) {
			if k.Deleted {
				n.destroyDeleted(ks.Name, k)
				continue
			}
			for _, v := range k.Versions {
				if n.present(v.HSMLabel) {
					continue
				}
				ref := fmt.Sprintf("%s/%s v%d", ks.Name, k.ID, v.Number)
				if len(v.WrappedMaterial) == 0 {
					missing = append(missing, ref+" (shared label "+v.HSMLabel+" not in this HSM)")
					continue
				}
				err := n.hsm.UnwrapKey(v.WrappedMaterial, v.WrapMechanism, v.HSMLabel)
				if err != nil && !errors.Is(err, hsm.ErrKeyExists) {
					n.log.Error().Err(err).Str("key", ref).Msg("could not unwrap a replicated key into this HSM")
					missing = append(missing, ref+": "+err.Error())
					continue
				}
				n.log.Info().Str("key", ref).Str("hsmLabel", v.HSMLabel).Msg("key material is in this node's HSM")
				n.presentLabels.Store(v.HSMLabel, true)
			}
		}
	}
	sort.Strings(missing)
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

// destroyDeleted destroys the HSM objects of a key whose deletion has
// committed, once per label. Only a committed DeleteKey leads here: a key
// the state merely stopped naming is never destroyed.
func (n *Node) destroyDeleted(keyStore string, k *fsm.Key) {
	for _, v := range k.Versions {
		if _, done := n.destroyed.Load(v.HSMLabel); done {
			continue
		}
		err := n.hsm.DestroyKey(v.HSMLabel)
		if err != nil && !errors.Is(err, hsm.ErrKeyNotFound) {
			n.log.Error().Err(err).Str("key", keyStore+"/"+k.ID).Msg("could not destroy a deleted key's material; will retry")
			continue
		}
		n.destroyed.Store(v.HSMLabel, true)
		n.presentLabels.Delete(v.HSMLabel)
		n.log.Warn().Str("key", fmt.Sprintf("%s/%s v%d", keyStore, k.ID, v.Number)).Str("hsmLabel", v.HSMLabel).Msg("destroyed a deleted key's material in this node's HSM")
	}
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
