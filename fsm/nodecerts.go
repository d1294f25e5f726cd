package fsm

import (
	"maps"
	"slices"
	"time"
)

// RevokeNodeCertificates refuses, from now on, every cluster certificate
// naming NodeID that was issued before At (its NotBefore is earlier). The
// leader proposes it when an operator removes a node, stamped with its own
// clock, so that the removed node's certificate — and every copy of it, and
// every other certificate ever issued for that id — stops working at the
// Raft transport and the node RPCs, while a certificate issued after the
// removal can be admitted again through join.
//
// Issue time rather than a list of fingerprints or serials: the cluster only
// knows the certificates it has seen, and a leaked one need not be among
// them; "everything issued for this id before the removal" covers them all
// in one entry per node, and re-admission needs no second command. A later
// revocation of the same id moves the line forward; it never moves back.
type RevokeNodeCertificates struct {
	At     time.Time `json:"at"`
	NodeID string    `json:"nodeId"`
}

func (RevokeNodeCertificates) Type() CommandType { return CmdRevokeNodeCertificates }

func (c RevokeNodeCertificates) Validate(*State) error {
	if err := requireTime(c.At); err != nil {
		return err
	}
	return validNodeID(c.NodeID)
}

func (c RevokeNodeCertificates) applyTo(t *txn) {
	if c.At.After(t.next.revokedNodes[c.NodeID]) {
		t.next.revokedNodes = maps.Clone(t.next.revokedNodes)
		if t.next.revokedNodes == nil {
			t.next.revokedNodes = map[string]time.Time{}
		}
		t.next.revokedNodes[c.NodeID] = c.At
	}
}

// maxNodeID bounds a node id: it travels in certificates and gossip names.
const maxNodeID = 128

func validNodeID(id string) error {
	if id == "" || len(id) > maxNodeID {
		return invalid("a node id is 1 to %d characters", maxNodeID)
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return invalid("node id %q: only letters, digits, '-', '_' and '.'", id)
		}
	}
	return nil
}

// NodeCertificatesRevokedBefore is the time before which every certificate
// naming node id was issued is refused, or the zero time.
func (s *State) NodeCertificatesRevokedBefore(id string) time.Time { return s.revokedNodes[id] }

// NodeRevocation is one entry of the replicated deny-list of node
// certificates.
type NodeRevocation struct {
	NodeID string    `json:"nodeId"`
	Before time.Time `json:"before"`
}

// NodeRevocations lists the deny-list by node id.
func (s *State) NodeRevocations() []NodeRevocation {
	out := make([]NodeRevocation, 0, len(s.revokedNodes))
	for _, id := range slices.Sorted(maps.Keys(s.revokedNodes)) {
		out = append(out, NodeRevocation{NodeID: id, Before: s.revokedNodes[id]})
	}
	return out
}

func (s *State) checkNodeRevocations() error {
	if len(s.revokedNodes) > 0 && s.CommandSet() < commandSetNodeIdentity {
		return invalid("node certificate revocations in a state at command set %d (they need %d)", s.CommandSet(), commandSetNodeIdentity)
	}
	for _, r := range s.NodeRevocations() {
		if err := validNodeID(r.NodeID); err != nil {
			return err
		}
		if r.Before.IsZero() {
			return invalid("the revocation of node %s carries no time", r.NodeID)
		}
	}
	return nil
}
