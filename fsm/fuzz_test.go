package fsm

import (
	"bytes"
	"io"
	"testing"
	"time"
)

// FuzzDecode feeds Decode arbitrary entries. Decode must never panic, and
// whatever it accepts must validate and apply against a populated state
// without panicking (Apply's only panics are for entries Decode refuses),
// must leave a state that a restore would accept, and must encode to a
// fixed point.
func FuzzDecode(f *testing.F) {
	for _, c := range sampleCommands() {
		f.Add(encode(f, c))
	}
	f.Add([]byte{})
	f.Add([]byte{byte(CmdSeed)})
	f.Add([]byte{byte(CmdUpdateKeyStore), '{', '}'})
	f.Add([]byte{0xc0, '{', '}'})
	f.Add(append([]byte{byte(CmdCreateKey)}, `{"at":"2026-01-01T00:00:00Z","key":{"keyStore":"a","id":"k","usage":["encrypt"],"currentVersion":1,"versions":[{"number":1,"hsmLabel":"x"}]}}`...))
	base := ruleBase(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Decode(b)
		if err != nil {
			return
		}
		for _, s := range []*State{newState(), base} {
			next, err := s.execute(s.index+1, c)
			if err != nil {
				continue
			}
			if next.index != s.index+1 {
				t.Fatal("an applied command did not advance the index")
			}
			if err := next.check(); err != nil {
				t.Fatalf("%s built a state a restore would refuse: %v", c.Type(), err)
			}
		}
		enc, err := Encode(c)
		if err != nil {
			return // a decoded time may be outside what encoding/json writes
		}
		back, err := Decode(enc)
		if err != nil {
			t.Fatalf("Decode(Encode(%#v)): %v", c, err)
		}
		if again, _ := Encode(back); !bytes.Equal(again, enc) {
			t.Fatalf("encoding is not a fixed point:\n%s\n%s", enc, again)
		}
	})
}

// FuzzRestore feeds Restore arbitrary snapshots (testdata/fuzz/FuzzRestore
// holds hand-made ones, among them the missing current version that once
// stopped every node). Restore must never panic; a snapshot it accepts must
// give a state on which the view builds, every key the data plane can find
// has its current version, every command applies without panicking into a
// state that passes the same check, and Persist is a fixed point.
func FuzzRestore(f *testing.F) {
	f.Add(persistState(f, integrityBase(f)))
	f.Add(persistState(f, newState()))
	f.Add(persistState(f, auditBase(f))) // operators and an audit trail
	commands := sampleCommands()
	f.Fuzz(func(t *testing.T, b []byte) {
		fm := New(nil)
		if err := fm.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
			if fm.State().index != 0 || len(fm.State().stores) != 0 {
				t.Fatal("a refused snapshot changed the state")
			}
			return
		}
		s := fm.State()
		v, _ := BuildView(s, unsealTest)
		now := time.Now()
		for _, sv := range v.Stores() {
			if v.StoreByPath([]byte(sv.URIPath)) != sv {
				t.Fatalf("key store %s is not found by its path", sv.Name)
			}
			for _, k := range sv.Keys() {
				if sv.Key([]byte(k.ID)) != k || k.Version(k.CurrentVersion) == nil {
					t.Fatalf("key %s/%s: the encrypt lookup finds no current version", sv.Name, k.ID)
				}
			}
			for _, c := range sv.Credentials {
				sv.Credential([]byte(c.AccessKeyID), now)
			}
		}
		again := persistState(t, s)
		back := New(nil)
		if err := back.Restore(io.NopCloser(bytes.NewReader(again))); err != nil {
			t.Fatalf("a restored state does not restore again: %v", err)
		}
		if !bytes.Equal(persistState(t, back.State()), again) {
			t.Fatal("Persist after Restore is not a fixed point")
		}
		for _, c := range commands {
			if next, err := s.execute(s.index+1, c); err == nil {
				if err := next.check(); err != nil {
					t.Fatalf("%s on a restored state built one a restore would refuse: %v", c.Type(), err)
				}
			}
		}
	})
}

func persistState(t testing.TB, s *State) []byte {
	t.Helper()
	var sink memSink
	if err := (&snapshot{state: s}).Persist(&sink); err != nil {
		t.Fatal(err)
	}
	return sink.Bytes()
}
