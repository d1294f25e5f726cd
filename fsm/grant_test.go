package fsm

import (
	"fmt"
	"math/bits"
	"slices"
	"strings"
	"testing"
)

func TestPatternMatch(t *testing.T) {
	cases := []struct {
		pattern, text string
		want          bool
	}{
		{"arn:aws:iam::111122223333:root", "arn:aws:iam::111122223333:root", true},
		{"arn:aws:iam::111122223333:root", "arn:aws:iam::111122223333:rootx", false},
		{"arn:aws:iam::111122223333:root", "xarn:aws:iam::111122223333:root", false},
		{"*", "", true},
		{"*", "anything at all", true},
		{"**", "x", true},
		{"arn:aws:iam::111122223333:role/*", "arn:aws:iam::111122223333:role/app", true},
		{"arn:aws:iam::111122223333:role/*", "arn:aws:iam::111122223333:role/", true},
		{"arn:aws:iam::111122223333:role/*", "arn:aws:iam::111122223333:user/app", false},
		{"arn:aws:iam::111122223333:role/*", "arn:aws:iam::444455556666:role/app", false},
		{"*:role/Admin", "arn:aws:iam::111122223333:role/Admin", true},
		{"*:role/Admin", "arn:aws:iam::111122223333:role/Admin2", false},
		{"*:role/Admin", "arn:aws:iam::111122223333:role/admin", false},
		{"arn:aws:iam::*:role/app-*-prod", "arn:aws:iam::111122223333:role/app-web-prod", true},
		{"arn:aws:iam::*:role/app-*-prod", "arn:aws:iam::111122223333:role/app--prod", true},
		{"arn:aws:iam::*:role/app-*-prod", "arn:aws:iam::111122223333:role/app-prod", false},
		{"arn:aws:iam::*:role/app-*-prod", "arn:aws:iam::111122223333:role/app-web-prod-2", false},
		{"a*b*c", "abc", true},
		{"a*b*c", "aXXbYYc", true},
		{"a*b*c", "acb", false},
		{"a*b*c", "ab", false},
		{"a*a", "a", false},
		{"a*a", "aa", true},
		{"*-prod-*", "-prod-", true},
		{"*-prod-*", "web-prod-1", true},
		{"*-prod-*", "web-prod", false},
		{"*ab*ab*", "ab", false},
		{"*ab*ab*", "abab", true},
	}
	for _, c := range cases {
		p := compilePattern(c.pattern)
		if got := p.match(c.text); got != c.want {
			t.Errorf("%q matching %q = %v, want %v", c.pattern, c.text, got, c.want)
		}
	}
}

func TestARNFields(t *testing.T) {
	cases := []struct {
		arn  string
		n    int
		want string
	}{
		{"arn:aws:iam::111122223333:role/app", 4, "111122223333"},
		{"arn:aws:sts::444455556666:assumed-role/reader/session", 4, "444455556666"},
		{"arn:aws:kms:eu-west-1:111122223333:key/1234", 3, "eu-west-1"},
		{"arn:aws:iam::111122223333:role/a:b", 4, "111122223333"},
		{"arn:aws:kms", 3, ""},
		{"not an arn", 4, ""},
		{"", 3, ""},
	}
	for _, c := range cases {
		if got := arnField(c.arn, c.n); got != c.want {
			t.Errorf("field %d of %q = %q, want %q", c.n, c.arn, got, c.want)
		}
	}
}

// authzView has key store a (open) whose key k1 several grants name and
// whose k2 only an AllKeys grant covers, b (open) and c (closed) without
// grants.
func authzView(t *testing.T) *View {
	t.Helper()
	grants := []Grant{
		{ID: "admins", KeyStore: "a", KeyID: "k1", Principals: []string{"arn:aws:iam::111122223333:role/Admin*"}},
		{ID: "app", KeyStore: "a", KeyID: "k1", Principals: []string{"arn:aws:iam::111122223333:role/app-*-prod"},
			ViaServices: []string{"s3.us-east-1.amazonaws.com"}, Operations: []string{OperationEncrypt.String()}},
		{ID: "reader", KeyStore: "a", KeyID: "k1", Principals: []string{"*:assumed-role/reader/*"},
			Accounts: []string{"444455556666"}, Regions: []string{"eu-west-1", "eu-central-1"},
			Operations: []string{OperationDecrypt.String(), OperationGetKeyMetadata.String()}},
		{ID: "vpc", KeyStore: "a", KeyID: "k1", Principals: []string{"*"},
			SourceVPCs: []string{"vpc-0a"}, SourceVPCEs: []string{"vpce-0b", "vpce-0c"}, Operations: []string{OperationDecrypt.String()}},
		{ID: "auditor", KeyStore: "a", KeyID: AllKeys, Principals: []string{"arn:aws:iam::999999999999:role/auditor"},
			Operations: []string{OperationGetKeyMetadata.String()}},
	}
	closed := storeSpec("c", "/c", KeyModeShared)
	closed.GrantsMode = GrantsClosed
	s := run(t, Seed{At: t0,
		KeyStores: []StoredKeyStore{storeSpec("a", "/a", KeyModeShared), storeSpec("b", "/b", KeyModeShared), closed},
		Keys:      []Key{keySpec("a", "k1", KeyModeShared), keySpec("a", "k2", KeyModeShared), keySpec("b", "k3", KeyModeShared), keySpec("c", "k4", KeyModeShared)},
		Grants:    grants,
	})
	v, errs := BuildView(s, unsealTest)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	return v
}

func TestAuthorize(t *testing.T) {
	v := authzView(t)
	const (
		euKey = "arn:aws:kms:eu-west-1:444455556666:key/x"
		usKey = "arn:aws:kms:us-east-1:444455556666:key/x"
	)
	cases := []struct {
		name, store, key string
		op               Operation
		rc               *RequestContext
		allow            bool
		rule             string // a substring of the reported rule
	}{
		{"wildcard at the end", "a", "k1", OperationEncrypt, &RequestContext{PrincipalARN: "arn:aws:iam::111122223333:role/AdminTeam"}, true, "grant admins"},
		{"wildcard matching nothing", "a", "k1", OperationDecrypt, &RequestContext{PrincipalARN: "arn:aws:iam::111122223333:role/Admin"}, true, "grant admins"},
		{"case matters", "a", "k1", OperationEncrypt, &RequestContext{PrincipalARN: "arn:aws:iam::111122223333:role/admin"}, false, "key store a open, 5 grants name the key"},
		{"wildcard in the middle", "a", "k1", OperationEncrypt, &RequestContext{PrincipalARN: "arn:aws:iam::111122223333:role/app-web-prod", ViaService: "s3.us-east-1.amazonaws.com"}, true, "grant app"},
		{"operation not granted", "a", "k1", OperationDecrypt, &RequestContext{PrincipalARN: "arn:aws:iam::111122223333:role/app-web-prod", ViaService: "s3.us-east-1.amazonaws.com"}, false, "no grant matches"},
		{"via service missing", "a", "k1", OperationEncrypt, &RequestContext{PrincipalARN: "arn:aws:iam::111122223333:role/app-web-prod"}, false, "no grant matches"},
		{"via service other", "a", "k1", OperationEncrypt, &RequestContext{PrincipalARN: "arn:aws:iam::111122223333:role/app-web-prod", ViaService: "ebs.us-east-1.amazonaws.com"}, false, "no grant matches"},
		{"middle wildcard mismatch", "a", "k1", OperationEncrypt, &RequestContext{PrincipalARN: "arn:aws:iam::111122223333:role/app-web-dev", ViaService: "s3.us-east-1.amazonaws.com"}, false, "no grant matches"},
		{"wildcard at the start, account and region", "a", "k1", OperationDecrypt, &RequestContext{PrincipalARN: "arn:aws:sts::444455556666:assumed-role/reader/s1", KMSKeyARN: euKey}, true, "grant reader"},
		{"second region of the list", "a", "k1", OperationGetKeyMetadata, &RequestContext{PrincipalARN: "arn:aws:sts::444455556666:assumed-role/reader/s1", KMSKeyARN: "arn:aws:kms:eu-central-1:444455556666:key/x"}, true, "grant reader"},
		{"region from the key ARN", "a", "k1", OperationDecrypt, &RequestContext{PrincipalARN: "arn:aws:sts::444455556666:assumed-role/reader/s1", KMSKeyARN: usKey}, false, "no grant matches"},
		{"account from the principal ARN", "a", "k1", OperationDecrypt, &RequestContext{PrincipalARN: "arn:aws:sts::111122223333:assumed-role/reader/s1", KMSKeyARN: euKey}, false, "no grant matches"},
		{"no key ARN", "a", "k1", OperationDecrypt, &RequestContext{PrincipalARN: "arn:aws:sts::444455556666:assumed-role/reader/s1"}, false, "no grant matches"},
		{"VPC and endpoint", "a", "k1", OperationDecrypt, &RequestContext{PrincipalARN: "arn:aws:iam::1:user/x", SourceVPC: "vpc-0a", SourceVPCE: "vpce-0c"}, true, "grant vpc"},
		{"VPC without the endpoint", "a", "k1", OperationDecrypt, &RequestContext{PrincipalARN: "arn:aws:iam::1:user/x", SourceVPC: "vpc-0a"}, false, "no grant matches"},
		{"wrong endpoint", "a", "k1", OperationDecrypt, &RequestContext{PrincipalARN: "arn:aws:iam::1:user/x", SourceVPC: "vpc-0a", SourceVPCE: "vpce-0d"}, false, "no grant matches"},
		{"all-keys grant on a named key", "a", "k1", OperationGetKeyMetadata, &RequestContext{PrincipalARN: "arn:aws:iam::999999999999:role/auditor"}, true, "grant auditor"},
		{"all-keys grant alone", "a", "k2", OperationGetKeyMetadata, &RequestContext{PrincipalARN: "arn:aws:iam::999999999999:role/auditor"}, true, "grant auditor"},
		{"all-keys grant governs in open mode", "a", "k2", OperationEncrypt, &RequestContext{PrincipalARN: "arn:aws:iam::999999999999:role/auditor"}, false, "1 grants name the key"},
		{"grant of another key", "a", "k2", OperationEncrypt, &RequestContext{PrincipalARN: "arn:aws:iam::111122223333:role/Admin"}, false, "no grant matches"},
		{"open without grants", "b", "k3", OperationEncrypt, &RequestContext{PrincipalARN: "arn:aws:iam::1:user/anyone"}, true, "key store open"},
		{"open without grants, no metadata", "b", "k3", OperationDecrypt, nil, true, "key store open"},
		{"closed without grants", "c", "k4", OperationEncrypt, &RequestContext{PrincipalARN: "arn:aws:iam::1:user/anyone"}, false, "(key store c closed)"},
		{"no metadata", "a", "k1", OperationDecrypt, nil, false, "no grant matches"},
		{"unknown operation", "b", "k3", ParseOperation("Sign"), &RequestContext{}, false, "not one of"},
		{"a set of operations", "b", "k3", AllOperations, &RequestContext{}, false, "not one of"},
	}
	for _, c := range cases {
		sv := v.StoreByName(c.store)
		allow, rule := sv.Authorize(sv.Key([]byte(c.key)), c.op, c.rc)
		if allow != c.allow || !strings.Contains(rule, c.rule) {
			t.Errorf("%s: Authorize = %v %q, want %v %q", c.name, allow, rule, c.allow, c.rule)
		}
	}
}

// benchStore is key store a with 20 grants on key k, of which only the last
// (by id) matches benchRequest.
func benchStore(tb testing.TB) (*StoreView, *Key) {
	var grants []Grant
	for i := range 20 {
		grants = append(grants, Grant{ID: fmt.Sprintf("g%02d", i), KeyStore: "a", KeyID: "k",
			Principals: []string{fmt.Sprintf("arn:aws:iam::1111222233%02d:role/app-*-prod", i), "arn:aws:iam::*:role/break-glass"},
			Accounts:   []string{fmt.Sprintf("1111222233%02d", i)}, Regions: []string{"us-east-1"},
			ViaServices: []string{"s3.us-east-1.amazonaws.com", "ebs.us-east-1.amazonaws.com"},
			Operations:  []string{OperationEncrypt.String(), OperationDecrypt.String()}})
	}
	ks := storeSpec("a", "/a", KeyModeShared)
	ks.GrantsMode = GrantsClosed
	s := newState()
	s, err := s.execute(1, Seed{At: t0, KeyStores: []StoredKeyStore{ks}, Keys: []Key{keySpec("a", "k", KeyModeShared)}, Grants: grants})
	if err != nil {
		tb.Fatal(err)
	}
	v, errs := BuildView(s, unsealTest)
	if len(errs) > 0 {
		tb.Fatal(errs)
	}
	sv := v.StoreByName("a")
	return sv, sv.Key([]byte("k"))
}

var benchRequest = RequestContext{
	PrincipalARN: "arn:aws:iam::111122223319:role/app-payments-prod",
	KMSKeyARN:    "arn:aws:kms:us-east-1:111122223319:key/0b1e-4c5a",
	ViaService:   "s3.us-east-1.amazonaws.com",
}

func TestAuthorizeAllowPathDoesNotAllocate(t *testing.T) {
	sv, k := benchStore(t)
	if ok, rule := sv.Authorize(k, OperationEncrypt, &benchRequest); !ok || rule != "grant g19" {
		t.Fatalf("Authorize = %v %q", ok, rule)
	}
	if n := testing.AllocsPerRun(200, func() { sv.Authorize(k, OperationEncrypt, &benchRequest) }); n != 0 {
		t.Fatalf("%v allocations per allowed request", n)
	}
	open := authzView(t).StoreByName("b")
	k3 := open.Key([]byte("k3"))
	if n := testing.AllocsPerRun(200, func() { open.Authorize(k3, OperationDecrypt, &benchRequest) }); n != 0 {
		t.Fatalf("%v allocations per request to an open key store", n)
	}
}

func BenchmarkAuthorize(b *testing.B) {
	sv, k := benchStore(b)
	deny := benchRequest
	deny.PrincipalARN = "arn:aws:iam::111122223319:role/app-payments-dev"
	for _, bc := range []struct {
		name string
		rc   *RequestContext
		want bool
	}{{"allow-by-20th-grant", &benchRequest, true}, {"deny-after-20-grants", &deny, false}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if ok, _ := sv.Authorize(k, OperationEncrypt, bc.rc); ok != bc.want {
					b.Fatal("wrong decision")
				}
			}
		})
	}
}

// TestOperationNames: grants store operations by name in the log and in
// snapshots, so the names are part of the replicated encoding and must
// never change.
func TestOperationNames(t *testing.T) {
	want := []string{"GetKeyMetadata", "Encrypt", "Decrypt"}
	if got := AllOperations.Names(); !slices.Equal(got, want) {
		t.Fatalf("names = %q, want %q", got, want)
	}
	for _, name := range want {
		op := ParseOperation(name)
		if bits.OnesCount8(uint8(op)) != 1 || op.String() != name {
			t.Errorf("ParseOperation(%q) = %d (%s)", name, op, op)
		}
	}
	for _, name := range []string{"", "encrypt", "GetHealthStatus", "Sign"} {
		if op := ParseOperation(name); op != 0 {
			t.Errorf("ParseOperation(%q) = %s, want 0", name, op)
		}
	}
	if got := (OperationEncrypt | OperationDecrypt).Names(); !slices.Equal(got, want[1:]) {
		t.Errorf("Encrypt|Decrypt names = %q", got)
	}
}
