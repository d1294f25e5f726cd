package cluster

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/admin"
	"github.com/xksproxy/xksproxy/fsm"
	"github.com/xksproxy/xksproxy/internal/testpki"
	"github.com/xksproxy/xksproxy/xksclient"
)

func encryptOn(t *testing.T, n *testNode, plaintext string) *xksclient.EncryptResponse {
	t.Helper()
	enc, err := n.client().Encrypt(demoKey, &xksclient.EncryptRequest{RequestMetadata: md("Encrypt"), Plaintext: []byte(plaintext)})
	if err != nil {
		t.Fatalf("encrypt on %s: %v", n.id, err)
	}
	return enc
}

func decryptOn(n *testNode, enc *xksclient.EncryptResponse) ([]byte, error) {
	return n.client().Decrypt(demoKey, &xksclient.DecryptRequest{RequestMetadata: md("Decrypt"), Ciphertext: enc.Ciphertext,
		CiphertextMetadata: enc.CiphertextMetadata, IV: enc.IV, Tag: enc.Tag})
}

func TestEncryptOnOneNodeDecryptOnEvery(t *testing.T) {
	c := newTestCluster(t, 3)
	enc := encryptOn(t, c.nodes[0], "replicated data key")
	for _, n := range c.nodes {
		got, err := decryptOn(n, enc)
		if err != nil || string(got) != "replicated data key" {
			t.Fatalf("decrypt on %s: %q %v", n.id, got, err)
		}
		label := n.views.Load().StoreByName(demoStore).Key([]byte(demoKey)).Versions[0].HSMLabel
		if ok, err := n.hsm.HasKey(label); err != nil || !ok {
			t.Fatalf("%s's HSM lacks the replicated key: %v", n.id, err)
		}
	}
}

func TestKillSwitchReachesEveryNode(t *testing.T) {
	c := newTestCluster(t, 3)
	var res admin.Change
	start := time.Now()
	if err := set(&res)(c.nodes[1].admin.DisableKey(t.Context(), "demo", "demo-key")); err != nil {
		t.Fatal(err)
	}
	t.Logf("disable confirmed on %d/%d nodes in %v (admin call %v)", res.Confirmed, res.Nodes, res.Elapsed, time.Since(start))
	if res.Confirmed != 3 || res.Nodes != 3 {
		t.Fatalf("disable confirmed on %d/%d nodes: %+v", res.Confirmed, res.Nodes, res.Acks)
	}
	for _, n := range c.nodes {
		c.waitFor(n.id+" to refuse the disabled key", 15*time.Second, func() bool {
			_, err := n.client().Encrypt(demoKey, &xksclient.EncryptRequest{RequestMetadata: md("Encrypt"), Plaintext: []byte("x")})
			return isXKSError(err, "InvalidStateException")
		})
		meta, err := n.client().Metadata(demoKey, md("DescribeKey"))
		if err != nil || meta.KeyStatus != "DISABLED" {
			t.Fatalf("%s metadata after disable: %+v %v", n.id, meta, err)
		}
	}
	if err := set(&res)(c.nodes[2].admin.EnableKey(t.Context(), "demo", "demo-key")); err != nil || res.Confirmed != 3 {
		t.Fatalf("enable: %+v %v", res, err)
	}
	for _, n := range c.nodes {
		if err := n.client().RoundTrip(demoKey, md("Encrypt"), []byte("back"), nil); err != nil {
			t.Fatalf("%s after enable: %v", n.id, err)
		}
	}

	// The whole key store, too.
	if err := set(&res)(c.nodes[0].admin.DisableKeyStore(t.Context(), "demo")); err != nil || res.Confirmed != 3 {
		t.Fatalf("key store disable: %+v %v", res, err)
	}
	for _, n := range c.nodes {
		if _, err := n.client().Metadata(demoKey, md("DescribeKey")); !isXKSError(err, "InvalidStateException") {
			t.Fatalf("%s with the key store disabled: %v", n.id, err)
		}
	}
}

func TestCredentialsReplicate(t *testing.T) {
	c := newTestCluster(t, 3)
	var cred admin.NewCredential
	if err := set(&cred)(c.nodes[2].admin.AddCredential(t.Context(), "demo", admin.AddCredentialRequest{})); err != nil {
		t.Fatal(err)
	}
	creds := xksclient.Credentials{AccessKeyID: cred.AccessKeyID, Secret: cred.SecretAccessKey, Region: "us-east-1"}
	if cred.KMSConsole.Credential.RawSecretAccessKey != cred.SecretAccessKey || cred.KMSConsole.XksProxyURIPath != demoPath {
		t.Fatalf("console file: %+v", cred.KMSConsole)
	}
	for _, n := range c.nodes {
		c.waitFor("the new credential to work on "+n.id, 15*time.Second, func() bool {
			_, err := n.clientWith(creds).Metadata(demoKey, md("DescribeKey"))
			return err == nil
		})
	}
	var res admin.Change
	if err := set(&res)(c.nodes[1].admin.RemoveCredential(t.Context(), "demo", cred.AccessKeyID)); err != nil || res.Confirmed != 3 {
		t.Fatalf("remove: %+v %v", res, err)
	}
	for _, n := range c.nodes {
		if _, err := n.clientWith(creds).Metadata(demoKey, md("DescribeKey")); !isXKSError(err, "AuthenticationFailedException") {
			t.Fatalf("removed credential on %s: %v", n.id, err)
		}
	}

	expires := time.Now().Add(2 * time.Second).UTC()
	if err := set(&cred)(c.nodes[0].admin.AddCredential(t.Context(), "demo", admin.AddCredentialRequest{ExpiresAt: &expires})); err != nil {
		t.Fatal(err)
	}
	short := xksclient.Credentials{AccessKeyID: cred.AccessKeyID, Secret: cred.SecretAccessKey, Region: "us-east-1"}
	c.waitFor("the expiring credential to work", 15*time.Second, func() bool {
		_, err := c.nodes[1].clientWith(short).Metadata(demoKey, md("DescribeKey"))
		return err == nil
	})
	for _, n := range c.nodes {
		c.waitFor("the credential to expire on "+n.id, 10*time.Second, func() bool {
			_, err := n.clientWith(short).Metadata(demoKey, md("DescribeKey"))
			return isXKSError(err, "AuthenticationFailedException")
		})
	}
}

func TestGrantsAreEnforcedEverywhere(t *testing.T) {
	c := newTestCluster(t, 3)
	var ks admin.CreateKeyStoreResponse
	if err := set(&ks)(c.nodes[0].admin.CreateKeyStore(t.Context(), admin.CreateKeyStoreRequest{Name: "pay", Region: "eu-west-1"})); err != nil {
		t.Fatal(err)
	}
	if ks.KeyStore.GrantsMode != "closed" || ks.KeyStore.URIPath != "/pay/kms/xks/v1" {
		t.Fatalf("created %+v", ks.KeyStore)
	}
	var key admin.KeyInfo
	if err := set(&key)(c.nodes[1].admin.CreateKey(t.Context(), "pay", admin.CreateKeyRequest{ID: "k1"})); err != nil {
		t.Fatal(err)
	}
	creds := xksclient.Credentials{AccessKeyID: ks.Credential.AccessKeyID, Secret: ks.Credential.SecretAccessKey, Region: "eu-west-1"}
	clientOn := func(n *testNode) *xksclient.Client {
		cl := n.clientWith(creds)
		cl.URIPath = "/pay/kms/xks/v1"
		return cl
	}
	for _, n := range c.nodes {
		c.waitFor("pay/k1 to exist on "+n.id, 15*time.Second, func() bool {
			_, err := clientOn(n).Metadata("k1", md("DescribeKey"))
			return isXKSError(err, "AccessDeniedException")
		})
	}
	var g admin.GrantInfo
	if err := set(&g)(c.nodes[2].admin.AddGrant(t.Context(), "pay", admin.GrantInfo{KeyID: "k1",
		Principals: []string{"arn:aws:iam::111122223333:role/app*"}, Operations: []string{"Encrypt"}})); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.nodes {
		cl := clientOn(n)
		if _, err := cl.Encrypt("k1", &xksclient.EncryptRequest{RequestMetadata: md("Encrypt"), Plaintext: []byte("p")}); err != nil {
			t.Fatalf("granted encrypt on %s: %v", n.id, err)
		}
		if _, err := cl.Metadata("k1", md("DescribeKey")); !isXKSError(err, "AccessDeniedException") {
			t.Fatalf("ungranted metadata on %s: %v", n.id, err)
		}
		other := md("Encrypt")
		other.AWSPrincipalARN = "arn:aws:iam::999999999999:role/app"
		if _, err := cl.Encrypt("k1", &xksclient.EncryptRequest{RequestMetadata: other, Plaintext: []byte("p")}); !isXKSError(err, "AccessDeniedException") {
			t.Fatalf("other principal on %s: %v", n.id, err)
		}
	}
	var res admin.Change
	if err := set(&res)(c.nodes[0].admin.RemoveGrant(t.Context(), "pay", g.ID)); err != nil || res.Confirmed != 3 {
		t.Fatalf("grant remove: %+v %v", res, err)
	}
	for _, n := range c.nodes {
		if _, err := clientOn(n).Encrypt("k1", &xksclient.EncryptRequest{RequestMetadata: md("Encrypt"), Plaintext: []byte("p")}); !isXKSError(err, "AccessDeniedException") {
			t.Fatalf("revoked grant still allows on %s: %v", n.id, err)
		}
	}
}

func TestLeaderLossRestartAndFullRestart(t *testing.T) {
	c := newTestCluster(t, 3)
	old := c.leader()
	enc := encryptOn(t, old, "before the failover")
	var survivors []*testNode
	for _, n := range c.nodes {
		if n != old {
			survivors = append(survivors, n)
		}
	}
	// The data plane of the survivors must not notice the election.
	stopTraffic := make(chan struct{})
	failures := make(chan error, 1000)
	go func() {
		for {
			select {
			case <-stopTraffic:
				close(failures)
				return
			default:
			}
			for _, n := range survivors {
				if _, err := decryptOn(n, enc); err != nil {
					failures <- err
				}
			}
		}
	}()
	electionStart := time.Now()
	c.stop(old)
	c.waitFor("a new leader", 20*time.Second, func() bool { return c.leader() != nil })
	t.Logf("new leader %s after %v", c.leader().id, time.Since(electionStart))
	var key admin.KeyInfo
	if err := set(&key)(survivors[0].admin.CreateKey(t.Context(), "demo", admin.CreateKeyRequest{ID: "after-failover"})); err != nil {
		t.Fatalf("admin write after the failover: %v", err)
	}
	close(stopTraffic)
	for err := range failures {
		t.Fatalf("a survivor failed during the election: %v", err)
	}

	restarted := time.Now()
	c.start(old)
	c.waitFor("the old leader to catch up", 20*time.Second, func() bool {
		return old.node.ServingError() == nil && old.views.Load().StoreByName(demoStore).Key([]byte("after-failover")) != nil
	})
	t.Logf("the restarted old leader serves %v after its start", time.Since(restarted).Round(time.Millisecond))
	if got, err := decryptOn(old, enc); err != nil || string(got) != "before the failover" {
		t.Fatalf("decrypt on the restarted node: %q %v", got, err)
	}

	// Stop everything and start again: nothing committed is lost.
	for _, n := range c.nodes {
		c.stop(n)
	}
	for _, n := range c.nodes {
		c.start(n)
	}
	c.waitFor("the cluster to come back", 30*time.Second, func() bool {
		for _, n := range c.nodes {
			if n.node.ServingError() != nil {
				return false
			}
		}
		return true
	})
	for _, n := range c.nodes {
		if n.views.Load().StoreByName(demoStore).Key([]byte("after-failover")) == nil {
			t.Fatalf("%s lost a committed key after the full restart", n.id)
		}
		if got, err := decryptOn(n, enc); err != nil || string(got) != "before the failover" {
			t.Fatalf("decrypt on %s after the full restart: %q %v", n.id, got, err)
		}
	}
}

func TestJoiningNodes(t *testing.T) {
	c := newTestCluster(t, 3)
	enc := encryptOn(t, c.nodes[0], "for the newcomer")

	n4 := c.addNode("node4", false, true)
	c.waitFor("node4 to join and serve", 30*time.Second, func() bool { return n4.node.ServingError() == nil })
	if got, err := decryptOn(n4, enc); err != nil || string(got) != "for the newcomer" {
		t.Fatalf("node4 decrypt: %q %v", got, err)
	}

	// A node whose certificate the cluster CA did not issue cannot join.
	savedCA := c.ca
	c.ca = testpki.NewCA(t, "stranger CA")
	n5 := c.addNode("node5", false, true)
	c.ca = savedCA
	// Give the stranger time for several join attempts; none may succeed.
	time.Sleep(3 * time.Second)
	servers, err := c.waitLeader().node.Servers()
	if err != nil {
		t.Fatal(err)
	}
	if len(servers) != 4 {
		t.Fatalf("the cluster has %d voters; a stranger got in: %+v", len(servers), servers)
	}
	if n5.node.ServingError() == nil {
		t.Fatal("a node outside the cluster says it can serve")
	}
}

func TestPartitionedNodeStopsServingAndCatchesUp(t *testing.T) {
	c := newTestCluster(t, 3)
	cut := c.nodes[2]
	if cut.node.IsLeader() {
		cut = c.nodes[0]
	}
	cut.node.mux.isolate(true)
	c.waitFor("the partitioned node to turn not ready", 20*time.Second, func() bool { return cut.node.ServingError() != nil })
	if _, err := cut.client().Metadata(demoKey, md("DescribeKey")); !isXKSError(err, "InternalException") {
		t.Fatalf("a partitioned node still serves: %v", err)
	}
	if st := cut.node.Status(); st.Ready || st.NotReady == "" {
		t.Fatalf("status of the partitioned node: %+v", st)
	}
	// The majority goes on: the kill switch works there, and says the cut
	// node did not confirm.
	var majority *testNode
	for _, n := range c.nodes {
		if n != cut {
			majority = n
		}
	}
	var res admin.Change
	if err := set(&res)(majority.admin.DisableKey(t.Context(), "demo", "demo-key")); err != nil {
		t.Fatal(err)
	}
	if res.Confirmed != 2 || res.Nodes != 3 {
		t.Fatalf("disable during the partition: %+v", res)
	}
	// Healed, the node catches up and serves the disabled state.
	cut.node.mux.isolate(false)
	c.waitFor("the healed node to serve again", 20*time.Second, func() bool { return cut.node.ServingError() == nil })
	c.waitFor("the healed node to know the key is disabled", 15*time.Second, func() bool {
		_, err := cut.client().Encrypt(demoKey, &xksclient.EncryptRequest{RequestMetadata: md("Encrypt"), Plaintext: []byte("x")})
		return isXKSError(err, "InvalidStateException")
	})
}

func TestNodeCutOffFromEveryPeerStopsServing(t *testing.T) {
	c := newTestCluster(t, 3)
	last := c.nodes[2]
	for _, n := range c.nodes[:2] {
		c.stop(n)
	}
	c.waitFor("the isolated node to turn not ready", 20*time.Second, func() bool { return last.node.ServingError() != nil })
	if _, err := last.client().Metadata(demoKey, md("DescribeKey")); !isXKSError(err, "InternalException") {
		t.Fatalf("an isolated node still serves: %v", err)
	}
}

func TestSnapshotRestoreAndNoSecretsOnDisk(t *testing.T) {
	c := newTestCluster(t, 3)
	var cred admin.NewCredential
	if err := set(&cred)(c.nodes[0].admin.AddCredential(t.Context(), "demo", admin.AddCredentialRequest{})); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		var key admin.KeyInfo
		if err := set(&key)(c.nodes[0].admin.CreateKey(t.Context(), "demo", admin.CreateKeyRequest{ID: "snap-" + string(rune('a'+i))})); err != nil {
			t.Fatal(err)
		}
	}
	enc := encryptOn(t, c.nodes[1], "kept by the snapshot")
	for _, n := range c.nodes {
		if err := n.node.raft.Snapshot().Error(); err != nil {
			t.Fatalf("snapshot on %s: %v", n.id, err)
		}
	}
	n := c.nodes[1]
	c.stop(n)
	c.start(n)
	c.waitFor("node2 to restore and serve", 20*time.Second, func() bool { return n.node.ServingError() == nil })
	if n.views.Load().StoreByName(demoStore).Key([]byte("snap-e")) == nil {
		t.Fatal("the restored node lacks keys from before the snapshot")
	}
	if got, err := decryptOn(n, enc); err != nil || string(got) != "kept by the snapshot" {
		t.Fatalf("decrypt after restore: %q %v", got, err)
	}
	creds := xksclient.Credentials{AccessKeyID: cred.AccessKeyID, Secret: cred.SecretAccessKey, Region: "us-east-1"}
	if _, err := n.clientWith(creds).Metadata(demoKey, md("DescribeKey")); err != nil {
		t.Fatalf("credential after restore: %v", err)
	}

	// Sealed secrets only: no node's data directory holds a secret in the clear.
	for _, node := range c.nodes {
		filepath.Walk(node.dir, func(path string, info os.FileInfo, err error) error {
			if err != nil || info.IsDir() {
				return nil
			}
			b, _ := os.ReadFile(path)
			for _, secret := range []string{c.secret, cred.SecretAccessKey} {
				if bytes.Contains(b, []byte(secret)) {
					t.Errorf("%s holds a SigV4 secret in the clear", path)
				}
			}
			return nil
		})
	}
	var files []string
	filepath.Walk(n.dir, func(path string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			files = append(files, filepath.Base(path))
		}
		return nil
	})
	sort.Strings(files)
	if len(files) < 2 {
		t.Fatalf("data directory holds only %v", files)
	}
}

func TestKeyRotationWithANodeDown(t *testing.T) {
	c := newTestCluster(t, 3)
	old := encryptOn(t, c.nodes[0], "made with version 1")
	down := c.nodes[2]
	c.stop(down)
	var res admin.Change
	if err := set(&res)(c.nodes[1].admin.RotateKey(t.Context(), "demo", "demo-key")); err != nil {
		t.Fatal(err)
	}
	if res.Confirmed != 2 {
		t.Fatalf("rotation confirmed by %d nodes: %+v", res.Confirmed, res.Acks)
	}
	var info admin.KeyInfo
	if err := set(&info)(c.nodes[0].admin.ShowKey(t.Context(), "demo", "demo-key")); err != nil || info.CurrentVersion != 2 || len(info.Versions) != 2 {
		t.Fatalf("key after rotation: %+v %v", info, err)
	}
	fresh := encryptOn(t, c.nodes[0], "made with version 2")
	if bytes.Equal(fresh.CiphertextMetadata, old.CiphertextMetadata) {
		t.Fatal("the new ciphertext does not name the new version")
	}
	c.start(down)
	c.waitFor("the node that was down to catch up", 20*time.Second, func() bool { return down.node.ServingError() == nil })
	for _, n := range c.nodes {
		for _, e := range []struct {
			enc  *xksclient.EncryptResponse
			want string
		}{{old, "made with version 1"}, {fresh, "made with version 2"}} {
			if got, err := decryptOn(n, e.enc); err != nil || string(got) != e.want {
				t.Fatalf("decrypt %q on %s: %q %v", e.want, n.id, got, err)
			}
		}
	}
}

func TestSnapshotSaveWipeRestore(t *testing.T) {
	c := newTestCluster(t, 3)
	enc := encryptOn(t, c.nodes[0], "survives a disaster")
	var key admin.KeyInfo
	if err := set(&key)(c.nodes[1].admin.CreateKey(t.Context(), "demo", admin.CreateKeyRequest{ID: "backed-up"})); err != nil {
		t.Fatal(err)
	}
	// A cluster well along its log: more commands than a fresh one holds.
	for range 6 {
		for _, change := range []func(context.Context, string, string) (admin.Change, error){c.nodes[1].admin.DisableKey, c.nodes[1].admin.EnableKey} {
			if _, err := change(t.Context(), demoStore, "backed-up"); err != nil {
				t.Fatal(err)
			}
		}
	}
	backup, err := c.nodes[2].admin.SaveSnapshot(t.Context(), false)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(backup, []byte(c.secret)) {
		t.Fatal("the backup holds a SigV4 secret in the clear")
	}
	for _, n := range c.nodes {
		c.stop(n)
	}

	// A new machine: fresh data directory, another HSM with the same cluster
	// keys (the ceremony material), no seed.
	fresh := &testCluster{t: t, ca: c.ca, apiCA: c.apiCA, adminCA: c.adminCA, token: c.token, secret: c.secret, akid: c.akid, http: c.http, noSeed: true}
	n := fresh.addNode("node5", true, true)
	t.Cleanup(func() { fresh.stop(n); n.hsm.Close() })
	fresh.waitFor("the new node to lead", 20*time.Second, func() bool { return n.node.IsLeader() })
	if len(n.node.fsm.State().KeyStores()) != 0 {
		t.Fatal("the restore target is not empty")
	}
	if _, err := n.admin.RestoreSnapshot(t.Context(), []byte("not a snapshot"), false); err == nil {
		t.Fatal("a garbage snapshot was restored")
	}
	if _, err := n.admin.RestoreSnapshot(t.Context(), backup, false); err != nil {
		t.Fatal(err)
	}
	// The restored keys' material is unwrapped after the view is published:
	// until then they answer InternalException, which KMS retries.
	fresh.waitFor("the restored node to serve the restored key", 20*time.Second, func() bool {
		store := n.views.Load().StoreByName(demoStore)
		return n.node.ServingError() == nil && store != nil && store.Key([]byte("backed-up")) != nil &&
			len(n.node.KeysMissing()) == 0 && n.node.reconciled.Index() >= n.node.viewed.Index()
	})
	if got, err := decryptOn(n, enc); err != nil || string(got) != "survives a disaster" {
		t.Fatalf("decrypt after restore: %q %v", got, err)
	}
	// The backup comes from a cluster further along than this fresh one.
	// The first change after the restore must still count as newer than
	// the restored state, or the kill switch would be confirmed by nodes
	// that had only installed the snapshot.
	restored := n.node.AppliedIndex()
	var res admin.Change
	if err := set(&res)(n.admin.DisableKey(t.Context(), "demo", "backed-up")); err != nil {
		t.Fatal(err)
	}
	if res.Index <= restored || n.node.AppliedIndex() < res.Index {
		t.Fatalf("restored state at index %d, the next change at %d, applied %d: indexes went backwards",
			restored, res.Index, n.node.AppliedIndex())
	}
	// The fresh cluster had no audit trail: the backup's goes on, with the
	// restore and the change after it, and still verifies.
	if n.node.State().CommandSet() >= 3 {
		anchor, trail := n.node.State().AuditTrail()
		var actions []string
		for _, r := range trail {
			actions = append(actions, r.Action)
		}
		if got := strings.Join(actions, " "); !strings.HasSuffix(got, "RestoreSnapshot SetKeyEnabled") || fsm.VerifyAudit(anchor, trail) != nil {
			t.Fatalf("the audit trail after a disaster recovery: %s", got)
		}
	}
}

func TestScheduledDeletion(t *testing.T) {
	c := newTestCluster(t, 3)
	client := c.nodes[1].admin
	label := c.nodes[0].views.Load().StoreByName(demoStore).Key([]byte(demoKey)).Versions[0].HSMLabel
	var info admin.KeyInfo
	if err := set(&info)(client.ScheduleDeletion(t.Context(), demoStore, demoKey, 7)); err == nil {
		t.Fatal("an enabled key was scheduled for deletion")
	}
	if _, err := client.DisableKey(t.Context(), demoStore, demoKey); err != nil {
		t.Fatal(err)
	}
	if err := set(&info)(client.ScheduleDeletion(t.Context(), demoStore, demoKey, 3)); err == nil {
		t.Fatal("a 3-day window was accepted")
	}
	if err := set(&info)(client.ScheduleDeletion(t.Context(), demoStore, demoKey, 7)); err != nil || info.DeletionDate == nil {
		t.Fatalf("schedule: %+v %v", info, err)
	}
	cancelled, err := c.nodes[2].admin.CancelDeletion(t.Context(), demoStore, demoKey)
	if err != nil || cancelled.DeletionDate != nil {
		t.Fatalf("cancel: %+v %v", cancelled, err)
	}
	if _, err := client.ScheduleDeletion(t.Context(), demoStore, demoKey, 7); err != nil {
		t.Fatal(err)
	}
	// Nothing happens inside the window.
	c.skew.Store(int64(6 * 24 * time.Hour))
	time.Sleep(1500 * time.Millisecond)
	for _, n := range c.nodes {
		if ok, err := n.hsm.HasKey(label); err != nil || !ok {
			t.Fatalf("%s destroyed the key before its deletion date: %v", n.id, err)
		}
	}
	// After it, the leader deletes and every node destroys the material.
	c.skew.Store(int64(8 * 24 * time.Hour))
	for _, n := range c.nodes {
		c.waitFor(n.id+" to destroy the deleted key", 10*time.Second, func() bool {
			ok, err := n.hsm.HasKey(label)
			return err == nil && !ok
		})
		if _, err := n.client().Metadata(demoKey, md("DescribeKey")); !isXKSError(err, "KeyNotFoundException") {
			t.Fatalf("%s still knows the deleted key: %v", n.id, err)
		}
	}
	deleted, err := client.ShowKey(t.Context(), demoStore, demoKey)
	if err != nil || !deleted.Deleted {
		t.Fatalf("key after deletion: %+v %v", deleted, err)
	}
}

func TestSharedModeAdoptsOnlyALabelEveryNodeHolds(t *testing.T) {
	c := newTestCluster(t, 3)
	var ks admin.CreateKeyStoreResponse
	if err := set(&ks)(c.nodes[0].admin.CreateKeyStore(t.Context(), admin.CreateKeyStoreRequest{Name: "netHSM", Region: "us-east-1",
		GrantsMode: "open", KeyMode: "shared"})); err != nil {
		t.Fatal(err)
	}
	// The same AES key in every token, as a network HSM or an HSM vendor's
	// replication would have it: one wrapped blob unwrapped into each.
	label := "shared-" + c.akid[:8]
	wrapped, mechanism, err := c.nodes[0].hsm.GenerateWrappedKey()
	if err != nil {
		t.Fatal(err)
	}
	create := func() error {
		var k admin.KeyInfo
		return set(&k)(c.nodes[1].admin.CreateKey(t.Context(), "netHSM", admin.CreateKeyRequest{ID: "k1", HSMLabel: label}))
	}
	for i, n := range c.nodes {
		if err := create(); err == nil || !strings.Contains(err.Error(), c.nodes[2].id) {
			t.Fatalf("adopting a label %d of 3 nodes hold: %v", i, err)
		}
		if err := n.hsm.UnwrapKey(wrapped, mechanism, label); err != nil {
			t.Fatal(err)
		}
	}
	if err := create(); err != nil {
		t.Fatalf("adopting a label every node holds: %v", err)
	}
	creds := xksclient.Credentials{AccessKeyID: ks.Credential.AccessKeyID, Secret: ks.Credential.SecretAccessKey, Region: "us-east-1"}
	clientOn := func(n *testNode) *xksclient.Client {
		cl := n.clientWith(creds)
		cl.URIPath = "/netHSM/kms/xks/v1"
		return cl
	}
	var enc *xksclient.EncryptResponse
	c.waitFor("the shared key on node1", 15*time.Second, func() bool {
		enc, err = clientOn(c.nodes[0]).Encrypt("k1", &xksclient.EncryptRequest{RequestMetadata: md("Encrypt"), Plaintext: []byte("shared")})
		return err == nil
	})
	for _, n := range c.nodes {
		c.waitFor("decrypt on "+n.id, 15*time.Second, func() bool {
			got, err := clientOn(n).Decrypt("k1", &xksclient.DecryptRequest{RequestMetadata: md("Decrypt"), Ciphertext: enc.Ciphertext,
				CiphertextMetadata: enc.CiphertextMetadata, IV: enc.IV, Tag: enc.Tag})
			return err == nil && string(got) == "shared"
		})
	}
}

// After a partition longer than the staleness limit heals, heartbeats come
// back long before raft resends the missed entries (its replication backs
// off up to ~10 s). Contact alone must not make the node serve again: a key
// disabled while it was cut off must never be answered 200 after the heal.
func TestHealedNodeNeverServesAKeyDisabledWhileCutOff(t *testing.T) {
	c := newTestCluster(t, 3)
	cut := c.nodes[2]
	if cut.node.IsLeader() {
		cut = c.nodes[0]
	}
	var majority *testNode
	for _, n := range c.nodes {
		if n != cut && n.node.IsLeader() {
			majority = n
		}
	}
	cut.node.mux.isolate(true)
	c.waitFor("the partitioned node to turn not ready", 20*time.Second, func() bool { return cut.node.ServingError() != nil })
	// Long enough cut off for raft's retries to the node to back off by
	// seconds, as they do in a real partition.
	time.Sleep(4 * time.Second)
	var res admin.Change
	if err := set(&res)(majority.admin.DisableKey(t.Context(), "demo", "demo-key")); err != nil {
		t.Fatal(err)
	}
	cut.node.mux.isolate(false)
	healed := time.Now()
	served := 0
	var lastServed time.Duration
	deadline := healed.Add(20 * time.Second)
	for {
		_, err := cut.client().Encrypt(demoKey, &xksclient.EncryptRequest{RequestMetadata: md("Encrypt"), Plaintext: []byte("x")})
		if err == nil {
			served++
			lastServed = time.Since(healed)
		}
		if isXKSError(err, "InvalidStateException") {
			break
		}
		if err != nil && !isXKSError(err, "InternalException") {
			t.Fatalf("the healing node answered neither a retryable error nor the disabled state: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the healed node did not learn of the disable within 20 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if served > 0 {
		t.Fatalf("after the heal the node served the disabled key %d times, the last %v after the heal", served, lastServed)
	}
	t.Logf("refused with InvalidStateException %v after the heal", time.Since(healed).Round(time.Millisecond))
}

// A node that comes back at a new address says so, and with join set the
// leader replaces its entry: peers dial the new address and it serves.
func TestReaddressedNodeSaysSoAndRejoinsAtItsNewAddress(t *testing.T) {
	c := newTestCluster(t, 3)
	moved := c.nodes[2]
	if moved.node.IsLeader() {
		moved = c.nodes[1]
	}
	old := moved.node.ClusterAddr()
	c.stop(moved)
	moved.cfg.Bind = "127.0.0.1:0"
	moved.cfg.Join = nil
	for _, n := range c.nodes {
		if n != moved {
			moved.cfg.Join = append(moved.cfg.Join, n.node.ClusterAddr())
		}
	}
	c.start(moved)
	if line := moved.logs.Line("now advertises"); !strings.Contains(line, old) || !strings.Contains(line, `"level":"error"`) {
		t.Fatalf("no plain error about the stored address %s; log:\n%s", old, tail(moved.logs.String(), 2000))
	}
	c.waitFor("the leader to list the node at its new address", 20*time.Second, func() bool {
		servers, err := c.leader().node.Servers()
		if err != nil {
			return false
		}
		for _, s := range servers {
			if string(s.ID) == moved.id {
				return string(s.Address) == moved.node.ClusterAddr()
			}
		}
		return false
	})
	c.waitFor("the moved node to serve", 20*time.Second, func() bool {
		return moved.node.ServingError() == nil && moved.node.Status().AddressMismatch == ""
	})
	if err := moved.client().RoundTrip(demoKey, md("Encrypt"), []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
}

// A cluster whose voters all run this build reaches its command set, so
// commands older builds could not decode are accepted; every node reports
// its build.
func TestClusterReachesItsBuildsCommandSet(t *testing.T) {
	c := newTestCluster(t, 3)
	c.waitFor("the command set to be raised", 20*time.Second, func() bool {
		return c.leader().node.fsm.State().CommandSet() == fsm.CommandSet
	})
	for _, n := range c.nodes {
		if st := n.node.Status(); st.Version != "test-build" || st.CommandSet != fsm.CommandSet {
			t.Fatalf("%s reports version %q, command set %d", n.id, st.Version, st.CommandSet)
		}
	}
	var key admin.KeyInfo
	if err := set(&key)(c.nodes[1].admin.CreateKey(t.Context(), "demo", admin.CreateKeyRequest{ID: "wrapping", Usage: []string{"WRAP", "UNWRAP"}})); err != nil {
		t.Fatalf("a key only command set 2 knows: %v", err)
	}
}

// The view is published before the HSM is reconciled: while one node's HSM
// takes seconds to unwrap a new key, a kill switch committed meanwhile is
// enforced there at once, and only the new key waits for its material.
func TestKillSwitchDoesNotWaitForAnotherKeysUnwrap(t *testing.T) {
	c := newTestCluster(t, 3)
	slow := &slowUnwrap{label: ".slow-key.", held: make(chan string, 8), release: make(chan struct{})}
	c.slowUnwrap.Store(slow)
	released := false
	release := func() {
		if !released {
			released = true
			close(slow.release)
		}
	}
	defer release()
	// A follower's HSM is the one held: the far end of the kill switch.
	leader, held, created := createWithHeldUnwrap(t, c, slow)

	blockedSince := time.Now()
	res, err := leader.admin.DisableKey(t.Context(), demoStore, demoKey)
	if err != nil {
		t.Fatal(err)
	}
	var heldAck *admin.Ack
	for i, a := range res.Acks {
		if a.Node == held.id {
			heldAck = &res.Acks[i]
		}
	}
	if heldAck == nil || !heldAck.Confirmed {
		t.Fatalf("%s, its HSM busy unwrapping another key, did not confirm the disable: %+v", held.id, res)
	}
	_, err = held.client().Encrypt(demoKey, &xksclient.EncryptRequest{RequestMetadata: md("Encrypt"), Plaintext: []byte("x")})
	if !isXKSError(err, "InvalidStateException") {
		t.Fatalf("%s still serves the disabled key while its HSM unwraps another: %v", held.id, err)
	}
	stillHeld := time.Since(blockedSince)
	if held.node.ServingError() != nil {
		t.Fatalf("a key still unwrapping made %s refuse everything: %v", held.id, held.node.ServingError())
	}
	if _, err := held.client().Encrypt("slow-key", &xksclient.EncryptRequest{RequestMetadata: md("Encrypt"), Plaintext: []byte("x")}); !isXKSError(err, "InternalException") {
		t.Fatalf("the key whose material has not arrived: %v, want a retryable InternalException", err)
	}
	t.Logf("%s confirmed the disable %v after it was sent, %v into a held unwrap", held.id, heldAck.After.Round(time.Millisecond), stillHeld.Round(time.Millisecond))
	release()
	if err := <-created; err != nil {
		t.Fatalf("creating the key: %v", err)
	}
	c.waitFor("the new key's material on "+held.id, 20*time.Second, func() bool {
		return held.client().RoundTrip("slow-key", md("Encrypt"), []byte("x"), nil) == nil
	})
}

// createWithHeldUnwrap has the leader create the key "slow-key", whose
// unwrap slow holds on every node until slow.release closes, and returns
// the leader, the first follower caught unwrapping it, and the outcome of
// the creation.
func createWithHeldUnwrap(t *testing.T, c *testCluster, slow *slowUnwrap) (leader, held *testNode, created <-chan error) {
	t.Helper()
	leader = c.leader()
	result := make(chan error, 1)
	go func() {
		_, err := leader.admin.CreateKey(t.Context(), demoStore, admin.CreateKeyRequest{ID: "slow-key"})
		result <- err
	}()
	for held == nil {
		select {
		case id := <-slow.held:
			for _, n := range c.nodes {
				if n.id == id && n != leader {
					held = n
				}
			}
		case <-time.After(20 * time.Second):
			t.Fatal("no follower started unwrapping the new key")
		}
	}
	return leader, held, result
}

// A node that answers but has not reached the index by the caller's
// deadline is reported with its status, not as unreachable: the last wait
// it is asked for ends before the deadline, so its answer still arrives.
func TestWaitReconciledReportsASlowNodeAsSlow(t *testing.T) {
	c := newTestCluster(t, 3)
	slow := &slowUnwrap{label: ".slow-key.", held: make(chan string, 8), release: make(chan struct{})}
	c.slowUnwrap.Store(slow)
	defer close(slow.release)
	leader, held, created := createWithHeldUnwrap(t, c, slow)
	defer func() { <-created }()

	index := leader.node.Status().ViewIndex
	ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
	defer cancel()
	for _, st := range leader.node.WaitReconciled(ctx, index) {
		if st.ID != held.id {
			continue
		}
		if st.State == "" || strings.HasPrefix(st.NotReady, "unreachable") {
			t.Fatalf("%s, reachable but busy reconciling, is reported as %+v", held.id, st)
		}
		if st.ReconciledIndex >= index {
			t.Fatalf("%s reconciled index %d while its unwrap is held", held.id, st.ReconciledIndex)
		}
		return
	}
	t.Fatalf("no status of %s", held.id)
}
