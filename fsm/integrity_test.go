package fsm

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"
)

// integrityBase is a state built by commands: two key stores, a live key,
// a deleted key and grants.
func integrityBase(t testing.TB) *State {
	s := ruleBase(t)
	for _, c := range []Command{
		CreateKey{At: t0, Key: keySpec("a", "gone", KeyModeReplicated)},
		SetKeyEnabled{KeyStore: "a", KeyID: "gone", Enabled: false},
		ScheduleDeletion{At: t0, KeyStore: "a", KeyID: "gone", Days: MinDeletionDays},
		DeleteKey{At: t0.Add(MinDeletionDays * 24 * time.Hour), KeyStore: "a", KeyID: "gone"},
		RaiseCommandSet{To: CommandSet},
		auditedBy(t0, boot, CreateKey{At: t0, Key: legacyKeySpec("b", "imported", nil)}),
		RevokeNodeCertificates{At: t0, NodeID: "node9"},
	} {
		s = step(t, s, c)
	}
	return s
}

// snapshotOf returns a snapshot of s after edit changed its serialised form.
func snapshotOf(t testing.TB, s *State, edit func(*stateJSON)) []byte {
	t.Helper()
	var in stateJSON
	if err := json.Unmarshal([]byte(stateJSONOf(t, s)), &in); err != nil {
		t.Fatal(err)
	}
	edit(&in)
	b, err := json.Marshal(struct {
		Version int        `json:"version"`
		State   *stateJSON `json:"state"`
	}{SnapshotVersion, &in})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func keyIn(in *stateJSON, store, id string) *Key {
	for _, k := range in.Keys {
		if k.KeyStore == store && k.ID == id {
			return k
		}
	}
	panic("no key " + store + "/" + id)
}

func storeIn(in *stateJSON, name string) *StoredKeyStore {
	for _, ks := range in.KeyStores {
		if ks.Name == name {
			return ks
		}
	}
	panic("no key store " + name)
}

// TestRestoreRefusesInconsistentStates: a snapshot is held to every rule a
// command is, plus the references between its parts. Each case is one
// edit of a good snapshot; the refusal names the problem and the serving
// state stays.
func TestRestoreRefusesInconsistentStates(t *testing.T) {
	base := integrityBase(t)
	good := snapshotOf(t, base, func(*stateJSON) {})
	f := New(nil)
	if err := f.Restore(io.NopCloser(bytes.NewReader(good))); err != nil {
		t.Fatalf("the untouched snapshot: %v", err)
	}
	keep := f.State()
	cases := []struct {
		name string
		edit func(*stateJSON)
		want string
	}{
		{"current version missing", func(in *stateJSON) { keyIn(in, "a", "k").CurrentVersion = 7 }, "current version 7 does not exist"},
		{"tombstone names a live key's label", func(in *stateJSON) {
			keyIn(in, "a", "gone").Versions[0].HSMLabel = keyIn(in, "a", "k").Versions[0].HSMLabel
		}, "deleted key a/gone"},
		{"two live keys share a label", func(in *stateJSON) {
			keyIn(in, "b", "kb").Versions[0].HSMLabel = "shared-label"
			in.Keys = append(in.Keys, &Key{KeyStore: "b", ID: "kc", Usage: UsageEncrypt, Enabled: true, CurrentVersion: 1,
				Versions: []KeyVersion{{Number: 1, HSMLabel: "shared-label"}}})
		}, "HSM label shared-label"},
		{"cluster KEK label", func(in *stateJSON) { keyIn(in, "b", "kb").Versions[0].HSMLabel = "xksproxy-cluster-kek" }, "reserved"},
		{"cluster seal label", func(in *stateJSON) { keyIn(in, "b", "kb").Versions[0].HSMLabel = "xksproxy-cluster-seal" }, "reserved"},
		{"health key label", func(in *stateJSON) { keyIn(in, "b", "kb").Versions[0].HSMLabel = "xksproxy-health" }, "reserved"},
		{"quota out of range", func(in *stateJSON) { storeIn(in, "a").QuotaRPS = MaxQuotaRPS + 1 }, "quota"},
		{"access key id in two key stores", func(in *stateJSON) {
			storeIn(in, "b").Credentials[0].AccessKeyID = storeIn(in, "a").Credentials[0].AccessKeyID
		}, "access key id"},
		{"URI path twice", func(in *stateJSON) { storeIn(in, "b").URIPath = storeIn(in, "a").URIPath }, "URI path"},
		{"unknown key mode", func(in *stateJSON) { storeIn(in, "b").KeyMode = "mirrored" }, "key mode"},
		{"replicated version without material", func(in *stateJSON) { keyIn(in, "a", "k").Versions[0].WrappedMaterial = nil }, "wrapped material"},
		{"too many credentials", func(in *stateJSON) {
			for len(storeIn(in, "b").Credentials) <= MaxCredentials {
				ks := storeIn(in, "b")
				ks.Credentials = append(ks.Credentials, newStoredCredential())
			}
		}, "credentials"},
		{"empty sealed secret", func(in *stateJSON) { storeIn(in, "a").Credentials[0].SealedSecret = nil }, "sealed secret"},
		{"grant names a missing key", func(in *stateJSON) { in.Grants[0].KeyID = "nope" }, "no key nope"},
		{"grant without principals", func(in *stateJSON) { in.Grants[0].Principals = nil }, "principal"},
		{"deleted key enabled", func(in *stateJSON) { keyIn(in, "a", "gone").Enabled = true }, "a/gone"},
		{"enabled key scheduled for deletion", func(in *stateJSON) { keyIn(in, "a", "k").DeletionDate = t0 }, "a/k"},
		{"key id malformed", func(in *stateJSON) { keyIn(in, "b", "kb").ID = "bad id" }, "bad id"},
		{"no versions", func(in *stateJSON) { keyIn(in, "b", "kb").Versions = nil }, "no versions"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := f.Restore(io.NopCloser(bytes.NewReader(snapshotOf(t, base, c.edit))))
			if err == nil {
				t.Fatal("restored")
			}
			if f.State() != keep {
				t.Fatal("a refused snapshot changed the state")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("the refusal does not name the problem (%q): %v", c.want, err)
			}
			assertNoSecret(t, "refusal", err.Error())
		})
	}
}

// TestCommandsRefuseReservedLabelsAndQuotas: Apply holds a command to the
// same rules as a snapshot, so no sequence of commands builds a state that
// a restore would refuse.
func TestCommandsRefuseReservedLabelsAndQuotas(t *testing.T) {
	base := ruleBase(t)
	for _, label := range []string{"xksproxy-cluster-kek", "xksproxy-cluster-seal", "xksproxy-health"} {
		k := keySpec("b", "reserved", KeyModeShared)
		k.Versions[0].HSMLabel = label
		if _, err := base.execute(base.index+1, CreateKey{At: t0, Key: k}); err == nil || !strings.Contains(err.Error(), "reserved") {
			t.Errorf("a key adopting %s: %v", label, err)
		}
	}
	ks := storeSpec("q", "/q", KeyModeShared)
	ks.QuotaRPS = MaxQuotaRPS + 1
	if _, err := base.execute(base.index+1, CreateKeyStore{At: t0, KeyStore: ks}); err == nil {
		t.Error("a key store with an out-of-range quota was created")
	}
	if _, err := base.execute(base.index+1, UpdateKeyStore{Name: "a", QuotaRPS: ptr(uint32(MaxQuotaRPS + 1))}); err == nil {
		t.Error("a quota out of range was set")
	}
	if _, err := base.execute(base.index+1, UpdateKeyStore{Name: "a", QuotaRPS: ptr(uint32(MaxQuotaRPS))}); err != nil {
		t.Errorf("the largest quota: %v", err)
	}
}

// TestEveryAppliedStatePassesTheIntegrityCheck: what commands build, a
// restore accepts.
func TestEveryAppliedStatePassesTheIntegrityCheck(t *testing.T) {
	s := newState()
	for _, c := range sampleCommands() {
		s = step(t, s, c)
		if err := s.check(); err != nil {
			t.Fatalf("after %s: %v", c.Type(), err)
		}
	}
	if err := integrityBase(t).check(); err != nil {
		t.Fatal(err)
	}
}

// TestDestroyableVersionsSpareLiveLabels: the reconciler's list of material
// to destroy holds the versions of deleted keys only, and never a label a
// live key names, even in a state that got past the rules.
func TestDestroyableVersionsSpareLiveLabels(t *testing.T) {
	s := integrityBase(t)
	got := s.DestroyableVersions()
	gone := s.Key("a", "gone")
	if len(got) != 1 || got[0].HSMLabel != gone.Versions[0].HSMLabel || got[0].KeyStore != "a" || got[0].KeyID != "gone" || got[0].Number != 1 {
		t.Fatalf("destroyable: %+v", got)
	}
	bad := *gone
	bad.Versions = []KeyVersion{{Number: 1, HSMLabel: s.Key("a", "k").Versions[0].HSMLabel}}
	tx := newTxn(s, s.index+1)
	tx.putKey(&bad)
	if got := tx.next.DestroyableVersions(); len(got) != 0 {
		t.Fatalf("a live key's label is to be destroyed: %+v", got)
	}
}
