package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/hashicorp/raft"

	"github.com/xksproxy/xksproxy/internal/noderpc"
)

// A node may serve crypto only while its state is known to be current: it
// has applied everything the leader had applied at some moment no longer
// ago than the staleness limit. Contact alone is not freshness: after a
// partition heals, heartbeats resume within a heartbeat interval, while raft
// may wait up to ~10 s (its replication backoff) before it resends the
// entries the node missed, and a key disabled meanwhile would be served.
// hashicorp/raft's heartbeats do not carry the leader's commit index, so the
// node asks the leader for its index itself, continuously, and remembers
// when it asked.

// indexSample is one answer from the leader: by askedAt, the leader had
// applied index (asking time, not answering time: the conservative end).
type indexSample struct {
	index   uint64
	askedAt time.Time
}

// defaultIndexPollInterval is how often a node asks the leader for its
// index: the delay before a node that is behind learns so, and before a
// node that has caught up serves again.
const defaultIndexPollInterval = 200 * time.Millisecond

// DefaultMaxLag is how long a node in contact with the leader may go on
// serving without what the leader had applied: well above replication's
// tens of milliseconds, across sites included, and near the kill switch's
// one-second target.
const DefaultMaxLag = 2 * time.Second

// maxPendingSamples bounds the samples kept while a node is behind.
const maxPendingSamples = 1024

// trackLeaderIndex asks the leader for its index every poll interval and
// publishes, in n.currentAsOf, the latest moment this node's view is known
// to reflect everything the leader had applied. Samples the view has not
// reached yet wait in pending; a new view re-checks them at once.
func (n *Node) trackLeaderIndex() {
	defer n.wg.Done()
	tick := time.NewTicker(n.cfg.IndexPollInterval)
	defer tick.Stop()
	var pending []indexSample
	servingBefore := false
	for {
		select {
		case <-n.stop:
			return
		case <-tick.C:
			asked := time.Now()
			if index, err := n.askLeaderIndex(false); err == nil {
				s := indexSample{index: index, askedAt: asked}
				n.latestSample.Store(&s)
				pending = appendSample(pending, s)
			}
		case <-n.viewChanged:
		}
		view := n.viewed.Index()
		reached := 0
		for reached < len(pending) && pending[reached].index <= view {
			reached++
		}
		if reached > 0 {
			n.currentAsOf.Store(pending[reached-1].askedAt.UnixNano())
			pending = append(pending[:0], pending[reached:]...)
		}
		var behind int64
		if len(pending) > 0 {
			behind = pending[0].askedAt.UnixNano()
		}
		n.behindSince.Store(behind)
		if !n.hsmWarm.Load() && n.freshnessError() == nil {
			notify(n.hsmDirty) // warm the HSM against the state it is current with
		}
		serving := n.ServingError() == nil
		if serving != servingBefore {
			n.logServingChange(serving)
			servingBefore = serving
		}
	}
}

// appendSample adds s, halving the backlog when it is full: dropping a
// sample the view has not reached can only make the node's currency older,
// never newer, so the node errs towards refusing.
func appendSample(pending []indexSample, s indexSample) []indexSample {
	if len(pending) >= maxPendingSamples {
		kept := pending[:0]
		for i := 0; i < len(pending); i += 2 {
			kept = append(kept, pending[i])
		}
		pending = kept
	}
	return append(pending, s)
}

func (n *Node) logServingChange(serving bool) {
	if serving {
		ev := n.log.Info().Uint64("viewIndex", n.viewed.Index())
		if s := n.latestSample.Load(); s != nil {
			ev = ev.Uint64("leaderIndex", s.index)
		}
		ev.Msg("current with the leader: serving crypto")
		return
	}
	n.log.Warn().Str("reason", n.ServingError().Error()).Msg("refusing crypto")
}

// askLeaderIndex asks the leader (itself, when it leads) for its index.
// With confirm, the leader first confirms with a quorum that it still
// leads (see leaderIndex).
func (n *Node) askLeaderIndex(confirm bool) (uint64, error) {
	if n.IsLeader() {
		return n.leaderIndex(confirm)
	}
	addr, id := n.raft.LeaderWithID()
	if addr == "" {
		return 0, errors.New("no known leader")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var res noderpc.LeaderIndexResponse
	leader := peer{id: string(id), addr: string(addr)}
	status, err := n.call(ctx, leader, noderpc.LeaderIndex, n.leaderIndexQuery(confirm), nil, &res)
	if status == http.StatusNotFound {
		return n.askOlderLeaderIndex(ctx, leader)
	}
	if err != nil {
		return 0, err
	}
	if status != http.StatusOK {
		return 0, fmt.Errorf("%s answered %d to %s", addr, status, noderpc.LeaderIndex.Path)
	}
	return res.Index, nil
}

// askOlderLeaderIndex reads the index from the status of a leader whose
// version predates noderpc.LeaderIndex, so that upgraded followers serve
// during a rolling upgrade. Such a leader may not yet have applied all its
// predecessor committed; the staleness limit still bounds the node.
func (n *Node) askOlderLeaderIndex(ctx context.Context, leader peer) (uint64, error) {
	var st NodeStatus
	status, err := n.call(ctx, leader, noderpc.Status, nil, nil, &st)
	if err != nil {
		return 0, err
	}
	if status != http.StatusOK || st.State != raft.Leader.String() {
		return 0, fmt.Errorf("%s answered %d (%s) to %s", leader.addr, status, st.State, noderpc.Status.Path)
	}
	return st.AppliedIndex, nil
}

// leaderIndex is the index of the last command this leader's FSM applied,
// which covers every write the cluster has acknowledged. A new leader first
// commits a barrier in its term: until then it may still be applying what
// its predecessor committed. One barrier per term, not one per question.
//
// A leader cut off from the others goes on taking itself for the leader
// until its lease runs out, while the others may elect another and commit
// more. With confirm, it proves it still leads before it answers
// (raft's VerifyLeader: a heartbeat round with a quorum, no log entry),
// so that an operator's read sees every change acknowledged before it.
// The freshness poll does without: the staleness limit and MaxLag, far
// above the lease, bound what a deposed leader's answer can hide.
func (n *Node) leaderIndex(confirm bool) (uint64, error) {
	if !n.IsLeader() {
		return 0, errNotLeader
	}
	term := n.raft.CurrentTerm()
	if n.barrierTerm.Load() != term {
		n.barrierMu.Lock()
		defer n.barrierMu.Unlock()
		if n.barrierTerm.Load() != term {
			if err := n.raft.Barrier(5 * time.Second).Error(); err != nil {
				return 0, fmt.Errorf("confirming leadership: %w", err)
			}
			n.barrierTerm.Store(term)
		}
	}
	index := n.fsm.AppliedIndex()
	if confirm {
		if err := n.raft.VerifyLeader().Error(); err != nil {
			if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
				return 0, errNotLeader
			}
			return 0, fmt.Errorf("confirming leadership: %w", err)
		}
	}
	if !n.IsLeader() || n.raft.CurrentTerm() != term {
		return 0, errNotLeader
	}
	return index, nil
}

// serveLeaderIndex answers noderpc.LeaderIndex.
func (n *Node) serveLeaderIndex(w http.ResponseWriter, r *http.Request) {
	index, err := n.leaderIndex(noderpc.ConfirmsLeadership(r.URL.Query()))
	if err == nil {
		n.recordPeerBuild(r)
	}
	switch {
	case errors.Is(err, errNotLeader):
		noderpc.WriteJSON(w, noderpc.NotLeaderStatus, noderpc.ApplyResponse{Error: err.Error()})
	case err != nil:
		noderpc.WriteJSON(w, http.StatusServiceUnavailable, noderpc.ApplyResponse{Error: err.Error()})
	default:
		noderpc.WriteJSON(w, http.StatusOK, noderpc.LeaderIndexResponse{Index: index, Term: n.raft.CurrentTerm()})
	}
}

// StateAge is how long ago this node's view last held everything the
// leader had applied; ok is false until it first has. Past the staleness
// limit the node refuses crypto.
func (n *Node) StateAge() (age time.Duration, ok bool) {
	asOf := n.currentAsOf.Load()
	if asOf == 0 {
		return 0, false
	}
	return time.Since(time.Unix(0, asOf)), true
}

// freshnessError says why this node's state may not be current, or nil. It
// runs on every XKS request: atomic loads only.
func (n *Node) freshnessError() error {
	asOf := n.currentAsOf.Load()
	latest := n.latestSample.Load()
	if asOf == 0 {
		if latest == nil {
			return errors.New("catching up with the cluster leader: no leader has told this node its index yet")
		}
		return fmt.Errorf("catching up with the cluster leader: applied index %d, the leader's %d",
			n.viewed.Index(), latest.index)
	}
	if behind := n.behindSince.Load(); behind != 0 && time.Since(time.Unix(0, behind)) > n.cfg.MaxLag && latest != nil {
		return fmt.Errorf("behind the cluster leader for more than %v: applied index %d, the leader's %d",
			n.cfg.MaxLag, n.viewed.Index(), latest.index)
	}
	limit := n.cfg.StalenessLimit
	if limit <= 0 || time.Since(time.Unix(0, asOf)) <= limit {
		return nil
	}
	if latest != nil && time.Since(latest.askedAt) <= limit {
		return fmt.Errorf("catching up with the cluster leader after a loss of contact: applied index %d, the leader's %d",
			n.viewed.Index(), latest.index)
	}
	return fmt.Errorf("no contact with the cluster leader for more than %v", limit)
}
