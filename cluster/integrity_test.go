package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/xksproxy/xksproxy/admin"
	"github.com/xksproxy/xksproxy/fsm"
	"github.com/xksproxy/xksproxy/hsm"
	"github.com/xksproxy/xksproxy/xksclient"
)

// editedSnapshot returns this cluster's state as a bare snapshot (no MAC)
// after edit changed it, as someone with a backup and a text editor would
// make it. restoreRaw restores it as an operator trusting it would, with
// allow-unauthenticated: the state's own checks must still hold.
func editedSnapshot(t *testing.T, n *testNode, edit func(state map[string]any)) []byte {
	t.Helper()
	backup, err := n.admin.SaveSnapshot(t.Context(), false)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Snapshot map[string]any `json:"snapshot"`
	}
	if err := json.Unmarshal(backup, &doc); err != nil {
		t.Fatal(err)
	}
	edit(doc.Snapshot["state"].(map[string]any))
	out, err := json.Marshal(doc.Snapshot)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func stateKey(state map[string]any, store, id string) map[string]any {
	for _, k := range state["keys"].([]any) {
		if k := k.(map[string]any); k["keyStore"] == store && k["id"] == id {
			return k
		}
	}
	panic("no key " + store + "/" + id)
}

func stateStore(state map[string]any, name string) map[string]any {
	for _, ks := range state["keyStores"].([]any) {
		if ks := ks.(map[string]any); ks["name"] == name {
			return ks
		}
	}
	panic("no key store " + name)
}

func restoreRaw(n *testNode, snap []byte) error {
	_, err := n.admin.RestoreSnapshot(context.Background(), snap, true)
	return err
}

// TestRestoreRefusesAKeyWithoutItsCurrentVersion: such a state made every
// Encrypt dereference nil, on every node and again after every restart.
// It is refused, and the cluster keeps serving.
func TestRestoreRefusesAKeyWithoutItsCurrentVersion(t *testing.T) {
	c := newTestCluster(t, 1)
	n := c.nodes[0]
	snap := editedSnapshot(t, n, func(st map[string]any) { stateKey(st, demoStore, demoKey)["currentVersion"] = 7 })
	before := n.node.AppliedIndex()
	err := restoreRaw(n, snap)
	if err == nil || !strings.Contains(err.Error(), "current version 7 does not exist") {
		t.Fatalf("restore of a key without its current version: %v", err)
	}
	if n.node.AppliedIndex() != before {
		t.Fatal("a refused snapshot changed the state")
	}
	encryptOn(t, n, "still served")
}

// TestRestoreCannotDestroyALiveKeysMaterial: a deleted key whose versions
// name a live key's HSM label made every node's reconciler destroy that
// material for good. The snapshot is refused and the material stays.
func TestRestoreCannotDestroyALiveKeysMaterial(t *testing.T) {
	c := newTestCluster(t, 1)
	n := c.nodes[0]
	enc := encryptOn(t, n, "must stay decryptable")
	label := n.node.fsm.State().Key(demoStore, demoKey).Versions[0].HSMLabel
	snap := editedSnapshot(t, n, func(st map[string]any) {
		live := stateKey(st, demoStore, demoKey)
		decoy := map[string]any{}
		for k, v := range live {
			decoy[k] = v
		}
		decoy["id"], decoy["enabled"], decoy["deleted"] = "decoy", false, true
		decoy["deletionDate"] = "2026-01-01T00:00:00Z"
		st["keys"] = append(st["keys"].([]any), decoy)
	})
	err := restoreRaw(n, snap)
	if err == nil || !strings.Contains(err.Error(), "deleted key "+demoStore+"/decoy") {
		t.Fatalf("restore of a tombstone naming a live label: %v", err)
	}
	time.Sleep(500 * time.Millisecond) // a reconciler pass, had the state changed
	if ok, err := n.hsm.HasKey(label); err != nil || !ok {
		t.Fatalf("the live key's material is gone: %v %v", ok, err)
	}
	if got, err := decryptOn(n, enc); err != nil || string(got) != "must stay decryptable" {
		t.Fatalf("decrypt: %q %v", got, err)
	}
}

// TestSealedCredentialIsBoundToItsKeyStore: a sealed secret moved to
// another key store (by editing a snapshot) must not authenticate there.
func TestSealedCredentialIsBoundToItsKeyStore(t *testing.T) {
	c := newTestCluster(t, 1)
	n := c.nodes[0]
	var other admin.CreateKeyStoreResponse
	if err := set(&other)(n.admin.CreateKeyStore(t.Context(), admin.CreateKeyStoreRequest{Name: "other", Region: "us-east-1", GrantsMode: "open"})); err != nil {
		t.Fatal(err)
	}
	snap := editedSnapshot(t, n, func(st map[string]any) {
		from, to := stateStore(st, "other"), stateStore(st, demoStore)
		to["credentials"] = append(to["credentials"].([]any), from["credentials"].([]any)...)
		from["credentials"] = []any{}
	})
	if err := restoreRaw(n, snap); err != nil {
		t.Fatal(err)
	}
	c.waitFor("the restored state in the view", 10*time.Second, func() bool {
		return len(n.views.Load().StoreByName("other").Credentials) == 0
	})
	creds := xksclient.Credentials{AccessKeyID: other.Credential.AccessKeyID, Secret: other.Credential.SecretAccessKey, Region: "us-east-1"}
	if _, err := n.clientWith(creds).Metadata(demoKey, md("DescribeKey")); !isXKSError(err, "AuthenticationFailedException") {
		t.Fatalf("a credential moved from key store other to %s: %v", demoStore, err)
	}
	if _, err := n.client().Metadata(demoKey, md("DescribeKey")); err != nil {
		t.Fatalf("the key store's own credential: %v", err)
	}
}

// TestCredentialsSealedByTheOlderFormatStillWork: secrets sealed before
// seals named their key store live on in logs and snapshots; they must
// keep authenticating.
func TestCredentialsSealedByTheOlderFormatStillWork(t *testing.T) {
	c := newTestCluster(t, 1)
	n := c.nodes[0]
	cred := fsm.GenerateCredential()
	sealed, err := n.hsm.Seal(cred.Secret, []byte("xksproxy credential\x00"+cred.AccessKeyID))
	if err != nil {
		t.Fatal(err)
	}
	stored := fsm.StoredCredential{AccessKeyID: cred.AccessKeyID, SealedSecret: sealed}
	if _, err := n.applyAsOperator(t.Context(), fsm.AddCredential{At: time.Now().UTC(), KeyStore: demoStore, Credential: stored}); err != nil {
		t.Fatal(err)
	}
	creds := xksclient.Credentials{AccessKeyID: cred.AccessKeyID, Secret: string(cred.Secret), Region: "us-east-1"}
	c.waitFor("the credential sealed the old way to authenticate", 10*time.Second, func() bool {
		_, err := n.clientWith(creds).Metadata(demoKey, md("DescribeKey"))
		return err == nil
	})
}

// TestUnsealedSecretsFollowTheView: a removed credential's secret does not
// stay in the node's memory.
func TestUnsealedSecretsFollowTheView(t *testing.T) {
	c := newTestCluster(t, 1)
	n := c.nodes[0]
	var cred admin.NewCredential
	if err := set(&cred)(n.admin.AddCredential(t.Context(), "demo", admin.AddCredentialRequest{})); err != nil {
		t.Fatal(err)
	}
	cached := func(akid string) (found bool) {
		n.node.unsealed.Range(func(k, v any) bool {
			if strings.Contains(k.(string), akid) || string(v.([]byte)) == cred.SecretAccessKey {
				found = true
			}
			return !found
		})
		return found
	}
	c.waitFor("the new credential's secret in the cache", 10*time.Second, func() bool { return cached(cred.AccessKeyID) })
	if _, err := n.admin.RemoveCredential(t.Context(), "demo", cred.AccessKeyID); err != nil {
		t.Fatal(err)
	}
	c.waitFor("the removed credential's secret to leave the cache", 10*time.Second, func() bool { return !cached(cred.AccessKeyID) })
	if !cached(c.akid) {
		t.Fatal("the remaining credential's secret left the cache too")
	}
}

// TestFSMReservesTheHSMPackagesLabels: fsm cannot import hsm, so it keeps
// its own list of the labels hsm manages; this keeps the two in step.
func TestFSMReservesTheHSMPackagesLabels(t *testing.T) {
	f := fsm.New(nil)
	create, err := fsm.Encode(fsm.CreateKeyStore{At: time.Now(), KeyStore: fsm.StoredKeyStore{Name: "s", URIPath: "/s/kms/xks/v1",
		Region: "us-east-1", GrantsMode: fsm.GrantsOpen, KeyMode: fsm.KeyModeShared}})
	if err != nil {
		t.Fatal(err)
	}
	if res := f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: create}).(fsm.ApplyResult); res.Err != nil {
		t.Fatal(res.Err)
	}
	base := f.State()
	for _, label := range []string{hsm.ClusterKEKLabel, hsm.ClusterSealLabel, hsm.DefaultHealthKeyLabel} {
		k := fsm.Key{KeyStore: "s", ID: "k", Usage: fsm.UsageEncrypt, Enabled: true, CurrentVersion: 1,
			Versions: []fsm.KeyVersion{{Number: 1, HSMLabel: label}}}
		if err := (fsm.CreateKey{At: time.Now(), Key: k}).Validate(base); err == nil || !strings.Contains(err.Error(), "reserved") {
			t.Errorf("fsm lets a key name %s: %v", label, err)
		}
	}
}

// editBackup changes a backup file's state and leaves everything else,
// MAC included, as it was.
func editBackup(t *testing.T, backup []byte, edit func(state map[string]any)) []byte {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(backup, &doc); err != nil {
		t.Fatal(err)
	}
	edit(doc["snapshot"].(map[string]any)["state"].(map[string]any))
	out, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func inspect(t *testing.T, n *testNode, file []byte) admin.BackupInfo {
	t.Helper()
	info, err := n.admin.InspectSnapshot(t.Context(), file)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// TestBackupsAreAuthenticated: a backup carries a MAC under the cluster
// seal key. A backup edited by hand (a key enabled, a grant added) is
// refused, an untouched one restores, a bare snapshot of an older version
// needs allow-unauthenticated, and inspect tells them apart without
// restoring.
func TestBackupsAreAuthenticated(t *testing.T) {
	c := newTestCluster(t, 1)
	n := c.nodes[0]
	var res admin.Change
	if err := set(&res)(n.admin.DisableKey(t.Context(), "demo", "demo-key")); err != nil {
		t.Fatal(err)
	}
	backup, err := n.admin.SaveSnapshot(t.Context(), false)
	if err != nil {
		t.Fatal(err)
	}
	edits := map[string][]byte{
		"key enabled": editBackup(t, backup, func(st map[string]any) { stateKey(st, demoStore, demoKey)["enabled"] = true }),
		"grant added": editBackup(t, backup, func(st map[string]any) {
			st["grants"] = append(st["grants"].([]any), map[string]any{"id": "mallory", "keyStore": demoStore, "keyId": "*",
				"principals": []any{"*"}, "createdAt": "2026-01-01T00:00:00Z"})
		}),
		"saved by someone else": bytes.Replace(backup, []byte(`"savedBy":"node1"`), []byte(`"savedBy":"node9"`), 1),
	}
	id, err := n.node.ClusterID()
	if err != nil || !strings.HasPrefix(id, "sha256:") {
		t.Fatalf("cluster id %q %v", id, err)
	}
	for name, edited := range edits {
		before := n.node.AppliedIndex()
		err := restoreRaw(n, edited)
		if err == nil || !strings.Contains(err.Error(), "modified") {
			t.Fatalf("%s: restore of an edited backup: %v", name, err)
		}
		if n.node.AppliedIndex() != before {
			t.Fatalf("%s: a refused backup changed the state", name)
		}
		info := inspect(t, n, edited)
		if info.MAC != "failed" || info.Restorable || !strings.Contains(info.Problem, "modified") || info.ClusterID != id {
			t.Fatalf("%s: inspect: %+v", name, info)
		}
	}
	if got, err := n.client().Metadata(demoKey, md("DescribeKey")); err != nil || got.KeyStatus != "DISABLED" {
		t.Fatalf("the edit reached the data plane: %+v %v", got, err)
	}

	info := inspect(t, n, backup)
	if info.MAC != "verified" || !info.Restorable || !info.Valid || info.ClusterID != id || info.ThisClusterID != id ||
		info.SavedBy != "node1" || info.SavedAt == nil || info.KeyStores != 1 || info.Keys != 1 || info.Credentials != 1 || info.Index == 0 {
		t.Fatalf("inspect of an untouched backup: %+v", info)
	}
	if _, err := n.admin.RestoreSnapshot(t.Context(), backup, false); err != nil {
		t.Fatalf("restore of an untouched backup: %v", err)
	}

	// A backup of an older version: the bare snapshot, no MAC.
	var doc struct {
		Snapshot json.RawMessage `json:"snapshot"`
	}
	if err := json.Unmarshal(backup, &doc); err != nil {
		t.Fatal(err)
	}
	if _, err := n.admin.RestoreSnapshot(t.Context(), doc.Snapshot, false); err == nil || !strings.Contains(err.Error(), "--allow-unauthenticated") {
		t.Fatalf("restore of a backup without a MAC: %v", err)
	}
	if info := inspect(t, n, doc.Snapshot); info.MAC != "absent" || info.Restorable || !info.Valid || info.Keys != 1 {
		t.Fatalf("inspect of a backup without a MAC: %+v", info)
	}
	if err := restoreRaw(n, doc.Snapshot); err != nil {
		t.Fatalf("restore of a backup without a MAC, allowed: %v", err)
	}
	if _, err := n.admin.InspectSnapshot(t.Context(), []byte("not a backup")); err == nil {
		t.Fatal("inspect took garbage for a backup")
	}
}
