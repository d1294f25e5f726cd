package node

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"

	"github.com/xksproxy/xksproxy/hsm"
)

// The key ceremony: once per cluster, 64 random bytes (the KEK that wraps
// replicated key material and the seal key that protects SigV4 secrets in
// the log) are generated into a file, imported into every node's HSM as
// non-extractable keys, and the file is destroyed. A node that joins later
// needs the same import; without it the node cannot unwrap keys or unseal
// credentials and reports them missing.

// GenerateClusterKeys writes fresh ceremony material to path (mode 0600),
// refusing to overwrite an existing file.
func GenerateClusterKeys(path string) error {
	material := make([]byte, hsm.ClusterKeysSize)
	rand.Read(material)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(hex.EncodeToString(material) + "\n"); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ReadClusterKeys reads ceremony material written by GenerateClusterKeys.
func ReadClusterKeys(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	material, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(material) != hsm.ClusterKeysSize {
		return nil, fmt.Errorf("%s does not hold %d bytes of hex cluster key material", path, hsm.ClusterKeysSize)
	}
	return material, nil
}
