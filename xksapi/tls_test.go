package xksapi_test

import (
	"crypto/tls"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/internal/testpki"
	"github.com/xksproxy/xksproxy/xksclient"
)

const kmsSubject = "cks.kms.us-east-1.amazonaws.com"

func TestMutualTLS(t *testing.T) {
	f := newFixture(t, fixtureOptions{mtlsSubject: kmsSubject})
	good := f.certs.TLSCertificate(t, kmsSubject)
	c := f.client("a", f.credsA[0], good)
	if _, err := c.Metadata("k1", metadata("DescribeKey")); err != nil {
		t.Fatalf("AWS KMS's certificate refused: %v", err)
	}
	refused := map[string]*tls.Certificate{
		"no certificate":      nil,
		"wrong subject":       f.certs.TLSCertificate(t, "cks.kms.us-west-2.amazonaws.com"),
		"untrusted issuer CA": testpki.NewCA(t, "foreign CA").TLSCertificate(t, kmsSubject),
	}
	for name, cert := range refused {
		_, err := f.client("a", f.credsA[0], cert).Metadata("k1", metadata("DescribeKey"))
		if err == nil {
			t.Errorf("%s: accepted", name)
		} else if _, isXKS := err.(*xksclient.Error); isXKS {
			t.Errorf("%s: got past the handshake: %v", name, err)
		}
	}
}

func TestTLSVersionsAndSuites(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	dial := func(cfg *tls.Config) error {
		cfg.ServerName = "localhost"
		conn, err := tls.Dial("tcp", f.addr, cfg)
		if err == nil {
			conn.Close()
		}
		return err
	}
	roots := f.certs.Roots()
	if err := dial(&tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13}); err != nil {
		t.Fatalf("TLS 1.3: %v", err)
	}
	if err := dial(&tls.Config{RootCAs: roots, MaxVersion: tls.VersionTLS12,
		CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384}}); err != nil {
		t.Fatalf("TLS 1.2 with ECDHE-ECDSA-AES256-GCM-SHA384: %v", err)
	}
	if err := dial(&tls.Config{RootCAs: roots, MaxVersion: tls.VersionTLS11, MinVersion: tls.VersionTLS10}); err == nil {
		t.Fatal("TLS 1.1 accepted")
	}
	if err := dial(&tls.Config{RootCAs: roots, MaxVersion: tls.VersionTLS12,
		CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}}); err == nil {
		t.Fatal("a CBC suite was accepted")
	}
}

// A failed handshake (here plain HTTP on the TLS port) is logged once, as a
// TLS failure, not as a malformed request, and the node keeps serving.
func TestFailedHandshakeIsLoggedOnce(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	resp, err := http.Get("http://" + f.addr + "/ping")
	if err == nil {
		resp.Body.Close()
	}
	waitFor(t, "the handshake failure in the log", 5*time.Second, func() bool { return f.logs.Line("TLS handshake failed") != "" })
	time.Sleep(100 * time.Millisecond)
	logs := f.logs.String()
	if n := strings.Count(logs, "TLS handshake failed"); n != 1 || strings.Contains(logs, "malformed") || strings.Contains(logs, "error when serving connection") {
		t.Fatalf("%d handshake lines; logs:\n%s", n, logs)
	}
	if err := f.clientA().RoundTrip("k1", metadata("Encrypt"), []byte("after a scanner"), nil); err != nil {
		t.Fatal(err)
	}
}
