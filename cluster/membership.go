package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/xksproxy/xksproxy/fsm"
	"github.com/xksproxy/xksproxy/internal/noderpc"
)

// join asks the configured members to admit this node until one does. It
// is idempotent on the leader's side, so the same command line serves a
// first start, a restart and a scale-up.
func (n *Node) join() {
	defer n.wg.Done()
	req := noderpc.JoinRequest{ID: n.cfg.NodeID, Address: n.ClusterAddr()}
	backoff := 200 * time.Millisecond
	for {
		if stored, ok := n.storedAddress(); ok && stored == n.ClusterAddr() {
			return
		}
		for _, addr := range n.cfg.Join {
			if addr == n.ClusterAddr() {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			var res noderpc.ApplyResponse
			status, err := n.call(ctx, peer{addr: addr}, noderpc.Join, nil, req, &res)
			cancel()
			if err == nil && status == 200 {
				n.log.Info().Str("via", addr).Msg("joined the cluster")
				return
			}
			n.log.Warn().Str("via", addr).Int("status", status).Str("error", errString(err, res.Error)).Msg("join attempt failed")
		}
		select {
		case <-n.stop:
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func errString(err error, msg string) string {
	if err != nil {
		return err.Error()
	}
	return msg
}

// storedAddress is the address the latest configuration this node knows
// lists it at; ok is false when it does not list it.
func (n *Node) storedAddress() (addr string, ok bool) {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return "", false
	}
	for _, s := range f.Configuration().Servers {
		if s.ID == raft.ServerID(n.cfg.NodeID) {
			return string(s.Address), true
		}
	}
	return "", false
}

// isMember reports whether the latest configuration this node knows lists it.
func (n *Node) isMember() bool {
	_, ok := n.storedAddress()
	return ok
}

// addressMismatch says, when the stored configuration lists this node at
// an address other than the one it now advertises, what that means: peers
// keep dialling the old address until the cluster updates it.
func (n *Node) addressMismatch() string {
	stored, ok := n.storedAddress()
	if !ok || stored == n.ClusterAddr() {
		return ""
	}
	return fmt.Sprintf("the Raft configuration lists this node at %s but it now advertises %s: peers dial the old address until a leader updates it (through join)", stored, n.ClusterAddr())
}

// warnIfReaddressed logs, at start, a node that came back at a new address,
// and what will fix it: with join configured, the leader replaces the entry;
// without, nothing will.
func (n *Node) warnIfReaddressed() {
	msg := n.addressMismatch()
	if msg == "" {
		return
	}
	ev := n.log.Error().Str("node", n.cfg.NodeID)
	if len(n.cfg.Join) == 0 {
		ev.Msg(msg + "; this node has no join addresses, so set join to the other members' cluster addresses and restart it")
		return
	}
	ev.Strs("join", n.cfg.Join).Msg(msg + "; asking the members in join to update it")
}

// addVoterLocal admits a node; on a follower it forwards to the leader.
// The same id at the same address is a no-op; the same id at a new address
// replaces the old entry. Before it changes the configuration, the leader
// dials addr and sees a certificate that names id there: whoever asks
// (the node itself, an operator, gossip), nothing becomes a voter at an
// address where another node answers, and no node takes the address of
// another voter.
func (n *Node) addVoterLocal(id, addr string) error {
	if id == "" || addr == "" {
		return errors.New("join needs a node id and address")
	}
	if !n.IsLeader() {
		ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ApplyTimeout)
		defer cancel()
		_, err := n.forward(ctx, noderpc.Join, nil, noderpc.JoinRequest{ID: id, Address: addr})
		return err
	}
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	readdressed := false
	for _, s := range f.Configuration().Servers {
		switch {
		case s.ID == raft.ServerID(id) && s.Address == raft.ServerAddress(addr):
			return nil
		case s.Address == raft.ServerAddress(addr):
			return &RuleError{fmt.Errorf("%s is voter %s's address: node %s cannot take it (remove %s first if it is gone)", addr, s.ID, id, s.ID)}
		case s.ID == raft.ServerID(id):
			readdressed = true
		}
	}
	if err := n.prove(context.Background(), id, addr); err != nil {
		return fmt.Errorf("node %s is not admitted at %s: %w", id, addr, err)
	}
	if readdressed {
		if err := n.raft.RemoveServer(raft.ServerID(id), 0, 0).Error(); err != nil {
			return fmt.Errorf("replacing %s: %w", id, err)
		}
	}
	n.removedAt.Delete(id)
	if err := n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, 0).Error(); err != nil {
		return err
	}
	n.log.Info().Str("node", id).Str("address", addr).Msg("added a voter")
	return nil
}

// removeServerLocal removes a node from the voters; forwarded when not
// leader. With revoke (an operator's removal), every certificate issued for
// the node until now is revoked first, so that neither the removed node nor
// anyone holding a copy of its key can act as it again; the node comes
// back only with a certificate issued after this. A voter dead past
// DeadTimeout is removed without: it may return and join again as it is.
func (n *Node) removeServerLocal(id string, revoke bool) error {
	if !n.IsLeader() {
		if !revoke {
			return errNotLeader
		}
		ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ApplyTimeout)
		defer cancel()
		_, err := n.forward(ctx, noderpc.Remove, nil, noderpc.JoinRequest{ID: id})
		return err
	}
	if revoke {
		if err := n.revokeCertificates(id); err != nil {
			return err
		}
	}
	var addr raft.ServerAddress
	if servers, err := n.Servers(); err == nil {
		for _, s := range servers {
			if s.ID == raft.ServerID(id) {
				addr = s.Address
			}
		}
	}
	n.removedAt.Store(id, time.Now())
	if err := n.raft.RemoveServer(raft.ServerID(id), 0, 0).Error(); err != nil {
		return err
	}
	n.log.Info().Str("node", id).Msg("removed a server")
	// A removed follower never hears of it from Raft (the leader just stops
	// replicating to it), so tell it: it leaves the fleet and stops serving.
	if addr != "" && id != n.cfg.NodeID {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		n.call(ctx, peer{id: id, addr: string(addr), allowRevoked: true}, noderpc.Removed, nil, noderpc.JoinRequest{ID: id}, nil)
		cancel()
	}
	return nil
}

// revokeCertificates puts id on the replicated deny-list. A cluster still
// at an older command set (a rolling upgrade under way) cannot take the
// entry: the removal goes on without it, and says so.
func (n *Node) revokeCertificates(id string) error {
	b, err := fsm.Encode(fsm.RevokeNodeCertificates{At: n.cfg.Now(), NodeID: id})
	if err != nil {
		return err
	}
	_, err = n.applyLocal(b)
	var old *fsm.CommandSetError
	if errors.As(err, &old) {
		n.log.Warn().Str("node", id).Err(err).Msg("removing the node without revoking its certificate: finish the upgrade, then remove it again to revoke it")
		return nil
	}
	if err != nil {
		return fmt.Errorf("revoking node %s's certificates: %w", id, err)
	}
	n.vouches.Delete(id)
	n.log.Warn().Str("node", id).Msg("revoked every certificate issued for the node until now")
	return nil
}

// Join admits a node (operator `cluster join`).
func (n *Node) Join(id, addr string) error { return n.addVoterLocal(id, addr) }

// Remove removes a node (operator `cluster remove`).
func (n *Node) Remove(id string) error { return n.removeServerLocal(id, true) }

// Servers lists the voters of the latest configuration.
func (n *Node) Servers() ([]raft.Server, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	return f.Configuration().Servers, nil
}
