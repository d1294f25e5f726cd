package bench

import (
	"strings"
	"testing"
)

func TestParseMix(t *testing.T) {
	m, err := ParseMix("encrypt=70, decrypt=25,Metadata=4,health=1")
	if err != nil || m != DefaultMix {
		t.Fatalf("ParseMix = %v, %v", m, err)
	}
	if m.String() != "encrypt=70,decrypt=25,metadata=4,health=1" {
		t.Errorf("String() = %q", m.String())
	}
	m, err = ParseMix("decrypt=1")
	if err != nil || m != (Mix{0, 1, 0, 0}) || m.Share(OpDecrypt) != 1 || m.String() != "decrypt=1" {
		t.Fatalf("ParseMix(decrypt=1) = %v, %v", m, err)
	}
	for _, bad := range []string{"", "encrypt", "encrypt=x", "encrypt=-1", "sign=3", "encrypt=1,encrypt=2", "encrypt=0,decrypt=0"} {
		if _, err := ParseMix(bad); err == nil {
			t.Errorf("ParseMix(%q) accepted", bad)
		}
	}
}

func TestPickerDealsTheMixExactly(t *testing.T) {
	p := opPicker{mix: DefaultMix}
	var counts [numOps]int
	var seq strings.Builder
	for range 100 * 3 {
		op := p.next()
		counts[op]++
		seq.WriteString(op.String()[:1])
	}
	if counts != [numOps]int{210, 75, 12, 3} {
		t.Fatalf("300 picks of 70/25/4/1: %v", counts)
	}
	// Spread out, not in runs: never more than 4 encrypts in a row at 70%.
	if strings.Contains(seq.String(), "eeeee") {
		t.Errorf("run of encrypts in %s", seq.String())
	}
	only := opPicker{mix: Mix{0, 0, 3, 0}}
	for range 10 {
		if op := only.next(); op != OpMetadata {
			t.Fatalf("picked %v from a metadata-only mix", op)
		}
	}
}
