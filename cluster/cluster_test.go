package cluster

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/xksproxy/xksproxy/admin"
	"github.com/xksproxy/xksproxy/fsm"
	"github.com/xksproxy/xksproxy/hsm"
	"github.com/xksproxy/xksproxy/hsm/softhsm"
	"github.com/xksproxy/xksproxy/internal/testlog"
	"github.com/xksproxy/xksproxy/internal/testpki"
	"github.com/xksproxy/xksproxy/xksapi"
	"github.com/xksproxy/xksproxy/xksclient"
)

// Real Raft over loopback TCP with mutual TLS, real SoftHSMv2 tokens (one per
// node, as separate HSMs), real HTTPS and SigV4 on every node's data plane.

var (
	module      string
	ceremony    = make([]byte, hsm.ClusterKeysSize)
	testPIN     = "test-pin-1234"
	tokenLabels = []string{"node1", "node2", "node3", "node4", "node5"}
)

// ServeAdmin starts node n's admin API on a loopback port and returns its
// address and how to stop it. The server (admin/server) imports this
// package, so these internal tests cannot; adminserver_test.go, an
// external test file in the same test binary, sets it.
var ServeAdmin func(n *Node, token, clientCAFile string, log zerolog.Logger) (addr string, stop func(), err error)

// set stores a typed client call's answer in *out and returns its error,
// so that a test can check both in one if statement.
func set[T any](out *T) func(T, error) error {
	return func(v T, err error) error {
		*out = v
		return err
	}
}

func TestMain(m *testing.M) {
	os.Exit(func() int {
		tokens, err := softhsm.TestTokens("cluster-test-", testPIN, tokenLabels...)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer tokens.Remove()
		module = tokens.Module
		rand.Read(ceremony)
		return m.Run()
	}())
}

// testNode is one cluster member with its own HSM and data plane.
type testNode struct {
	id      string
	dir     string
	hsm     *hsm.HSM
	views   *fsm.ViewHolder
	node    *Node
	api     *xksapi.Server
	apiAddr string
	admin   *admin.Client
	// closeAdmin stops n's admin API, as a crash would.
	closeAdmin func()
	cfg        Config
	logs       *testlog.Buffer
	c          *testCluster
	// skew moves this node's clock on top of the cluster's (nanoseconds):
	// one node with a wrong clock.
	skew atomic.Int64
}

type testCluster struct {
	t     *testing.T
	ca    *testpki.CA
	apiCA *testpki.CA
	// adminCA issues operator certificates (admin.client_ca_file).
	adminCA *testpki.CA
	nodes   []*testNode
	token   string
	secret  string
	akid    string
	http    *http.Client
	noSeed  bool // a bootstrapping node starts empty (a restore target)
	// skew moves every node's deletion clock forward (nanoseconds).
	skew atomic.Int64
	// gossipKey, when set, runs every node with gossip and bootstrap-expect
	// instead of Bootstrap and Raft joins.
	gossipKey   []byte
	expect      int
	deadTimeout time.Duration
	// slowUnwrap, when set, holds every unwrap of a label that contains it
	// until the channel closes (fault injection: a slow HSM), announcing
	// each on unwrapHeld.
	slowUnwrap atomic.Pointer[slowUnwrap]
	// leaderLease, when set, is every node's heartbeat and election
	// timeout and leader lease: a leader cut off from the others goes on
	// taking itself for the leader about this long.
	leaderLease time.Duration
}

type slowUnwrap struct {
	label   string
	held    chan string // node ids, as their unwraps are held
	release chan struct{}
}

func (c *testCluster) now() time.Time { return time.Now().Add(time.Duration(c.skew.Load())) }

// testClusterID is the cluster id in the test nodes' certificates.
const testClusterID = "test-cluster"

const (
	demoStore = "demo"
	demoPath  = "/demo/kms/xks/v1"
	demoKey   = "demo-key"
)

func newTestCluster(t *testing.T, size int) *testCluster {
	t.Helper()
	return newTestClusterWith(t, size, func(*testCluster) {})
}

// newTestClusterWith is newTestCluster with prepare's settings.
func newTestClusterWith(t *testing.T, size int, prepare func(*testCluster)) *testCluster {
	t.Helper()
	c := &testCluster{}
	c.init(t)
	prepare(c)
	for i := range size {
		n := c.addNode(tokenLabels[i], i == 0, true)
		if i == 0 {
			c.waitFor("node1 to lead and seed", 20*time.Second, func() bool {
				return n.node.IsLeader() && n.node.fsm.State().Seeded()
			})
		}
	}
	c.waitFor("every node to be ready and serve the demo key", 30*time.Second, func() bool {
		for _, n := range c.nodes {
			if n.node.ServingError() != nil || n.client().RoundTrip(demoKey, md("Encrypt"), []byte("x"), nil) != nil {
				return false
			}
		}
		return true
	})
	return c
}

// init gives c its CAs, demo credential, admin token and client, and stops
// every node and closes its HSM when the test ends.
func (c *testCluster) init(t *testing.T) {
	cred := fsm.GenerateCredential()
	c.t, c.ca, c.apiCA, c.adminCA = t, testpki.NewCA(t, "cluster CA"), testpki.NewCA(t, "api CA"), testpki.NewCA(t, "admin client CA")
	c.token, c.secret, c.akid = "admin-token-0123456789", string(cred.Secret), cred.AccessKeyID
	hc, err := xksclient.NewHTTPClient(c.apiCA.CAFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.http = hc
	t.Cleanup(func() {
		for _, n := range c.nodes {
			c.stop(n)
			n.hsm.Close()
		}
	})
}

// addNode starts a member on tokenLabel. The first bootstraps and seeds;
// later ones join through every running node.
func (c *testCluster) addNode(tokenLabel string, bootstrap, importKeys bool) *testNode {
	c.t.Helper()
	h, err := hsm.Open(hsm.Config{ModulePath: module, TokenLabel: tokenLabel, PIN: testPIN,
		WaitTimeout: 2 * time.Second, CallTimeout: 2 * time.Second, HealthInterval: 500 * time.Millisecond})
	if err != nil {
		c.t.Fatal(err)
	}
	if importKeys {
		if err := h.ImportClusterKeys(ceremony); err != nil {
			c.t.Fatal(err)
		}
	}
	certFile, keyFile := c.ca.IssueWith(c.t, tokenLabel, time.Now().Add(-time.Hour), NodeIdentityURI(testClusterID, tokenLabel))
	unwrap := func(wrapped []byte, mechanism, label string) error {
		if s := c.slowUnwrap.Load(); s != nil && strings.Contains(label, s.label) {
			s.held <- tokenLabel
			<-s.release
		}
		return h.UnwrapKey(wrapped, mechanism, label)
	}
	n := &testNode{id: tokenLabel, dir: c.t.TempDir(), hsm: h, views: &fsm.ViewHolder{}, logs: &testlog.Buffer{}, c: c}
	n.cfg = Config{
		NodeID: tokenLabel, DataDir: n.dir, Bind: "127.0.0.1:0",
		TLS:              TLSFiles{CAFile: c.ca.CAFile, CertFile: certFile, KeyFile: keyFile},
		Bootstrap:        bootstrap,
		Version:          "test-build",
		unwrapKey:        unwrap,
		StalenessLimit:   3 * time.Second,
		Now:              func() time.Time { return c.now().Add(time.Duration(n.skew.Load())) },
		HeartbeatTimeout: 300 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond, LeaderLease: 150 * time.Millisecond,
	}
	if c.leaderLease > 0 {
		n.cfg.HeartbeatTimeout, n.cfg.ElectionTimeout, n.cfg.LeaderLease = c.leaderLease, c.leaderLease, c.leaderLease
	}
	for _, other := range c.nodes {
		if other.node != nil && c.gossipKey == nil {
			n.cfg.Join = append(n.cfg.Join, other.node.ClusterAddr())
		}
	}
	if c.gossipKey != nil {
		n.cfg.Bootstrap, n.cfg.BootstrapExpect, n.cfg.DeadTimeout = false, c.expect, c.deadTimeout
		n.cfg.Gossip = &GossipConfig{BindAddr: "127.0.0.1:0", Keyring: [][]byte{c.gossipKey},
			ProbeInterval: 100 * time.Millisecond, ProbeTimeout: 50 * time.Millisecond, GossipInterval: 50 * time.Millisecond,
			SuspicionMult: 2, RejoinInterval: time.Second}
		if len(c.nodes) > 0 && c.nodes[0].node != nil {
			n.cfg.Gossip.Join = []string{c.nodes[0].node.GossipAddr()}
		}
	}
	if (bootstrap || c.gossipKey != nil) && !c.noSeed {
		n.cfg.Seed = &SeedSpec{
			KeyStores: []SeedKeyStore{{Name: demoStore, URIPath: demoPath, Region: "us-east-1", GrantsMode: fsm.GrantsOpen,
				KeyMode: fsm.KeyModeReplicated, Credentials: []SeedCredential{{AccessKeyID: c.akid, Secret: []byte(c.secret)}}}},
			Keys: []SeedKey{{KeyStore: demoStore, ID: demoKey, Usage: fsm.UsageEncrypt | fsm.UsageDecrypt}},
		}
	}
	c.start(n)
	c.nodes = append(c.nodes, n)
	return n
}

// start runs (or restarts) n's cluster member, data plane and admin API.
func (c *testCluster) start(n *testNode) {
	c.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.t.Fatal(err)
	}
	n.cfg.APIAddr = ln.Addr().String()
	// As a node's own logger: a timestamp and no other context (the code
	// logs "node" itself, about whichever node a line concerns).
	log := zerolog.New(n.logs).With().Timestamp().Logger()
	if n.node, err = Start(n.cfg, n.hsm, n.views, log); err != nil {
		c.t.Fatal(err)
	}
	// Restarts must come back at the same address: fix it after the first bind.
	n.cfg.Bind = n.node.ClusterAddr()
	adminAddr, closeAdmin, err := ServeAdmin(n.node, c.token, c.adminCA.CAFile, log)
	if err != nil {
		c.t.Fatal(err)
	}
	n.closeAdmin = closeAdmin
	if n.admin, err = admin.NewClient("https://"+adminAddr, c.token, c.ca.CAFile); err != nil {
		c.t.Fatal(err)
	}
	apiCert, apiKey := c.apiCA.Issue(c.t, "localhost")
	tlsCfg, err := xksapi.TLSConfig{CertFile: apiCert, KeyFile: apiKey}.Build()
	if err != nil {
		c.t.Fatal(err)
	}
	node := n.node
	// Load shedding off: three nodes in one -race process on a busy CI
	// machine are CPU-bound enough to shed, and these tests are about the
	// cluster, not about shedding (xksapi tests that).
	n.api = xksapi.New(xksapi.Config{NodeID: n.id, Ready: node.ServingError, OverloadWait: -1,
		Degraded: func() bool { return len(node.KeysMissing()) > 0 }, Fleet: func() (int, []xksapi.FleetMember) {
			size, others := node.Fleet()
			out := make([]xksapi.FleetMember, len(others))
			for i, m := range others {
				out[i] = xksapi.FleetMember{ID: m.ID, Model: m.HSMModel, Status: m.Status}
			}
			return size, out
		}}, n.views, n.hsm, log)
	n.apiAddr = ln.Addr().String()
	go n.api.ServeTLS(ln, tlsCfg)
}

// stop shuts n down as a crash would look to the others: no leave.
func (c *testCluster) stop(n *testNode) {
	if n.node == nil {
		return
	}
	n.api.Shutdown()
	n.closeAdmin()
	n.node.Close()
	n.node = nil
}

// applyAsOperator commits cmd through n as the bootstrap operator asked for
// it, as the admin API does: named (Audited) once the cluster reads
// command set 3, bare before.
func (n *testNode) applyAsOperator(ctx context.Context, cmd fsm.Command) (uint64, error) {
	if n.node.fsm.State().CommandSet() < 3 {
		return n.node.Apply(ctx, cmd)
	}
	env, err := fsm.NewAudited(fsm.Actor{Kind: fsm.ActorBootstrap, Name: fsm.BootstrapOperator, Role: fsm.RoleAdmin,
		RemoteAddr: "test", Node: n.id}, cmd)
	if err != nil {
		return 0, err
	}
	return n.node.Apply(ctx, env)
}

// client calls n's data plane with the demo credential.
func (n *testNode) client() *xksclient.Client {
	return n.clientWith(n.c.demoCreds())
}

func (n *testNode) clientWith(creds xksclient.Credentials) *xksclient.Client {
	return &xksclient.Client{Endpoint: "https://" + n.apiAddr, URIPath: demoPath, Creds: creds, HTTP: n.c.http}
}

func (c *testCluster) demoCreds() xksclient.Credentials {
	return xksclient.Credentials{AccessKeyID: c.akid, Secret: c.secret, Region: "us-east-1"}
}

func md(op string) xksclient.RequestMetadata {
	return xksclient.RequestMetadata{AWSPrincipalARN: "arn:aws:iam::111122223333:role/app", KMSKeyARN: "arn:aws:kms:us-east-1:111122223333:key/k",
		KMSOperation: op, KMSRequestID: fmt.Sprintf("r-%d", time.Now().UnixNano())}
}

func (c *testCluster) waitFor(what string, timeout time.Duration, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			for _, n := range c.nodes {
				c.t.Logf("%s log tail:\n%s", n.id, tail(n.logs.String(), 3000))
			}
			c.t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// fatalf fails the test with every node's log tail, as waitFor does.
func (c *testCluster) fatalf(format string, args ...any) {
	c.t.Helper()
	for _, n := range c.nodes {
		c.t.Logf("%s log tail:\n%s", n.id, tail(n.logs.String(), 3000))
	}
	c.t.Fatalf(format, args...)
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// waitLeader waits through an election for the leader.
func (c *testCluster) waitLeader() *testNode {
	c.t.Helper()
	c.waitFor("a leader", 20*time.Second, func() bool { return c.leader() != nil })
	return c.leader()
}

func (c *testCluster) leader() *testNode {
	for _, n := range c.nodes {
		if n.node != nil && n.node.IsLeader() {
			return n
		}
	}
	return nil
}

func isXKSError(err error, name string) bool {
	xe, ok := err.(*xksclient.Error)
	return ok && xe.Name == name
}
