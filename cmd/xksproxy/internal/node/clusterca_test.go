package node

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestClusterCAIssuesCertificatesThatNameTheirNode(t *testing.T) {
	dir := t.TempDir()
	caDir := filepath.Join(dir, "ca")
	clusterID, err := CreateClusterCA(caDir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CreateClusterCA(caDir); err == nil {
		t.Fatal("a second CA overwrote the first")
	}
	// A new CA for the same cluster (rotation) keeps its id.
	next := filepath.Join(dir, "next-ca")
	os.MkdirAll(next, 0o700)
	b, _ := os.ReadFile(filepath.Join(caDir, clusterIDFile))
	os.WriteFile(filepath.Join(next, clusterIDFile), b, 0o644)
	if id, err := CreateClusterCA(next); err != nil || id != clusterID {
		t.Fatalf("rotated CA: cluster %q (%v), want %q", id, err, clusterID)
	}
	if info, err := os.Stat(filepath.Join(caDir, caKeyFile)); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("CA key: %v %v", info, err)
	}
	req := NodeCertificate{NodeID: "xks-site-b", IPs: []net.IP{net.IPv4(10, 2, 0, 11)},
		CertPath: filepath.Join(dir, "node.pem"), KeyPath: filepath.Join(dir, "node-key.pem")}
	identity, err := IssueNodeCertificate(caDir, req)
	if err != nil {
		t.Fatal(err)
	}
	if want := "xksproxy://" + clusterID + "/node/xks-site-b"; identity.String() != want {
		t.Fatalf("identity %s, want %s", identity, want)
	}
	if !CertificateNames(req.CertPath, caDir, "xks-site-b") || CertificateNames(req.CertPath, caDir, "xks-site-a") {
		t.Fatal("CertificateNames does not tell the node the certificate names")
	}
	b, _ = os.ReadFile(req.CertPath)
	block, _ := pem.Decode(b)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(filepath.Join(caDir, caCertFile))
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("the node certificate does not chain to the CA: %v", err)
	}
	if _, err := IssueNodeCertificate(caDir, req); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("issuing over an existing certificate: %v", err)
	}
	req.NodeID, req.CertPath, req.KeyPath = "a/b", filepath.Join(dir, "x.pem"), filepath.Join(dir, "x-key.pem")
	if _, err := IssueNodeCertificate(caDir, req); err == nil {
		t.Fatal("a node id with a slash was issued")
	}
}
