package cluster

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// A node's identity is in its cluster certificate, as a URI SAN:
//
//	xksproxy://CLUSTER-ID/node/NODE-ID
//
// CLUSTER-ID is chosen once, when the cluster CA is made (`xksproxy
// cluster-keys ca` writes a random one into the CA certificate), and is the
// same in every node certificate the CA issues for that cluster; a node takes
// it from its own certificate and refuses peers whose certificate names
// another, so that one CA may serve several clusters without a node of one
// passing in another. NODE-ID is the node's node_id (the Raft server id and
// gossip name). The chain to the cluster CA says "a node of ours"; the URI
// says which one, and every cluster connection checks it (transport.go).

// IdentityScheme is the URI scheme of node identities.
const IdentityScheme = "xksproxy"

// NodeIdentityURI is the URI SAN that names nodeID in clusterID.
func NodeIdentityURI(clusterID, nodeID string) *url.URL {
	return &url.URL{Scheme: IdentityScheme, Host: clusterID, Path: "/node/" + nodeID}
}

// peerIdentity is who a certificate says it is.
type peerIdentity struct {
	cluster, node string
	// issued is the certificate's NotBefore: revocations refuse what was
	// issued before them.
	issued time.Time
}

// identityOf reads the one node identity of cert.
func identityOf(cert *x509.Certificate) (peerIdentity, error) {
	var found []peerIdentity
	for _, u := range cert.URIs {
		if u.Scheme != IdentityScheme {
			continue
		}
		node, ok := strings.CutPrefix(u.Path, "/node/")
		if !ok || u.Host == "" || node == "" || strings.Contains(node, "/") {
			return peerIdentity{}, fmt.Errorf("certificate %q: %s is not a node identity (%s://CLUSTER-ID/node/NODE-ID)", cert.Subject.CommonName, u, IdentityScheme)
		}
		found = append(found, peerIdentity{cluster: u.Host, node: node, issued: cert.NotBefore})
	}
	switch len(found) {
	case 0:
		return peerIdentity{}, fmt.Errorf("certificate %q names no node (no %s://CLUSTER-ID/node/NODE-ID URI SAN; issue node certificates with `xksproxy cluster-keys issue`)", cert.Subject.CommonName, IdentityScheme)
	case 1:
		return found[0], nil
	}
	return peerIdentity{}, fmt.Errorf("certificate %q names %d nodes; a node certificate names one", cert.Subject.CommonName, len(found))
}

// errRevoked refuses a certificate issued before its node's revocation.
var errRevoked = errors.New("certificate revoked")

// revocationError says why a peer's certificate is refused, or nil.
func revocationError(id peerIdentity, revokedBefore time.Time) error {
	if !revokedBefore.IsZero() && id.issued.Before(revokedBefore) {
		return fmt.Errorf("%w: node %s's certificates issued before %s were revoked when it was removed (this one: %s); issue it a new one and join it again",
			errRevoked, id.node, revokedBefore.UTC().Format(time.RFC3339), id.issued.UTC().Format(time.RFC3339))
	}
	return nil
}
