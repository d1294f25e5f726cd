package fsm

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

var (
	killToken = "killswitch-token-0123456789"
	killer    = Actor{Kind: ActorToken, Name: "ks", Role: RoleKillSwitch, Credential: TokenFingerprint(TokenHash(killToken)),
		RemoteAddr: "127.0.0.1:40000", Node: "node2"}
	bootstrap = boot
)

// auditBase is ruleBase at command set 3 with a killswitch operator and a
// few audited changes, accepted and refused.
func auditBase(t testing.TB) *State {
	t.Helper()
	s := ruleBase(t)
	steps := []Command{
		RaiseCommandSet{To: CommandSet},
		auditedBy(t0, bootstrap, CreateOperator{At: t0, Name: "ks", Role: RoleKillSwitch, TokenHash: TokenHash(killToken)}),
		auditedBy(t0, killer, SetKeyEnabled{KeyStore: "a", KeyID: "k", Enabled: false}),
		auditedBy(t0, bootstrap, AddCredential{At: t0, KeyStore: "a", Credential: newStoredCredential()}),
		auditedBy(t0, bootstrap, RecordAction{Action: "JoinNode", Subject: "node4"}),
	}
	for _, c := range steps {
		next, err := s.execute(s.index+1, c)
		if err != nil {
			t.Fatalf("%s: %v", c.Type(), err)
		}
		s = next
	}
	return s
}

func TestAuditedChangesChainAndNeverRecordSecrets(t *testing.T) {
	s := auditBase(t)
	anchor, trail := s.AuditTrail()
	if len(trail) != 4 || anchor != (AuditAnchor{}) {
		t.Fatalf("%d records from %+v", len(trail), anchor)
	}
	if b := VerifyAudit(anchor, trail); b != nil {
		t.Fatal(b)
	}
	r := trail[1]
	if r.Actor != killer || r.Action != "SetKeyEnabled" || r.Outcome != OutcomeApplied || !r.At.Equal(t0) || r.Index != s.index-2 {
		t.Fatalf("record %+v", r)
	}
	if s.Key("a", "k").Enabled {
		t.Fatal("the audited change did not apply")
	}
	b, _ := json.Marshal(trail)
	assertNoSecret(t, "the audit trail", string(b))
	for _, field := range []string{"sealedSecret", "tokenHash", TokenHash(killToken)} {
		if strings.Contains(string(b), field) {
			t.Fatalf("the audit trail holds %s", field)
		}
	}
}

// A killswitch operator disables and nothing else; a revoked operator's
// change is refused by Validate (the leader) and, if it got into the log,
// recorded as refused by Apply without applying.
func TestAuditedChangesAreCheckedAgainstTheState(t *testing.T) {
	s := auditBase(t)
	for _, c := range []Command{
		SetKeyEnabled{KeyStore: "a", KeyID: "k", Enabled: true},
		UpdateKeyStore{Name: "a", Enabled: ptr(false), QuotaRPS: ptr(uint32(5))},
		CreateOperator{At: t0, Name: "eve", Role: RoleAdmin, TokenHash: TokenHash("eve-token-0123456789")},
		RemoveGrant{ID: "g"},
	} {
		if err := auditedBy(t0, killer, c).Validate(s); !errors.Is(err, ErrForbidden) {
			t.Errorf("killswitch %s: %v", c.Type(), err)
		}
	}
	if err := auditedBy(t0, killer, UpdateKeyStore{Name: "a", Enabled: ptr(false)}).Validate(s); err != nil {
		t.Errorf("killswitch disables a key store: %v", err)
	}
	revoked, err := s.execute(s.index+1, auditedBy(t0, bootstrap, RevokeOperator{Name: "ks"}))
	if err != nil {
		t.Fatal(err)
	}
	late := auditedBy(t0, killer, UpdateKeyStore{Name: "a", Enabled: ptr(false)})
	if err := late.Validate(revoked); !errors.Is(err, ErrForbidden) {
		t.Fatalf("a revoked operator's change validates: %v", err)
	}
	next, err := revoked.execute(revoked.index+1, late)
	if !errors.Is(err, ErrForbidden) || !next.KeyStore("a").Enabled {
		t.Fatalf("apply: %v, key store enabled %v", err, next.KeyStore("a").Enabled)
	}
	_, trail := next.AuditTrail()
	if last := trail[len(trail)-1]; !strings.HasPrefix(last.Outcome, "refused: operator ks does not exist") {
		t.Fatalf("last record %+v", last)
	}
}

func TestAuditVerifyFindsEditedRemovedAndReorderedRecords(t *testing.T) {
	s := auditBase(t)
	anchor, trail := s.AuditTrail()
	copyTrail := func() []*AuditRecord {
		out := make([]*AuditRecord, len(trail))
		for i, r := range trail {
			c := *r
			out[i] = &c
		}
		return out
	}
	edited := copyTrail()
	edited[1].Actor.Name = "someone-else"
	removed := copyTrail()
	removed = append(removed[:1], removed[2:]...)
	reordered := copyTrail()
	reordered[1], reordered[2] = reordered[2], reordered[1]
	for name, c := range map[string]struct {
		trail    []*AuditRecord
		position int
		problem  string
	}{
		"edited":    {edited, 1, "edited"},
		"removed":   {removed, 1, "does not follow record 1"},
		"reordered": {reordered, 1, "does not follow record 1"},
	} {
		b := VerifyAudit(anchor, c.trail)
		if b == nil || b.Position != c.position || !strings.Contains(b.Problem, c.problem) {
			t.Errorf("%s: %v", name, b)
		}
	}
	// A snapshot whose trail was edited is refused whole.
	data := persistState(t, s)
	bad := bytes.Replace(data, []byte(`"name":"ks","role":"killswitch","credential"`), []byte(`"name":"kz","role":"killswitch","credential"`), 1)
	if bytes.Equal(bad, data) {
		t.Fatal("the test did not edit the snapshot")
	}
	if err := New(nil).Restore(io.NopCloser(bytes.NewReader(bad))); err == nil || !strings.Contains(err.Error(), "audit trail") {
		t.Fatalf("restore of an edited trail: %v", err)
	}
	anchor, read, err := ReadAuditTrail(bad)
	if err != nil {
		t.Fatal(err)
	}
	if b := VerifyAudit(anchor, read); b == nil || b.Position != 1 {
		t.Fatalf("the edited snapshot verifies: %v", b)
	}
}

// The trail keeps MaxAuditRecords; the anchor keeps it verifiable.
func TestAuditTrailIsBounded(t *testing.T) {
	s := auditBase(t)
	for range MaxAuditRecords {
		next, err := s.execute(s.index+1, auditedBy(t0, bootstrap, RecordAction{Action: "JoinNode", Subject: "n"}))
		if err != nil {
			t.Fatal(err)
		}
		s = next
	}
	anchor, trail := s.AuditTrail()
	if len(trail) != MaxAuditRecords || anchor.Seq != 4 || trail[0].Seq != 5 {
		t.Fatalf("%d records from %+v, first %d", len(trail), anchor, trail[0].Seq)
	}
	if b := VerifyAudit(anchor, trail); b != nil {
		t.Fatal(b)
	}
	back := New(nil)
	if err := back.Restore(io.NopCloser(bytes.NewReader(persistState(t, s)))); err != nil {
		t.Fatal(err)
	}
}

// A restore keeps the trail going instead of rewinding it; a cluster
// without a trail takes the backup's.
func TestRestoreContinuesTheTrail(t *testing.T) {
	fresh, err := WithAuditOf(persistState(t, auditBase(t)), newState(), AuditRecord{At: t0, Actor: boot, Action: "RestoreSnapshot", Detail: json.RawMessage(`{}`), Outcome: OutcomeApplied})
	if err != nil {
		t.Fatal(err)
	}
	recovered := New(nil)
	if err := recovered.Restore(io.NopCloser(bytes.NewReader(fresh))); err != nil {
		t.Fatal(err)
	}
	if _, trail := recovered.State().AuditTrail(); len(trail) != 5 || trail[0].Action != "CreateOperator" || trail[4].Action != "RestoreSnapshot" {
		t.Fatalf("a fresh cluster's restore: %d records", len(trail))
	}

	old := persistState(t, ruleBase(t))
	s := auditBase(t)
	data, err := WithAuditOf(old, s, AuditRecord{At: t0.Add(time.Hour), Actor: bootstrap, Action: "RestoreSnapshot", Detail: json.RawMessage(`{}`), Outcome: OutcomeApplied})
	if err != nil {
		t.Fatal(err)
	}
	f := New(nil)
	if err := f.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatal(err)
	}
	_, trail := f.State().AuditTrail()
	if len(trail) != 5 || trail[4].Action != "RestoreSnapshot" || f.State().Operator("ks") != nil {
		t.Fatalf("%d records, operator ks %v", len(trail), f.State().Operator("ks"))
	}
}

// From command set 3 on, an operator's change that names no operator is
// refused, in Apply as by the leader; the nodes' own commands go bare.
func TestOperatorsChangesMustNameTheirOperator(t *testing.T) {
	s := auditBase(t)
	if _, err := s.execute(s.index+1, SetKeyEnabled{KeyStore: "a", KeyID: "k", Enabled: true}); !errors.Is(err, ErrForbidden) {
		t.Fatalf("a bare operator's change at command set 3: %v", err)
	}
	if err := CheckNamed(s, DeleteKey{At: t0, KeyStore: "a", KeyID: "k"}); err != nil {
		t.Fatalf("the nodes' own command: %v", err)
	}
	if err := CheckNamed(ruleBase(t), SetKeyEnabled{KeyStore: "a", KeyID: "k"}); err != nil {
		t.Fatalf("before command set 3: %v", err)
	}
	for _, c := range []Command{DeleteKey{At: t0, KeyStore: "a", KeyID: "k"}, Seed{At: t0}, RaiseCommandSet{To: 3}} {
		if err := auditedBy(t0, boot, c).Validate(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("an operator issues %s: %v", c.Type(), err)
		}
	}
}
