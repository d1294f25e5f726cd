package cluster

import (
	"crypto/rand"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/admin"
	"github.com/xksproxy/xksproxy/xksclient"
)

// newGossipCluster forms a cluster the way an operator would with gossip:
// every node joins node 1's gossip address, nobody is told to bootstrap, and
// the cluster forms once three members see each other.
func newGossipCluster(t *testing.T, size int) *testCluster {
	return newGossipClusterWith(t, size, 0)
}

func newGossipClusterWith(t *testing.T, size int, deadTimeout time.Duration) *testCluster {
	t.Helper()
	key := make([]byte, 32)
	rand.Read(key)
	c := &testCluster{gossipKey: key, expect: size, deadTimeout: deadTimeout}
	c.init(t)
	for i := range size {
		c.addNode(tokenLabels[i], false, true)
	}
	c.waitFor("the gossip fleet to form a ready cluster", 30*time.Second, func() bool {
		l := c.leader()
		if l == nil {
			return false
		}
		servers, err := l.node.Servers()
		if err != nil || len(servers) != size {
			return false
		}
		for _, n := range c.nodes {
			if n.node.ServingError() != nil || n.client().RoundTrip(demoKey, md("Encrypt"), []byte("x"), nil) != nil {
				return false
			}
		}
		return true
	})
	return c
}

func health(t *testing.T, n *testNode) *xksclient.HealthResponse {
	t.Helper()
	h, err := n.client().Health(xksclient.RequestMetadata{KMSRequestID: "h", KMSOperation: "KmsHealthCheck"})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestGossipFormsTheClusterAndTracksTheFleet(t *testing.T) {
	c := newGossipCluster(t, 3)
	// A node gossips its readiness every couple of seconds, so the others
	// may still see it as it was while it caught up.
	c.waitFor("every fleet entry to be ACTIVE", 10*time.Second, func() bool {
		h := health(t, c.nodes[1])
		active := 0
		for _, m := range h.Fleet {
			if m.ID == "" || m.Model == "" {
				t.Fatalf("fleet entry %+v", m)
			}
			if m.HealthStatus == "ACTIVE" {
				active++
			}
		}
		return h.FleetSize == 3 && active == 3
	})

	// A node dies: the fleet shrinks, it stays a voter.
	gone := c.nodes[2]
	c.stop(gone)
	c.waitFor("the fleet size to drop to 2", 15*time.Second, func() bool { return health(t, c.nodes[0]).FleetSize == 2 })
	servers, err := c.waitLeader().node.Servers()
	if err != nil || len(servers) != 3 {
		t.Fatalf("a dead node must stay a voter: %v %v", servers, err)
	}
	var st admin.ClusterStatus
	if err := set(&st)(c.nodes[0].admin.ClusterStatus(t.Context())); err != nil {
		t.Fatal(err)
	}
	dead := false
	for _, m := range st.Fleet {
		dead = dead || m.ID == gone.id && m.State == MemberDead
	}
	if !dead {
		t.Fatalf("cluster status does not show %s dead: %+v", gone.id, st.Fleet)
	}

	// It comes back through gossip alone.
	gone.cfg.Gossip.Join = []string{c.nodes[0].node.GossipAddr()}
	c.start(gone)
	c.waitFor("the fleet size to return to 3", 20*time.Second, func() bool {
		return health(t, c.nodes[0]).FleetSize == 3 && gone.node.ServingError() == nil
	})

	// An operator removes it while it runs: it leaves the fleet and the
	// leader does not add it back.
	if err := c.nodes[0].admin.RemoveNode(t.Context(), gone.id); err != nil {
		t.Fatal(err)
	}
	c.waitFor("the removed node to leave the fleet", 15*time.Second, func() bool { return health(t, c.nodes[0]).FleetSize == 2 })
	time.Sleep(3 * time.Second)
	if servers, _ := c.waitLeader().node.Servers(); len(servers) != 2 {
		t.Fatalf("the removed node came back as a voter: %v", servers)
	}
}

func TestGossipRefusesAWrongKey(t *testing.T) {
	c := newGossipCluster(t, 3)
	c.waitFor("node1 to have proven both others", 10*time.Second, func() bool {
		size, _ := c.nodes[0].node.Fleet()
		return size == 3
	})
	good := c.gossipKey
	c.gossipKey = make([]byte, 32)
	rand.Read(c.gossipKey)
	stranger := c.addNode(tokenLabels[3], false, true)
	c.gossipKey = good
	time.Sleep(3 * time.Second)
	if size, _ := c.nodes[0].node.Fleet(); size != 3 {
		t.Fatalf("a node with the wrong gossip key joined the fleet: size %d", size)
	}
	if servers, _ := c.waitLeader().node.Servers(); len(servers) != 3 {
		t.Fatalf("a node with the wrong gossip key became a voter: %v", servers)
	}
	if stranger.node.ServingError() == nil {
		t.Fatal("the stranger says it can serve")
	}
}

func TestDeadTimeoutRemovesADeadVoter(t *testing.T) {
	c := newGossipClusterWith(t, 3, 2*time.Second)
	gone := c.nodes[2]
	if gone.node.IsLeader() {
		gone = c.nodes[1]
	}
	c.stop(gone)
	c.waitFor("the dead node to be removed from the voters", 30*time.Second, func() bool {
		l := c.leader()
		if l == nil {
			return false
		}
		servers, err := l.node.Servers()
		return err == nil && len(servers) == 2
	})
}

// GetHealthStatus reports the other nodes as they report themselves: one
// that says it cannot serve (catching up, stale, keys missing) is
// UNAVAILABLE, whatever its HSM's own check says.
func TestFleetReportsANotReadyMemberUnavailable(t *testing.T) {
	nodes := startGossipFleet(t, 3)
	nodes[1].setMeta(func(m *NodeMeta) { m.Ready = false })
	nodes[2].setMeta(func(m *NodeMeta) { m.HSMStatus = "DEGRADED" })
	nodes[1].g.Refresh()
	nodes[2].g.Refresh()
	n := &Node{cfg: Config{NodeID: nodes[0].id}, gossip: nodes[0].g}
	// As proveMembers leaves it once each has answered at its address.
	for _, other := range nodes[1:] {
		n.proofs.Store(other.id, proof{addr: other.local().ClusterAddr, at: time.Now()})
	}
	want := map[string]string{"g02": "UNAVAILABLE", "g03": "DEGRADED"}
	gossipWait(t, "g01 to report g02 UNAVAILABLE and g03 DEGRADED", func() bool {
		size, others := n.Fleet()
		got := map[string]string{}
		for _, m := range others {
			got[m.ID] = m.Status
		}
		return size == 3 && len(got) == 2 && got["g02"] == want["g02"] && got["g03"] == want["g03"]
	})
}
