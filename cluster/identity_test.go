package cluster

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/rs/zerolog"

	"github.com/xksproxy/xksproxy/internal/noderpc"
	"github.com/xksproxy/xksproxy/internal/testlog"
	"github.com/xksproxy/xksproxy/xksclient"
)

// The attacks of issue 15, each as an attacker would try it: with the
// gossip keyring alone, with a removed node's certificate, and with a
// certificate from the cluster CA that names another node or none.

// impostor is a process holding a certificate (and key) from the cluster CA,
// and nothing else: it speaks the cluster protocols by hand.
type impostor struct {
	t         *testing.T
	cert      tls.Certificate
	cn        string
	certFile  string
	keyFile   string
	transport *raft.NetworkTransport
}

// certAndKey lets an issuer's two results be passed as one.
func certAndKey(certFile, keyFile string) [2]string { return [2]string{certFile, keyFile} }

func newImpostor(t *testing.T, files [2]string) *impostor {
	t.Helper()
	certFile, keyFile := files[0], files[1]
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return &impostor{t: t, cert: cert, cn: cert.Leaf.Subject.CommonName, certFile: certFile, keyFile: keyFile}
}

// dial opens a cluster connection to addr announcing proto, as a node does.
func (im *impostor) dial(addr string, proto byte) (net.Conn, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr,
		&tls.Config{Certificates: []tls.Certificate{im.cert}, InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
	if err != nil {
		return nil, err
	}
	if _, err := c.Write([]byte{proto}); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// appendEntries sends a heartbeat from a leader of a far higher term: a
// follower that takes it steps up to that term (and, with entries, would
// store whatever it is sent).
func (im *impostor) appendEntries(target *testNode, term uint64) error {
	if im.transport == nil {
		im.transport = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream: impostorStream{im}, MaxPool: 1, Timeout: 2 * time.Second,
			Logger: nil,
		})
		im.t.Cleanup(func() { im.transport.Close() })
	}
	req := &raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(im.cn), Addr: []byte("127.0.0.1:1")},
		Term:      term, LeaderCommitIndex: 0,
	}
	var resp raft.AppendEntriesResponse
	return im.transport.AppendEntries(raft.ServerID(target.id), raft.ServerAddress(target.node.ClusterAddr()), req, &resp)
}

// rpc calls a node RPC and returns the HTTP status ("" body on a refused
// connection, with the error).
func (im *impostor) rpc(target *testNode, route noderpc.Route, body string) (int, error) {
	c, err := im.dial(target.node.ClusterAddr(), protoRPC)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	req, _ := http.NewRequest(route.Method, "http://cluster"+route.Path, strings.NewReader(body))
	if err := req.Write(c); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// impostorStream is the raft.StreamLayer of an impostor: it only dials.
type impostorStream struct{ im *impostor }

func (s impostorStream) Dial(addr raft.ServerAddress, _ time.Duration) (net.Conn, error) {
	return s.im.dial(string(addr), protoRaft)
}
func (impostorStream) Accept() (net.Conn, error) { select {} }
func (impostorStream) Close() error              { return nil }
func (impostorStream) Addr() net.Addr            { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }

// refusedEverywhere checks that im reaches neither Raft nor the node RPCs
// of any running node, and that no node's term moved.
func refusedEverywhere(t *testing.T, c *testCluster, im *impostor, what string) {
	t.Helper()
	const attackTerm = 1 << 40
	for _, n := range c.nodes {
		if n.node == nil {
			continue
		}
		if err := im.appendEntries(n, attackTerm); err == nil {
			t.Errorf("%s: %s's Raft transport took an AppendEntries", what, n.id)
		}
		if term := n.node.raft.CurrentTerm(); term >= attackTerm {
			t.Errorf("%s: %s moved to the attacker's term %d", what, n.id, term)
		}
		for _, call := range []struct {
			route noderpc.Route
			body  string
		}{
			{noderpc.Status, ""},
			{noderpc.Apply, "x"},
			{noderpc.Remove, `{"id":"node1"}`},
			{noderpc.Restore, "{}"},
			{noderpc.LeaderIndex, ""},
		} {
			if status, _ := im.rpc(n, call.route, call.body); status != 0 && status != http.StatusForbidden {
				t.Errorf("%s: %s answered %s with %d", what, n.id, call.route.Pattern(), status)
			}
		}
	}
}

func voterSet(t *testing.T, c *testCluster) string {
	t.Helper()
	servers, err := c.waitLeader().node.Servers()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range servers {
		out = append(out, fmt.Sprintf("%s@%s", s.ID, s.Address))
	}
	return strings.Join(out, ",")
}

func TestAKeyringOnlyProcessChangesNeitherVotersNorFleet(t *testing.T) {
	c := newGossipCluster(t, 3)
	c.waitFor("every node to report a fleet of 3", 15*time.Second, func() bool {
		for _, n := range c.nodes {
			if health(t, n).FleetSize != 3 {
				return false
			}
		}
		return true
	})
	before := voterSet(t, c)
	var node2 NodeMeta
	for _, m := range c.nodes[0].node.Members() {
		if m.ID == "node2" {
			node2 = m.NodeMeta
		}
	}
	if node2.ClusterAddr == "" {
		t.Fatal("node1 does not see node2 in the gossip")
	}
	// Two processes with the keyring and nothing else: one replays node2's
	// metadata under a new name, the other claims a cluster address where
	// nothing answers (which would cost a small cluster its quorum).
	unreachable := node2
	unreachable.ClusterAddr = "127.0.0.1:1"
	for name, meta := range map[string]NodeMeta{"intruder": node2, "blackhole": unreachable} {
		meta.ID = name
		logs := &testlog.Buffer{}
		g, err := StartGossip(GossipConfig{NodeID: name, BindAddr: "127.0.0.1:0", Join: []string{c.nodes[0].node.GossipAddr()},
			Keyring: [][]byte{c.gossipKey}, ProbeInterval: 100 * time.Millisecond, ProbeTimeout: 50 * time.Millisecond,
			GossipInterval: 50 * time.Millisecond, SuspicionMult: 2, RejoinInterval: time.Second,
			Log: zerolog.New(logs)}, func() NodeMeta { return meta })
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { g.Close() })
	}
	c.waitFor("every node to see both intruders in the gossip", 15*time.Second, func() bool {
		for _, n := range c.nodes {
			seen := 0
			for _, m := range n.node.gossip.Alive() {
				if m.ID == "intruder" || m.ID == "blackhole" {
					seen++
				}
			}
			if seen != 2 {
				return false
			}
		}
		return true
	})
	// The leader reconciles on every gossip event and every 2 s: give it
	// several rounds. On a busy machine gossip may hold a real member
	// suspect for a while (a fleet of 2), and a node briefly not ready (an
	// election) answers no health check; neither is the attack, so the
	// checks are that the fleet never grows and never lists an intruder.
	answered := 0
	deadline := time.Now().Add(6 * time.Second)
	for time.Now().Before(deadline) {
		if after := voterSet(t, c); after != before {
			c.fatalf("the voters changed:\nbefore %s\nafter  %s", before, after)
		}
		for _, n := range c.nodes {
			h, err := n.client().Health(xksclient.RequestMetadata{KMSRequestID: "h", KMSOperation: "KmsHealthCheck"})
			if isXKSError(err, "InternalException") {
				continue
			}
			if err != nil {
				c.fatalf("%s: %v", n.id, err)
			}
			answered++
			if h.FleetSize > 3 {
				c.fatalf("%s reports a fleet of %d: %+v", n.id, h.FleetSize, h.Fleet)
			}
			for _, m := range h.Fleet {
				if m.ID == "intruder" || m.ID == "blackhole" {
					c.fatalf("%s lists %s in its fleet", n.id, m.ID)
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	if answered == 0 {
		c.fatalf("no node answered a health check")
	}
}

func TestARemovedNodesCertificateIsRefused(t *testing.T) {
	c := newTestCluster(t, 3)
	gone := c.nodes[2]
	if gone.node.IsLeader() {
		gone = c.nodes[1]
	}
	im := newImpostor(t, [2]string{gone.cfg.TLS.CertFile, gone.cfg.TLS.KeyFile})
	if err := c.nodes[0].admin.RemoveNode(t.Context(), gone.id); err != nil {
		t.Fatal(err)
	}
	c.waitFor("the removed node to stop serving", 10*time.Second, func() bool { return gone.node.ServingError() != nil })
	c.stop(gone)
	// Whoever holds its certificate and key (the node itself, a copy of its
	// disk) can no longer reach any node, by Raft or RPC.
	refusedEverywhere(t, c, im, "the removed node's certificate")

	// Started again with the same certificate (a fresh disk, so that it asks
	// to join), it is not admitted.
	gone.cfg.DataDir = t.TempDir()
	c.start(gone)
	time.Sleep(3 * time.Second)
	if voters := voterSet(t, c); strings.Contains(voters, gone.id) {
		t.Fatalf("the removed node joined again with its old certificate: %s", voters)
	}
	c.stop(gone)

	// With a certificate issued after the removal, it joins again.
	time.Sleep(1100 * time.Millisecond) // certificates count time in whole seconds
	gone.cfg.TLS.CertFile, gone.cfg.TLS.KeyFile = c.ca.IssueWith(t, gone.id, time.Now(), NodeIdentityURI(testClusterID, gone.id))
	gone.cfg.DataDir = t.TempDir()
	c.start(gone)
	c.waitFor("the node to join again with a new certificate and serve", 30*time.Second, func() bool {
		return strings.Contains(voterSet(t, c), gone.id) && gone.node.ServingError() == nil
	})
}

func TestACertificateWithoutTheRightIdentityCannotActAsAnotherNode(t *testing.T) {
	c := newTestCluster(t, 3)
	before := voterSet(t, c)
	node2 := c.nodes[1]

	// From the cluster CA: a node the cluster never admitted, a certificate
	// that names no node (only a common name, as every node certificate did
	// before identities), and node2 of another cluster.
	mallory := newImpostor(t, certAndKey(c.ca.IssueWith(t, "mallory", time.Now().Add(-time.Hour), NodeIdentityURI(testClusterID, "mallory"))))
	for what, im := range map[string]*impostor{
		"a node outside the configuration": mallory,
		"a certificate that names no node": newImpostor(t, certAndKey(c.ca.Issue(t, "node2"))),
		"node2 of another cluster":         newImpostor(t, certAndKey(c.ca.IssueWith(t, "node2", time.Now().Add(-time.Hour), NodeIdentityURI("other-cluster", "node2")))),
	} {
		refusedEverywhere(t, c, im, what)
	}

	// mallory asks to join as node2, and as itself at node2's address.
	for _, req := range []string{
		fmt.Sprintf(`{"id":"node2","address":%q}`, "127.0.0.1:1"),
		fmt.Sprintf(`{"id":"mallory","address":%q}`, node2.node.ClusterAddr()),
	} {
		for _, n := range c.nodes {
			if status, err := mallory.rpc(n, noderpc.Join, req); status == http.StatusOK {
				t.Fatalf("%s admitted %s (%v)", n.id, req, err)
			}
		}
	}

	// An operator (or a member passing on a join) names node4 at an address
	// where mallory's certificate answers: the leader proves the identity
	// there, and refuses.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				tc := tls.Server(conn, &tls.Config{Certificates: []tls.Certificate{mallory.cert}, ClientAuth: tls.RequireAnyClientCert})
				tc.Handshake()
				io.Copy(io.Discard, tc)
				tc.Close()
			}()
		}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := c.nodes[0].admin.JoinNode(ctx, "node4", ln.Addr().String()); err == nil {
		t.Fatal("node4 was admitted at an address where mallory's certificate answers")
	}
	if after := voterSet(t, c); after != before {
		t.Fatalf("the voters changed:\nbefore %s\nafter  %s", before, after)
	}
}

// A node that was down while another joined does not list the newcomer,
// which may be the leader it must hear from: the members it does list
// vouch for it, and for nobody else.
func TestMembersVouchForANodeThisOneHasNotHeardOf(t *testing.T) {
	c := newTestCluster(t, 3)
	n1 := c.nodes[0].node
	var without []raft.Server
	for _, s := range n1.configuration() {
		if s.ID != "node3" {
			without = append(without, s)
		}
	}
	if !n1.vouchedFor("node3", without) {
		t.Fatal("the members did not vouch for node3")
	}
	if n1.vouchedFor("mallory", n1.configuration()) {
		t.Fatal("the members vouched for a node none of them lists")
	}
}
