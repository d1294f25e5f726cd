package cluster

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/admin"
)

// staleClient is n's admin client for stale reads; *got hears the
// freshness of every answer.
func staleClient(n *testNode, got *admin.Freshness) *admin.Client {
	c := *n.admin
	c.Stale = true
	c.OnFreshness = func(_ *admin.Route, f admin.Freshness) { *got = f }
	return &c
}

func keyIDs(keys []admin.KeyInfo) []string {
	var ids []string
	for _, k := range keys {
		ids = append(ids, k.ID)
	}
	return ids
}

// A follower cut off from the cluster refuses a default read, which needs
// the leader's index, and answers a stale read at once from its own state,
// saying its applied index and how long it has gone without the leader.
func TestStaleReadOnACutOffFollower(t *testing.T) {
	c := newTestCluster(t, 3)
	cut := c.nodes[2]
	if cut.node.IsLeader() {
		cut = c.nodes[0]
	}
	cut.node.mux.isolate(true)
	if _, err := cut.admin.ListKeys(t.Context(), demoStore); err == nil || !strings.Contains(err.Error(), "no cluster leader") {
		t.Fatalf("a default read on a follower without a leader: %v (want a refusal)", err)
	}
	var got admin.Freshness
	stale := staleClient(cut, &got)
	start := time.Now()
	var keys []admin.KeyInfo
	if err := set(&keys)(stale.ListKeys(t.Context(), demoStore)); err != nil || !slices.Contains(keyIDs(keys), demoKey) {
		t.Fatalf("a stale read on a follower without a leader: %v %+v", err, keys)
	}
	t.Logf("stale read without a leader answered in %v: %+v", time.Since(start), got)
	if got.AppliedIndex == 0 || got.AppliedIndex != cut.node.AppliedIndex() {
		t.Errorf("the answer says applied index %d; the node has applied %d", got.AppliedIndex, cut.node.AppliedIndex())
	}
	// The refused read above waited out the apply timeout without a leader.
	if got.LeaderContactAge < time.Second {
		t.Errorf("the answer says the leader was heard from %v ago, during a cut of several seconds", got.LeaderContactAge)
	}
	var st admin.ClusterStatus
	if err := set(&st)(stale.ClusterStatus(t.Context())); err != nil || len(st.Nodes) != 3 {
		t.Fatalf("a stale cluster status: %v %+v", err, st)
	}
}

// A leader cut off from the others takes itself for the leader until its
// lease runs out, while the others may elect another and commit more: it
// must not answer a read as current. It confirms its leadership with a
// quorum before it answers (VerifyLeader), and so refuses; a stale read
// answers, saying so.
func TestCutOffLeaderRefusesACurrentRead(t *testing.T) {
	c := newTestClusterWith(t, 3, func(c *testCluster) { c.leaderLease = 3 * time.Second })
	leader := c.waitLeader()
	var got admin.Freshness
	stale := staleClient(leader, &got)
	var keys []admin.KeyInfo
	if err := set(&keys)(leader.admin.ListKeys(t.Context(), demoStore)); err != nil || !slices.Contains(keyIDs(keys), demoKey) {
		t.Fatalf("a read on the leader: %v %+v", err, keys)
	}
	cutAt := time.Now()
	leader.node.mux.isolate(true)
	// A heartbeat answered just before the cut still counts as the
	// followers' word when raft reads it; past that, only the lease keeps
	// the cut-off node a leader in its own eyes.
	time.Sleep(500 * time.Millisecond)
	if !leader.node.IsLeader() {
		t.Log("the cut-off leader stepped down already; the read below must be refused all the same")
	}
	start := time.Now()
	_, err := leader.admin.ListKeys(t.Context(), demoStore)
	if err == nil {
		t.Fatalf("a leader cut off %v ago answered a read as current, without confirming its leadership", time.Since(cutAt).Round(time.Millisecond))
	}
	t.Logf("the cut-off leader refused after %v: %v", time.Since(start), err)
	if err := set(&keys)(stale.ListKeys(t.Context(), demoStore)); err != nil || !slices.Contains(keyIDs(keys), demoKey) {
		t.Fatalf("a stale read on the cut-off former leader: %v %+v", err, keys)
	}
	if got.AppliedIndex != leader.node.AppliedIndex() {
		t.Errorf("the answer says applied index %d; the node has applied %d", got.AppliedIndex, leader.node.AppliedIndex())
	}
}
