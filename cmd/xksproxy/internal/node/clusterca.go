package node

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/xksproxy/xksproxy/cluster"
)

// The cluster CA: a directory holding ca.pem, ca-key.pem (mode 0600) and
// cluster-id, made once per cluster by `cluster-keys ca`. Every node
// certificate it issues (`cluster-keys issue NODE-ID`) names its node as
// the URI SAN xksproxy://CLUSTER-ID/node/NODE-ID (cluster/identity.go); the
// cluster id is a random 128-bit hex string, so that two clusters never
// share one even if they share a CA. Keep the directory offline: the CA key
// makes members.

const (
	caCertFile    = "ca.pem"
	caKeyFile     = "ca-key.pem"
	clusterIDFile = "cluster-id"
)

// issueBackdate is how far before now a node certificate's validity
// starts, so that a node whose clock is a little behind the CA's accepts it.
// A removal revokes what was issued before it (by NotBefore), so a
// certificate for a removed node must be issued more than this after the
// removal.
const issueBackdate = time.Minute

// CreateClusterCA makes a cluster CA in dir, refusing to overwrite one, and
// returns its cluster id. A dir that holds only a cluster-id (copied from
// the old CA's directory) gets a new CA for that cluster: the way to rotate
// the CA, since nodes admit only peers of their own cluster id.
func CreateClusterCA(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	for _, name := range []string{caCertFile, caKeyFile} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			return "", fmt.Errorf("%s already holds a cluster CA (%s): one CA per directory, made once", dir, name)
		}
	}
	clusterID, err := EnsureClusterID(dir)
	if err != nil {
		return "", err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "xksproxy cluster CA " + clusterID},
		NotBefore:             time.Now().Add(-issueBackdate),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", err
	}
	if err := writeKey(filepath.Join(dir, caKeyFile), key); err != nil {
		return "", err
	}
	return clusterID, writeNew(filepath.Join(dir, caCertFile), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// EnsureClusterID gives the CA in dir a cluster id if it has none (a CA
// made before identities, or by other tools), and returns it.
func EnsureClusterID(dir string) (string, error) {
	id, err := ReadClusterID(dir)
	if !errors.Is(err, os.ErrNotExist) {
		return id, err
	}
	b := make([]byte, 16)
	rand.Read(b)
	id = hex.EncodeToString(b)
	return id, writeNew(filepath.Join(dir, clusterIDFile), []byte(id+"\n"), 0o644)
}

// ReadClusterID reads the cluster id kept next to the CA in dir.
func ReadClusterID(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, clusterIDFile))
	if err != nil {
		return "", err
	}
	id := strings.TrimSpace(string(b))
	if u, err := url.Parse(cluster.IdentityScheme + "://" + id); err != nil || u.Host != id || id == "" {
		return "", fmt.Errorf("%s: %q is not a cluster id (letters, digits, '-' and '.')", filepath.Join(dir, clusterIDFile), id)
	}
	return id, nil
}

// NodeCertificate is what `cluster-keys issue` makes: a certificate for
// one node, for both ends of the cluster's mutual TLS.
type NodeCertificate struct {
	NodeID   string
	IPs      []net.IP
	DNSNames []string
	CertPath string
	KeyPath  string
	Validity time.Duration // 0: two years
}

// IssueNodeCertificate issues req from the cluster CA in caDir, refusing to
// overwrite either file, and returns the identity it names.
func IssueNodeCertificate(caDir string, req NodeCertificate) (*url.URL, error) {
	if req.NodeID == "" || strings.ContainsAny(req.NodeID, "/?#% ") {
		return nil, fmt.Errorf("node id %q: a node id is the node's node_id, without '/', '?', '#', '%%' or spaces", req.NodeID)
	}
	clusterID, err := ReadClusterID(caDir)
	if err != nil {
		return nil, fmt.Errorf("cluster id (made by `cluster-keys ca`): %w", err)
	}
	caCert, caKey, err := loadCA(caDir)
	if err != nil {
		return nil, err
	}
	for _, p := range []string{req.CertPath, req.KeyPath} {
		if _, err := os.Stat(p); err == nil {
			return nil, fmt.Errorf("%s exists: move it away first (a node's old certificate is revoked by removing the node, not by overwriting its file)", p)
		}
	}
	if req.Validity == 0 {
		req.Validity = 2 * 365 * 24 * time.Hour
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	identity := cluster.NodeIdentityURI(clusterID, req.NodeID)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: req.NodeID},
		NotBefore:    now.Add(-issueBackdate),
		NotAfter:     now.Add(req.Validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  req.IPs,
		DNSNames:     req.DNSNames,
		URIs:         []*url.URL{identity},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	if err := writeKey(req.KeyPath, key); err != nil {
		return nil, err
	}
	return identity, writeNew(req.CertPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// CertificateNames reports whether the certificate in path names nodeID of
// the CA in caDir's cluster.
func CertificateNames(path, caDir, nodeID string) bool {
	clusterID, err := ReadClusterID(caDir)
	if err != nil {
		return false
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return false
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return false
	}
	want := cluster.NodeIdentityURI(clusterID, nodeID).String()
	for _, u := range cert.URIs {
		if u.String() == want {
			return true
		}
	}
	return false
}

func loadCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	cb, err := os.ReadFile(filepath.Join(dir, caCertFile))
	if err != nil {
		return nil, nil, fmt.Errorf("cluster CA: %w", err)
	}
	block, _ := pem.Decode(cb)
	if block == nil {
		return nil, nil, fmt.Errorf("%s holds no PEM certificate", filepath.Join(dir, caCertFile))
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, nil, err
	}
	kb, err := os.ReadFile(filepath.Join(dir, caKeyFile))
	if err != nil {
		return nil, nil, fmt.Errorf("cluster CA key: %w", err)
	}
	block, _ = pem.Decode(kb)
	if block == nil {
		return nil, nil, fmt.Errorf("%s holds no PEM key", filepath.Join(dir, caKeyFile))
	}
	key, err := x509.ParseECPrivateKey(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w (an EC key, as `cluster-keys ca` makes)", filepath.Join(dir, caKeyFile), err)
	}
	return cert, key, nil
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err)
	}
	return n
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return writeNew(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
}

// writeNew writes a file that must not exist yet.
func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
