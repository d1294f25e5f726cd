package fsm

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

// The tests "seal" a secret by prefixing it, so that a leak of either form
// is easy to search for.
func seal(secret []byte) []byte { return append([]byte("sealed:"), secret...) }

func unsealTest(_, _ string, sealed []byte) ([]byte, error) {
	rest, ok := bytes.CutPrefix(sealed, []byte("sealed:"))
	if !ok {
		return nil, errors.New("not sealed by this test")
	}
	return rest, nil
}

// secretsSeen records every secret the fixtures make, for leak checks.
var secretsSeen [][]byte

func newStoredCredential() StoredCredential {
	c := GenerateCredential()
	secretsSeen = append(secretsSeen, c.Secret)
	return StoredCredential{AccessKeyID: c.AccessKeyID, SealedSecret: seal(c.Secret)}
}

// assertNoSecret fails when text holds any fixture secret, sealed or not,
// raw or base64.
func assertNoSecret(t *testing.T, what, text string) {
	t.Helper()
	for _, s := range secretsSeen {
		for _, form := range []string{string(s), string(seal(s)), base64.StdEncoding.EncodeToString(seal(s))} {
			if strings.Contains(text, form) {
				t.Fatalf("%s contains a secret: %s", what, text)
			}
		}
	}
}

func storeSpec(name, prefix string, mode KeyMode) StoredKeyStore {
	return StoredKeyStore{Name: name, URIPath: prefix + "/kms/xks/v1", Region: "us-east-1", Enabled: true,
		GrantsMode: GrantsOpen, KeyMode: mode, Credentials: []StoredCredential{newStoredCredential()}}
}

func versionSpec(store, id string, n uint32, mode KeyMode) KeyVersion {
	v := KeyVersion{Number: n, HSMLabel: store + "-" + id + "-v" + string(rune('0'+n))}
	if mode == KeyModeReplicated {
		v.WrappedMaterial, v.WrapMechanism = []byte("wrapped:"+v.HSMLabel), "CKM_AES_KEY_WRAP"
	}
	return v
}

func keySpec(store, id string, mode KeyMode) Key {
	return Key{KeyStore: store, ID: id, Usage: UsageEncrypt | UsageDecrypt, Enabled: true, CurrentVersion: 1,
		Versions: []KeyVersion{versionSpec(store, id, 1, mode)}}
}

func grantSpec(id, store, key string, principals ...string) Grant {
	return Grant{ID: id, KeyStore: store, KeyID: key, Principals: principals}
}

// step applies one command as the FSM would at index s.Index()+1.
func step(t testing.TB, s *State, c Command) *State {
	t.Helper()
	next, err := s.execute(s.index+1, c)
	if err != nil {
		t.Fatalf("%s: %v", c.Type(), err)
	}
	return next
}

func run(t testing.TB, cmds ...Command) *State {
	t.Helper()
	s := newState()
	for _, c := range cmds {
		s = step(t, s, c)
	}
	return s
}

func stateJSONOf(t testing.TB, s *State) string {
	t.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func ptr[T any](v T) *T { return &v }

func TestCommandsApply(t *testing.T) {
	a, b := storeSpec("a", "/a", KeyModeReplicated), storeSpec("b", "", KeyModeShared)
	s := run(t, CreateKeyStore{At: t0, KeyStore: a}, CreateKeyStore{At: t0, KeyStore: b})
	if ks := s.KeyStore("a"); ks == nil || ks.URIPath != "/a/kms/xks/v1" || !ks.Credentials[0].CreatedAt.Equal(t0) || s.Index() != 2 {
		t.Fatalf("CreateKeyStore: %+v at %d", ks, s.Index())
	}

	s = step(t, s, UpdateKeyStore{Name: "a", Enabled: ptr(false), QuotaRPS: ptr(uint32(1800)), GrantsMode: ptr(GrantsClosed)})
	if ks := s.KeyStore("a"); ks.Enabled || ks.QuotaRPS != 1800 || ks.GrantsMode != GrantsClosed || ks.KeyMode != KeyModeReplicated {
		t.Fatalf("UpdateKeyStore: %+v", ks)
	}
	s = step(t, s, UpdateKeyStore{Name: "a", Enabled: ptr(true)})
	if ks := s.KeyStore("a"); !ks.Enabled || ks.QuotaRPS != 1800 {
		t.Fatal("UpdateKeyStore changed a field it did not name")
	}

	second := newStoredCredential()
	second.ExpiresAt = t0.Add(48 * time.Hour)
	s = step(t, s, AddCredential{At: t0.Add(time.Hour), KeyStore: "a", Credential: second})
	if creds := s.KeyStore("a").Credentials; len(creds) != 2 || creds[1].AccessKeyID != second.AccessKeyID || !creds[1].CreatedAt.Equal(t0.Add(time.Hour)) {
		t.Fatalf("AddCredential: %v", creds)
	}
	s = step(t, s, RemoveCredential{At: t0.Add(2 * time.Hour), KeyStore: "a", AccessKeyID: a.Credentials[0].AccessKeyID})
	if creds := s.KeyStore("a").Credentials; len(creds) != 1 || creds[0].AccessKeyID != second.AccessKeyID {
		t.Fatalf("RemoveCredential: %v", creds)
	}

	s = step(t, s, CreateKey{At: t0, Key: keySpec("a", "k1", KeyModeReplicated)})
	k := s.Key("a", "k1")
	if k == nil || !k.CreatedAt.Equal(t0) || !k.Versions[0].CreatedAt.Equal(t0) || string(k.Versions[0].WrappedMaterial) != "wrapped:a-k1-v1" {
		t.Fatalf("CreateKey: %+v", k)
	}
	s = step(t, s, SetKeyEnabled{KeyStore: "a", KeyID: "k1", Enabled: false})
	if s.Key("a", "k1").Enabled {
		t.Fatal("SetKeyEnabled did not disable")
	}
	s = step(t, s, AddKeyVersion{At: t0.Add(time.Hour), KeyStore: "a", KeyID: "k1", Version: versionSpec("a", "k1", 2, KeyModeReplicated)})
	if k := s.Key("a", "k1"); len(k.Versions) != 2 || k.CurrentVersion != 1 || !k.Versions[1].CreatedAt.Equal(t0.Add(time.Hour)) {
		t.Fatalf("AddKeyVersion must add without making current: %+v", k)
	}
	s = step(t, s, SetCurrentVersion{KeyStore: "a", KeyID: "k1", Version: 2})
	s = step(t, s, SetCurrentVersion{KeyStore: "a", KeyID: "k1", Version: 2})
	if s.Key("a", "k1").CurrentVersion != 2 {
		t.Fatal("SetCurrentVersion")
	}

	g := grantSpec("g1", "a", "k1", "arn:aws:iam::111122223333:role/*")
	s = step(t, s, AddGrant{At: t0, Grant: g})
	if got := s.Grant("g1"); got == nil || !got.CreatedAt.Equal(t0) || len(s.Grants()) != 1 {
		t.Fatalf("AddGrant: %+v", got)
	}
	s = step(t, s, AddGrant{At: t0, Grant: grantSpec("g2", "b", AllKeys, "*")})
	s = step(t, s, RemoveGrant{ID: "g1"})
	if s.Grant("g1") != nil {
		t.Fatal("RemoveGrant")
	}
	s = step(t, s, DeleteKeyStore{Name: "b"})
	if s.KeyStore("b") != nil || s.Grant("g2") != nil || len(s.KeyStores()) != 1 {
		t.Fatal("DeleteKeyStore must remove the key store and its grants")
	}
	if s.Seeded() {
		t.Fatal("only Seed marks the state seeded")
	}
}

func TestSeed(t *testing.T) {
	seed := Seed{At: t0,
		KeyStores: []StoredKeyStore{storeSpec("a", "/a", KeyModeShared), storeSpec("b", "/b", KeyModeReplicated)},
		Keys:      []Key{keySpec("a", "k1", KeyModeShared), keySpec("b", "k1", KeyModeReplicated)},
		Grants:    []Grant{grantSpec("g", "a", "k1", "*")},
	}
	s := run(t, seed)
	if !s.Seeded() || len(s.KeyStores()) != 2 || s.Key("b", "k1") == nil || s.Grant("g") == nil {
		t.Fatalf("seed not applied: %s", stateJSONOf(t, s))
	}
	again, err := s.execute(s.index+1, Seed{At: t0, KeyStores: []StoredKeyStore{storeSpec("c", "/c", KeyModeShared)}})
	if !errors.Is(err, ErrAlreadySeeded) || !errors.Is(err, ErrConflict) || again.KeyStore("c") != nil {
		t.Fatalf("second seed: %v", err)
	}
	// Items are checked against the ones before them: a key of a key store
	// the seed has not created is refused.
	_, err = newState().execute(1, Seed{At: t0, Keys: []Key{keySpec("nope", "k", KeyModeShared)}})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("seed with a key of no key store: %v", err)
	}
	if err := (Seed{At: t0}).Validate(newState()); err != nil {
		t.Fatalf("an empty seed marks the state seeded: %v", err)
	}
}

// ruleBase is the state every rule case starts from: key store a replicates
// material and holds key k with grant g; b is shared with key kb; c has an
// expired credential and one active one.
func ruleBase(t testing.TB) *State {
	c := storeSpec("c", "/c", KeyModeShared)
	expired := newStoredCredential()
	expired.ExpiresAt = t0.Add(-time.Hour)
	c.Credentials = append(c.Credentials, expired)
	return run(t,
		CreateKeyStore{At: t0, KeyStore: storeSpec("a", "/a", KeyModeReplicated)},
		CreateKeyStore{At: t0, KeyStore: storeSpec("b", "/b", KeyModeShared)},
		CreateKeyStore{At: t0, KeyStore: c},
		CreateKey{At: t0, Key: keySpec("a", "k", KeyModeReplicated)},
		CreateKey{At: t0, Key: keySpec("b", "kb", KeyModeShared)},
		AddGrant{At: t0, Grant: grantSpec("g", "a", "k", "*")},
	)
}

func TestCommandRules(t *testing.T) {
	base := ruleBase(t)
	a := base.KeyStore("a")
	c := base.KeyStore("c")
	withStore := func(f func(*StoredKeyStore)) CreateKeyStore {
		ks := storeSpec("new", "/new", KeyModeShared)
		f(&ks)
		return CreateKeyStore{At: t0, KeyStore: ks}
	}
	withKey := func(f func(*Key)) CreateKey {
		k := keySpec("b", "new", KeyModeShared)
		f(&k)
		return CreateKey{At: t0, Key: k}
	}
	withGrant := func(f func(*Grant)) AddGrant {
		g := grantSpec("new", "a", "k", "arn:aws:iam::111122223333:role/*")
		f(&g)
		return AddGrant{At: t0, Grant: g}
	}
	tooMany := make([]StoredCredential, MaxCredentials+1)
	for i := range tooMany {
		tooMany[i] = newStoredCredential()
	}
	dupCred := newStoredCredential()
	cases := []struct {
		name string
		cmd  Command
		kind error
	}{
		{"seed without time", Seed{}, ErrInvalid},
		{"seed with a bad item", Seed{At: t0, KeyStores: []StoredKeyStore{storeSpec("x", "/x", KeyModeShared), storeSpec("x", "/y", KeyModeShared)}}, ErrConflict},

		{"create key store without time", CreateKeyStore{KeyStore: storeSpec("new", "/new", KeyModeShared)}, ErrInvalid},
		{"key store name", withStore(func(ks *StoredKeyStore) { ks.Name = "a b" }), ErrInvalid},
		{"key store path", withStore(func(ks *StoredKeyStore) { ks.URIPath = "/new/kms/xks/v2" }), ErrInvalid},
		{"key store path too long", withStore(func(ks *StoredKeyStore) { ks.URIPath = "/" + strings.Repeat("p", 120) + "/kms/xks/v1" }), ErrInvalid},
		{"key store region", withStore(func(ks *StoredKeyStore) { ks.Region = "US East" }), ErrInvalid},
		{"grants mode", withStore(func(ks *StoredKeyStore) { ks.GrantsMode = "" }), ErrInvalid},
		{"key mode", withStore(func(ks *StoredKeyStore) { ks.KeyMode = "mirrored" }), ErrInvalid},
		{"too many credentials", withStore(func(ks *StoredKeyStore) { ks.Credentials = tooMany }), ErrInvalid},
		{"access key id shape", withStore(func(ks *StoredKeyStore) { ks.Credentials[0].AccessKeyID = "short" }), ErrInvalid},
		{"no sealed secret", withStore(func(ks *StoredKeyStore) { ks.Credentials[0].SealedSecret = nil }), ErrInvalid},
		{"sealed secret too big", withStore(func(ks *StoredKeyStore) { ks.Credentials[0].SealedSecret = make([]byte, maxSealedSecret+1) }), ErrInvalid},
		{"access key id twice", withStore(func(ks *StoredKeyStore) { ks.Credentials = []StoredCredential{dupCred, dupCred} }), ErrInvalid},
		{"key store name taken", withStore(func(ks *StoredKeyStore) { ks.Name = "a" }), ErrConflict},
		{"URI path taken", withStore(func(ks *StoredKeyStore) { ks.URIPath = a.URIPath }), ErrConflict},
		{"access key id of another key store", withStore(func(ks *StoredKeyStore) { ks.Credentials[0].AccessKeyID = a.Credentials[0].AccessKeyID }), ErrConflict},

		{"update nothing", UpdateKeyStore{Name: "a"}, ErrInvalid},
		{"update grants mode", UpdateKeyStore{Name: "a", GrantsMode: ptr(GrantsMode("sometimes"))}, ErrInvalid},
		{"update missing key store", UpdateKeyStore{Name: "zz", Enabled: ptr(true)}, ErrNotFound},

		{"delete missing key store", DeleteKeyStore{Name: "zz"}, ErrNotFound},
		{"delete key store with keys", DeleteKeyStore{Name: "a"}, ErrConflict},

		{"add credential without time", AddCredential{KeyStore: "a", Credential: newStoredCredential()}, ErrInvalid},
		{"add credential shape", AddCredential{At: t0, KeyStore: "a", Credential: StoredCredential{AccessKeyID: "lower", SealedSecret: []byte("x")}}, ErrInvalid},
		{"add credential to missing key store", AddCredential{At: t0, KeyStore: "zz", Credential: newStoredCredential()}, ErrNotFound},
		{"add credential id of another key store", AddCredential{At: t0, KeyStore: "a", Credential: base.KeyStore("b").Credentials[0]}, ErrConflict},
		{"add credential id already there", AddCredential{At: t0, KeyStore: "a", Credential: a.Credentials[0]}, ErrConflict},

		{"remove credential without time", RemoveCredential{KeyStore: "c", AccessKeyID: c.Credentials[1].AccessKeyID}, ErrInvalid},
		{"remove credential of missing key store", RemoveCredential{At: t0, KeyStore: "zz", AccessKeyID: c.Credentials[0].AccessKeyID}, ErrNotFound},
		{"remove missing credential", RemoveCredential{At: t0, KeyStore: "a", AccessKeyID: c.Credentials[0].AccessKeyID}, ErrNotFound},
		{"remove the only credential", RemoveCredential{At: t0, KeyStore: "a", AccessKeyID: a.Credentials[0].AccessKeyID}, ErrConflict},
		{"remove the last active credential", RemoveCredential{At: t0, KeyStore: "c", AccessKeyID: c.Credentials[0].AccessKeyID}, ErrConflict},

		{"create key without time", CreateKey{Key: keySpec("b", "new", KeyModeShared)}, ErrInvalid},
		{"key id", withKey(func(k *Key) { k.ID = "k/1" }), ErrInvalid},
		{"key id too long", withKey(func(k *Key) { k.ID = strings.Repeat("k", 129) }), ErrInvalid},
		{"key usage", withKey(func(k *Key) { k.Usage = 0 }), ErrInvalid},
		{"key without versions", withKey(func(k *Key) { k.Versions = nil }), ErrInvalid},
		{"key current version missing", withKey(func(k *Key) { k.CurrentVersion = 2 }), ErrInvalid},
		{"key versions out of order", withKey(func(k *Key) {
			k.Versions = []KeyVersion{versionSpec("b", "new", 2, KeyModeShared), versionSpec("b", "new", 1, KeyModeShared)}
		}), ErrInvalid},
		{"key versions share a label", withKey(func(k *Key) {
			v2 := versionSpec("b", "new", 2, KeyModeShared)
			v2.HSMLabel = k.Versions[0].HSMLabel
			k.Versions = append(k.Versions, v2)
		}), ErrInvalid},
		{"key of missing key store", withKey(func(k *Key) { k.KeyStore = "zz" }), ErrNotFound},
		{"key exists", withKey(func(k *Key) { k.ID = "kb"; k.Versions[0].HSMLabel = "fresh" }), ErrConflict},
		{"replicated key without material", CreateKey{At: t0, Key: keySpec("a", "new", KeyModeShared)}, ErrInvalid},
		{"shared key with material", CreateKey{At: t0, Key: keySpec("b", "new", KeyModeReplicated)}, ErrInvalid},
		{"HSM label in use", withKey(func(k *Key) { k.Versions[0].HSMLabel = "a-k-v1" }), ErrConflict},

		{"enable missing key", SetKeyEnabled{KeyStore: "a", KeyID: "zz", Enabled: true}, ErrNotFound},
		{"enable key of missing key store", SetKeyEnabled{KeyStore: "zz", KeyID: "k", Enabled: true}, ErrNotFound},

		{"add version without time", AddKeyVersion{KeyStore: "a", KeyID: "k", Version: versionSpec("a", "k", 2, KeyModeReplicated)}, ErrInvalid},
		{"add version to missing key", AddKeyVersion{At: t0, KeyStore: "a", KeyID: "zz", Version: versionSpec("a", "zz", 2, KeyModeReplicated)}, ErrNotFound},
		{"add version with a gap", AddKeyVersion{At: t0, KeyStore: "a", KeyID: "k", Version: versionSpec("a", "k", 3, KeyModeReplicated)}, ErrConflict},
		{"add version that exists", AddKeyVersion{At: t0, KeyStore: "a", KeyID: "k", Version: versionSpec("a", "k", 1, KeyModeReplicated)}, ErrConflict},
		{"add version without label", AddKeyVersion{At: t0, KeyStore: "a", KeyID: "k", Version: KeyVersion{Number: 2, WrappedMaterial: []byte("w"), WrapMechanism: "CKM_AES_KEY_WRAP"}}, ErrInvalid},
		{"add version without material", AddKeyVersion{At: t0, KeyStore: "a", KeyID: "k", Version: versionSpec("a", "k", 2, KeyModeShared)}, ErrInvalid},
		{"add version with a used label", AddKeyVersion{At: t0, KeyStore: "b", KeyID: "kb", Version: KeyVersion{Number: 2, HSMLabel: "a-k-v1"}}, ErrConflict},

		{"set missing current version", SetCurrentVersion{KeyStore: "a", KeyID: "k", Version: 2}, ErrNotFound},
		{"set current version of missing key", SetCurrentVersion{KeyStore: "a", KeyID: "zz", Version: 1}, ErrNotFound},

		{"add grant without time", AddGrant{Grant: grantSpec("new", "a", "k", "*")}, ErrInvalid},
		{"grant id", withGrant(func(g *Grant) { g.ID = "" }), ErrInvalid},
		{"grant key id", withGrant(func(g *Grant) { g.KeyID = "k*" }), ErrInvalid},
		{"grant without principals", withGrant(func(g *Grant) { g.Principals = nil }), ErrInvalid},
		{"grant principal with space", withGrant(func(g *Grant) { g.Principals = []string{"arn:aws:iam::1:role/a b"} }), ErrInvalid},
		{"grant account", withGrant(func(g *Grant) { g.Accounts = []string{"1111"} }), ErrInvalid},
		{"grant region", withGrant(func(g *Grant) { g.Regions = []string{"Mars"} }), ErrInvalid},
		{"grant via service", withGrant(func(g *Grant) { g.ViaServices = []string{"EC2"} }), ErrInvalid},
		{"grant VPC", withGrant(func(g *Grant) { g.SourceVPCs = []string{"vpce-1234"} }), ErrInvalid},
		{"grant VPC endpoint", withGrant(func(g *Grant) { g.SourceVPCEs = []string{"vpc-1234"} }), ErrInvalid},
		{"grant operation", withGrant(func(g *Grant) { g.Operations = []string{"Sign"} }), ErrInvalid},
		{"grant list too long", withGrant(func(g *Grant) { g.Regions = make([]string, maxGrantList+1); fillRegions(g.Regions) }), ErrInvalid},
		{"grant id taken", withGrant(func(g *Grant) { g.ID = "g" }), ErrConflict},
		{"grant of missing key store", withGrant(func(g *Grant) { g.KeyStore = "zz"; g.KeyID = AllKeys }), ErrNotFound},
		{"grant of missing key", withGrant(func(g *Grant) { g.KeyID = "zz" }), ErrNotFound},

		{"remove missing grant", RemoveGrant{ID: "zz"}, ErrNotFound},
	}
	before := stateJSONOf(t, base.withIndex(0))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cmd.Validate(base)
			if !errors.Is(err, tc.kind) {
				t.Fatalf("Validate = %v, want %v", err, tc.kind)
			}
			assertNoSecret(t, "error", err.Error())
			next, applyErr := base.execute(base.index+1, tc.cmd)
			if applyErr == nil || applyErr.Error() != err.Error() {
				t.Fatalf("apply error %v differs from Validate's %v", applyErr, err)
			}
			if next.Index() != base.index+1 || stateJSONOf(t, next.withIndex(0)) != before {
				t.Fatal("a refused command changed the state beyond its index")
			}
		})
	}
	if stateJSONOf(t, base.withIndex(0)) != before {
		t.Fatal("the base state changed")
	}
}

func fillRegions(r []string) {
	for i := range r {
		r[i] = "us-east-1"
	}
}

func TestCredentialRemovalRules(t *testing.T) {
	base := ruleBase(t)
	c := base.KeyStore("c")
	s := step(t, base, RemoveCredential{At: t0, KeyStore: "c", AccessKeyID: c.Credentials[1].AccessKeyID})
	if len(s.KeyStore("c").Credentials) != 1 {
		t.Fatal("an expired credential must always be removable")
	}
	// Once the active one has expired too, removing it locks out nobody.
	s = step(t, base, RemoveCredential{At: t0, KeyStore: "c", AccessKeyID: c.Credentials[1].AccessKeyID})
	future := newStoredCredential()
	future.ExpiresAt = t0.Add(time.Hour)
	s = step(t, s, AddCredential{At: t0, KeyStore: "c", Credential: future})
	s = step(t, s, RemoveCredential{At: t0, KeyStore: "c", AccessKeyID: c.Credentials[0].AccessKeyID})
	err := RemoveCredential{At: t0, KeyStore: "c", AccessKeyID: future.AccessKeyID}.Validate(s)
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("removing the last credential still active: %v", err)
	}
	if err := (RemoveCredential{At: t0.Add(time.Hour), KeyStore: "c", AccessKeyID: future.AccessKeyID}).Validate(s); err != nil {
		t.Fatalf("removing a credential that has expired: %v", err)
	}

	full := base
	for len(full.KeyStore("a").Credentials) < MaxCredentials {
		full = step(t, full, AddCredential{At: t0, KeyStore: "a", Credential: newStoredCredential()})
	}
	if err := (AddCredential{At: t0, KeyStore: "a", Credential: newStoredCredential()}).Validate(full); !errors.Is(err, ErrConflict) {
		t.Fatalf("credential %d: %v", MaxCredentials+1, err)
	}
}

// Apply copies what it stores, and copy-on-write never touches an older
// state: both are what lets readers and snapshots hold a State unlocked.
func TestStatesAreImmutable(t *testing.T) {
	ks := storeSpec("a", "/a", KeyModeReplicated)
	k := keySpec("a", "k", KeyModeReplicated)
	g := grantSpec("g", "a", "k", "arn:aws:iam::111122223333:role/*")
	s1 := run(t, CreateKeyStore{At: t0, KeyStore: ks}, CreateKey{At: t0, Key: k}, AddGrant{At: t0, Grant: g})
	snap := stateJSONOf(t, s1)

	ks.Credentials[0].SealedSecret[0] ^= 1
	ks.Credentials[0].AccessKeyID = "CHANGED"
	k.Versions[0].WrappedMaterial[0] ^= 1
	k.Versions[0].HSMLabel = "changed"
	g.Principals[0] = "changed"
	if stateJSONOf(t, s1) != snap {
		t.Fatal("the state shares memory with a command")
	}

	s2 := step(t, s1, AddKeyVersion{At: t0, KeyStore: "a", KeyID: "k", Version: versionSpec("a", "k", 2, KeyModeReplicated)})
	s2 = step(t, s2, SetKeyEnabled{KeyStore: "a", KeyID: "k"})
	s2 = step(t, s2, AddCredential{At: t0, KeyStore: "a", Credential: newStoredCredential()})
	s2 = step(t, s2, UpdateKeyStore{Name: "a", GrantsMode: ptr(GrantsClosed)})
	s2 = step(t, s2, RemoveGrant{ID: "g"})
	s2 = step(t, s2, CreateKeyStore{At: t0, KeyStore: storeSpec("b", "/b", KeyModeShared)})
	s2 = step(t, s2, DeleteKeyStore{Name: "b"})
	if stateJSONOf(t, s1) != snap {
		t.Fatal("applying to a state changed it")
	}
	if stateJSONOf(t, s2) == snap {
		t.Fatal("the commands changed nothing")
	}
}
