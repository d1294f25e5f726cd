package cluster

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/fsm"
)

// A follower whose clock runs days ahead proposes deletions: the dates it
// sets must be the leader's, or one wrong clock (or one forged proposal)
// destroys key material without the 7-30 day wait.
func TestLeaderOwnsDeletionTime(t *testing.T) {
	c := newTestCluster(t, 3)
	leader := c.waitLeader()
	var follower *testNode
	for _, n := range c.nodes {
		if n != leader {
			follower = n
			break
		}
	}
	follower.skew.Store(int64(40 * 24 * time.Hour))
	ctx := context.Background()
	disabled, err := follower.applyAsOperator(ctx, fsm.SetKeyEnabled{KeyStore: demoStore, KeyID: demoKey})
	if err != nil {
		t.Fatal(err)
	}
	c.waitFor("the follower to apply the disable", 5*time.Second, func() bool { return follower.node.AppliedIndex() >= disabled })

	// The follower stamps the schedule with its own clock, 40 days ahead.
	before := leader.cfg.Now()
	if _, err := follower.applyAsOperator(ctx, fsm.ScheduleDeletion{At: follower.cfg.Now(), KeyStore: demoStore, KeyID: demoKey, Days: 7}); err != nil {
		t.Fatal(err)
	}
	after := leader.cfg.Now()
	for _, n := range c.nodes {
		c.waitFor(n.id+" to apply the schedule", 5*time.Second, func() bool {
			k := n.node.fsm.State().Key(demoStore, demoKey)
			return k != nil && !k.DeletionDate.IsZero()
		})
		got := n.node.fsm.State().Key(demoStore, demoKey).DeletionDate
		if lo, hi := before.Add(7*24*time.Hour), after.Add(7*24*time.Hour); got.Before(lo) || got.After(hi) {
			t.Errorf("%s records the deletion date %s; the leader's clock puts it in [%s, %s]", n.id, got, lo, hi)
		}
	}

	if !strings.Contains(leader.logs.String(), "far from the leader's clock") {
		t.Error("the leader did not log the proposer's clock offset")
	}

	// A forged DeleteKey dated past the schedule, sent through the follower,
	// must meet the leader's clock, which says the date has not come.
	follower.skew.Store(int64(60 * 24 * time.Hour))
	forged := fsm.DeleteKey{At: follower.cfg.Now(), KeyStore: demoStore, KeyID: demoKey}
	var refused *RuleError
	if _, err := follower.applyAsOperator(ctx, forged); !errors.As(err, &refused) {
		t.Fatalf("a DeleteKey dated by a clock 60 days ahead: %v (want a refusal)", err)
	}
	if k := leader.node.fsm.State().Key(demoStore, demoKey); k == nil || k.Deleted {
		t.Fatal("the key was deleted before its date")
	}

	// An entry that reached the log without the leader's check (an older
	// leader, a forged entry) is refused by Apply on every node alike when it
	// is dated before the schedule.
	b, err := fsm.Encode(fsm.DeleteKey{At: leader.cfg.Now(), KeyStore: demoStore, KeyID: demoKey})
	if err != nil {
		t.Fatal(err)
	}
	f := leader.node.raft.Apply(b, 5*time.Second)
	if err := f.Error(); err != nil {
		t.Fatal(err)
	}
	if res, ok := f.Response().(fsm.ApplyResult); !ok || !errors.Is(res.Err, fsm.ErrConflict) {
		t.Fatalf("Apply of a DeleteKey dated before the schedule: %+v", f.Response())
	}
	for _, n := range c.nodes {
		c.waitFor(n.id+" to apply the forged entry", 5*time.Second, func() bool { return n.node.AppliedIndex() >= f.Index() })
		if k := n.node.fsm.State().Key(demoStore, demoKey); k == nil || k.Deleted {
			t.Fatalf("%s deleted the key before its date", n.id)
		}
	}
}
