package cluster

import "github.com/xksproxy/xksproxy/hsm"

// HSM is what a node needs of its key manager: one *hsm.HSM, or an
// *hsm.Group when the node has several.
type HSM interface {
	Health() hsm.Health
	TokenInfo() (model, manufacturer, serial string)
	GenerateWrappedKey() (wrapped []byte, mechanism string, err error)
	UnwrapKey(wrapped []byte, mechanism, label string) error
	HasKey(label string) (bool, error)
	DestroyKey(label string) error
	Seal(plaintext, aad []byte) ([]byte, error)
	Unseal(sealed, aad []byte) ([]byte, error)
}
