package faults

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// pkiCA issues the certificates an operator would: the cluster CA's
// per-site node certificates (CN = node id, SAN = the site's address and
// 127.0.0.1 for the admin API, and the node's identity
// xksproxy://CLUSTER-ID/node/NODE-ID, as `cluster-keys issue` writes it),
// the XKS listener's server certificates, and AWS KMS's mTLS client
// certificate from a stand-in for AWS's CA.
type pkiCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newPKICA(t testing.TB, name string) *pkiCA {
	t.Helper()
	ca := &pkiCA{}
	ca.cert, ca.key, ca.pem = issueCert(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: name}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, nil, nil)
	return ca
}

func (ca *pkiCA) writeCA(t testing.TB, path string) {
	t.Helper()
	writeFile(t, path, ca.pem)
}

// labClusterID is the cluster id in the lab's node certificates.
const labClusterID = "faults-lab"

// issueNode writes node id's cluster certificate and key, valid for ips.
func (ca *pkiCA) issueNode(t testing.TB, certPath, keyPath, id string, ips []string) {
	t.Helper()
	ca.issueWith(t, certPath, keyPath, id, ips, nil, &url.URL{Scheme: "xksproxy", Host: labClusterID, Path: "/node/" + id})
}

// issue writes a leaf certificate and key for cn, valid for ips and dns.
func (ca *pkiCA) issue(t testing.TB, certPath, keyPath, cn string, ips []string, dns ...string) {
	t.Helper()
	ca.issueWith(t, certPath, keyPath, cn, ips, dns)
}

func (ca *pkiCA) issueWith(t testing.TB, certPath, keyPath, cn string, ips, dns []string, uris ...*url.URL) {
	t.Helper()
	tmpl := &x509.Certificate{
		URIs:        uris,
		Subject:     pkix.Name{CommonName: cn},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:    dns,
	}
	for _, ip := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	_, key, certPEM := issueCert(t, tmpl, ca.cert, ca.key)
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, certPath, certPEM)
	writeFile(t, keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
}

var certSerial int64

func issueCert(t testing.TB, tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	certSerial++
	tmpl.SerialNumber = big.NewInt(certSerial)
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(48*time.Hour)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// writeFile writes a file mode 0600 (serve warns about secrets others can
// read), making its directory.
func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
