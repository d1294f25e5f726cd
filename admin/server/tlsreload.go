package server

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
)

// ReloadTLS reads the node's cluster certificate, key and CA files again
// (the admin listener serves the cluster certificate); handshakes from now
// on use them, connections already open keep theirs. On an error the
// current ones stay.
func (a *Server) ReloadTLS() error {
	cfg, err := a.n.AdminTLS()
	if err != nil {
		return fmt.Errorf("admin TLS: %w", err)
	}
	clientCAs, err := loadClientCAs(a.cfg.ClientCAFile)
	if err != nil {
		return err
	}
	if clientCAs != nil {
		cfg.ClientCAs, cfg.ClientAuth = clientCAs, tls.VerifyClientCertIfGiven
	}
	// http.Server adds h2 to the listener's configuration only; the one a
	// handshake is given must offer it itself.
	cfg.NextProtos = []string{"h2", "http/1.1"}
	a.tls.Store(cfg)
	return nil
}

// listenerTLS hands each handshake the configuration last loaded.
func (a *Server) listenerTLS() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return a.tls.Load(), nil
		},
	}
}

// Certificate is the certificate new admin connections get.
func (a *Server) Certificate() *x509.Certificate {
	if c := a.tls.Load(); c != nil && len(c.Certificates) > 0 {
		return c.Certificates[0].Leaf
	}
	return nil
}
