package fsm

import (
	"bytes"
	"reflect"
	"testing"
	"time"
)

// Every command with an At field is stamped, and nothing else in it changes:
// a command added later without a case in Stamped would keep its proposer's
// clock.
func TestStampedCoversEveryTimedCommand(t *testing.T) {
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	for typ, c := range commands {
		cmd, err := c.decode([]byte(`{}`))
		if err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		_, timed := reflect.TypeOf(cmd).FieldByName("At")
		got, was, stamped := Stamped(cmd, at)
		if stamped != timed {
			t.Errorf("%s: has At %v, stamped %v", typ, timed, stamped)
			continue
		}
		if !timed {
			continue
		}
		if !was.IsZero() {
			t.Errorf("%s: the proposed At of an empty command is %v", typ, was)
		}
		if v := reflect.ValueOf(got).FieldByName("At").Interface(); v != at {
			t.Errorf("%s: At = %v after stamping, want %v", typ, v, at)
		}
		// Back to the zero time, the stamped command must encode as the original.
		back, _, _ := Stamped(got, time.Time{})
		if a, b := mustEncode(t, cmd), mustEncode(t, back); !bytes.Equal(a, b) {
			t.Errorf("%s: stamping changed more than At:\n%s\n%s", typ, a, b)
		}
	}
}

func mustEncode(t *testing.T, c Command) []byte {
	t.Helper()
	b, err := Encode(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
