package cluster

import (
	"context"
	"errors"
	"sort"
	"time"

	"github.com/hashicorp/raft"

	"github.com/xksproxy/xksproxy/fsm"
	"github.com/xksproxy/xksproxy/hsm"
)

// The fleet: gossip says who is up and what each node's HSM can serve;
// only the leader turns that into Raft membership. Gossip is advisory: the
// keyring admits a process to it, and anyone holding the keyring can say
// anything there. So a member counts (in the fleet, and as a voter) only
// once this node has dialled the cluster address it gossips and seen a
// cluster certificate naming it there (proveMembers). A proven member is
// added as a voter, one that leaves on purpose is removed, and one that dies
// stays a voter (a returning node just catches up) unless the operator
// removes it or DeadTimeout passes — the price of keeping it is that the
// quorum counts it.

// localMeta is what this node gossips about itself.
func (n *Node) localMeta() NodeMeta {
	h := n.hsm.Health()
	model, _, _ := n.hsm.TokenInfo()
	labels := n.readyLabels()
	status := h.Status
	if status == hsm.StatusActive && len(n.KeysMissing()) > 0 {
		// It serves, but not every key: what GetHealthStatus says of it.
		status = hsm.StatusDegraded
	}
	return NodeMeta{
		ID:           n.cfg.NodeID,
		APIAddr:      n.cfg.APIAddr,
		ClusterAddr:  n.ClusterAddr(),
		HSMStatus:    status.String(),
		HSMModel:     model,
		AppliedIndex: n.fsm.AppliedIndex(),
		Ready:        n.ServingError() == nil,
		KeysDigest:   KeysDigestOf(labels),
		KeysReady:    len(labels),
		Version:      n.cfg.Version,
		CommandSet:   fsm.CommandSet,
	}
}

func (n *Node) readyLabels() []string {
	var labels []string
	n.presentLabels.Range(func(k, _ any) bool {
		labels = append(labels, k.(string))
		return true
	})
	sort.Strings(labels)
	return labels
}

// FleetMember is one node of the fleet as GetHealthStatus reports it.
type FleetMember struct {
	ID, APIAddr, HSMModel, HSMStatus string
	// Status is the member as it reports itself: UNAVAILABLE while it
	// cannot serve (catching up, stale), DEGRADED when key material is
	// missing from its HSM, else its HSM's status. A node that refuses crypto is not ACTIVE, however healthy
	// its HSM.
	Status string
}

// Fleet lists the live nodes other than this one (from gossip, proven) and
// the fleet size; without gossip the fleet is this node alone.
func (n *Node) Fleet() (size int, others []FleetMember) {
	if n.gossip == nil {
		return 1, nil
	}
	for _, m := range n.provenAlive() {
		if m.ID != n.cfg.NodeID {
			status := m.HSMStatus
			if !m.Ready {
				status = hsm.StatusUnavailable.String()
			}
			others = append(others, FleetMember{ID: m.ID, APIAddr: m.APIAddr, HSMModel: m.HSMModel, HSMStatus: m.HSMStatus, Status: status})
		}
	}
	return len(others) + 1, others
}

// Members is the gossip view of the fleet, or nil without gossip.
func (n *Node) Members() []Member {
	if n.gossip == nil {
		return nil
	}
	return n.gossip.Members()
}

// removedGrace is how long a leader keeps from re-adding a node an operator
// removed while that node may still be gossiping (it leaves once told of
// its removal; the grace covers a node that could not be told).
const removedGrace = 10 * time.Minute

// watchFleet refreshes this node's gossip and, on the leader, reconciles
// gossip membership into Raft voters.
func (n *Node) watchFleet() {
	defer n.wg.Done()
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-n.gossip.Events():
		case <-tick.C:
			n.gossip.Refresh()
		}
		n.proveMembers()
		if n.IsLeader() {
			n.reconcileVoters()
		}
	}
}

func (n *Node) reconcileVoters() {
	servers, err := n.Servers()
	if err != nil {
		return
	}
	voters := map[string]raft.Server{}
	for _, s := range servers {
		voters[string(s.ID)] = s
	}
	for _, m := range n.gossip.Members() {
		_, isVoter := voters[m.ID]
		switch {
		case m.State == MemberAlive && n.proven(m) && (!isVoter || string(voters[m.ID].Address) != m.ClusterAddr) && !n.recentlyRemoved(m.ID):
			if err := n.addVoterLocal(m.ID, m.ClusterAddr); err != nil {
				n.log.Warn().Err(err).Str("node", m.ID).Msg("could not add a gossip member as a voter")
			}
		case isVoter && m.ID != n.cfg.NodeID && (m.State == MemberLeft ||
			m.State == MemberDead && n.cfg.DeadTimeout > 0 && time.Since(m.Updated) > n.cfg.DeadTimeout):
			if err := n.removeServerLocal(m.ID, false); err != nil {
				n.log.Warn().Err(err).Str("node", m.ID).Msg("could not remove a departed member")
			} else {
				n.log.Warn().Str("node", m.ID).Str("state", m.State).Msg("removed a departed member from the voters")
			}
		}
	}
}

// bootstrapExpect forms a new cluster once BootstrapExpect members are alive
// in the gossip: the member with the lowest id bootstraps with all of them
// as voters, so that exactly one configuration is ever proposed.
func (n *Node) bootstrapExpect() {
	defer n.wg.Done()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-tick.C:
		}
		if addr, _ := n.raft.LeaderWithID(); addr != "" || n.isMember() && n.raft.AppliedIndex() > 0 {
			return
		}
		alive := n.provenAlive()
		if len(alive) < n.cfg.BootstrapExpect {
			continue
		}
		sort.Slice(alive, func(i, j int) bool { return alive[i].ID < alive[j].ID })
		if alive[0].ID != n.cfg.NodeID {
			continue
		}
		var cfg raft.Configuration
		for _, m := range alive[:n.cfg.BootstrapExpect] {
			cfg.Servers = append(cfg.Servers, raft.Server{ID: raft.ServerID(m.ID), Address: raft.ServerAddress(m.ClusterAddr), Suffrage: raft.Voter})
		}
		err := n.raft.BootstrapCluster(cfg).Error()
		if err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			n.log.Error().Err(err).Msg("bootstrap-expect failed")
			continue
		}
		n.log.Info().Int("voters", len(cfg.Servers)).Msg("bootstrapped the cluster from the gossip fleet")
		return
	}
}

func (n *Node) recentlyRemoved(id string) bool {
	at, ok := n.removedAt.Load(id)
	return ok && time.Since(at.(time.Time)) < removedGrace
}

// proofTTL is how long a member's proof stands: a member that gives up its
// address to another process stops counting within it. It is made again
// from half of that on, so that one slow or failed dial (a busy machine, a
// brief cut) does not take a live member out of the fleet.
const proofTTL = 30 * time.Second

// proof is where a member's certificate answered, and when.
type proof struct {
	addr string
	at   time.Time
}

// proven reports whether m's certificate has answered at the cluster address
// it gossips (this node itself always counts).
func (n *Node) proven(m Member) bool {
	if m.ID == n.cfg.NodeID {
		return true
	}
	p, ok := n.proofs.Load(m.ID)
	return ok && m.ClusterAddr != "" && p.(proof).addr == m.ClusterAddr && time.Since(p.(proof).at) < proofTTL
}

// provenAlive is the gossip's live members that are proven, this node
// included; sorted by ID.
func (n *Node) provenAlive() []Member {
	var out []Member
	for _, m := range n.gossip.Alive() {
		if n.proven(m) {
			out = append(out, m)
		}
	}
	return out
}

// proveMembers starts a proof for every live member not proven at the
// address it gossips now, or proven more than half proofTTL ago, one at a
// time per member. A member that claims another node's address, or one
// where nothing answers, never counts; one that stops answering stops
// counting when its proof runs out.
func (n *Node) proveMembers() {
	for _, m := range n.gossip.Alive() {
		if m.ID == n.cfg.NodeID || m.ClusterAddr == "" {
			continue
		}
		if p, ok := n.proofs.Load(m.ID); ok && p.(proof).addr == m.ClusterAddr && time.Since(p.(proof).at) < proofTTL/2 {
			continue
		}
		if _, busy := n.proving.LoadOrStore(m.ID, struct{}{}); busy {
			continue
		}
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			defer n.proving.Delete(m.ID)
			if err := n.prove(context.Background(), m.ID, m.ClusterAddr); err != nil {
				ev := n.log.Debug()
				if n.proven(m) {
					ev = n.log.Warn()
				}
				ev.Str("node", m.ID).Str("address", m.ClusterAddr).Err(err).Msg("a gossip member did not prove its identity at its cluster address")
				return
			}
			n.proofs.Store(m.ID, proof{addr: m.ClusterAddr, at: time.Now()})
		}()
	}
}
