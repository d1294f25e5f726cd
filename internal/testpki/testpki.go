// Package testpki issues throw-away certificates for tests: a CA, server
// certificates for loopback, and client certificates.
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// CA is a certificate authority whose files live in Dir.
type CA struct {
	Dir    string
	CAFile string
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
}

var serial atomic.Int64

// NewCA makes a CA in a fresh temporary directory.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	ca := &CA{Dir: t.TempDir()}
	ca.cert, ca.key = ca.issue(t, name, nil, nil, "ca", time.Now().Add(-time.Hour), nil)
	ca.CAFile = filepath.Join(ca.Dir, "ca.pem")
	return ca
}

// Issue makes a certificate for cn, valid for 127.0.0.1 and localhost as
// server and client, and returns its certificate and key file paths.
func (ca *CA) Issue(t testing.TB, cn string) (certFile, keyFile string) {
	t.Helper()
	return ca.IssueWith(t, cn, time.Now().Add(-time.Hour))
}

// IssueWith is Issue with the certificate's NotBefore and URI SANs given
// (a cluster node's identity).
func (ca *CA) IssueWith(t testing.TB, cn string, notBefore time.Time, uris ...*url.URL) (certFile, keyFile string) {
	t.Helper()
	name := "leaf-" + time.Now().Format("150405.000000000") + "-" + big.NewInt(serial.Add(1)).String()
	ca.issue(t, cn, ca.cert, ca.key, name, notBefore, uris)
	return filepath.Join(ca.Dir, name+".pem"), filepath.Join(ca.Dir, name+"-key.pem")
}

// TLSCertificate issues a certificate for cn and loads it.
func (ca *CA) TLSCertificate(t testing.TB, cn string) *tls.Certificate {
	t.Helper()
	certFile, keyFile := ca.Issue(t, cn)
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return &c
}

func (ca *CA) issue(t testing.TB, cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, name string, notBefore time.Time, uris []*url.URL) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    notBefore,
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		URIs:         uris,
	}
	signer, signerKey := tmpl, key
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage = x509.KeyUsageCertSign
	} else {
		signer, signerKey = parent, parentKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(file string, block *pem.Block) {
		if err := os.WriteFile(filepath.Join(ca.Dir, file), pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(name+".pem", &pem.Block{Type: "CERTIFICATE", Bytes: der})
	write(name+"-key.pem", &pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// Roots is a pool holding only this CA.
func (ca *CA) Roots() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	return pool
}
