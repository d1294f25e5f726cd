// Package cluster runs the replicated control plane: hashicorp/raft over
// mutual TLS, leader forwarding, joining and removing nodes, the per-node
// reconciler that makes the local HSM hold every replicated key, the view
// builder that turns replicated state into the data plane's read view, and
// the node API the operator API (package admin) is built on.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/rs/zerolog"

	"github.com/xksproxy/xksproxy/fsm"
	"github.com/xksproxy/xksproxy/hsm"
	"github.com/xksproxy/xksproxy/internal/logbridge"
	"github.com/xksproxy/xksproxy/internal/noderpc"
)

// Config is one node's place in the cluster. Zero durations take defaults.
type Config struct {
	NodeID    string
	DataDir   string
	Bind      string // cluster port (Raft + node RPCs), mutual TLS
	Advertise string // address peers dial; "" = Bind
	APIAddr   string // this node's XKS API host:port, reported to operators and tools
	TLS       TLSFiles
	// Bootstrap forms a new cluster with this node as its only voter, once,
	// when the data directory holds no Raft state.
	Bootstrap bool
	// Join lists cluster addresses of members to ask for admission at start.
	Join []string
	// StalenessLimit: without leader contact for longer, the node refuses
	// crypto and reports not ready. 0 never goes stale.
	StalenessLimit time.Duration
	// MaxLag: in contact with the leader but still without what it had
	// applied this long ago (a full disk, a stuck apply), the node refuses
	// crypto. 0: DefaultMaxLag.
	MaxLag time.Duration
	// Version is this build's version, reported to the other nodes and to
	// operators so that a rolling upgrade can be followed.
	Version string
	// Seed, when set, is applied once by the first leader of a fresh cluster.
	Seed *SeedSpec
	// Gossip, when set, runs the memberlist fleet: discovery, fleet health,
	// and voters managed by the leader. Its NodeID is this node's.
	Gossip *GossipConfig
	// BootstrapExpect, with Gossip, forms a new cluster once this many
	// members are alive (instead of Bootstrap on one chosen node).
	BootstrapExpect int
	// DeadTimeout, with Gossip, removes a voter that has been dead this long;
	// 0 keeps dead voters until an operator removes them.
	DeadTimeout time.Duration

	// Now is this node's clock for scheduled deletions and, when it leads,
	// for the times it stamps on commands; nil means time.Now.
	Now func() time.Time
	// OnListenerError hears of the cluster port's RPC server failing (not
	// of its closing), so that the process can stop instead of running on
	// as a member that answers no peer; nil only logs it.
	OnListenerError func(error)

	HeartbeatTimeout time.Duration // 0: 1s
	ElectionTimeout  time.Duration // 0: 1s
	LeaderLease      time.Duration // 0: 500ms
	ApplyTimeout     time.Duration // 0: 10s, includes waiting through elections

	// unwrapKey replaces the HSM's UnwrapKey in fault-injection tests.
	unwrapKey func(wrapped []byte, mechanism, label string) error
	// IndexPollInterval is how often the node asks the leader for its
	// applied index (see freshness.go). 0: 200ms.
	IndexPollInterval time.Duration
}

// Node is a running cluster member.
type Node struct {
	cfg       Config
	log       zerolog.Logger
	hsm       HSM
	fsm       *fsm.FSM
	views     *fsm.ViewHolder
	raft      *raft.Raft
	mux       *mux
	rpcServer *http.Server
	rpc       *noderpc.Client
	gossip    *Gossip
	stores    []interface{ Close() error }
	audit     *auditLog

	// applied, viewed and reconciled follow how far this node has gone
	// with the log: its FSM has applied, its data plane serves, its HSM
	// matches (or missing lists what it could not make match).
	applied       indexNotifier
	viewed        indexNotifier
	reconciled    indexNotifier
	viewChanged   chan struct{}
	latestSample  atomic.Pointer[indexSample]
	currentAsOf   atomic.Int64 // UnixNano: the view holds all the leader had applied by then
	behindSince   atomic.Int64 // UnixNano of the oldest leader index the view has not reached; 0: none
	barrierMu     sync.Mutex
	barrierTerm   atomic.Uint64 // the term whose barrier this leader has committed
	removed       atomic.Bool
	stateDirty    chan struct{}
	unsealed      sync.Map // access key id + sealed blob -> secret
	presentLabels sync.Map // HSM labels known to be in the local HSM
	destroyed     sync.Map // HSM labels of deleted keys already destroyed here
	removedAt     sync.Map // node id -> when this leader removed it, so gossip does not re-add it
	vouches       sync.Map // node id -> vouch: whether the members list a peer this node's configuration does not
	proofs        sync.Map // node id -> proof: the cluster address where its certificate answered
	proving       sync.Map // node id -> struct{}: a proof under way
	peerBuilds    sync.Map // node id -> peerBuild, as reported to this leader
	missing       atomic.Pointer[[]MissingVersion]
	hsmDirty      chan struct{}
	// hsmWarm: since the node became current after its start, the
	// reconciler has been through the state once, so a starting node does
	// not take traffic for keys whose material it is still unwrapping.
	hsmWarm atomic.Bool
	// unwrapKey is the HSM's UnwrapKey; tests inject faults through it.
	unwrapKey func(wrapped []byte, mechanism, label string) error
	started   time.Time

	// raftForPeers is raft for the transport's checks of peers, which raft's
	// own goroutines make (dialling) from before NewRaft has returned.
	raftForPeers atomic.Pointer[raft.Raft]

	stop chan struct{}
	wg   sync.WaitGroup
}

// maxCommandBytes bounds a forwarded command (a key store seed with wrapped
// keys and sealed secrets stays far below it).
const maxCommandBytes = 4 << 20

// Start opens the Raft stores under DataDir/raft, binds the cluster port,
// and bootstraps or joins as configured. It returns before the node has
// caught up; ServingError says when it may serve crypto. log carries no
// component: each part of the node (cluster, raft, gossip, memberlist) adds
// its own, and zerolog would write a second one rather than replace it.
func Start(cfg Config, h HSM, views *fsm.ViewHolder, log zerolog.Logger) (*Node, error) {
	if cfg.HeartbeatTimeout == 0 {
		cfg.HeartbeatTimeout = time.Second
	}
	if cfg.ElectionTimeout == 0 {
		cfg.ElectionTimeout = time.Second
	}
	if cfg.LeaderLease == 0 {
		cfg.LeaderLease = 500 * time.Millisecond
	}
	if cfg.ApplyTimeout == 0 {
		cfg.ApplyTimeout = 10 * time.Second
	}
	if cfg.MaxLag == 0 {
		cfg.MaxLag = DefaultMaxLag
	}
	if cfg.IndexPollInterval == 0 {
		cfg.IndexPollInterval = defaultIndexPollInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	ct, err := cfg.TLS.load(cfg.NodeID)
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: log.With().Str("component", "cluster").Logger(), hsm: h, views: views,
		stateDirty: make(chan struct{}, 1), viewChanged: make(chan struct{}, 1), hsmDirty: make(chan struct{}, 1),
		stop: make(chan struct{}), started: time.Now(), unwrapKey: cfg.unwrapKey}
	if n.unwrapKey == nil {
		n.unwrapKey = h.UnwrapKey
	}
	empty := []MissingVersion{}
	n.missing.Store(&empty)
	n.audit = &auditLog{log: log, node: cfg.NodeID}
	n.fsm = fsm.New(func(st *fsm.State) {
		n.applied.Advance(st.Index())
		n.audit.published(st)
		n.markDirty()
	})

	if err := n.startRaft(ct, logbridge.Hclog(log, "raft")); err != nil {
		n.Close()
		return nil, err
	}
	n.audit.goLive()
	if cfg.Gossip != nil {
		// Started before the goroutines that refresh it.
		gc := *cfg.Gossip
		gc.NodeID, gc.Log = cfg.NodeID, log
		if n.gossip, err = StartGossip(gc, n.localMeta); err != nil {
			n.Close()
			return nil, fmt.Errorf("gossip: %w", err)
		}
	}
	n.warnIfReaddressed()
	n.markDirty() // publish a view even before the first command
	n.wg.Add(7)
	go n.enforcePeers()
	go n.reconcileHSM()
	go n.raiseCommandSet()
	go n.deleteDueKeys()
	go n.buildViews()
	go n.watchLeadership()
	go n.trackLeaderIndex()
	if len(cfg.Join) > 0 {
		n.wg.Add(1)
		go n.join()
	}
	if n.gossip != nil {
		n.wg.Add(1)
		go n.watchFleet()
		if cfg.BootstrapExpect > 0 {
			n.wg.Add(1)
			go n.bootstrapExpect()
		}
	}
	return n, nil
}

func (n *Node) startRaft(ct *clusterTLS, logger hclog.Logger) error {
	dir := filepath.Join(n.cfg.DataDir, "raft")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	var err error
	if n.mux, err = newMux(n.cfg.Bind, n.cfg.Advertise, ct, n); err != nil {
		return fmt.Errorf("cluster bind: %w", err)
	}
	n.rpc = n.newRPCClient()
	n.rpcServer = &http.Server{Handler: n.rpcHandler(), ConnContext: connContext, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: 90 * time.Second}

	// Never NoSync: a committed write must survive a power cut.
	logs, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
	if err != nil {
		return fmt.Errorf("raft log store: %w", err)
	}
	n.stores = append(n.stores, logs)
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 3, logger)
	if err != nil {
		return fmt.Errorf("raft snapshot store: %w", err)
	}
	// The I/O timeout bounds how long an RPC on a connection that a
	// partition silently cut blocks before a fresh one is dialled: a long one
	// delays the catch-up after the heal by as much. Snapshots scale it by
	// their size.
	trans := &persistentTransport{
		NetworkTransport: raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream: raftLayer{n.mux.raft}, MaxPool: 3, Timeout: raftIOTimeout, Logger: logger,
		}),
		retryEvery: appendRetryInterval,
		keepTrying: n.stillReplicatingTo,
		stop:       n.stop,
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(n.cfg.NodeID)
	rc.Logger = logger
	rc.HeartbeatTimeout = n.cfg.HeartbeatTimeout
	rc.ElectionTimeout = n.cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = n.cfg.LeaderLease
	rc.CommitTimeout = 20 * time.Millisecond
	rc.SnapshotThreshold = 1024
	rc.TrailingLogs = 2048

	existing, err := raft.HasExistingState(logs, logs, snaps)
	if err != nil {
		return err
	}
	if n.raft, err = raft.NewRaft(rc, n.fsm, logs, logs, snaps, trans); err != nil {
		return fmt.Errorf("starting raft: %w", err)
	}
	n.raftForPeers.Store(n.raft)
	if n.cfg.Bootstrap && !existing {
		f := n.raft.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{
			ID: rc.LocalID, Address: trans.LocalAddr(), Suffrage: raft.Voter,
		}}})
		if err := f.Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			return fmt.Errorf("bootstrapping the cluster: %w", err)
		}
		n.log.Info().Str("node", n.cfg.NodeID).Msg("bootstrapped a new cluster")
	}
	// Every RPC handler and the mux's checks of peers use n.raft: the port
	// accepts nothing before it is set.
	n.mux.serve()
	go func() { n.listenerFailed("cluster RPC", n.rpcServer.Serve(n.mux.rpc)) }()
	return nil
}

const (
	raftIOTimeout       = 2 * time.Second
	appendRetryInterval = 100 * time.Millisecond
)

// stillReplicatingTo reports whether this node still leads and id is still
// in the configuration: the condition under which raft wants entries sent.
func (n *Node) stillReplicatingTo(id raft.ServerID) bool {
	if n.raft == nil || n.raft.State() != raft.Leader {
		return false
	}
	cfg := n.raft.GetConfiguration()
	if cfg.Error() != nil {
		return false
	}
	for _, s := range cfg.Configuration().Servers {
		if s.ID == id {
			return true
		}
	}
	return false
}

// ClusterAddr is the address peers dial to reach this node.
func (n *Node) ClusterAddr() string { return n.mux.advertise.String() }

// IsLeader reports whether this node leads the cluster now.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// LeaderID is the id of the node this one takes for the leader, or "" while
// it knows none (during an election).
func (n *Node) LeaderID() string {
	_, id := n.raft.LeaderWithID()
	return string(id)
}

// AppliedIndex is the index of the last command this node's FSM applied.
func (n *Node) AppliedIndex() uint64 { return n.fsm.AppliedIndex() }

// LeaderContactAge is how long this node has gone without hearing from the
// leader: 0 on the leader, the time since Start while it has heard from
// none. Past the staleness limit, ServingError refuses crypto.
func (n *Node) LeaderContactAge() time.Duration {
	if n.IsLeader() {
		return 0
	}
	last := n.raft.LastContact()
	if last.IsZero() {
		last = n.started
	}
	return time.Since(last)
}

// markRemoved is the leader telling this node it is no longer a member: it
// stops serving and leaves the gossip fleet, so that no leader adds it back.
func (n *Node) markRemoved() {
	if n.removed.Swap(true) {
		return
	}
	n.log.Warn().Msg("removed from the cluster: serving nothing, leaving the gossip fleet")
	if n.gossip != nil {
		go n.gossip.Leave(5 * time.Second)
	}
}

// KeysMissing lists the key versions whose material this node's HSM lacks.
func (n *Node) KeysMissing() []MissingVersion { return *n.missing.Load() }

// GossipAddr is this node's gossip address, or "" without gossip.
func (n *Node) GossipAddr() string {
	if n.gossip == nil {
		return ""
	}
	return n.gossip.Addr()
}

// Close leaves the data as it is (a restart resumes) and stops everything.
func (n *Node) Close() error {
	select {
	case <-n.stop:
		return nil
	default:
		close(n.stop)
	}
	var errs []error
	if n.gossip != nil {
		n.gossip.Close()
	}
	if n.raft != nil {
		errs = append(errs, n.raft.Shutdown().Error())
	}
	if n.rpcServer != nil {
		n.rpcServer.Close()
	}
	if n.mux != nil {
		n.mux.Close()
	}
	n.wg.Wait()
	for _, s := range n.stores {
		errs = append(errs, s.Close())
	}
	return errors.Join(errs...)
}

func (n *Node) markDirty() {
	select {
	case n.stateDirty <- struct{}{}:
	default:
	}
}

// watchLeadership seeds a fresh cluster from the bootstrap configuration
// the first time this node leads it.
func (n *Node) watchLeadership() {
	defer n.wg.Done()
	for {
		select {
		case <-n.stop:
			return
		case isLeader := <-n.raft.LeaderCh():
			if isLeader {
				n.log.Info().Str("node", n.cfg.NodeID).Msg("became the leader")
				n.seedWhileLeader()
			}
		}
	}
}

// seedWhileLeader retries the seed until it sticks or leadership moves on:
// it may need an HSM that is still recovering or a ceremony still to come.
func (n *Node) seedWhileLeader() {
	// A fresh cluster of this build alone starts at its command set, so
	// that the seed's credentials get this build's seals.
	if err := n.raiseCommandSetOnce(); err != nil {
		n.log.Warn().Err(err).Msg("could not raise the cluster's command set before seeding")
	}
	for n.IsLeader() {
		err := n.seedOnce()
		if err == nil {
			return
		}
		n.log.Error().Err(err).Msg("seeding the cluster from [bootstrap] failed; retrying")
		select {
		case <-n.stop:
			return
		case <-time.After(2 * time.Second):
		}
	}
}

// syncWithLeader waits until this node's FSM has applied what the leader's
// had when asked, so that an operator sees the same state through any node:
// a key store created through one node exists for the next command sent to
// another.
func (n *Node) syncWithLeader(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.ApplyTimeout)
	defer cancel()
	// The leader's FSM index, not raft's: commands are the only entries
	// the FSM sees, and it is this node's FSM that must reach it.
	target, err := n.askLeaderIndex(true)
	for err != nil {
		select {
		case <-ctx.Done():
			return errors.New("no cluster leader: the state cannot be read or changed consistently now")
		case <-time.After(50 * time.Millisecond):
		}
		target, err = n.askLeaderIndex(true)
	}
	if !n.applied.Wait(ctx, target) {
		return errors.New("this node is behind the cluster leader")
	}
	return nil
}

// ServingError says why this node must refuse crypto now, or nil: its view
// is not known to hold everything the leader had applied within the
// staleness limit (it is catching up after a start or a partition, or it is
// cut off, so a key disabled elsewhere cannot live on in a partitioned
// site), or it has just started and not yet been through its key material
// once. Key material missing later fails only the keys concerned, and shows
// as DEGRADED in the node's health.
func (n *Node) ServingError() error {
	if n.removed.Load() {
		return errors.New("removed from the cluster")
	}
	if err := n.freshnessError(); err != nil {
		return err
	}
	if !n.hsmWarm.Load() {
		return errors.New("loading the replicated key material into this node's HSM")
	}
	return nil
}

// Status reports this node as `cluster status` shows it.
func (n *Node) Status() NodeStatus {
	s := NodeStatus{
		ID:           n.cfg.NodeID,
		ClusterAddr:  n.ClusterAddr(),
		APIAddr:      n.cfg.APIAddr,
		State:        n.raft.State().String(),
		AppliedIndex: n.fsm.AppliedIndex(),
		CommitIndex:  n.raft.CommitIndex(),
		ViewIndex:    n.viewed.Index(),
		HSM:          n.hsm.Health().Status.String(),
		Time:         time.Now().UTC(),
	}
	s.KeysMissingDetail = *n.missing.Load()
	for _, m := range s.KeysMissingDetail {
		s.KeysMissing = append(s.KeysMissing, m.String())
	}
	s.ReconciledIndex = n.reconciled.Index()
	s.AddressMismatch = n.addressMismatch()
	s.Version, s.CommandSet = n.cfg.Version, fsm.CommandSet
	if latest := n.latestSample.Load(); latest != nil {
		s.LeaderIndex = latest.index
	}
	if last := n.raft.LastContact(); !last.IsZero() && n.raft.State() != raft.Leader {
		s.LastContact = time.Since(last).Round(time.Millisecond).String()
	}
	err := n.ServingError()
	if err == nil && n.hsm.Health().Status == hsm.StatusUnavailable {
		err = errors.New("HSM unavailable")
	}
	s.Ready = err == nil
	if err != nil {
		s.NotReady = err.Error()
	}
	return s
}
