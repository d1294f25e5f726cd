package fsm

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

func validStore(name, path string) KeyStore {
	c := GenerateCredential()
	return KeyStore{Name: name, URIPath: path, Region: "us-east-1", Enabled: true, Credentials: []Credential{c}}
}

func validKey(store, id string) Key {
	return Key{KeyStore: store, ID: id, Usage: UsageEncrypt | UsageDecrypt, Enabled: true,
		CurrentVersion: 1, Versions: []KeyVersion{{Number: 1, HSMLabel: store + "-" + id + "-v1"}}}
}

func TestBuildIndexesStoresAndKeys(t *testing.T) {
	a, b := validStore("a", "/a/kms/xks/v1"), validStore("b", "/kms/xks/v1")
	b.Credentials = append(b.Credentials, GenerateCredential())
	v, err := Build(7, []KeyStore{a, b}, []Key{validKey("a", "k1"), validKey("b", "k1")})
	if err != nil {
		t.Fatal(err)
	}
	if v.Index() != 7 {
		t.Fatalf("index %d", v.Index())
	}
	sa := v.StoreByPath([]byte("/a/kms/xks/v1"))
	if sa == nil || sa.Name != "a" || sa.Key([]byte("k1")) == nil || sa.Key([]byte("k2")) != nil {
		t.Fatal("store a not indexed by path with its key")
	}
	if v.StoreByPath([]byte("/a/kms/xks/v1/")) != nil {
		t.Fatal("path lookup must be exact")
	}
	now := time.Now()
	sb := v.StoreByName("b")
	for _, c := range b.Credentials {
		if _, ok := sb.Credential([]byte(c.AccessKeyID), now); !ok {
			t.Fatalf("credential %s of b not active", c.AccessKeyID)
		}
		if _, ok := sa.Credential([]byte(c.AccessKeyID), now); ok {
			t.Fatal("a credential of b authenticates on a")
		}
	}
}

func TestBuildCopiesItsInput(t *testing.T) {
	s := validStore("a", "/a/kms/xks/v1")
	k := validKey("a", "k")
	v, err := Build(1, []KeyStore{s}, []Key{k})
	if err != nil {
		t.Fatal(err)
	}
	s.Credentials[0].Secret[0] ^= 1
	k.Versions[0].HSMLabel = "changed"
	sv := v.StoreByName("a")
	if sv.Credentials[0].Secret[0] == s.Credentials[0].Secret[0] || sv.Key([]byte("k")).Versions[0].HSMLabel == "changed" {
		t.Fatal("the view shares memory with the caller's input")
	}
}

func TestCredentialExpiry(t *testing.T) {
	s := validStore("a", "/a/kms/xks/v1")
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s.Credentials[0].ExpiresAt = at
	v, err := Build(1, []KeyStore{s}, nil)
	if err != nil {
		t.Fatal(err)
	}
	id := []byte(s.Credentials[0].AccessKeyID)
	if _, ok := v.StoreByName("a").Credential(id, at.Add(-time.Second)); !ok {
		t.Fatal("credential inactive before its expiry")
	}
	if _, ok := v.StoreByName("a").Credential(id, at); ok {
		t.Fatal("credential still active at its expiry")
	}
}

func TestBuildRefusesInvalidState(t *testing.T) {
	dupPath := validStore("b", "/a/kms/xks/v1")
	sharedKey := validStore("c", "/c/kms/xks/v1")
	a := validStore("a", "/a/kms/xks/v1")
	sharedKey.Credentials = a.Credentials
	cases := map[string]struct {
		stores []KeyStore
		keys   []Key
	}{
		"bad path":            {[]KeyStore{validStore("a", "/a/kms/xks/v2")}, nil},
		"path with dot":       {[]KeyStore{validStore("a", "/a.b/kms/xks/v1")}, nil},
		"path too long":       {[]KeyStore{validStore("a", "/"+strings.Repeat("a", 120)+"/kms/xks/v1")}, nil},
		"duplicate path":      {[]KeyStore{a, dupPath}, nil},
		"shared access key":   {[]KeyStore{a, sharedKey}, nil},
		"key without store":   {[]KeyStore{a}, []Key{validKey("zz", "k")}},
		"duplicate key":       {[]KeyStore{a}, []Key{validKey("a", "k"), validKey("a", "k")}},
		"key id with slash":   {[]KeyStore{a}, []Key{validKey("a", "k/1")}},
		"missing current":     {[]KeyStore{a}, []Key{{KeyStore: "a", ID: "k", Usage: UsageEncrypt, CurrentVersion: 2, Versions: []KeyVersion{{Number: 1, HSMLabel: "l"}}}}},
		"no usage":            {[]KeyStore{a}, []Key{{KeyStore: "a", ID: "k", CurrentVersion: 1, Versions: []KeyVersion{{Number: 1, HSMLabel: "l"}}}}},
		"short access key id": {[]KeyStore{{Name: "a", URIPath: "/kms/xks/v1", Region: "us-east-1", Credentials: []Credential{{AccessKeyID: "SHORT", Secret: a.Credentials[0].Secret}}}}, nil},
		"short secret":        {[]KeyStore{{Name: "a", URIPath: "/kms/xks/v1", Region: "us-east-1", Credentials: []Credential{{AccessKeyID: a.Credentials[0].AccessKeyID, Secret: []byte("short")}}}}, nil},
	}
	for name, c := range cases {
		if _, err := Build(1, c.stores, c.keys); err == nil {
			t.Errorf("%s: accepted", name)
		} else if strings.Contains(err.Error(), string(a.Credentials[0].Secret)) {
			t.Errorf("%s: error message contains a secret", name)
		}
	}
}

func TestGeneratedCredentialsMeetTheSpecification(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		c := GenerateCredential()
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
		if seen[c.AccessKeyID] {
			t.Fatal("repeated access key id")
		}
		seen[c.AccessKeyID] = true
	}
}

func TestViewHolderPublishesAtomically(t *testing.T) {
	var h ViewHolder
	if h.Load() != nil {
		t.Fatal("empty holder returned a view")
	}
	views := make([]*View, 10)
	for i := range views {
		v, err := Build(uint64(i+1), []KeyStore{validStore("a", "/a/kms/xks/v1")}, nil)
		if err != nil {
			t.Fatal(err)
		}
		views[i] = v
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for _, v := range views {
			h.Publish(v)
		}
	}()
	for range 1000 {
		if v := h.Load(); v != nil && v.StoreByName("a") == nil {
			t.Fatal("reader saw a view without its store")
		}
	}
	wg.Wait()
	if h.Load().Index() != 10 {
		t.Fatalf("last published index %d", h.Load().Index())
	}
}

func TestParseUsage(t *testing.T) {
	u, err := ParseUsage([]string{"ENCRYPT", "decrypt"})
	if err != nil || u != UsageEncrypt|UsageDecrypt || strings.Join(u.Names(), ",") != "ENCRYPT,DECRYPT" {
		t.Fatalf("ParseUsage = %v %v", u, err)
	}
	// The specification's other PKCS#11 usages, without ENCRYPT or DECRYPT.
	u, err = ParseUsage([]string{"unwrap", "WRAP"})
	if err != nil || strings.Join(u.Names(), ",") != "WRAP,UNWRAP" {
		t.Fatalf("ParseUsage(WRAP, UNWRAP) = %v %v", u.Names(), err)
	}
	var back Usage
	if b, err := json.Marshal(u); err != nil || string(b) != `["WRAP","UNWRAP"]` || json.Unmarshal(b, &back) != nil || back != u {
		t.Fatalf("WRAP+UNWRAP does not round-trip through JSON: %s %v", b, err)
	}
	if _, err := ParseUsage([]string{"BOGUS"}); err == nil {
		t.Fatal("accepted BOGUS")
	}
	if _, err := ParseUsage(nil); err == nil {
		t.Fatal("accepted no usage")
	}
}

func TestBuildViewLeavesOutCredentialsItCannotUnseal(t *testing.T) {
	ks := storeSpec("a", "/a", KeyModeShared)
	broken, malformed := newStoredCredential(), newStoredCredential()
	broken.SealedSecret = []byte("not sealed")
	malformed.SealedSecret = seal([]byte("too short"))
	ks.Credentials = append(ks.Credentials, broken, malformed)
	s := run(t, CreateKeyStore{At: t0, KeyStore: ks}, CreateKeyStore{At: t0, KeyStore: storeSpec("b", "/b", KeyModeShared)})

	v, errs := BuildView(s, unsealTest)
	if len(errs) != 2 {
		t.Fatalf("want one error per bad credential, got %v", errs)
	}
	for i, id := range []string{broken.AccessKeyID, malformed.AccessKeyID} {
		if !strings.Contains(errs[i].Error(), id) || !strings.Contains(errs[i].Error(), "left out") {
			t.Errorf("error %d does not name credential %s: %v", i, id, errs[i])
		}
		assertNoSecret(t, "BuildView error", errs[i].Error())
		if strings.Contains(errs[i].Error(), "too short") {
			t.Fatal("an error quotes an unsealed secret")
		}
	}
	a := v.StoreByName("a")
	good := ks.Credentials[0]
	if c, ok := a.Credential([]byte(good.AccessKeyID), t0); !ok || string(seal(c.Secret)) != string(good.SealedSecret) || !c.CreatedAt.Equal(t0) {
		t.Fatal("the good credential is missing or wrong")
	}
	for _, id := range []string{broken.AccessKeyID, malformed.AccessKeyID} {
		if _, ok := a.Credential([]byte(id), t0); ok {
			t.Fatalf("credential %s is in the view", id)
		}
	}
	if len(a.Credentials) != 1 || v.StoreByName("b") == nil || v.Index() != s.Index() {
		t.Fatal("one bad credential must not take anything else out of the view")
	}
}

func TestDescribe(t *testing.T) {
	ks := storeSpec("a", "/a", KeyModeReplicated)
	ks.Credentials = append(ks.Credentials, newStoredCredential())
	s := run(t,
		CreateKeyStore{At: t0, KeyStore: ks},
		CreateKeyStore{At: t0, KeyStore: storeSpec("b", "/b", KeyModeShared)},
		CreateKey{At: t0, Key: keySpec("a", "k2", KeyModeReplicated)},
		CreateKey{At: t0, Key: keySpec("a", "k1", KeyModeReplicated)},
		AddGrant{At: t0, Grant: grantSpec("z", "a", AllKeys, "*")},
		AddGrant{At: t0, Grant: grantSpec("y", "a", "k1", "arn:aws:iam::111122223333:role/*")},
	)
	v, errs := BuildView(s, unsealTest)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	info := v.Describe()
	if len(info) != 2 || info[0].Name != "a" || info[1].Name != "b" {
		t.Fatalf("key stores not listed by name: %+v", info)
	}
	a := info[0]
	if a.KeyMode != KeyModeReplicated || a.GrantsMode != GrantsOpen || len(a.Credentials) != 2 ||
		a.Credentials[0].AccessKeyID > a.Credentials[1].AccessKeyID {
		t.Fatalf("key store a: %+v", a)
	}
	if len(a.Keys) != 2 || a.Keys[0].ID != "k1" || a.Keys[1].ID != "k2" || !a.Keys[0].Versions[0].Wrapped ||
		a.Keys[0].Versions[0].WrapMechanism != "CKM_AES_KEY_WRAP" || strings.Join(a.Keys[0].Usage, ",") != "ENCRYPT,DECRYPT" {
		t.Fatalf("keys: %+v", a.Keys)
	}
	if len(a.Grants) != 2 || a.Grants[0].ID != "y" || a.Grants[1].ID != "z" {
		t.Fatalf("grants: %+v", a.Grants)
	}
	a.Grants[0].Principals[0] = "changed"
	if v.StoreByName("a").Describe().Grants[0].Principals[0] == "changed" {
		t.Fatal("Describe shares memory with the view")
	}
	b, err := json.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	assertNoSecret(t, "Describe", string(b))
	if strings.Contains(string(b), "wrapped:") || strings.Contains(string(b), base64.StdEncoding.EncodeToString([]byte("wrapped:a-k1-v1"))) {
		t.Fatal("Describe lists wrapped material")
	}
}

// Invariant 4: secrets never reach logs or errors, however a value holding
// one is printed.
func TestSecretsNeverPrinted(t *testing.T) {
	ks := storeSpec("a", "/a", KeyModeShared)
	s := run(t, CreateKeyStore{At: t0, KeyStore: ks})
	v, errs := BuildView(s, unsealTest)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	sv := v.StoreByName("a")
	values := []any{
		sv.Credentials[0], &sv.Credentials[0], sv.Credentials, sv.KeyStore, sv, v,
		ks, ks.Credentials[0], s, s.KeyStore("a"),
		CreateKeyStore{At: t0, KeyStore: ks}, AddCredential{At: t0, KeyStore: "a", Credential: ks.Credentials[0]},
	}
	for _, val := range values {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X"} {
			assertNoSecret(t, fmt.Sprintf("%T printed with %s", val, verb), fmt.Sprintf(verb, val))
		}
	}
	if out := fmt.Sprint(sv.Credentials[0]); !strings.Contains(out, sv.Credentials[0].AccessKeyID) || !strings.Contains(out, "redacted") {
		t.Fatalf("a credential prints as %q", out)
	}
}
