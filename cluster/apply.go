package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/raft"

	"github.com/xksproxy/xksproxy/fsm"
	"github.com/xksproxy/xksproxy/internal/noderpc"
)

// RuleError is a command the state refuses (a duplicate name, a missing key
// store...): the operator's mistake, not the cluster's failure.
type RuleError struct{ Err error }

func (e *RuleError) Error() string { return e.Err.Error() }
func (e *RuleError) Unwrap() error { return e.Err }

// Apply commits cmd through the leader, from any node, and returns its index.
// The command is checked against this node's state first so that a mistake
// is refused without a round trip, and again by the leader before it enters
// the log: an entry that fails on apply would be replayed on every node forever.
func (n *Node) Apply(ctx context.Context, cmd fsm.Command) (uint64, error) {
	if err := n.commandSetRefusal(cmd); err != nil {
		return 0, err
	}
	if err := cmd.Validate(n.fsm.State()); err != nil {
		return 0, &RuleError{err}
	}
	b, err := fsm.Encode(cmd)
	if err != nil {
		return 0, err
	}
	if len(b) > maxCommandBytes {
		return 0, fmt.Errorf("command of %d bytes is over the %d-byte limit", len(b), maxCommandBytes)
	}
	index, err := n.applyLocal(b)
	if !errors.Is(err, errNotLeader) {
		return index, err
	}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.ApplyTimeout)
	defer cancel()
	return n.forward(ctx, noderpc.Apply, nil, b)
}

func (n *Node) applyLocal(b []byte) (uint64, error) {
	if !n.IsLeader() {
		return 0, errNotLeader
	}
	cmd, err := fsm.Decode(b)
	if err != nil {
		return 0, &RuleError{err}
	}
	if cmd, b, err = n.stamp(cmd, b); err != nil {
		return 0, err
	}
	if err := n.commandSetRefusal(cmd); err != nil {
		return 0, err
	}
	if err := fsm.CheckNamed(n.fsm.State(), cmd); err != nil {
		return 0, &RuleError{err}
	}
	if err := cmd.Validate(n.fsm.State()); err != nil {
		return 0, &RuleError{err}
	}
	f := n.raft.Apply(b, n.cfg.ApplyTimeout)
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return 0, errNotLeader
		}
		return 0, err
	}
	if res, ok := f.Response().(fsm.ApplyResult); ok && res.Err != nil {
		return 0, &RuleError{res.Err}
	}
	return f.Index(), nil
}

// clockWarning is how far a proposer's time may be from the leader's before
// the leader says so: forwarding takes milliseconds, a clock without NTP
// drifts by minutes.
const clockWarning = time.Minute

// stamp re-stamps a timed command with the leader's clock and re-encodes it;
// the rest of the command is untouched. Validate then sees the leader's time,
// so a deletion dated by a proposer's fast clock is refused here, before it
// enters the log, and Apply keeps checking the date it carries.
func (n *Node) stamp(cmd fsm.Command, b []byte) (fsm.Command, []byte, error) {
	now := n.cfg.Now().UTC()
	cmd, proposed, timed := fsm.Stamped(cmd, now)
	if !timed {
		return cmd, b, nil
	}
	if !proposed.IsZero() {
		if off := proposed.Sub(now); off > clockWarning || off < -clockWarning {
			n.log.Warn().Str("command", cmd.Type().String()).Stringer("offset", off.Round(time.Second)).
				Msg("a proposed command's time is far from the leader's clock; the leader's clock counts (check NTP on the node that received it)")
		}
	}
	b, err := fsm.Encode(cmd)
	return cmd, b, err
}

// Ack is one node's confirmation that it serves a committed change.
type Ack struct {
	Node      string        `json:"node"`
	Confirmed bool          `json:"confirmed"`
	After     time.Duration `json:"afterNanos"`
	Error     string        `json:"error,omitempty"`
	// StopsServingBy, for a node that did not confirm, is the latest time
	// at which it refuses crypto by itself: its staleness limit from now.
	StopsServingBy time.Time `json:"stopsServingBy,omitzero"`
}

// WaitApplied waits until every voter has built its data-plane view from
// index or later, and says when each did. The kill switch reports these
// times; a node that cannot be reached before ctx ends is listed unconfirmed.
func (n *Node) WaitApplied(ctx context.Context, index uint64) []Ack {
	start := time.Now()
	servers, err := n.Servers()
	if err != nil {
		return []Ack{{Node: n.cfg.NodeID, Error: err.Error()}}
	}
	acks := make([]Ack, len(servers))
	var wg sync.WaitGroup
	for i, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			acks[i] = Ack{Node: string(s.ID)}
			unconfirmed := func(why string) {
				acks[i].Error = why
				if n.cfg.StalenessLimit > 0 {
					acks[i].StopsServingBy = time.Now().Add(n.cfg.StalenessLimit).UTC().Truncate(time.Second)
				}
			}
			for {
				if n.gossipSaysDead(string(s.ID)) {
					unconfirmed("unreachable: the gossip fleet reports it dead")
					return
				}
				st, err := n.statusAtLeast(ctx, s, noderpc.AwaitView, index)
				if err == nil && st.ViewIndex >= index {
					acks[i].Confirmed, acks[i].After, acks[i].Error = true, time.Since(start), ""
					return
				}
				if errors.Is(err, syscall.ECONNREFUSED) {
					// Nothing listens there: it is down, and waiting out the
					// timeout would only delay the answer.
					unconfirmed("unreachable: " + err.Error())
					return
				}
				retry := time.Duration(0)
				if err != nil {
					retry = statusRetryInterval
					// A question cut short by the deadline says nothing
					// about the node: it answered until then.
					if ctx.Err() == nil {
						acks[i].Error = err.Error()
					}
				}
				select {
				case <-ctx.Done():
					if acks[i].Error == "" {
						acks[i].Error = "did not apply the change in time"
					}
					unconfirmed(acks[i].Error)
					return
				case <-time.After(retry):
				}
			}
		}()
	}
	wg.Wait()
	sort.Slice(acks, func(a, b int) bool { return acks[a].Node < acks[b].Node })
	return acks
}

// gossipSaysDead reports whether the gossip fleet holds id as dead.
func (n *Node) gossipSaysDead(id string) bool {
	if n.gossip == nil || id == n.cfg.NodeID {
		return false
	}
	for _, m := range n.gossip.Members() {
		if m.ID == id {
			return m.State == MemberDead
		}
	}
	return false
}

// WaitReconciled waits until every reachable voter's reconciler has caught
// up with index, and returns their statuses: a node's KeysMissing is
// meaningful for a change only once it has. Unreachable voters are left
// out (State ""): they reconcile when they return.
func (n *Node) WaitReconciled(ctx context.Context, index uint64) []NodeStatus {
	servers, err := n.Servers()
	if err != nil {
		return nil
	}
	out := make([]NodeStatus, len(servers))
	var wg sync.WaitGroup
	for i, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				st, err := n.statusAtLeast(ctx, s, noderpc.AwaitReconciled, index)
				if err != nil && ctx.Err() != nil && out[i].ID != "" {
					// Out of time with its answer in hand: the node is slow,
					// not gone.
					return
				}
				if err != nil {
					out[i] = NodeStatus{ID: string(s.ID), ClusterAddr: string(s.Address), NotReady: "unreachable: " + err.Error()}
					return
				}
				out[i] = st
				if st.ReconciledIndex >= index || ctx.Err() != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	return out
}

// Waiting for another node's index: one AwaitStatus call answers as soon
// as the node reaches it (its notifier wakes the handler), so a
// confirmation costs one round trip instead of a status poll every few
// milliseconds. A round lasts at most awaitRound, after which the caller
// checks again what it knows (gossip may hold the node dead by then).
const (
	awaitRound = time.Second
	// statusRetryInterval spaces the questions to a node that failed to
	// answer, or to an older build without AwaitStatus, which can only be
	// polled.
	statusRetryInterval = 20 * time.Millisecond
	// answerMargin is how long before the caller's deadline a node asked to
	// wait must answer, so that its answer (a round trip, across sites)
	// arrives in time. Asked to wait until the deadline itself, a node that
	// had not reached the index answered just too late, and the caller
	// took it for unreachable.
	answerMargin = 250 * time.Millisecond
)

// indexNamed is this node's notifier of the index an AwaitStatus names.
func (n *Node) indexNamed(of string) *indexNotifier {
	if of == noderpc.AwaitReconciled {
		return &n.reconciled
	}
	return &n.viewed
}

func reachedIndex(st NodeStatus, of string) uint64 {
	if of == noderpc.AwaitReconciled {
		return st.ReconciledIndex
	}
	return st.ViewIndex
}

// statusAtLeast returns server s's status once its index of (the view's
// or the reconciler's) reaches index, or after a round of awaitRound, or
// when ctx ends, whichever comes first: this node's own through its
// notifier, another's through AwaitStatus.
func (n *Node) statusAtLeast(ctx context.Context, s raft.Server, of string, index uint64) (NodeStatus, error) {
	wait := awaitRound
	deadline, bounded := ctx.Deadline()
	if bounded {
		wait = max(0, min(wait, time.Until(deadline)))
	}
	if s.ID == raft.ServerID(n.cfg.NodeID) {
		wctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		n.indexNamed(of).Wait(wctx, index)
		return n.Status(), nil
	}
	if bounded {
		wait = max(0, min(wait, time.Until(deadline)-answerMargin))
	}
	rctx, cancel := context.WithTimeout(ctx, wait+2*time.Second)
	defer cancel()
	var st NodeStatus
	status, err := n.call(rctx, peer{id: string(s.ID), addr: string(s.Address)}, noderpc.AwaitStatus, noderpc.AwaitQuery(of, index, wait), nil, &st)
	if status == http.StatusNotFound {
		// A build before AwaitStatus (a rolling upgrade): poll its status.
		st, err = n.statusOf(ctx, s)
		if err == nil && reachedIndex(st, of) < index {
			select {
			case <-ctx.Done():
			case <-time.After(statusRetryInterval):
			}
		}
		return st, err
	}
	if err == nil && status != http.StatusOK {
		err = fmt.Errorf("status %d", status)
	}
	return st, err
}

// serveAwaitStatus answers noderpc.AwaitStatus: this node's status once
// the index asked for is reached, or once the wait is over.
func (n *Node) serveAwaitStatus(w http.ResponseWriter, r *http.Request) {
	of, index, wait, err := noderpc.ParseAwait(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	n.indexNamed(of).Wait(ctx, index)
	noderpc.WriteJSON(w, http.StatusOK, n.Status())
}

// statusOf asks a server for its status (itself without a network hop).
func (n *Node) statusOf(ctx context.Context, s raft.Server) (NodeStatus, error) {
	if s.ID == raft.ServerID(n.cfg.NodeID) {
		return n.Status(), nil
	}
	var st NodeStatus
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	status, err := n.call(rctx, peer{id: string(s.ID), addr: string(s.Address)}, noderpc.Status, nil, nil, &st)
	if err == nil && status != 200 {
		err = fmt.Errorf("status %d", status)
	}
	return st, err
}

// Statuses asks every voter for its status, in parallel.
func (n *Node) Statuses(ctx context.Context) ([]NodeStatus, []error) {
	servers, err := n.Servers()
	if err != nil {
		return nil, []error{err}
	}
	out := make([]NodeStatus, len(servers))
	errs := make([]error, len(servers))
	var wg sync.WaitGroup
	for i, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := n.statusOf(ctx, s)
			if err != nil {
				st = NodeStatus{ID: string(s.ID), ClusterAddr: string(s.Address), NotReady: "unreachable: " + err.Error()}
				errs[i] = err
			}
			out[i] = st
		}()
	}
	wg.Wait()
	return out, errs
}
