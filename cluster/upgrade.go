package cluster

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/xksproxy/xksproxy/fsm"
	"github.com/xksproxy/xksproxy/internal/noderpc"
)

// Rolling upgrades: nodes of two builds share a cluster while it is being
// upgraded one node at a time. A node decodes replicated entries strictly
// and stops on one it cannot read (fsm.Apply), so the leader must never
// propose what a voter's build does not know. Each node tells the leader
// its build with every index question (freshness.go); the leader raises
// the cluster's command set once every voter reads the newer one, and until
// then refuses the commands that need it, naming the nodes to upgrade.

// peerBuild is what a voter last told the leader of its build.
type peerBuild struct {
	version    string
	commandSet int
	at         time.Time
}

// peerBuildMaxAge: a report older than this (the node is down, or a build
// that never reports) counts as unknown, which holds the command set back.
const peerBuildMaxAge = 10 * time.Second

// leaderIndexQuery is the index question's query: this node's build, and
// whether the leader must confirm its leadership first.
func (n *Node) leaderIndexQuery(confirm bool) url.Values {
	return noderpc.LeaderIndexQuery(noderpc.Build{Node: n.cfg.NodeID, Version: n.cfg.Version, CommandSet: fsm.CommandSet}, confirm)
}

// recordPeerBuild keeps the build a node reported with its index question.
func (n *Node) recordPeerBuild(r *http.Request) {
	b, ok := noderpc.ParseBuild(r.URL.Query())
	if !ok {
		return
	}
	n.peerBuilds.Store(b.Node, peerBuild{version: b.Version, commandSet: b.CommandSet, at: time.Now()})
}

// voterCommandSets returns, for every voter but this node, the command set
// its build reads, or 0 when the leader has not heard it recently.
func (n *Node) voterCommandSets() (map[string]peerBuild, error) {
	servers, err := n.Servers()
	if err != nil {
		return nil, err
	}
	out := map[string]peerBuild{}
	for _, s := range servers {
		id := string(s.ID)
		if id == n.cfg.NodeID {
			continue
		}
		b := peerBuild{}
		if v, ok := n.peerBuilds.Load(id); ok && time.Since(v.(peerBuild).at) <= peerBuildMaxAge {
			b = v.(peerBuild)
		}
		out[id] = b
	}
	return out, nil
}

// olderVoters names the voters whose build may not read command set need.
func (n *Node) olderVoters(need int) string {
	builds, err := n.voterCommandSets()
	if err != nil {
		return "the voters could not be listed: " + err.Error()
	}
	var older []string
	for id, b := range builds {
		switch {
		case b.commandSet == 0:
			older = append(older, id+" (build not reported: older than command sets, or not heard from for "+peerBuildMaxAge.String()+")")
		case b.commandSet < need:
			older = append(older, fmt.Sprintf("%s (version %s, command set %d)", id, b.version, b.commandSet))
		}
	}
	if len(older) == 0 {
		return "every voter reads it now; the leader raises the cluster's command set within seconds, then retry"
	}
	slices.Sort(older)
	return "upgrade first: " + strings.Join(older, ", ")
}

// CommandSetInEffect is the cluster's command set as this node has applied it.
func (n *Node) CommandSetInEffect() int { return n.fsm.State().CommandSet() }

// commandSetRefusal refuses cmd when the cluster's command set is older
// than it needs. The receiving node checks too, not only the leader: a
// leader of an older build checks nothing, and its followers of that build
// would stop on the entry.
func (n *Node) commandSetRefusal(cmd fsm.Command) error {
	err := fsm.CheckCommandSet(n.fsm.State(), cmd)
	if err == nil {
		return nil
	}
	if !n.IsLeader() {
		return &RuleError{fmt.Errorf("%w; the leader raises it once every voter runs a build that reads it (cluster status shows each node's)", err)}
	}
	return &RuleError{fmt.Errorf("%w; %s", err, n.olderVoters(fsm.RequiredCommandSet(cmd)))}
}

// raiseCommandSet, on the leader, raises the cluster's command set as soon
// as every voter has reported a build that reads a newer one.
func (n *Node) raiseCommandSet() {
	defer n.wg.Done()
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-tick.C:
		}
		if err := n.raiseCommandSetOnce(); err != nil {
			n.log.Warn().Err(err).Msg("could not raise the cluster's command set; retrying")
		}
	}
}

// raiseCommandSetOnce raises the command set, on the leader, to the newest
// every voter reads, if that is newer than the one in effect.
func (n *Node) raiseCommandSetOnce() error {
	inEffect := n.fsm.State().CommandSet()
	if !n.IsLeader() || inEffect >= fsm.CommandSet {
		return nil
	}
	builds, err := n.voterCommandSets()
	if err != nil {
		return err
	}
	to := fsm.CommandSet
	for _, b := range builds {
		to = min(to, b.commandSet)
	}
	if to <= inEffect {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ApplyTimeout)
	defer cancel()
	if _, err := n.Apply(ctx, fsm.RaiseCommandSet{To: to}); err != nil {
		return err
	}
	n.log.Info().Int("commandSet", to).Msg("raised the cluster's command set: every voter runs a build that reads it")
	return nil
}
