package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// sampleCommands holds one command of every type, with every field set.
func sampleCommands() []Command {
	at := time.Date(2026, 11, 2, 3, 4, 5, 600700800, time.UTC)
	ks := storeSpec("s", "/s", KeyModeReplicated)
	ks.QuotaRPS, ks.GrantsMode = 1800, GrantsClosed
	ks.Credentials[0].ExpiresAt = at.Add(90 * 24 * time.Hour)
	cred := newStoredCredential()
	cred.ExpiresAt = at.Add(time.Hour)
	k := keySpec("s", "k", KeyModeReplicated)
	k.Usage = UsageEncrypt
	g := Grant{ID: "g", KeyStore: "s", KeyID: "k", Principals: []string{"arn:aws:iam::111122223333:role/*"},
		Accounts: []string{"111122223333"}, Regions: []string{"eu-west-1"}, ViaServices: []string{"ec2.eu-west-1.amazonaws.com"},
		SourceVPCs: []string{"vpc-0123abcd"}, SourceVPCEs: []string{"vpce-0123abcd"}, Operations: []string{OperationDecrypt.String()}}
	return []Command{
		Seed{At: at, KeyStores: []StoredKeyStore{ks}, Keys: []Key{k}, Grants: []Grant{g}},
		CreateKeyStore{At: at, KeyStore: storeSpec("t", "/t", KeyModeShared)},
		UpdateKeyStore{Name: "s", Enabled: ptr(false), QuotaRPS: ptr(uint32(0)), GrantsMode: ptr(GrantsOpen)},
		DeleteKeyStore{Name: "t"},
		AddCredential{At: at, KeyStore: "s", Credential: cred},
		RemoveCredential{At: at, KeyStore: "s", AccessKeyID: cred.AccessKeyID},
		CreateKey{At: at, Key: keySpec("s", "k2", KeyModeReplicated)},
		SetKeyEnabled{KeyStore: "s", KeyID: "k2", Enabled: true},
		AddKeyVersion{At: at, KeyStore: "s", KeyID: "k2", Version: versionSpec("s", "k2", 2, KeyModeReplicated)},
		SetCurrentVersion{KeyStore: "s", KeyID: "k2", Version: 2},
		AddGrant{At: at, Grant: grantSpec("g2", "s", AllKeys, "*")},
		RemoveGrant{ID: "g2"},
		SetKeyEnabled{KeyStore: "s", KeyID: "k2", Enabled: false},
		ScheduleDeletion{At: at, KeyStore: "s", KeyID: "k2", Days: MinDeletionDays},
		CancelDeletion{KeyStore: "s", KeyID: "k2"},
		ScheduleDeletion{At: at, KeyStore: "s", KeyID: "k2", Days: MinDeletionDays},
		DeleteKey{At: at.Add(MinDeletionDays * 24 * time.Hour), KeyStore: "s", KeyID: "k2"},
		RaiseCommandSet{To: CommandSet},
		auditedBy(at, boot, CreateKeyStore{At: at, KeyStore: storeSpec("m", "/m", KeyModeShared)}),
		auditedBy(at, boot, CreateKey{At: at, Key: legacyKeySpec("m", "imported", []byte("static-v1"))}),
		RevokeNodeCertificates{At: at, NodeID: "node2"},
		// From command set 3 on, an operator's change names its operator.
		auditedBy(at, boot, CreateOperator{At: at, Name: "alice", Role: RoleKillSwitch, TokenHash: TokenHash("alice-token")}),
		auditedBy(at, Actor{Kind: ActorToken, Name: "alice", Role: RoleKillSwitch, Credential: TokenFingerprint(TokenHash("alice-token")),
			RemoteAddr: "127.0.0.1:50000", Node: "node2"}, SetKeyEnabled{KeyStore: "s", KeyID: "k", Enabled: false}),
		auditedBy(at, boot, RecordAction{Action: "JoinNode", Subject: "node4 at 127.0.0.1:7000"}),
		auditedBy(at, boot, RevokeOperator{Name: "alice"}),
	}
}

// legacyKeySpec is a key imported from AWS's sample proxy into shared key
// store store, its label being its id as that proxy addressed it.
func legacyKeySpec(store, id string, static []byte) Key {
	return Key{KeyStore: store, ID: id, Usage: DefaultUsage, Enabled: true, CurrentVersion: 1,
		Versions: []KeyVersion{{Number: 1, HSMLabel: id}},
		Legacy:   &LegacyFormat{Format: LegacyFormatAWSSample, Version: 1, StaticMetadata: static}}
}

var boot = Actor{Kind: ActorBootstrap, Name: BootstrapOperator, Role: RoleAdmin, RemoteAddr: "127.0.0.1:50001", Node: "node1"}

// withoutAudit is s at index 0 without its audit trail: what a refused
// audited change leaves as it was.
func withoutAudit(s *State) *State {
	n := s.withIndex(0)
	n.audit, n.auditAnchor = nil, AuditAnchor{}
	return n
}

// auditedBy is cmd as actor asked for it at at.
func auditedBy(at time.Time, actor Actor, cmd Command) Audited {
	a, err := NewAudited(actor, cmd)
	if err != nil {
		panic(err)
	}
	a.At = at
	return a
}

func encode(t testing.TB, c Command) []byte {
	t.Helper()
	b, err := Encode(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func entry(index uint64, data []byte) *raft.Log {
	return &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data}
}

type memSink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (m *memSink) ID() string    { return "mem" }
func (m *memSink) Cancel() error { m.cancelled = true; return nil }
func (m *memSink) Close() error  { m.closed = true; return nil }

func persist(t *testing.T, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	var sink memSink
	if err := snap.Persist(&sink); err != nil || !sink.closed || sink.cancelled {
		t.Fatalf("persist: %v (closed %v, cancelled %v)", err, sink.closed, sink.cancelled)
	}
	return sink.Bytes()
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	seen := map[CommandType]bool{}
	for _, c := range sampleCommands() {
		b := encode(t, c)
		if CommandType(b[0]) != c.Type() {
			t.Fatalf("%s: type byte %d", c.Type(), b[0])
		}
		back, err := Decode(b)
		if err != nil {
			t.Fatalf("%s: %v", c.Type(), err)
		}
		if !reflect.DeepEqual(back, c) {
			t.Fatalf("%s: decoded\n%#v\nwant\n%#v", c.Type(), back, c)
		}
		if again := encode(t, back); !bytes.Equal(again, b) {
			t.Fatalf("%s: re-encoding differs", c.Type())
		}
		seen[c.Type()] = true
		if a, ok := c.(Audited); ok {
			seen[a.inner.Type()] = true
		}
	}
	for typ := range commands {
		if !seen[typ] {
			t.Errorf("no sample of %s", typ)
		}
	}
	if _, err := Encode(nil); err == nil {
		t.Fatal("encoded nil")
	}
}

func TestDecodeRefuses(t *testing.T) {
	good := encode(t, RemoveGrant{ID: "g"})
	cases := map[string][]byte{
		"empty":          nil,
		"type 0":         append([]byte{0}, good[1:]...),
		"unknown type":   append([]byte{0x7f}, good[1:]...),
		"optional":       append([]byte{0xfe}, good[1:]...),
		"no payload":     good[:1],
		"bad JSON":       append(good[:len(good):len(good)], '{'),
		"trailing value": append(good[:len(good):len(good)], []byte(" {}")...),
		"unknown field":  append([]byte{byte(CmdRemoveGrant)}, []byte(`{"id":"g","reason":"x"}`)...),
		"wrong type":     append([]byte{byte(CmdSetKeyEnabled)}, []byte(`{"keyStore":"a","keyId":"k","enabled":"yes"}`)...),
		"unknown usage":  append([]byte{byte(CmdCreateKey)}, []byte(`{"key":{"usage":["TELEPORT"]}}`)...),
	}
	for name, b := range cases {
		if c, err := Decode(b); err == nil {
			t.Errorf("%s: decoded %#v", name, c)
		}
	}
	_, err := Decode(cases["optional"])
	if !errors.Is(err, ErrUnknownCommand) || !strings.Contains(err.Error(), "0xfe") {
		t.Fatalf("unknown type: %v", err)
	}
}

// theLog is a command log with accepted and refused commands.
func theLog(t *testing.T) [][]byte {
	var out [][]byte
	for _, c := range sampleCommands() {
		out = append(out, encode(t, c))
	}
	out = append(out,
		encode(t, auditedBy(t0, boot, DeleteKeyStore{Name: "s"})), // refused: it has keys (and recorded)
		append([]byte{0xc0}, []byte(`{"from":"the future"}`)...),  // skipped: optional, unknown
		encode(t, auditedBy(t0, boot, SetKeyEnabled{KeyStore: "s", KeyID: "k", Enabled: true})),
	)
	return out
}

func TestApply(t *testing.T) {
	var changes []*State
	f := New(func(s *State) { changes = append(changes, s) })
	if f.AppliedIndex() != 0 || f.State() == nil || f.State().Seeded() {
		t.Fatal("a new FSM must hold the empty state")
	}
	for i, b := range theLog(t) {
		index := uint64(i + 1)
		before := f.State()
		res, ok := f.Apply(entry(index, b)).(ApplyResult)
		if !ok || res.Index != index {
			t.Fatalf("entry %d: result %#v", index, res)
		}
		if f.AppliedIndex() != index || f.State().Index() != index {
			t.Fatalf("entry %d: applied index %d", index, f.AppliedIndex())
		}
		if len(changes) != i+1 || changes[i] != f.State() {
			t.Fatalf("entry %d: onChange not called with the new state", index)
		}
		switch {
		case index == uint64(len(sampleCommands())+1):
			_, trail := f.State().AuditTrail()
			if !errors.Is(res.Err, ErrConflict) || stateJSONOf(t, withoutAudit(f.State())) != stateJSONOf(t, withoutAudit(before)) ||
				!strings.HasPrefix(trail[len(trail)-1].Outcome, "refused: key store s still has") {
				t.Fatalf("refused command: %v", res.Err)
			}
		case index == uint64(len(sampleCommands())+2):
			if res.Err != nil || stateJSONOf(t, f.State().withIndex(0)) != stateJSONOf(t, before.withIndex(0)) {
				t.Fatalf("skipped command: %v", res.Err)
			}
		case res.Err != nil:
			t.Fatalf("entry %d: %v", index, res.Err)
		}
	}
	if !f.State().Key("s", "k").Enabled {
		t.Fatal("the last command was not applied")
	}
}

func TestApplyIgnoresOtherEntryTypes(t *testing.T) {
	f := New(func(*State) { t.Fatal("onChange for a non-command entry") })
	for _, typ := range []raft.LogType{raft.LogNoop, raft.LogBarrier, raft.LogConfiguration} {
		res := f.Apply(&raft.Log{Index: 5, Type: typ, Data: []byte{0xff, 0xff}})
		if res.(ApplyResult).Err != nil || f.AppliedIndex() != 0 {
			t.Fatalf("%v entry was applied", typ)
		}
	}
}

func TestApplyStopsOnWhatItCannotApply(t *testing.T) {
	cases := map[string][]byte{
		"unknown required command":               append([]byte{0x7e}, []byte(`{}`)...),
		"corrupt known command":                  append([]byte{byte(CmdSetKeyEnabled)}, []byte(`{"keyStore":`)...),
		"empty entry":                            {},
		"a command set raised past this build's": append([]byte{byte(CmdRaiseCommandSet)}, []byte(`{"to":99}`)...),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			f := New(nil)
			defer func() {
				msg := fmt.Sprint(recover())
				if !strings.Contains(msg, "cannot apply log entry 9") || !strings.Contains(msg, "rather than diverge") {
					t.Fatalf("panic message %q", msg)
				}
				if f.AppliedIndex() != 0 {
					t.Fatal("the entry that stopped the node counted as applied")
				}
			}()
			f.Apply(entry(9, b))
		})
	}
}

func TestReplicasAgree(t *testing.T) {
	a, b := New(nil), New(nil)
	for i, data := range theLog(t) {
		a.Apply(entry(uint64(i+1), data))
		b.Apply(entry(uint64(i+1), bytes.Clone(data)))
	}
	pa, pb := persist(t, a), persist(t, b)
	if !bytes.Equal(pa, pb) {
		t.Fatalf("replicas differ:\n%s\n%s", pa, pb)
	}
}

func TestSnapshotRestore(t *testing.T) {
	f := New(nil)
	for i, data := range theLog(t) {
		f.Apply(entry(uint64(i+1), data))
	}
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	want := persist(t, f)
	last := len(theLog(t))
	if !bytes.HasPrefix(want, []byte(fmt.Sprintf(`{"version":1,"state":{"index":%d,`, last))) {
		t.Fatalf("snapshot format: %.60s", want)
	}
	// A snapshot is the state when Snapshot was called, whatever Apply
	// does while Persist runs.
	f.Apply(entry(uint64(last+1), encode(t, SetKeyEnabled{KeyStore: "s", KeyID: "k"})))
	var sink memSink
	if err := snap.Persist(&sink); err != nil || !bytes.Equal(sink.Bytes(), want) {
		t.Fatalf("the snapshot moved with the state: %v", err)
	}

	var restored *State
	g := New(func(s *State) { restored = s })
	g.Apply(entry(1, encode(t, CreateKeyStore{At: t0, KeyStore: storeSpec("old", "/old", KeyModeShared)})))
	if err := g.Restore(io.NopCloser(bytes.NewReader(want))); err != nil {
		t.Fatal(err)
	}
	if got := persist(t, g); !bytes.Equal(got, want) {
		t.Fatalf("restored state differs:\n%s\n%s", got, want)
	}
	if restored != g.State() || g.AppliedIndex() != uint64(last) || g.State().KeyStore("old") != nil {
		t.Fatal("Restore must replace the state, report it and restore the applied index")
	}
	// The restored replica goes on exactly like the original.
	g.Apply(entry(uint64(last+1), encode(t, SetKeyEnabled{KeyStore: "s", KeyID: "k"})))
	if !bytes.Equal(persist(t, g), persist(t, f)) {
		t.Fatal("the restored replica diverged")
	}
}

func TestRestoreRefusesBadSnapshots(t *testing.T) {
	f := New(nil)
	f.Apply(entry(1, encode(t, CreateKeyStore{At: t0, KeyStore: storeSpec("a", "/a", KeyModeShared)})))
	keep := f.State()
	cases := map[string]string{
		"newer version":    `{"version":2,"state":{"index":3,"seeded":false,"keyStores":[],"keys":[],"grants":[]}}`,
		"no version":       `{"state":{"index":3,"seeded":false,"keyStores":[],"keys":[],"grants":[]}}`,
		"not JSON":         `raft`,
		"unknown field":    `{"version":1,"state":{"index":3,"seeded":false,"keyStores":[],"keys":[],"grants":[],"more":1}}`,
		"orphan key":       `{"version":1,"state":{"index":3,"seeded":false,"keyStores":[],"keys":[{"keyStore":"x","id":"k"}],"grants":[]}}`,
		"orphan grant":     `{"version":1,"state":{"index":3,"seeded":false,"keyStores":[],"keys":[],"grants":[{"id":"g","keyStore":"x"}]}}`,
		"key store twice":  `{"version":1,"state":{"index":3,"seeded":false,"keyStores":[{"name":"x"},{"name":"x"}],"keys":[],"grants":[]}}`,
		"null key store":   `{"version":1,"state":{"index":3,"seeded":false,"keyStores":[null],"keys":[],"grants":[]}}`,
		"trailing garbage": `{"version":1,"state":{"index":3,"seeded":false,"keyStores":[],"keys":[],"grants":[]}} x`,
	}
	for name, snap := range cases {
		err := f.Restore(io.NopCloser(strings.NewReader(snap)))
		if err == nil || f.State() != keep {
			t.Errorf("%s: restored (%v)", name, err)
		}
	}
	err := f.Restore(io.NopCloser(strings.NewReader(cases["newer version"])))
	if !strings.Contains(err.Error(), "version 2") || !strings.Contains(err.Error(), "upgrade") {
		t.Fatalf("unknown version must be refused loudly: %v", err)
	}
}

// TestRaftCluster runs the FSM under real hashicorp/raft: three in-memory
// nodes replicate the log, then a fourth joins after the log was compacted
// and must catch up from a snapshot through Persist and Restore.
func TestRaftCluster(t *testing.T) {
	type node struct {
		fsm     *FSM
		raft    *raft.Raft
		trans   *raft.InmemTransport
		changes atomic.Int32
	}
	var nodes []*node
	start := func(id string, servers []raft.Server) *node {
		c := raft.DefaultConfig()
		c.LocalID = raft.ServerID(id)
		c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = 50*time.Millisecond, 50*time.Millisecond, 50*time.Millisecond
		c.CommitTimeout = 5 * time.Millisecond
		c.SnapshotThreshold, c.SnapshotInterval, c.TrailingLogs = 1<<30, time.Hour, 0
		c.LogOutput = io.Discard
		n := &node{}
		n.fsm = New(func(*State) { n.changes.Add(1) })
		store := raft.NewInmemStore()
		_, n.trans = raft.NewInmemTransport(raft.ServerAddress(id))
		for _, other := range nodes {
			n.trans.Connect(other.trans.LocalAddr(), other.trans)
			other.trans.Connect(n.trans.LocalAddr(), n.trans)
		}
		r, err := raft.NewRaft(c, n.fsm, store, store, raft.NewInmemSnapshotStore(), n.trans)
		if err != nil {
			t.Fatal(err)
		}
		n.raft = r
		if servers != nil {
			if err := r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
				t.Fatal(err)
			}
		}
		t.Cleanup(func() { r.Shutdown().Error() })
		nodes = append(nodes, n)
		return n
	}
	var servers []raft.Server
	for _, id := range []string{"n1", "n2", "n3"} {
		servers = append(servers, raft.Server{ID: raft.ServerID(id), Address: raft.ServerAddress(id), Suffrage: raft.Voter})
	}
	for _, s := range servers {
		start(string(s.ID), servers)
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	var leader *node
	waitFor("a leader", func() bool {
		for _, n := range nodes {
			if n.raft.State() == raft.Leader {
				leader = n
				return true
			}
		}
		return false
	})
	apply := func(c Command) ApplyResult {
		t.Helper()
		f := leader.raft.Apply(encode(t, c), 5*time.Second)
		if err := f.Error(); err != nil {
			t.Fatal(err)
		}
		return f.Response().(ApplyResult)
	}
	for _, c := range sampleCommands() {
		if res := apply(c); res.Err != nil {
			t.Fatalf("%s: %v", c.Type(), res.Err)
		}
	}
	if res := apply(auditedBy(t0, boot, DeleteKeyStore{Name: "s"})); !errors.Is(res.Err, ErrConflict) {
		t.Fatalf("a rule violation must come back as ApplyResult.Err: %v", res.Err)
	}
	converged := func() bool {
		want := leader.fsm.AppliedIndex()
		for _, n := range nodes {
			if n.fsm.AppliedIndex() != want {
				return false
			}
		}
		return true
	}
	waitFor("the followers", converged)
	want := persist(t, leader.fsm)
	for _, n := range nodes {
		if got := persist(t, n.fsm); !bytes.Equal(got, want) {
			t.Fatalf("replicas differ:\n%s\n%s", got, want)
		}
	}

	if err := leader.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	late := start("n4", nil)
	if err := leader.raft.AddVoter("n4", "n4", 0, 5*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	apply(SetKeyEnabled{KeyStore: "s", KeyID: "k", Enabled: false})
	waitFor("the late node", converged)
	if got, want := persist(t, late.fsm), persist(t, leader.fsm); !bytes.Equal(got, want) {
		t.Fatalf("late node differs:\n%s\n%s", got, want)
	}
	if c := late.changes.Load(); c > 2 {
		t.Fatalf("the late node replayed %d changes instead of restoring the snapshot", c)
	}
}
