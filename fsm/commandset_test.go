package fsm

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

// A cluster starts at command set 1, which every build reads; commands
// that older builds cannot decode are refused until every voter reads them
// and the leader has raised the set.
func TestCommandsNeedingANewerSetWaitForTheRaise(t *testing.T) {
	at := time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)
	s := newState()
	var err error
	if s, err = s.execute(1, CreateKeyStore{At: at, KeyStore: storeSpec("s", "/s", KeyModeReplicated)}); err != nil {
		t.Fatal(err)
	}
	wrap := keySpec("s", "wrap", KeyModeReplicated)
	wrap.Usage = UsageWrap | UsageUnwrap
	plain := keySpec("s", "plain", KeyModeReplicated)
	bound := newStoredCredential()
	bound.SealedSecret = append([]byte{SealBoundToKeyStore}, bound.SealedSecret...)
	newer := []Command{CreateKey{At: at, Key: wrap}, AddCredential{At: at, KeyStore: "s", Credential: bound}}
	for _, c := range newer {
		if RequiredCommandSet(c) != 2 {
			t.Fatalf("%s needs set %d, want 2", c.Type(), RequiredCommandSet(c))
		}
		next, err := s.execute(2, c)
		var cse *CommandSetError
		if !errors.As(err, &cse) || cse.Needs != 2 || cse.InEffect != 1 || next.Key("s", "wrap") != nil {
			t.Fatalf("%s before the raise: %v", c.Type(), err)
		}
	}
	if RequiredCommandSet(CreateKey{At: at, Key: plain}) != 1 {
		t.Fatal("an ENCRYPT/DECRYPT key needs more than set 1")
	}

	if s, err = s.execute(3, RaiseCommandSet{To: 2}); err != nil || s.CommandSet() != 2 {
		t.Fatalf("raise: %v, set %d", err, s.CommandSet())
	}
	if _, err := s.execute(4, RaiseCommandSet{To: 2}); err == nil {
		t.Fatal("a raise to the set in effect was accepted")
	}
	if _, err := s.execute(4, RaiseCommandSet{To: CommandSet + 1}); err == nil {
		t.Fatal("a raise past this build's set was accepted")
	}
	for i, c := range newer {
		if s, err = s.execute(uint64(5+i), c); err != nil {
			t.Fatalf("%s after the raise: %v", c.Type(), err)
		}
	}
}

// Older builds decode snapshots strictly: the command set is written only
// once raised, and a snapshot from a newer set is refused by name.
func TestSnapshotsCarryTheCommandSetOnlyOnceRaised(t *testing.T) {
	f := New(nil)
	if strings.Contains(string(persist(t, f)), "commandSet") {
		t.Fatal("a set-1 snapshot names the command set; older builds would refuse it")
	}
	f.Apply(entry(1, encode(t, RaiseCommandSet{To: 2})))
	b := persist(t, f)
	back := New(nil)
	if err := back.Restore(io.NopCloser(bytes.NewReader(b))); err != nil || back.State().CommandSet() != 2 {
		t.Fatalf("restore: %v, set %d", err, back.State().CommandSet())
	}
	newer := strings.Replace(string(b), `"commandSet":2`, `"commandSet":99`, 1)
	if err := New(nil).Restore(io.NopCloser(strings.NewReader(newer))); err == nil || !strings.Contains(err.Error(), "upgrade") {
		t.Fatalf("a snapshot from a newer command set: %v", err)
	}
}
