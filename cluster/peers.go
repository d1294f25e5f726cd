package cluster

import (
	"context"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/xksproxy/xksproxy/internal/noderpc"
)

// Who may speak to this node, and how it knows. The certificate says which
// node a peer is (identity.go); the replicated state says which of its
// certificates are revoked; the Raft configuration says who the members are.

func (n *Node) revokedBefore(node string) time.Time {
	return n.fsm.State().NodeCertificatesRevokedBefore(node)
}

// configuration is the latest Raft configuration this node knows (raft
// reads it atomically: cheap enough for every connection and RPC).
func (n *Node) configuration() []raft.Server {
	r := n.raftForPeers.Load()
	if r == nil {
		return nil // raft is starting: not yet dialling, and the port not yet open
	}
	f := r.GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	return f.Configuration().Servers
}

func (n *Node) raftIDAt(addr string) (string, bool) {
	for _, s := range n.configuration() {
		if string(s.Address) == addr {
			return string(s.ID), true
		}
	}
	return "", false
}

// admitsMember reports whether node is a member. A node whose configuration
// is empty has not been admitted anywhere yet, and takes the leader that
// admits it (any node of the cluster, unrevoked). A node whose
// configuration does not list the peer may be the one that is behind: it
// was down while the peer joined, and must hear from the new leader to
// learn of it. So it asks the members it knows, and admits the peer if one
// of them lists it.
func (n *Node) admitsMember(node string) bool {
	servers := n.configuration()
	if len(servers) == 0 {
		return true
	}
	if slices.ContainsFunc(servers, func(s raft.Server) bool { return string(s.ID) == node }) {
		return true
	}
	return n.vouchedFor(node, servers)
}

// vouchTTL is how long the members' answer about a peer this node's
// configuration does not list is reused: a refused peer retries, and must
// not make this node ask every member each time.
const vouchTTL = 5 * time.Second

type vouch struct {
	member bool
	at     time.Time
}

func (n *Node) vouchedFor(node string, servers []raft.Server) bool {
	if v, ok := n.vouches.Load(node); ok && time.Since(v.(vouch).at) < vouchTTL {
		return v.(vouch).member
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	found := make(chan bool, len(servers))
	var wg sync.WaitGroup
	for _, s := range servers {
		if string(s.ID) == n.cfg.NodeID {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var theirs []noderpc.ConfigServer
			status, err := n.call(ctx, peer{id: string(s.ID), addr: string(s.Address)}, noderpc.Configuration, nil, nil, &theirs)
			if err == nil && status == http.StatusOK && slices.ContainsFunc(theirs, func(c noderpc.ConfigServer) bool { return c.ID == node }) {
				found <- true
			}
		}()
	}
	go func() { wg.Wait(); close(found) }()
	member := <-found
	cancel()
	n.vouches.Store(node, vouch{member: member, at: time.Now()})
	return member
}

func (n *Node) serveConfiguration(w http.ResponseWriter, _ *http.Request) {
	out := []noderpc.ConfigServer{}
	for _, s := range n.configuration() {
		out = append(out, noderpc.ConfigServer{ID: string(s.ID), Address: string(s.Address)})
	}
	noderpc.WriteJSON(w, http.StatusOK, out)
}

func (n *Node) refused(remote net.Addr, node string, proto byte, err error) {
	n.log.Warn().Str("remote", remote.String()).Str("peer", node).Str("protocol", string(proto)).Err(err).
		Msg("refused a cluster connection")
}

// peerKey carries an RPC's verified peer in its request's context.
type peerKey struct{}

func rpcPeer(r *http.Request) (peerIdentity, bool) {
	p, ok := r.Context().Value(peerKey{}).(peerIdentity)
	return p, ok
}

func connContext(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*trackedConn); ok {
		return context.WithValue(ctx, peerKey{}, tc.peer)
	}
	return ctx
}

// membersOnly lets through RPCs from members; join is the one RPC a node
// that is not yet a member may make, and only to join as itself.
func (n *Node) membersOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := rpcPeer(r)
		if !ok {
			http.Error(w, "no verified peer", http.StatusForbidden)
			return
		}
		if r.URL.Path == noderpc.Join.Path || n.admitsMember(p.node) {
			h.ServeHTTP(w, r)
			return
		}
		n.log.Warn().Str("remote", r.RemoteAddr).Str("peer", p.node).Str("path", r.URL.Path).Msg("refused a cluster RPC from a node that is not a member")
		http.Error(w, "node "+p.node+" is not a member of this cluster", http.StatusForbidden)
	})
}

// enforcePeers closes, every second, the connections of peers revoked or
// removed since they connected: a connection is checked when it opens, and
// Raft keeps its connections open for as long as they work.
func (n *Node) enforcePeers() {
	defer n.wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-tick.C:
		}
		n.mux.sweep(func(c *trackedConn) bool {
			if revocationError(c.peer, n.revokedBefore(c.peer.node)) != nil {
				return true
			}
			return c.inbound && c.proto == protoRaft && !n.admitsMember(c.peer.node)
		})
	}
}

// prove dials addr and checks that the certificate that answers there names
// node id: what it takes for a gossip member, a joining node or an
// operator's `cluster join` to become a voter at that address.
func (n *Node) prove(ctx context.Context, id, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := n.mux.dial(ctx, dialTarget{addr: addr, id: id}, protoProbe)
	if err != nil {
		return err
	}
	return c.Close()
}
