package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/xksproxy/xksproxy/fsm"
)

// SeedSpec is a node's [bootstrap] configuration: what a fresh cluster
// starts with. Secrets are plaintext here and sealed before they enter the
// log; replicated keys get their material generated then.
type SeedSpec struct {
	KeyStores []SeedKeyStore
	Keys      []SeedKey
}

// SeedKeyStore is a key store to create at the first start.
type SeedKeyStore struct {
	Name, URIPath, Region string
	Disabled              bool
	GrantsMode            fsm.GrantsMode
	KeyMode               fsm.KeyMode
	Credentials           []SeedCredential
}

// SeedCredential is a SigV4 credential to create at the first start.
type SeedCredential struct {
	AccessKeyID string
	Secret      []byte
	ExpiresAt   time.Time
}

// SeedKey is a key to create at the first start; HSMLabel adopts an existing
// object in a shared-mode key store.
type SeedKey struct {
	KeyStore, ID string
	Usage        fsm.Usage
	Disabled     bool
	HSMLabel     string
}

// seedOnce applies the seed if the state was never seeded. Every node may
// try (whoever leads first); the FSM accepts only the first Seed.
func (n *Node) seedOnce() error {
	if n.cfg.Seed == nil || n.fsm.State().Seeded() {
		return nil
	}
	at := time.Now().UTC()
	cmd := fsm.Seed{At: at}
	modes := map[string]fsm.KeyMode{}
	for _, s := range n.cfg.Seed.KeyStores {
		ks := fsm.StoredKeyStore{Name: s.Name, URIPath: s.URIPath, Region: s.Region, Enabled: !s.Disabled,
			GrantsMode: s.GrantsMode, KeyMode: s.KeyMode}
		for _, c := range s.Credentials {
			sc, err := n.sealCredential(c.AccessKeyID, c.Secret, c.ExpiresAt)
			if err != nil {
				return err
			}
			ks.Credentials = append(ks.Credentials, sc)
		}
		modes[s.Name] = s.KeyMode
		cmd.KeyStores = append(cmd.KeyStores, ks)
	}
	for _, k := range n.cfg.Seed.Keys {
		v, err := n.firstVersion(modes[k.KeyStore], k.KeyStore, k.ID, k.HSMLabel)
		if err != nil {
			return fmt.Errorf("seed key %s/%s: %w", k.KeyStore, k.ID, err)
		}
		cmd.Keys = append(cmd.Keys, fsm.Key{KeyStore: k.KeyStore, ID: k.ID, Usage: k.Usage, Enabled: !k.Disabled,
			CurrentVersion: 1, Versions: []fsm.KeyVersion{v}})
	}
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ApplyTimeout)
	defer cancel()
	if _, err := n.Apply(ctx, cmd); err != nil && !errors.Is(err, fsm.ErrAlreadySeeded) {
		return err
	}
	n.log.Info().Int("keyStores", len(cmd.KeyStores)).Int("keys", len(cmd.Keys)).Msg("seeded the cluster from [bootstrap]")
	return nil
}

// versionLabel names a replicated key version's object in every HSM. The
// random part makes every generation's label new: an HSM may still hold an
// object of a deleted key with the same store, id and version (objects are
// never destroyed because the state forgot them), and reusing its label
// would silently pair new ciphertexts with old material on some nodes.
func versionLabel(keyStore, keyID string, number uint32) string {
	nonce := make([]byte, 6)
	rand.Read(nonce)
	return fmt.Sprintf("xks.%s.%s.v%d.%s", keyStore, keyID, number, hex.EncodeToString(nonce))
}

// firstVersion makes version 1 of a new key: fresh material wrapped under
// the cluster KEK in a replicated key store, or the adopted label in a
// shared one.
func (n *Node) firstVersion(mode fsm.KeyMode, keyStore, keyID, adoptLabel string) (fsm.KeyVersion, error) {
	if mode == fsm.KeyModeShared {
		if adoptLabel == "" {
			return fsm.KeyVersion{}, errors.New("a key of a shared-mode key store needs the HSM label to adopt")
		}
		return fsm.KeyVersion{Number: 1, HSMLabel: adoptLabel}, nil
	}
	if adoptLabel != "" {
		return fsm.KeyVersion{}, errors.New("an HSM label can be adopted only in a shared-mode key store; replicated keys are generated")
	}
	wrapped, mechanism, err := n.hsm.GenerateWrappedKey()
	if err != nil {
		return fsm.KeyVersion{}, fmt.Errorf("generating replicated key material: %w", err)
	}
	return fsm.KeyVersion{Number: 1, HSMLabel: versionLabel(keyStore, keyID, 1),
		WrappedMaterial: wrapped, WrapMechanism: mechanism}, nil
}

// sealCredential seals a secret under the cluster seal key for the log.
func (n *Node) sealCredential(accessKeyID string, secret []byte, expires time.Time) (fsm.StoredCredential, error) {
	sealed, err := n.hsm.Seal(secret, credentialAAD(accessKeyID))
	if err != nil {
		return fsm.StoredCredential{}, fmt.Errorf("sealing the secret of %s: %w", accessKeyID, err)
	}
	return fsm.StoredCredential{AccessKeyID: accessKeyID, SealedSecret: sealed, ExpiresAt: expires}, nil
}
