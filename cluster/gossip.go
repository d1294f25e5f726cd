package cluster

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/rs/zerolog"

	"github.com/xksproxy/xksproxy/internal/logbridge"
)

// Gossip is the fleet's view of itself: hashicorp/memberlist (SWIM failure
// detection over UDP, full state exchange over TCP) with every packet and
// stream encrypted and authenticated under the gossip keyring. Each node
// gossips a small NodeMeta about itself. Gossip is advisory: it says who is
// up and what they can serve, never what the replicated state is, and a
// member counts (as a voter, in GetHealthStatus's fleet) only once its
// cluster certificate has answered at the cluster address it gossips
// (fleet.go): the keyring alone makes no member.

// GossipConfig is one node's place in the gossip fleet. Zero durations take
// memberlist's LAN defaults, which suit sites joined by a private network.
type GossipConfig struct {
	// NodeID names the node in the fleet; it must equal the Raft server ID so
	// that members and voters can be matched. Required.
	NodeID string
	// BindAddr is the host:port for gossip, UDP and TCP on the same port.
	// "" = "0.0.0.0:7946"; port 0 picks a free port (tests).
	BindAddr string
	// Advertise is the host:port (host an IP) other members reach this node
	// at. "" = the bound address, or the first private IP when bound to all
	// interfaces. An explicit port needs an explicit BindAddr port, because
	// memberlist advertises whatever port it picks for port 0.
	Advertise string
	// Join lists gossip addresses of any members. Joining is retried in the
	// background until one answers, and repeated every RejoinInterval. Empty
	// for the first node of a fleet.
	Join []string
	// Keyring holds AES keys (16, 24 or 32 bytes); the first is the primary,
	// used to encrypt, and every key is tried to decrypt, so keys can be
	// rotated without a flag day. Required: gossip is always encrypted and
	// verified in both directions, which is what admits a node to the fleet.
	Keyring [][]byte

	// ProbeInterval is how often one random member is probed. 0: 1s.
	ProbeInterval time.Duration
	// ProbeTimeout is how long to wait for a probe's ack before trying
	// indirect probes; about the network's 99th percentile RTT. 0: 500ms.
	ProbeTimeout time.Duration
	// GossipInterval is how often queued broadcasts go to a few random
	// members. 0: 200ms.
	GossipInterval time.Duration
	// SuspicionMult scales how long a suspect member has to refute before it
	// is declared dead: SuspicionMult × log10(members) × ProbeInterval. 0: 4.
	SuspicionMult int
	// PushPullInterval is how often a node exchanges its full member list
	// with one random member over TCP. Gossip can miss things (a restarted
	// node can be marked dead by stale messages about its previous
	// incarnation, which it never sees as news); this exchange repairs
	// every such divergence. 0: 30s.
	PushPullInterval time.Duration
	// ReapAfter is how long a dead or left member stays listed (and is still
	// gossiped to, so that it can refute); then it is forgotten. 0: 30s.
	ReapAfter time.Duration
	// RejoinInterval is the slowest retry of Join while nobody answers, and
	// how often Join is repeated afterwards: a partition that outlasts
	// ReapAfter leaves two halves that have forgotten each other, and only
	// a new join brings them back together. 0: 30s.
	RejoinInterval time.Duration

	// Log carries no component: gossip and memberlist add their own.
	Log zerolog.Logger
}

// NodeMeta is what each node gossips about itself. It travels in memberlist's
// node metadata, which is capped at 512 bytes (memberlist.MetaMaxSize), so the
// ready key versions are never listed: a node sends their count and a digest
// of the sorted labels (KeysDigestOf). Equal digests mean the same set; a
// caller that needs the labels themselves (which version is missing where)
// asks that node over the cluster RPC, where size is no concern. The gossip
// therefore stays the same size however many keys a node holds.
type NodeMeta struct {
	ID           string // the gossip node name (= GossipConfig.NodeID); not sent twice
	APIAddr      string // XKS API host:port
	ClusterAddr  string // Raft/RPC address
	HSMStatus    string // ACTIVE, DEGRADED or UNAVAILABLE
	HSMModel     string
	AppliedIndex uint64
	Ready        bool
	KeysDigest   string // KeysDigestOf the ready key-version labels
	KeysReady    int    // how many key versions are ready in the HSM
	Version      string // the build's version; "" from builds before it was sent
	CommandSet   int    // the newest command set the build reads; 0 from builds before it was sent
}

// Member states. memberlist reports no transition into "suspect" to its
// delegates, so a suspect member stays alive here until it is declared dead,
// as in serf. Nor does it tell a departure from a failure (the State of the
// node it hands to NotifyLeave is never set), so a leaving node first
// gossips metadata flagged "leaving"; a node that goes with that flag left.
const (
	MemberAlive = "alive"
	MemberDead  = "dead"
	MemberLeft  = "left"
)

// Member is one node as this node last heard of it.
type Member struct {
	NodeMeta
	State   string    // MemberAlive, MemberDead or MemberLeft
	Addr    string    // gossip address
	Updated time.Time // when this node last learned something about it
}

// MemberEvent kinds.
const (
	EventJoin   = "join"   // a member became alive (new, or back from dead/left)
	EventUpdate = "update" // an alive member's metadata changed
	EventDead   = "dead"   // a member failed its probes and was declared dead
	EventLeave  = "leave"  // a member left on purpose
)

// MemberEvent is one change in the fleet, with the member as it is after it.
type MemberEvent struct {
	Kind   string
	Member Member
}

// eventBuffer is how many events wait for a slow consumer before the oldest
// are dropped.
const eventBuffer = 256

// joinRetryMin is the first wait before retrying a failed join; it doubles
// up to RejoinInterval.
const joinRetryMin = 500 * time.Millisecond

// Gossip is a running gossip member.
type Gossip struct {
	cfg   GossipConfig
	log   zerolog.Logger
	local func() NodeMeta
	ml    *memberlist.Memberlist
	addr  string

	mu       sync.Mutex
	members  map[string]Member
	lastMeta []byte // last metadata that fit, sent again if a newer one does not
	leaving  bool
	events   chan MemberEvent
	dropped  uint64
	closed   bool

	refresh   chan struct{}
	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// StartGossip binds the gossip port, announces this node and starts joining
// cfg.Join in the background; it does not wait for anyone to answer. local
// supplies this node's metadata whenever memberlist needs it (at start, on
// Refresh, on every full state exchange); it must be fast and safe to call
// from any goroutine. local's metadata must fit the 512-byte cap at start,
// or StartGossip fails.
func StartGossip(cfg GossipConfig, local func() NodeMeta) (*Gossip, error) {
	mc, err := cfg.memberlistConfig()
	if err != nil {
		return nil, err
	}
	m := local()
	if m.ID != "" && m.ID != cfg.NodeID {
		return nil, fmt.Errorf("gossip: local metadata is for node %q, not %q", m.ID, cfg.NodeID)
	}
	if _, err := encodeMeta(m, false, memberlist.MetaMaxSize); err != nil {
		return nil, fmt.Errorf("gossip: %w", err)
	}
	g := &Gossip{
		cfg:     cfg,
		log:     cfg.Log.With().Str("component", "gossip").Logger(),
		local:   local,
		members: map[string]Member{},
		events:  make(chan MemberEvent, eventBuffer),
		refresh: make(chan struct{}, 1),
		stop:    make(chan struct{}),
	}
	mc.Delegate = delegate{g}
	mc.Events = delegate{g}
	// memberlist logs through the standard log package, "[LEVEL] memberlist: ..."
	mc.Logger = logbridge.Hclog(cfg.Log, "memberlist").StandardLogger(nil)
	if g.ml, err = memberlist.Create(mc); err != nil {
		return nil, fmt.Errorf("gossip: %w", err)
	}
	// Read once: memberlist rewrites the local node's fields on every
	// update, so reading them later would race.
	g.addr = g.ml.LocalNode().Address()
	g.wg.Add(1)
	go g.refreshLoop()
	if len(cfg.Join) > 0 {
		g.wg.Add(1)
		go g.joinLoop()
	}
	g.log.Info().Str("node", cfg.NodeID).Str("addr", g.addr).Strs("join", cfg.Join).Msg("gossip started")
	return g, nil
}

// memberlistConfig fills the defaults into cfg and translates it.
func (cfg *GossipConfig) memberlistConfig() (*memberlist.Config, error) {
	if cfg.NodeID == "" {
		return nil, errors.New("gossip: node id is required")
	}
	if len(cfg.Keyring) == 0 {
		return nil, errors.New("gossip: a keyring is required (gossip is always encrypted)")
	}
	keyring, err := memberlist.NewKeyring(cfg.Keyring[1:], cfg.Keyring[0])
	if err != nil {
		return nil, fmt.Errorf("gossip keyring: %w", err)
	}
	mc := memberlist.DefaultLANConfig()
	if cfg.BindAddr == "" {
		cfg.BindAddr = net.JoinHostPort(mc.BindAddr, strconv.Itoa(mc.BindPort))
	}
	if cfg.ProbeInterval == 0 {
		cfg.ProbeInterval = mc.ProbeInterval
	}
	if cfg.ProbeTimeout == 0 {
		cfg.ProbeTimeout = mc.ProbeTimeout
	}
	if cfg.GossipInterval == 0 {
		cfg.GossipInterval = mc.GossipInterval
	}
	if cfg.SuspicionMult == 0 {
		cfg.SuspicionMult = mc.SuspicionMult
	}
	if cfg.PushPullInterval == 0 {
		cfg.PushPullInterval = mc.PushPullInterval
	}
	if cfg.ReapAfter == 0 {
		cfg.ReapAfter = mc.GossipToTheDeadTime
	}
	if cfg.RejoinInterval == 0 {
		cfg.RejoinInterval = 30 * time.Second
	}

	if mc.BindAddr, mc.BindPort, err = splitHostPort(cfg.BindAddr); err != nil {
		return nil, fmt.Errorf("gossip bind address: %w", err)
	}
	if cfg.Advertise != "" {
		if mc.AdvertiseAddr, mc.AdvertisePort, err = splitHostPort(cfg.Advertise); err != nil {
			return nil, fmt.Errorf("gossip advertise address: %w", err)
		}
		if mc.BindPort == 0 {
			return nil, errors.New("gossip: an advertised address needs a fixed bind port")
		}
	} else {
		mc.AdvertisePort = mc.BindPort
	}
	mc.Name = cfg.NodeID
	mc.Keyring = keyring
	// Both are memberlist's defaults already; they are what keeps a process
	// without the key out, so they are spelled out here.
	mc.GossipVerifyIncoming = true
	mc.GossipVerifyOutgoing = true
	mc.ProbeInterval = cfg.ProbeInterval
	mc.ProbeTimeout = cfg.ProbeTimeout
	mc.GossipInterval = cfg.GossipInterval
	mc.SuspicionMult = cfg.SuspicionMult
	mc.PushPullInterval = cfg.PushPullInterval
	mc.GossipToTheDeadTime = cfg.ReapAfter
	// memberlist's default (0) pins a dead node's name to its old address
	// until the name is reaped, so a node restarted on a new address would
	// stay out of the fleet for ReapAfter. Names are ours and admission is
	// the keyring, so let a restarted node take its name back as soon as the
	// old incarnation has been declared dead (any positive value enables
	// reclaiming; the smallest makes it immediate). A restarted node counts
	// its incarnations from 1 again, so dead messages about the old process
	// still circulating can mark the new one dead; the next full state
	// exchange (PushPullInterval) brings it back.
	mc.DeadNodeReclaimTime = time.Nanosecond
	return mc, nil
}

func splitHostPort(hostport string) (string, int, error) {
	host, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: %w", p, err)
	}
	return host, int(port), nil
}

// Addr is the gossip address other members reach this node at.
func (g *Gossip) Addr() string { return g.addr }

// Refresh re-announces this node's metadata (local() is asked again) without
// waiting. Calls that arrive while an announcement is going out collapse into
// one more, so it may be called on every applied index: there is never more
// than one announcement spreading and one waiting.
func (g *Gossip) Refresh() {
	select {
	case g.refresh <- struct{}{}:
	default:
	}
}

func (g *Gossip) refreshLoop() {
	defer g.wg.Done()
	// UpdateNode returns once the broadcast has gone out to enough members,
	// which takes a few gossip rounds; waiting for it is what coalesces
	// Refresh calls. On timeout the broadcast still goes out: the wait ends,
	// nothing is lost.
	wait := 5 * g.cfg.GossipInterval
	for {
		select {
		case <-g.stop:
			return
		case <-g.refresh:
		}
		if err := g.ml.UpdateNode(wait); err != nil {
			g.log.Debug().Err(err).Msg("gossip metadata update still spreading")
		}
	}
}

func (g *Gossip) joinLoop() {
	defer g.wg.Done()
	wait := joinRetryMin
	for {
		n, err := g.ml.Join(g.cfg.Join)
		if err != nil {
			// A wrong keyring looks exactly like this: the peer cannot
			// decrypt our state and hangs up.
			g.log.Warn().Err(err).Strs("join", g.cfg.Join).Dur("retry", wait).Msg("gossip join failed")
		} else {
			g.log.Debug().Int("contacted", n).Msg("gossip joined")
			wait = g.cfg.RejoinInterval
		}
		select {
		case <-g.stop:
			return
		case <-time.After(wait):
		}
		if err != nil {
			wait = min(2*wait, g.cfg.RejoinInterval)
		}
	}
}

// Members lists every member this node knows of, itself included, with dead
// and left members until ReapAfter has passed; sorted by ID.
func (g *Gossip) Members() []Member {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]Member, 0, len(g.members))
	for id, m := range g.members {
		if m.State != MemberAlive && time.Since(m.Updated) > g.cfg.ReapAfter {
			delete(g.members, id)
			continue
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Alive lists the members that are alive, this node included; sorted by ID.
// A member memberlist suspects counts as alive until it is declared dead.
func (g *Gossip) Alive() []Member {
	return slices.DeleteFunc(g.Members(), func(m Member) bool { return m.State != MemberAlive })
}

// Events delivers changes to other members (never this node's own: it knows
// them). The channel is buffered and memberlist never waits for it: when it
// is full the oldest event is dropped to make room for the newest, and the
// drop is logged. Events are prompts, not a ledger: a consumer reconciles
// against Members(), which is always complete. The channel is closed by
// Leave or Close.
func (g *Gossip) Events() <-chan MemberEvent { return g.events }

// Leave tells the fleet this node is going, waits up to timeout for that to
// be sent, and shuts down. Others list it as "left", not "dead"; should the
// announcement not reach some of them in time, those see it "dead".
func (g *Gossip) Leave(timeout time.Duration) error {
	var err error
	g.closeOnce.Do(func() {
		deadline := time.Now().Add(timeout)
		// memberlist waits forever on a zero timeout.
		left := func() time.Duration { return max(time.Until(deadline), time.Millisecond) }
		g.mu.Lock()
		g.leaving = true
		g.mu.Unlock()
		// The intent first, as metadata, so that peers can tell the
		// departure that follows from a crash.
		err = g.ml.UpdateNode(left())
		if leaveErr := g.ml.Leave(left()); leaveErr != nil {
			err = leaveErr
		}
		g.shutdown()
	})
	return err
}

// Close shuts down without a word to the fleet, as a crash would: others
// declare this node dead once it fails their probes.
func (g *Gossip) Close() error {
	g.closeOnce.Do(g.shutdown)
	return nil
}

func (g *Gossip) shutdown() {
	close(g.stop)
	if err := g.ml.Shutdown(); err != nil {
		g.log.Warn().Err(err).Msg("gossip shutdown")
	}
	g.wg.Wait()
	g.mu.Lock()
	defer g.mu.Unlock()
	// memberlist handlers still in flight may report after Shutdown; the
	// closed flag turns them away from the closed channel.
	g.closed = true
	close(g.events)
}

// observe records what memberlist tells the delegate. It runs with
// memberlist's node lock held, so it must not call back into memberlist.
func (g *Gossip) observe(kind string, n *memberlist.Node) {
	meta, leaving, err := decodeMeta(n.Name, n.Meta)
	if err != nil {
		g.log.Warn().Err(err).Str("node", n.Name).Msg("undecodable gossip metadata")
		meta = NodeMeta{ID: n.Name}
	}
	if kind == EventDead && leaving {
		kind = EventLeave
	}
	m := Member{NodeMeta: meta, State: MemberAlive, Addr: n.Address(), Updated: time.Now()}
	switch kind {
	case EventDead:
		m.State = MemberDead
	case EventLeave:
		m.State = MemberLeft
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return
	}
	g.members[n.Name] = m
	if n.Name == g.cfg.NodeID {
		return
	}
	ev := MemberEvent{Kind: kind, Member: m}
	select {
	case g.events <- ev:
		return
	default:
	}
	select {
	case <-g.events:
		g.dropped++
		// 1, 2, 4, 8...: a stalled consumer shows without flooding the log.
		if g.dropped&(g.dropped-1) == 0 {
			g.log.Warn().Uint64("dropped", g.dropped).Msg("gossip event consumer is behind; dropping oldest events")
		}
	default: // the consumer took one meanwhile
	}
	// Cannot block: every send happens under g.mu, and a slot was just freed.
	g.events <- ev
}

// delegate keeps memberlist's callbacks off Gossip's exported method set.
type delegate struct{ g *Gossip }

func (d delegate) NodeMeta(limit int) []byte {
	m := d.g.local()
	d.g.mu.Lock()
	defer d.g.mu.Unlock()
	b, err := encodeMeta(m, d.g.leaving, limit)
	if err != nil {
		// StartGossip checked the first metadata, so only a field that grew
		// since gets here; the last announcement stays in force.
		d.g.log.Error().Err(err).Msg("gossip metadata not updated")
		return d.g.lastMeta
	}
	d.g.lastMeta = b
	return b
}

func (d delegate) NotifyJoin(n *memberlist.Node)   { d.g.observe(EventJoin, n) }
func (d delegate) NotifyUpdate(n *memberlist.Node) { d.g.observe(EventUpdate, n) }
func (d delegate) NotifyLeave(n *memberlist.Node)  { d.g.observe(EventDead, n) }

// The fleet exchanges nothing but node metadata: no user messages, no
// broadcasts of our own, no extra state in full syncs.
func (delegate) NotifyMsg([]byte)                {}
func (delegate) GetBroadcasts(int, int) [][]byte { return nil }
func (delegate) LocalState(bool) []byte          { return nil }
func (delegate) MergeRemoteState([]byte, bool)   {}

// metaVersion is the first byte of encoded metadata. Newer nodes may append
// fields after the ones below without changing it (older nodes read what they
// know and ignore the rest); a different layout needs a new version, which
// older nodes refuse rather than misread.
const metaVersion = 1

// flags bits
const (
	metaReady   = 1 << 0
	metaLeaving = 1 << 1 // the node is leaving on purpose
)

// encodeMeta packs m compactly: version, flags, varint AppliedIndex and
// KeysReady, then length-prefixed APIAddr, ClusterAddr, HSMStatus, HSMModel,
// KeysDigest and Version, then varint CommandSet (the last two appended
// later: older builds stop reading before them). ID is not sent: it is the
// gossip node name. A typical node needs about 140 bytes of the 512 allowed.
func encodeMeta(m NodeMeta, leaving bool, limit int) ([]byte, error) {
	var flags byte
	if m.Ready {
		flags |= metaReady
	}
	if leaving {
		flags |= metaLeaving
	}
	b := []byte{metaVersion, flags}
	b = binary.AppendUvarint(b, m.AppliedIndex)
	b = binary.AppendVarint(b, int64(m.KeysReady))
	for _, s := range []string{m.APIAddr, m.ClusterAddr, m.HSMStatus, m.HSMModel, m.KeysDigest, m.Version} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendUvarint(b, uint64(m.CommandSet))
	if len(b) > limit {
		return nil, fmt.Errorf("node metadata is %d bytes, over the gossip limit of %d (addresses or HSM model too long)", len(b), limit)
	}
	return b, nil
}

// decodeMeta is encodeMeta's inverse; id is the gossip node name.
func decodeMeta(id string, b []byte) (m NodeMeta, leaving bool, err error) {
	m.ID = id
	if len(b) < 2 {
		return m, false, errors.New("node metadata too short")
	}
	if b[0] != metaVersion {
		return m, false, fmt.Errorf("node metadata version %d, this node reads %d", b[0], metaVersion)
	}
	m.Ready = b[1]&metaReady != 0
	leaving = b[1]&metaLeaving != 0
	b = b[2:]
	var n int
	if m.AppliedIndex, n = binary.Uvarint(b); n <= 0 {
		return m, false, errors.New("node metadata: bad applied index")
	}
	b = b[n:]
	keys, n := binary.Varint(b)
	if n <= 0 {
		return m, false, errors.New("node metadata: bad key count")
	}
	m.KeysReady = int(keys)
	b = b[n:]
	for _, s := range []*string{&m.APIAddr, &m.ClusterAddr, &m.HSMStatus, &m.HSMModel, &m.KeysDigest} {
		l, n := binary.Uvarint(b)
		if n <= 0 || l > uint64(len(b)-n) {
			return m, false, errors.New("node metadata: truncated string")
		}
		*s = string(b[n : n+int(l)])
		b = b[n+int(l):]
	}
	if len(b) == 0 {
		return m, leaving, nil // a build from before Version and CommandSet
	}
	l, n := binary.Uvarint(b)
	if n <= 0 || l > uint64(len(b)-n) {
		return m, false, errors.New("node metadata: truncated version")
	}
	m.Version = string(b[n : n+int(l)])
	b = b[n+int(l):]
	commandSet, n := binary.Uvarint(b)
	if n <= 0 || commandSet > 1<<16 {
		return m, false, errors.New("node metadata: bad command set")
	}
	m.CommandSet = int(commandSet)
	return m, leaving, nil
}

// KeysDigestOf is the NodeMeta.KeysDigest of a set of ready key-version
// labels: SHA-256 over the sorted, de-duplicated, length-prefixed labels, in
// hex. Order and repeats do not matter, so two nodes holding the same
// versions report the same digest.
func KeysDigestOf(labels []string) string {
	sorted := slices.Compact(slices.Sorted(slices.Values(labels)))
	h := sha256.New()
	var n [binary.MaxVarintLen64]byte
	for _, l := range sorted {
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(l)))])
		h.Write([]byte(l))
	}
	return hex.EncodeToString(h.Sum(nil))
}
