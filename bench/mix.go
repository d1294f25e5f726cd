package bench

import (
	"fmt"
	"strconv"
	"strings"
)

// Op is one XKS operation the bench sends.
type Op int

// The operations, in the order reports list them.
const (
	OpEncrypt Op = iota
	OpDecrypt
	OpMetadata
	OpHealth
	numOps
)

var opNames = [numOps]string{"encrypt", "decrypt", "metadata", "health"}

func (o Op) String() string { return opNames[o] }

// Ops lists every operation.
func Ops() []Op { return []Op{OpEncrypt, OpDecrypt, OpMetadata, OpHealth} }

// ParseOp turns an operation name into an Op.
func ParseOp(name string) (Op, error) {
	for i, n := range opNames {
		if strings.EqualFold(name, n) {
			return Op(i), nil
		}
	}
	return 0, fmt.Errorf("unknown operation %q (want encrypt, decrypt, metadata or health)", name)
}

// Mix holds the relative weight of each operation in every key's schedule.
type Mix [numOps]int

// DefaultMix is roughly what AWS KMS sends an external key store: mostly
// data-key encrypts and decrypts, some key metadata, a little health.
var DefaultMix = Mix{70, 25, 4, 1}

// ParseMix reads "encrypt=70,decrypt=25,metadata=4,health=1". Weights are
// non-negative integers of any scale; operations left out weigh 0.
func ParseMix(s string) (Mix, error) {
	var m Mix
	var seen [numOps]bool
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, weight, ok := strings.Cut(part, "=")
		if !ok {
			return Mix{}, fmt.Errorf("mix entry %q is not op=weight", part)
		}
		op, err := ParseOp(strings.TrimSpace(name))
		if err != nil {
			return Mix{}, err
		}
		if seen[op] {
			return Mix{}, fmt.Errorf("mix names %s twice", op)
		}
		seen[op] = true
		w, err := strconv.Atoi(strings.TrimSpace(weight))
		if err != nil || w < 0 || w > 1_000_000 {
			return Mix{}, fmt.Errorf("mix weight %q of %s is not an integer in 0..1000000", weight, op)
		}
		m[op] = w
	}
	if m.total() == 0 {
		return Mix{}, fmt.Errorf("mix %q gives no operation a weight", s)
	}
	return m, nil
}

func (m Mix) total() int {
	t := 0
	for _, w := range m {
		t += w
	}
	return t
}

// Share is op's fraction of the requests.
func (m Mix) Share(op Op) float64 {
	if m.total() == 0 {
		return 0
	}
	return float64(m[op]) / float64(m.total())
}

// String writes the mix back in ParseMix's syntax, leaving out zero weights.
func (m Mix) String() string {
	var parts []string
	for _, op := range Ops() {
		if m[op] > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", op, m[op]))
		}
	}
	return strings.Join(parts, ",")
}

// opPicker deals operations in the mix's proportions with smooth weighted
// round robin: every window of total() consecutive picks holds each
// operation exactly its weight's number of times, spread out rather than in
// runs, so even a short run sees the configured mix and no second of it is
// all of one kind. It is deterministic, which keeps runs comparable.
type opPicker struct {
	mix     Mix
	current [numOps]int
}

func (p *opPicker) next() Op {
	best := Op(-1)
	for _, op := range Ops() {
		if p.mix[op] == 0 {
			continue
		}
		p.current[op] += p.mix[op]
		if best < 0 || p.current[op] > p.current[best] {
			best = op
		}
	}
	p.current[best] -= p.mix.total()
	return best
}
