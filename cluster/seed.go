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

// command builds the Seed command: seal makes a credential's stored form,
// version a key's first version.
func (s *SeedSpec) command(at time.Time, seal func(keyStore string, c SeedCredential) (fsm.StoredCredential, error),
	version func(mode fsm.KeyMode, k SeedKey) (fsm.KeyVersion, error)) (fsm.Seed, error) {
	cmd := fsm.Seed{At: at}
	modes := map[string]fsm.KeyMode{}
	for _, ks := range s.KeyStores {
		stored := fsm.StoredKeyStore{Name: ks.Name, URIPath: ks.URIPath, Region: ks.Region, Enabled: !ks.Disabled,
			GrantsMode: ks.GrantsMode, KeyMode: ks.KeyMode}
		for _, c := range ks.Credentials {
			sc, err := seal(ks.Name, c)
			if err != nil {
				return cmd, err
			}
			stored.Credentials = append(stored.Credentials, sc)
		}
		modes[ks.Name] = ks.KeyMode
		cmd.KeyStores = append(cmd.KeyStores, stored)
	}
	for _, k := range s.Keys {
		v, err := version(modes[k.KeyStore], k)
		if err != nil {
			return cmd, fmt.Errorf("seed key %s/%s: %w", k.KeyStore, k.ID, err)
		}
		cmd.Keys = append(cmd.Keys, fsm.Key{KeyStore: k.KeyStore, ID: k.ID, Usage: k.Usage, Enabled: !k.Disabled,
			CurrentVersion: 1, Versions: []fsm.KeyVersion{v}})
	}
	return cmd, nil
}

// Check finds, before the node starts, what would make the cluster refuse
// this seed, which it would otherwise only retry, never apply: it checks
// every credential, then applies the seed, with placeholders for sealed
// secrets and wrapped material, to an empty state.
func (s *SeedSpec) Check() error {
	var problems []error
	for _, ks := range s.KeyStores {
		for _, c := range ks.Credentials {
			cred := fsm.Credential{AccessKeyID: c.AccessKeyID, Secret: c.Secret, ExpiresAt: c.ExpiresAt}
			if err := cred.Validate(); err != nil {
				problems = append(problems, fmt.Errorf("key store %s: credential %s: %w", ks.Name, c.AccessKeyID, err))
			}
		}
	}
	cmd, err := s.command(time.Now().UTC(),
		func(_ string, c SeedCredential) (fsm.StoredCredential, error) {
			return fsm.StoredCredential{AccessKeyID: c.AccessKeyID, SealedSecret: []byte{0}, ExpiresAt: c.ExpiresAt}, nil
		},
		func(mode fsm.KeyMode, k SeedKey) (fsm.KeyVersion, error) {
			v, err := firstVersionOf(mode, k.KeyStore, k.ID, k.HSMLabel)
			if err == nil && mode != fsm.KeyModeShared {
				v.WrappedMaterial, v.WrapMechanism = []byte{0}, "placeholder"
			}
			return v, err
		})
	if err == nil {
		err = cmd.Validate(fsm.New(nil).State())
	}
	if err != nil {
		problems = append(problems, err)
	}
	return errors.Join(problems...)
}

// seedOnce applies the seed if the state was never seeded. Every node may
// try (whoever leads first); the FSM accepts only the first Seed.
func (n *Node) seedOnce() error {
	if n.cfg.Seed == nil || n.fsm.State().Seeded() {
		return nil
	}
	cmd, err := n.cfg.Seed.command(time.Now().UTC(),
		func(keyStore string, c SeedCredential) (fsm.StoredCredential, error) {
			return n.sealCredential(keyStore, c.AccessKeyID, c.Secret, c.ExpiresAt)
		},
		func(mode fsm.KeyMode, k SeedKey) (fsm.KeyVersion, error) {
			return n.firstVersion(mode, k.KeyStore, k.ID, k.HSMLabel)
		})
	if err != nil {
		return err
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

// firstVersionOf is version 1 of a new key without its material: the
// adopted label in a shared key store, a new label in a replicated one.
func firstVersionOf(mode fsm.KeyMode, keyStore, keyID, adoptLabel string) (fsm.KeyVersion, error) {
	if mode == fsm.KeyModeShared {
		if adoptLabel == "" {
			return fsm.KeyVersion{}, errors.New("a key of a shared-mode key store needs the HSM label to adopt")
		}
		return fsm.KeyVersion{Number: 1, HSMLabel: adoptLabel}, nil
	}
	if adoptLabel != "" {
		return fsm.KeyVersion{}, errors.New("an HSM label can be adopted only in a shared-mode key store; replicated keys are generated")
	}
	return fsm.KeyVersion{Number: 1, HSMLabel: versionLabel(keyStore, keyID, 1)}, nil
}

// firstVersion makes version 1 of a new key: fresh material wrapped under
// the cluster KEK in a replicated key store, or the adopted label in a
// shared one.
func (n *Node) firstVersion(mode fsm.KeyMode, keyStore, keyID, adoptLabel string) (fsm.KeyVersion, error) {
	v, err := firstVersionOf(mode, keyStore, keyID, adoptLabel)
	if err != nil || mode == fsm.KeyModeShared {
		return v, err
	}
	if v.WrappedMaterial, v.WrapMechanism, err = n.hsm.GenerateWrappedKey(); err != nil {
		return fsm.KeyVersion{}, fmt.Errorf("generating replicated key material: %w", err)
	}
	return v, nil
}

// sealCredential seals a secret under the cluster seal key for the log,
// bound to its key store and access key id.
func (n *Node) sealCredential(keyStore, accessKeyID string, secret []byte, expires time.Time) (fsm.StoredCredential, error) {
	sealed, err := n.sealSecret(keyStore, accessKeyID, secret)
	if err != nil {
		return fsm.StoredCredential{}, fmt.Errorf("sealing the secret of %s: %w", accessKeyID, err)
	}
	return fsm.StoredCredential{AccessKeyID: accessKeyID, SealedSecret: sealed, ExpiresAt: expires}, nil
}
