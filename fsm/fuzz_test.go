package fsm

import (
	"bytes"
	"testing"
)

// FuzzDecode feeds Decode arbitrary entries. Decode must never panic, and
// whatever it accepts must validate and apply against a populated state
// without panicking (Apply's only panics are for entries Decode refuses),
// and must encode to a fixed point.
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
			if next, err := s.execute(s.index+1, c); err == nil && next.index != s.index+1 {
				t.Fatal("an applied command did not advance the index")
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
