package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/admin"
	"github.com/xksproxy/xksproxy/fsm"
	"github.com/xksproxy/xksproxy/internal/noderpc"
)

// adminAs is a client of n's admin API that presents token ("" for none)
// and, when cert is set, that client certificate.
func (n *testNode) adminAs(t *testing.T, token string, cert *tls.Certificate) *admin.Client {
	t.Helper()
	c, err := admin.NewClient(n.admin.BaseURL, token, n.c.ca.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	if cert != nil {
		c.HTTP.Transport.(*http.Transport).TLSClientConfig.Certificates = []tls.Certificate{*cert}
	}
	return c
}

var httpStatusPattern = regexp.MustCompile(`\(HTTP (\d+)\)$`)

// statusOf is the HTTP status an admin call was refused with (200 when it
// was not refused).
func statusOf(err error) int {
	if err == nil {
		return 200
	}
	m := httpStatusPattern.FindStringSubmatch(err.Error())
	if m == nil {
		return 0
	}
	s, _ := strconv.Atoi(m[1])
	return s
}

func (c *testCluster) waitCommandSet3() {
	c.t.Helper()
	c.waitFor("every node to read command set 3", 20*time.Second, func() bool {
		for _, n := range c.nodes {
			if n.node.fsm.State().CommandSet() < 3 {
				return false
			}
		}
		return true
	})
}

// A certificate from the cluster CA is a node's, not an operator's: it
// opens no admin route. Operator certificates come from the admin client
// CA and carry their operator and role.
func TestNodeCertificateCannotCallTheAdminAPI(t *testing.T) {
	c := newTestCluster(t, 1)
	n := c.nodes[0]
	ctx := t.Context()
	node := n.adminAs(t, "", c.ca.TLSCertificate(t, "node1"))
	if _, err := node.ListKeyStores(ctx); statusOf(err) != 401 {
		t.Fatalf("a node certificate lists key stores: %v", err)
	}
	if _, err := node.DisableKey(ctx, demoStore, demoKey); statusOf(err) != 401 {
		t.Fatalf("a node certificate disables a key: %v", err)
	}
	if _, err := node.SaveSnapshot(ctx, true); statusOf(err) != 401 {
		t.Fatalf("a node certificate saves a snapshot: %v", err)
	}
	if k := n.node.State().Key(demoStore, demoKey); !k.Enabled {
		t.Fatal("a node certificate disabled the key")
	}

	c.waitCommandSet3()
	carol := n.adminAs(t, "", c.adminCA.ClientCertificate(t, "carol", "xksproxy-operator://carol?role=killswitch"))
	if _, err := carol.DisableKey(ctx, demoStore, demoKey); err != nil {
		t.Fatalf("a killswitch certificate disables a key: %v", err)
	}
	if _, err := carol.EnableKey(ctx, demoStore, demoKey); statusOf(err) != 403 {
		t.Fatalf("a killswitch certificate enables a key: %v", err)
	}
	nobody := n.adminAs(t, "", c.adminCA.ClientCertificate(t, "nobody"))
	if _, err := nobody.ListKeyStores(ctx); statusOf(err) != 401 {
		t.Fatalf("an admin CA certificate naming no operator lists key stores: %v", err)
	}
	_, trail := n.node.State().AuditTrail()
	if len(trail) != 1 || trail[0].Actor.Kind != fsm.ActorCertificate || trail[0].Actor.Name != "carol" || trail[0].Action != "SetKeyEnabled" {
		t.Fatalf("audit trail %+v", trail)
	}
}

// A reader reads and writes nothing; a killswitch operator disables a key
// and a key store and does nothing else; a revoked token opens nothing.
// Every refusal is an audit log line and stays out of the replicated trail.
func TestRolesLimitWhatEachOperatorMayDo(t *testing.T) {
	c := newTestCluster(t, 1)
	n := c.nodes[0]
	ctx := t.Context()
	c.waitCommandSet3()
	newOperator := func(name string, role admin.Role) *admin.Client {
		op, err := n.admin.CreateOperator(ctx, admin.CreateOperatorRequest{Name: name, Role: role})
		if err != nil || op.Token == "" || op.Role != role {
			t.Fatalf("create %s: %+v %v", name, op, err)
		}
		return n.adminAs(t, op.Token, nil)
	}
	reader, kim := newOperator("rita", admin.RoleReader), newOperator("kim", admin.RoleKillSwitch)
	if ops, err := reader.ListOperators(ctx); err != nil || len(ops) != 2 {
		t.Fatalf("the reader lists operators: %+v %v", ops, err)
	}
	if _, err := reader.ShowKey(ctx, demoStore, demoKey); err != nil {
		t.Fatalf("the reader reads a key: %v", err)
	}
	if _, err := reader.DisableKey(ctx, demoStore, demoKey); statusOf(err) != 403 {
		t.Fatalf("the reader disables a key: %v", err)
	}
	if _, err := reader.CreateOperator(ctx, admin.CreateOperatorRequest{Name: "eve", Role: admin.RoleAdmin}); statusOf(err) != 403 {
		t.Fatalf("the reader creates an operator: %v", err)
	}
	if _, err := reader.SaveSnapshot(ctx, true); statusOf(err) != 403 {
		t.Fatalf("the reader saves a snapshot: %v", err)
	}

	if _, err := kim.DisableKey(ctx, demoStore, demoKey); err != nil {
		t.Fatalf("killswitch disables a key: %v", err)
	}
	if _, err := kim.DisableKeyStore(ctx, demoStore); err != nil {
		t.Fatalf("killswitch disables a key store: %v", err)
	}
	forbidden := map[string]func() error{
		"enable a key":        func() error { _, err := kim.EnableKey(ctx, demoStore, demoKey); return err },
		"enable a key store":  func() error { _, err := kim.EnableKeyStore(ctx, demoStore); return err },
		"create a key":        func() error { _, err := kim.CreateKey(ctx, demoStore, admin.CreateKeyRequest{ID: "k2"}); return err },
		"rotate a key":        func() error { _, err := kim.RotateKey(ctx, demoStore, demoKey); return err },
		"schedule a deletion": func() error { _, err := kim.ScheduleDeletion(ctx, demoStore, demoKey, 7); return err },
		"add a credential":    func() error { _, err := kim.AddCredential(ctx, demoStore, admin.AddCredentialRequest{}); return err },
		"remove a credential": func() error { _, err := kim.RemoveCredential(ctx, demoStore, c.akid); return err },
		"add a grant": func() error {
			_, err := kim.AddGrant(ctx, demoStore, admin.GrantInfo{KeyID: demoKey, Principals: []string{"*"}})
			return err
		},
		"create a key store": func() error {
			_, err := kim.CreateKeyStore(ctx, admin.CreateKeyStoreRequest{Name: "x", Region: "us-east-1"})
			return err
		},
		"create an operator": func() error {
			_, err := kim.CreateOperator(ctx, admin.CreateOperatorRequest{Name: "eve", Role: admin.RoleAdmin})
			return err
		},
		"revoke an operator": func() error { _, err := kim.RevokeOperator(ctx, "rita"); return err },
		"remove a node":      func() error { return kim.RemoveNode(ctx, "node9") },
		"save a snapshot":    func() error { _, err := kim.SaveSnapshot(ctx, true); return err },
		"restore a snapshot": func() error { _, err := kim.RestoreSnapshot(ctx, []byte("{}"), false); return err },
		"take a profile":     func() error { _, err := kim.Profile(ctx, "heap", url.Values{}); return err },
	}
	for what, call := range forbidden {
		if err := call(); statusOf(err) != 403 {
			t.Errorf("killswitch may %s: %v", what, err)
		}
	}
	st := n.node.State()
	if k := st.Key(demoStore, demoKey); k.Enabled || st.KeyStore(demoStore).Enabled || len(st.Keys(demoStore)) != 1 ||
		len(st.KeyStore(demoStore).Credentials) != 1 || len(st.Grants()) != 0 || len(st.Operators()) != 2 {
		t.Fatalf("the killswitch operator changed more than the two switches")
	}

	if _, err := n.admin.RevokeOperator(ctx, "kim"); err != nil {
		t.Fatal(err)
	}
	if _, err := kim.ListKeyStores(ctx); statusOf(err) != 401 {
		t.Fatalf("a revoked token lists key stores: %v", err)
	}

	// The trail holds the accepted changes, by whom; the refusals are log
	// lines and a count, not records.
	trail, err := reader.ListAudit(ctx, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range trail.Records {
		got = append(got, r.Actor.Name+":"+r.Action+":"+r.Outcome)
	}
	want := "bootstrap:CreateOperator:applied bootstrap:CreateOperator:applied kim:SetKeyEnabled:applied kim:UpdateKeyStore:applied bootstrap:RevokeOperator:applied"
	if strings.Join(got, " ") != want {
		t.Fatalf("audit trail:\n%s\nwant\n%s", strings.Join(got, " "), want)
	}
	if v, err := reader.VerifyAudit(ctx); err != nil || !v.Verified || v.Records != 5 {
		t.Fatalf("verify: %+v %v", v, err)
	}
	logs := n.logs.String()
	for _, want := range []string{`"outcome":"refused (role): token rita has role reader; disableKey needs killswitch"`,
		`"outcome":"refused (unauthenticated)`, `"audit":true,"node":"node1","seq":3`} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log has no line with %s", want)
		}
	}
	if strings.Contains(logs, "xks_") || strings.Contains(logs, "tokenHash") {
		t.Error("the log holds a token or a token hash")
	}
}

// A change received by a follower travels to the leader with its
// operator, and the leader checks the operator against its own state:
// a follower that has not yet learnt of a revocation cannot get the
// revoked operator's change committed.
func TestTheLeaderChecksAForwardedChangeAgain(t *testing.T) {
	c := newTestCluster(t, 3)
	ctx := t.Context()
	c.waitCommandSet3()
	leader := c.waitLeader()
	var follower *testNode
	for _, n := range c.nodes {
		if n != leader {
			follower = n
			break
		}
	}
	kim, err := leader.admin.CreateOperator(ctx, admin.CreateOperatorRequest{Name: "kim", Role: admin.RoleKillSwitch})
	if err != nil || !kim.Change.ConfirmedEverywhere() {
		t.Fatalf("create: %+v %v", kim, err)
	}
	if _, err := follower.adminAs(t, kim.Token, nil).DisableKey(ctx, demoStore, demoKey); err != nil {
		t.Fatalf("killswitch through a follower: %v", err)
	}
	// Every node holds the same trail, which names the follower.
	c.waitFor("every node to hold the same trail", 10*time.Second, func() bool {
		_, first := leader.node.State().AuditTrail()
		for _, n := range c.nodes {
			_, trail := n.node.State().AuditTrail()
			if len(trail) != 2 || len(first) != 2 || trail[1].Hash != first[1].Hash {
				return false
			}
		}
		return true
	})
	_, trail := leader.node.State().AuditTrail()
	if r := trail[1]; r.Actor.Name != "kim" || r.Actor.Node != follower.id || r.Action != "SetKeyEnabled" || r.Outcome != fsm.OutcomeApplied {
		t.Fatalf("record %+v", r)
	}

	if _, err := leader.admin.RevokeOperator(ctx, "kim"); err != nil {
		t.Fatal(err)
	}
	// The follower's request as it forwards it before it has applied the
	// revocation: its own check passed on its older state.
	late, err := fsm.NewAudited(fsm.Actor{Kind: fsm.ActorToken, Name: "kim", Role: fsm.RoleKillSwitch,
		Credential: trail[1].Actor.Credential, RemoteAddr: "127.0.0.1:40000", Node: follower.id},
		fsm.UpdateKeyStore{Name: demoStore, Enabled: new(bool)})
	if err != nil {
		t.Fatal(err)
	}
	entry, err := fsm.Encode(late)
	if err != nil {
		t.Fatal(err)
	}
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := follower.node.forward(fctx, noderpc.Apply, nil, entry); !errors.Is(err, fsm.ErrForbidden) ||
		!strings.Contains(err.Error(), "operator kim does not exist (revoked)") {
		t.Fatalf("the leader took a revoked operator's forwarded change: %v", err)
	}
	// Nor does the leader take an operator's change that names nobody.
	bare, _ := fsm.Encode(fsm.UpdateKeyStore{Name: demoStore, Enabled: new(bool)})
	if _, err := follower.node.forward(fctx, noderpc.Apply, nil, bare); !errors.Is(err, fsm.ErrForbidden) {
		t.Fatalf("the leader took an operator's change without its operator: %v", err)
	}
	if !leader.node.State().KeyStore(demoStore).Enabled {
		t.Fatal("the key store was disabled")
	}
	if _, trail := leader.node.State().AuditTrail(); len(trail) != 3 || trail[2].Action != "RevokeOperator" {
		t.Fatalf("the refused changes entered the trail: %d records", len(trail))
	}
	// A membership change is recorded too (Raft's configuration is not
	// the state, so in a record of its own).
	if err := follower.admin.JoinNode(ctx, follower.id, follower.node.ClusterAddr()); err != nil {
		t.Fatal(err)
	}
	if _, trail := leader.node.State().AuditTrail(); len(trail) != 4 || trail[3].Action != "JoinNode" || trail[3].Actor.Node != follower.id {
		t.Fatalf("the join's record: %+v", trail[len(trail)-1])
	}
}
