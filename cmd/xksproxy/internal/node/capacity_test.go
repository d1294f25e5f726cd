package node

import (
	"strings"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/hsm"
)

func TestCapacityWarning(t *testing.T) {
	softHSM := hsm.Stats{PoolSize: 2, CallAverage: 60 * time.Microsecond}   // ~33,000/s
	networkHSM := hsm.Stats{PoolSize: 2, CallAverage: 4 * time.Millisecond} // 500/s
	bigPool := hsm.Stats{PoolSize: 64, CallAverage: 4 * time.Millisecond}   // 16,000/s
	unmeasured := hsm.Stats{PoolSize: 64}
	for _, c := range []struct {
		name   string
		stats  []hsm.Stats
		quotas []uint32
		warn   bool
	}{
		{"SoftHSMv2, one key store at the AWS default", []hsm.Stats{softHSM}, []uint32{0}, false},
		{"a 2 ms HSM with the default pool", []hsm.Stats{networkHSM}, []uint32{0}, true},
		{"a 2 ms HSM with 64 sessions", []hsm.Stats{bigPool}, []uint32{0, 0, 5000}, false},
		{"quotas above the pool", []hsm.Stats{bigPool}, []uint32{10000, 10000}, true},
		{"two small pools add up", []hsm.Stats{networkHSM, networkHSM, networkHSM, networkHSM}, []uint32{1800}, false},
		{"nothing measured yet", []hsm.Stats{unmeasured}, []uint32{0}, false},
	} {
		msg := capacityWarning(c.stats, c.quotas)
		if (msg != "") != c.warn {
			t.Errorf("%s: warning %q, want one: %v", c.name, msg, c.warn)
		}
		if msg != "" && !strings.Contains(msg, "hsm probe") {
			t.Errorf("%s: the warning does not say what to do: %s", c.name, msg)
		}
	}
}
