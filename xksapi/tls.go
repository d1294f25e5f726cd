package xksapi

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// TLSConfig names the files of the XKS listener's TLS and, optionally, the
// mutual TLS that pins AWS KMS's client certificate.
type TLSConfig struct {
	CertFile string
	KeyFile  string
	// ClientCAFile turns on mutual TLS: only certificates issued by these CAs
	// are accepted.
	ClientCAFile string
	// ClientSubjectCN must then equal the client certificate's subject common
	// name (AWS KMS presents cks.kms.<region>.amazonaws.com).
	ClientSubjectCN string
}

// Build makes the listener's tls.Config: TLS 1.2 or 1.3 only, and for 1.2
// only the AES-256-GCM and ChaCha20 ECDHE suites (the specification needs one
// of them; the weaker ones are left out). TLS 1.3 suites are all strong and
// not configurable in Go.
func (c TLSConfig) Build() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("loading TLS certificate: %w", err)
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
		NextProtos: []string{"http/1.1"},
	}
	if c.ClientCAFile == "" {
		if c.ClientSubjectCN != "" {
			return nil, errors.New("mTLS client subject is set but no client CA file")
		}
		return cfg, nil
	}
	if c.ClientSubjectCN == "" {
		return nil, errors.New("mTLS needs both the client CA file and the client subject common name")
	}
	pem, err := os.ReadFile(c.ClientCAFile)
	if err != nil {
		return nil, fmt.Errorf("reading mTLS client CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("mTLS client CA file %s holds no PEM certificate", c.ClientCAFile)
	}
	cfg.ClientAuth = tls.RequireAndVerifyClientCert
	cfg.ClientCAs = pool
	want := c.ClientSubjectCN
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("no client certificate")
		}
		if got := cs.PeerCertificates[0].Subject.CommonName; got != want {
			return fmt.Errorf("client certificate subject CN %q is not the configured %q", got, want)
		}
		return nil
	}
	return cfg, nil
}
