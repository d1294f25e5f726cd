package fsm

import (
	"errors"
	"testing"
	"time"
)

func TestKeyDeletionRules(t *testing.T) {
	at := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	f := New(nil)
	index := uint64(0)
	apply := func(c Command) error {
		index++
		return f.Apply(entry(index, encode(t, c))).(ApplyResult).Err
	}
	ks := storeSpec("s", "/s", KeyModeReplicated)
	if err := apply(Seed{At: at, KeyStores: []StoredKeyStore{ks}, Keys: []Key{keySpec("s", "k", KeyModeReplicated)}}); err != nil {
		t.Fatal(err)
	}
	if f.State().Key("s", "k").Enabled {
		if err := apply(ScheduleDeletion{At: at, KeyStore: "s", KeyID: "k", Days: 7}); !errors.Is(err, ErrConflict) {
			t.Fatalf("scheduling an enabled key: %v", err)
		}
		if err := apply(SetKeyEnabled{KeyStore: "s", KeyID: "k"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, days := range []int{6, 31} {
		if err := apply(ScheduleDeletion{At: at, KeyStore: "s", KeyID: "k", Days: days}); !errors.Is(err, ErrInvalid) {
			t.Fatalf("%d days: %v", days, err)
		}
	}
	if err := apply(ScheduleDeletion{At: at, KeyStore: "s", KeyID: "k", Days: 10}); err != nil {
		t.Fatal(err)
	}
	if err := apply(SetKeyEnabled{KeyStore: "s", KeyID: "k", Enabled: true}); !errors.Is(err, ErrConflict) {
		t.Fatalf("enabling a key scheduled for deletion: %v", err)
	}
	if err := apply(DeleteKey{At: at.Add(9 * 24 * time.Hour), KeyStore: "s", KeyID: "k"}); !errors.Is(err, ErrConflict) {
		t.Fatalf("deleting before the date: %v", err)
	}
	if err := apply(DeleteKey{At: at.Add(10 * 24 * time.Hour), KeyStore: "s", KeyID: "k"}); err != nil {
		t.Fatal(err)
	}
	k := f.State().Key("s", "k")
	if !k.Deleted || k.Enabled || len(k.Versions) == 0 {
		t.Fatalf("tombstone = %+v", k)
	}
	for _, c := range []Command{
		SetKeyEnabled{KeyStore: "s", KeyID: "k", Enabled: true},
		CancelDeletion{KeyStore: "s", KeyID: "k"},
		AddGrant{At: at, Grant: grantSpec("g", "s", "k", "*")},
	} {
		if err := apply(c); !errors.Is(err, ErrNotFound) {
			t.Fatalf("%s on a deleted key: %v", c.Type(), err)
		}
	}
	if err := apply(CreateKey{At: at, Key: keySpec("s", "k", KeyModeReplicated)}); !errors.Is(err, ErrConflict) {
		t.Fatalf("reusing a deleted key's id: %v", err)
	}
	view, errs := BuildView(f.State(), unsealTest)
	if len(errs) > 0 || view.StoreByName("s").Key([]byte("k")) != nil || len(view.StoreByName("s").Keys()) != 0 {
		t.Fatalf("a deleted key is visible to the data plane: %v", errs)
	}
}
