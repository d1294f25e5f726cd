package fsm

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// A key that remembers the sample proxy's format needs command set 3: an
// older node decodes keys strictly and would stop on the new field.
func TestLegacyKeysNeedCommandSet3(t *testing.T) {
	s := run(t, CreateKeyStore{At: t0, KeyStore: storeSpec("m", "/m", KeyModeShared)})
	create := CreateKey{At: t0, Key: legacyKeySpec("m", "imported", []byte("v0.0.1"))}
	if got := RequiredCommandSet(create); got != 3 {
		t.Fatalf("a legacy key needs set %d, want 3", got)
	}
	if got := RequiredCommandSet(Seed{At: t0, Keys: []Key{create.Key}}); got != 3 {
		t.Fatalf("a seed with a legacy key needs set %d, want 3", got)
	}
	var cse *CommandSetError
	if _, err := s.execute(s.index+1, create); !errors.As(err, &cse) || cse.Needs != 3 {
		t.Fatalf("before the raise: %v", err)
	}
	s = step(t, s, RaiseCommandSet{To: 3})
	s = step(t, s, auditedBy(t0, boot, create))
	create.Key.Legacy.StaticMetadata[0] = 'X'
	k := s.Key("m", "imported")
	if k.Legacy == nil || k.Legacy.Version != 1 || string(k.Legacy.StaticMetadata) != "v0.0.1" {
		t.Fatalf("stored legacy format %+v: the state shares memory with the command", k.Legacy)
	}
}

func TestLegacyFormatRules(t *testing.T) {
	s := run(t, CreateKeyStore{At: t0, KeyStore: storeSpec("m", "/m", KeyModeShared)}, RaiseCommandSet{To: 3})
	for name, tc := range map[string]struct {
		edit func(*LegacyFormat)
		want string
	}{
		"unknown format":               {func(l *LegacyFormat) { l.Format = "other-proxy" }, "unknown legacy ciphertext format"},
		"missing version":              {func(l *LegacyFormat) { l.Version = 2 }, "version 2"},
		"metadata over 20 bytes":       {func(l *LegacyFormat) { l.StaticMetadata = make([]byte, 21) }, "at most 20"},
		"metadata shaped like ours":    {func(l *LegacyFormat) { l.StaticMetadata = []byte{1, 0, 0, 0, 2} }, "shape of this proxy's own"},
		"metadata ending like our AAD": {func(l *LegacyFormat) { l.StaticMetadata = []byte("v1\x05\x01\x00\x00\x00\x01") }, "ends like its AAD"},
	} {
		k := legacyKeySpec("m", "imported", nil)
		tc.edit(k.Legacy)
		_, err := s.execute(s.index+1, auditedBy(t0, boot, CreateKey{At: t0, Key: k}))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// A backup edited by hand obeys the same rule.
	s = step(t, s, auditedBy(t0, boot, CreateKey{At: t0, Key: legacyKeySpec("m", "imported", nil)}))
	snap := snapshotOf(t, s, func(in *stateJSON) {
		for _, k := range in.Keys {
			if k.Legacy != nil {
				k.Legacy.Version = 9
			}
		}
	})
	if err := New(nil).Restore(io.NopCloser(bytes.NewReader(snap))); err == nil || !strings.Contains(err.Error(), "version 9") {
		t.Fatalf("restore of a legacy format naming a missing version: %v", err)
	}
}
