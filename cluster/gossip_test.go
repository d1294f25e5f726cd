package cluster

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/rs/zerolog"

	"github.com/xksproxy/xksproxy/internal/testlog"
)

// Real memberlist over loopback UDP and TCP, every node on its own port 0,
// with probes shortened as in nomad's test servers so that failure detection
// takes about a second.

var (
	gossipKey      = bytes.Repeat([]byte{0x42}, 32)
	gossipOtherKey = bytes.Repeat([]byte{0x24}, 32)
)

const gossipDeadline = 10 * time.Second

type gossipNode struct {
	id   string
	g    *Gossip
	logs *testlog.Buffer

	mu   sync.Mutex
	meta NodeMeta
}

func (n *gossipNode) local() NodeMeta {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.meta
}

func (n *gossipNode) setMeta(f func(*NodeMeta)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	f(&n.meta)
}

func testGossipConfig(id string, keyring [][]byte, logs *testlog.Buffer, join ...string) GossipConfig {
	return GossipConfig{
		NodeID:         id,
		BindAddr:       "127.0.0.1:0",
		Join:           join,
		Keyring:        keyring,
		ProbeInterval:  100 * time.Millisecond,
		ProbeTimeout:   50 * time.Millisecond,
		GossipInterval: 20 * time.Millisecond,
		SuspicionMult:  3,
		// Heals the rare view that gossip alone leaves wrong (see
		// GossipConfig.PushPullInterval) within a test's patience.
		PushPullInterval: time.Second,
		Log:              zerolog.New(logs).Level(zerolog.DebugLevel),
	}
}

func testNodeMeta(id string) NodeMeta {
	labels := []string{id + "-a-v1", "demo-v1"}
	return NodeMeta{
		ID: id, APIAddr: id + ".example:8443", ClusterAddr: id + ".example:7000",
		HSMStatus: "ACTIVE", HSMModel: "SoftHSM v2", AppliedIndex: 1, Ready: true,
		KeysDigest: KeysDigestOf(labels), KeysReady: len(labels),
	}
}

// startGossipNode starts a member that joins through join (if any) and is
// closed, crash-like, when the test ends.
func startGossipNode(t *testing.T, id string, key []byte, join ...string) *gossipNode {
	t.Helper()
	return startGossipNodeRing(t, id, [][]byte{key}, join...)
}

func startGossipNodeRing(t *testing.T, id string, keyring [][]byte, join ...string) *gossipNode {
	t.Helper()
	n := &gossipNode{id: id, logs: &testlog.Buffer{}, meta: testNodeMeta(id)}
	g, err := StartGossip(testGossipConfig(id, keyring, n.logs, join...), n.local)
	if err != nil {
		t.Fatalf("starting %s: %v", id, err)
	}
	n.g = g
	t.Cleanup(func() {
		g.Close()
		if t.Failed() {
			t.Logf("%s log tail:\n%s", id, tail(n.logs.String(), 4000))
		}
	})
	return n
}

// startGossipFleet starts nodes g01..g0N, all joining through the first.
func startGossipFleet(t *testing.T, size int) []*gossipNode {
	t.Helper()
	nodes := []*gossipNode{startGossipNode(t, "g01", gossipKey)}
	for i := 2; i <= size; i++ {
		nodes = append(nodes, startGossipNode(t, fmt.Sprintf("g%02d", i), gossipKey, nodes[0].g.Addr()))
	}
	for _, n := range nodes {
		gossipWait(t, n.id+" sees the whole fleet alive", func() bool { return len(n.g.Alive()) == size })
	}
	return nodes
}

func gossipWait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(gossipDeadline)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting until %s", gossipDeadline, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func memberOf(g *Gossip, id string) (Member, bool) {
	for _, m := range g.Members() {
		if m.ID == id {
			return m, true
		}
	}
	return Member{}, false
}

// waitEvent reads n's events, skipping others, until one of kind about id.
func waitEvent(t *testing.T, n *gossipNode, kind, id string) Member {
	t.Helper()
	deadline := time.After(gossipDeadline)
	for {
		select {
		case ev := <-n.g.Events():
			if ev.Member.ID == n.id {
				t.Errorf("%s got an event about itself: %+v", n.id, ev)
			}
			if ev.Kind == kind && ev.Member.ID == id {
				return ev.Member
			}
		case <-deadline:
			t.Fatalf("%s: no %s event for %s within %v", n.id, kind, id, gossipDeadline)
		}
	}
}

func TestGossipFleetFormsFromOneAddress(t *testing.T) {
	nodes := startGossipFleet(t, 3)
	for _, n := range nodes {
		members := n.g.Members()
		for i, m := range members {
			want := nodes[i]
			if m.NodeMeta != want.local() || m.State != MemberAlive || m.Addr != want.g.Addr() {
				t.Errorf("%s sees member %d as %+v, want %+v alive at %s", n.id, i, m, want.local(), want.g.Addr())
			}
		}
	}
}

func TestGossipRefreshSpreadsMetadata(t *testing.T) {
	nodes := startGossipFleet(t, 3)
	n2 := nodes[1]
	n2.setMeta(func(m *NodeMeta) {
		m.AppliedIndex = 4242
		m.HSMStatus = "DEGRADED"
		m.Ready = false
	})
	n2.g.Refresh()
	for _, n := range nodes {
		gossipWait(t, n.id+" sees g02's new metadata", func() bool {
			m, ok := memberOf(n.g, "g02")
			return ok && m.NodeMeta == n2.local()
		})
	}
}

func TestGossipDeadMemberAndRestart(t *testing.T) {
	nodes := startGossipFleet(t, 3)
	n1, n3 := nodes[0], nodes[2]
	oldAddr := n3.g.Addr()

	n3.g.Close()
	for _, n := range nodes[:2] {
		gossipWait(t, n.id+" declares g03 dead", func() bool {
			m, ok := memberOf(n.g, "g03")
			return ok && m.State == MemberDead && len(n.g.Alive()) == 2
		})
	}
	if m := waitEvent(t, n1, EventDead, "g03"); m.State != MemberDead || m.Addr != oldAddr {
		t.Errorf("dead event carries %+v", m)
	}

	// Same ID, new port: the dead incarnation's name is reclaimed.
	back := startGossipNode(t, "g03", gossipKey, n1.g.Addr())
	back.setMeta(func(m *NodeMeta) { m.AppliedIndex = 7 })
	back.g.Refresh()
	if back.g.Addr() == oldAddr {
		t.Fatalf("restarted node bound the old address %s again", oldAddr)
	}
	for _, n := range []*gossipNode{n1, nodes[1], back} {
		gossipWait(t, n.id+" sees g03 alive again at its new address", func() bool {
			m, ok := memberOf(n.g, "g03")
			return ok && m.State == MemberAlive && m.Addr == back.g.Addr() && m.NodeMeta == back.local() &&
				len(n.g.Alive()) == 3
		})
	}
	if m := waitEvent(t, n1, EventJoin, "g03"); m.Addr != back.g.Addr() {
		t.Errorf("join event carries %+v, want address %s", m, back.g.Addr())
	}
}

func TestGossipJoinEvents(t *testing.T) {
	n1 := startGossipNode(t, "g01", gossipKey)
	n2 := startGossipNode(t, "g02", gossipKey, n1.g.Addr())
	if m := waitEvent(t, n1, EventJoin, "g02"); m.NodeMeta != n2.local() || m.State != MemberAlive {
		t.Errorf("join event carries %+v", m)
	}
	waitEvent(t, n2, EventJoin, "g01")

	n2.setMeta(func(m *NodeMeta) { m.HSMStatus = "UNAVAILABLE" })
	n2.g.Refresh()
	if m := waitEvent(t, n1, EventUpdate, "g02"); m.HSMStatus != "UNAVAILABLE" {
		t.Errorf("update event carries %+v", m)
	}
}

func TestGossipEventsNeverBlockAndDropTheOldest(t *testing.T) {
	g := &Gossip{cfg: GossipConfig{NodeID: "self"}, log: zerolog.Nop(), members: map[string]Member{},
		events: make(chan MemberEvent, eventBuffer)}
	const sent = eventBuffer + 100
	for i := range sent {
		meta := mustEncodeMeta(t, NodeMeta{AppliedIndex: uint64(i)}, false)
		// Nobody reads the channel: this would hang if memberlist could block.
		delegate{g}.NotifyUpdate(&memberlist.Node{Name: "peer", Addr: net.IPv4(127, 0, 0, 1), Port: 7946, Meta: meta})
	}
	delegate{g}.NotifyJoin(&memberlist.Node{Name: "self", Meta: mustEncodeMeta(t, NodeMeta{}, false)})
	if len(g.events) != eventBuffer || g.dropped != sent-eventBuffer {
		t.Fatalf("%d events queued, %d dropped; want %d and %d", len(g.events), g.dropped, eventBuffer, sent-eventBuffer)
	}
	first := <-g.events
	if want := uint64(sent - eventBuffer); first.Member.AppliedIndex != want || first.Kind != EventUpdate {
		t.Errorf("oldest queued event %+v, want the update with index %d", first, want)
	}
	if m, ok := memberOf(g, "peer"); !ok || m.AppliedIndex != sent-1 || m.Addr != "127.0.0.1:7946" {
		t.Errorf("member list has %+v, want the last update", m)
	}
	if _, ok := memberOf(g, "self"); !ok {
		t.Error("the local node is missing from the member list")
	}
}

func TestGossipLeave(t *testing.T) {
	nodes := startGossipFleet(t, 3)
	n1, n2 := nodes[0], nodes[1]
	if err := n2.g.Leave(2 * time.Second); err != nil {
		t.Fatalf("leave: %v", err)
	}
	for _, n := range []*gossipNode{n1, nodes[2]} {
		gossipWait(t, n.id+" sees g02 left", func() bool {
			m, ok := memberOf(n.g, "g02")
			return ok && m.State == MemberLeft && len(n.g.Alive()) == 2
		})
	}
	waitEvent(t, n1, EventLeave, "g02")
	// The leaver's channel is closed, so a consumer ranging over it ends.
	drained := time.After(gossipDeadline)
	for open := true; open; {
		select {
		case _, open = <-n2.g.Events():
		case <-drained:
			t.Fatal("the events channel is still open after Leave")
		}
	}
	if err := n2.g.Close(); err != nil {
		t.Errorf("close after leave: %v", err)
	}
}

func TestGossipWrongKeyCannotJoin(t *testing.T) {
	nodes := startGossipFleet(t, 2)
	intruder := startGossipNode(t, "intruder", gossipOtherKey, nodes[0].g.Addr())
	gossipWait(t, "the intruder's join fails", func() bool {
		return strings.Contains(intruder.logs.String(), "gossip join failed")
	})
	gossipWait(t, "g01 reports a message it could not decrypt", func() bool {
		return strings.Contains(nodes[0].logs.String(), "no installed keys could decrypt the message")
	})
	for _, n := range nodes {
		if _, ok := memberOf(n.g, "intruder"); ok {
			t.Errorf("%s lists the intruder: %+v", n.id, n.g.Members())
		}
	}
	if ms := intruder.g.Members(); len(ms) != 1 || ms[0].ID != "intruder" {
		t.Errorf("the intruder learned about others: %+v", ms)
	}
	select {
	case ev := <-intruder.g.Events():
		t.Errorf("the intruder got an event: %+v", ev)
	default:
	}
}

// Mid-rotation, nodes that hold both keys but encrypt with different ones
// still understand each other: every key in the ring decrypts.
func TestGossipKeyRotation(t *testing.T) {
	n1 := startGossipNodeRing(t, "g01", [][]byte{gossipOtherKey, gossipKey})
	n2 := startGossipNodeRing(t, "g02", [][]byte{gossipKey, gossipOtherKey}, n1.g.Addr())
	gossipWait(t, "g02 hears g01", func() bool { return len(n2.g.Alive()) == 2 })
	gossipWait(t, "g01 hears g02", func() bool { return len(n1.g.Alive()) == 2 })
}

func TestGossipMetaEncoding(t *testing.T) {
	// A node holding many key versions gossips their count and digest, so
	// its metadata is the same size as with two.
	labels := make([]string, 10000)
	for i := range labels {
		labels[i] = fmt.Sprintf("xks-key-%05d-v%d-3f9a2c", i, i%3+1)
	}
	m := NodeMeta{
		ID: "node-eu-west-1a", APIAddr: "[2001:db8::1234:5678]:8443", ClusterAddr: "10.20.30.40:7000",
		HSMStatus: "DEGRADED", HSMModel: "Thales Luna Network HSM 7 A790", AppliedIndex: 1<<63 + 12345,
		Ready: true, KeysDigest: KeysDigestOf(labels), KeysReady: len(labels),
	}
	b := mustEncodeMeta(t, m, false)
	if len(b) > 200 {
		t.Errorf("metadata with %d keys takes %d bytes, want a compact encoding", len(labels), len(b))
	}
	got, leaving, err := decodeMeta(m.ID, b)
	if err != nil || got != m || leaving {
		t.Fatalf("round trip: got %+v, leaving %v, %v; want %+v", got, leaving, err, m)
	}
	if got, leaving, err := decodeMeta(m.ID, mustEncodeMeta(t, m, true)); err != nil || got != m || !leaving {
		t.Errorf("round trip of a leaving node: got %+v, leaving %v, %v", got, leaving, err)
	}
	if zero, _, err := decodeMeta("z", mustEncodeMeta(t, NodeMeta{}, false)); err != nil || zero != (NodeMeta{ID: "z"}) {
		t.Errorf("zero metadata round trip: %+v, %v", zero, err)
	}

	shuffled := append([]string(nil), labels...)
	rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	if KeysDigestOf(append(shuffled, labels[7])) != m.KeysDigest {
		t.Error("the digest depends on the order of the labels or on repeats")
	}
	if KeysDigestOf(labels[1:]) == m.KeysDigest || KeysDigestOf([]string{"ab", "c"}) == KeysDigestOf([]string{"a", "bc"}) {
		t.Error("different label sets share a digest")
	}

	// Fields that cannot fit are refused, never cut: memberlist panics on
	// metadata over its limit.
	big := m
	big.HSMModel = strings.Repeat("x", memberlist.MetaMaxSize)
	if _, err := encodeMeta(big, false, memberlist.MetaMaxSize); err == nil {
		t.Error("metadata over the limit was encoded")
	}

	// Newer nodes may append fields; older ones read what they know.
	if got, _, err := decodeMeta(m.ID, append(bytes.Clone(b), 0x01, 0x02)); err != nil || got != m {
		t.Errorf("metadata with an appended field: %+v, %v", got, err)
	}
	for name, bad := range map[string][]byte{
		"empty":         nil,
		"other version": append([]byte{2}, b[1:]...),
		"truncated":     b[:len(b)-1],
		"bad varint":    {metaVersion, 0, 0xff},
	} {
		if _, _, err := decodeMeta("x", bad); err == nil {
			t.Errorf("%s metadata decoded", name)
		}
	}
}

func mustEncodeMeta(t *testing.T, m NodeMeta, leaving bool) []byte {
	t.Helper()
	b, err := encodeMeta(m, leaving, memberlist.MetaMaxSize)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestGossipConfigRefusals(t *testing.T) {
	logs := &testlog.Buffer{}
	ok := func() NodeMeta { return testNodeMeta("g01") }
	for name, tc := range map[string]struct {
		change func(*GossipConfig)
		local  func() NodeMeta
	}{
		"no keyring":        {func(c *GossipConfig) { c.Keyring = nil }, ok},
		"bad key size":      {func(c *GossipConfig) { c.Keyring = [][]byte{make([]byte, 20)} }, ok},
		"bad secondary key": {func(c *GossipConfig) { c.Keyring = append(c.Keyring, make([]byte, 8)) }, ok},
		"no node id":        {func(c *GossipConfig) { c.NodeID = "" }, ok},
		"bad bind address":  {func(c *GossipConfig) { c.BindAddr = "127.0.0.1" }, ok},
		"advertise, port 0": {func(c *GossipConfig) { c.Advertise = "10.0.0.1:7946" }, ok},
		"other node's meta": {func(*GossipConfig) {}, func() NodeMeta { return testNodeMeta("g02") }},
		"meta too big": {func(*GossipConfig) {}, func() NodeMeta {
			m := testNodeMeta("g01")
			m.HSMModel = strings.Repeat("x", 600)
			return m
		}},
	} {
		cfg := testGossipConfig("g01", [][]byte{gossipKey}, logs)
		tc.change(&cfg)
		if g, err := StartGossip(cfg, tc.local); err == nil {
			g.Close()
			t.Errorf("%s: StartGossip succeeded", name)
		}
	}
}
