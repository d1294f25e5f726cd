package hsm

import (
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/hsm/netsim"
)

func TestRecommend(t *testing.T) {
	fast := []ProbePoint{{1, 25000, 40 * time.Microsecond, 0}, {2, 40000, 50 * time.Microsecond, 0}, {8, 41000, 195 * time.Microsecond, 0}}
	slow := []ProbePoint{{1, 480, 2080 * time.Microsecond, 0}, {8, 3800, 2100 * time.Microsecond, 0}, {64, 29000, 2200 * time.Microsecond, 0}}
	for _, c := range []struct {
		name      string
		points    []ProbePoint
		target    float64
		pool      int
		reachable bool
	}{
		{"software HSM at the AWS default quota", fast, 1800, 2, true},
		{"2 ms HSM at the AWS default quota", slow, 1800, 6, true},
		{"2 ms HSM at 10,000/s", slow, 10000, 32, true},
		{"2 ms HSM beyond what it can do", slow, 25000, 64, false},
		{"software HSM beyond its CPU", fast, 40000, 2, false},
	} {
		s := Recommend(c.points, c.target)
		if s.PoolSize != c.pool || s.Reachable != c.reachable {
			t.Errorf("%s: pool %d reachable %v, want %d %v (%+v)", c.name, s.PoolSize, s.Reachable, c.pool, c.reachable, s)
		}
	}
}

// On the simulated network HSM at 5 ms per operation, the probe sees the
// latency, and more callers bring more throughput.
func TestProbeSimulatedNetworkHSM(t *testing.T) {
	cfg := netsimConfig(t, testToken, netsim.Config{})
	cfg.PoolSize = 8
	h := openT(t, cfg)
	key := newKey(t, h)
	setNetsim(t, netsim.Config{Latency: 5 * time.Millisecond})
	points := h.Probe(key, []int{1, 8}, 400*time.Millisecond)
	if len(points) != 2 || points[0].CallTime < 5*time.Millisecond || points[0].Errors+points[1].Errors != 0 {
		t.Fatalf("probe: %+v", points)
	}
	if points[1].Rate < 3*points[0].Rate {
		t.Errorf("8 callers gave %.0f/s, 1 caller %.0f/s: the sessions did not work in parallel", points[1].Rate, points[0].Rate)
	}
	if s := Recommend(points, 1000); s.PoolSize < 8 {
		t.Errorf("1000/s at 5 ms: recommended %d sessions, Little's law alone needs 5 (%+v)", s.PoolSize, s)
	}
}
