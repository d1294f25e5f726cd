package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"time"

	"github.com/xksproxy/xksproxy/fsm"
)

// The node API that the operator API (package admin) is built on: it reads
// the state, commits commands, waits for indexes and asks the other nodes.
// What a change means to an operator — which command, which confirmation —
// is admin's; what it takes to make it happen in this cluster is here.

// MaxBackupBytes bounds a backup file (a restored snapshot).
const MaxBackupBytes = maxSnapshotBytes

// State is this node's replicated state as last applied.
func (n *Node) State() *fsm.State { return n.fsm.State() }

// Now is the leader's clock for scheduled deletions (Config.Now).
func (n *Node) Now() time.Time { return n.cfg.Now() }

// SyncWithLeader waits until this node has applied everything the leader
// had applied when asked, so that a read through any node sees every change
// committed before it.
func (n *Node) SyncWithLeader(ctx context.Context) error { return n.syncWithLeader(ctx) }

// WaitViewIndex waits until this node's data plane serves index or later;
// false when ctx ends first.
func (n *Node) WaitViewIndex(ctx context.Context, index uint64) bool {
	return n.viewed.Wait(ctx, index)
}

// Leader names the node this one takes for the leader and its cluster
// address; both "" during an election.
func (n *Node) Leader() (id, clusterAddr string) {
	addr, sid := n.raft.LeaderWithID()
	return string(sid), string(addr)
}

// SealCredential seals a new SigV4 secret under the cluster seal key, bound
// to its key store and access key id, for a command to carry.
func (n *Node) SealCredential(keyStore, accessKeyID string, secret []byte, expires time.Time) (fsm.StoredCredential, error) {
	return n.sealCredential(keyStore, accessKeyID, secret, expires)
}

// FirstVersion is a new key's version 1: material generated in this node's
// HSM and wrapped under the cluster KEK (replicated mode), or adoptLabel
// (shared mode).
func (n *Node) FirstVersion(mode fsm.KeyMode, keyStore, keyID, adoptLabel string) (fsm.KeyVersion, error) {
	return n.firstVersion(mode, keyStore, keyID, adoptLabel)
}

// NewVersion is version number of a replicated key: material generated in
// this node's HSM and wrapped under the cluster KEK.
func (n *Node) NewVersion(keyStore, keyID string, number uint32) (fsm.KeyVersion, error) {
	wrapped, mechanism, err := n.hsm.GenerateWrappedKey()
	if err != nil {
		return fsm.KeyVersion{}, err
	}
	return fsm.KeyVersion{Number: number, HSMLabel: versionLabel(keyStore, keyID, number),
		WrappedMaterial: wrapped, WrapMechanism: mechanism}, nil
}

// NodesLacking names the reachable voters whose HSM does not hold label
// (or cannot tell).
func (n *Node) NodesLacking(ctx context.Context, label string) []string {
	return n.nodesLacking(ctx, label)
}

// AdminTLS is the operator API's TLS configuration: this node's cluster
// certificate, and no client certificate: a node certificate is not an
// operator. The admin server adds its own client CA, which issues
// operator certificates.
func (n *Node) AdminTLS() (*tls.Config, error) {
	ct, err := n.cfg.TLS.load(n.cfg.NodeID)
	if err != nil {
		return nil, err
	}
	cfg := ct.server.Clone()
	cfg.ClientAuth, cfg.ClientCAs = tls.NoClientCert, nil
	cfg.MinVersion = tls.VersionTLS12
	return cfg, nil
}

// NodeID is this node's id.
func (n *Node) NodeID() string { return n.cfg.NodeID }

// listenerFailed reports a listener that stopped serving on its own, so that
// the process does not run on without its cluster port.
func (n *Node) listenerFailed(what string, err error) {
	if err == nil || errors.Is(err, http.ErrServerClosed) {
		return
	}
	select {
	case <-n.stop:
		return // closing: the listener was closed under it
	default:
	}
	n.log.Error().Err(err).Str("listener", what).Msg("listener failed")
	if n.cfg.OnListenerError != nil {
		n.cfg.OnListenerError(errors.Join(errors.New(what+" listener"), err))
	}
}
