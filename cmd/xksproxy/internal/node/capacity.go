package node

import (
	"fmt"
	"time"

	"github.com/xksproxy/xksproxy/fsm"
	"github.com/xksproxy/xksproxy/hsm"
)

// awsDefaultKeyStoreRate is what AWS KMS sends one external key store at
// most by default, in requests per second; a key store without a quota of
// its own counts at that.
const awsDefaultKeyStoreRate = 1800

// capacityWarning compares what the HSMs can serve (each pool's sessions
// over its call time) with what the key stores may send (their quotas); it
// returns a warning when the first is smaller, or "". HSMs that have
// measured no call yet are left out.
func capacityWarning(stats []hsm.Stats, quotas []uint32) string {
	var capacity, demand float64
	for _, st := range stats {
		if st.CallAverage > 0 {
			capacity += float64(st.PoolSize) / st.CallAverage.Seconds()
		}
	}
	for _, q := range quotas {
		if q == 0 {
			q = awsDefaultKeyStoreRate
		}
		demand += float64(q)
	}
	if capacity == 0 || capacity >= demand {
		return ""
	}
	return fmt.Sprintf("the HSM pools serve about %.0f calls/s (pool_size / measured call time) and the %d key stores may send %.0f requests/s (their quotas, %d/s where unset): raise hsm.pool_size (`xksproxy hsm probe` recommends one)",
		capacity, len(quotas), demand, awsDefaultKeyStoreRate)
}

// capacityProbe is how long warnCapacity times encrypts on each HSM's
// health key: the pool's moving average at start is made of logins, key
// generation and unwraps, far slower than the encrypts KMS will send.
const capacityProbe = 200 * time.Millisecond

// warnCapacity logs capacityWarning once the node has its key stores,
// looking for at most two minutes, until the node closes.
func (n *Node) warnCapacity() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for range 120 {
		if v := n.Views.Load(); v != nil && len(v.Stores()) > 0 {
			var stats []hsm.Stats
			for _, m := range n.HSM.Members() {
				st := m.Stats()
				st.CallAverage = 0
				if points := m.Probe(m.HealthKeyLabel(), []int{1}, capacityProbe); len(points) > 0 && points[0].Errors == 0 {
					st.CallAverage = points[0].CallTime
				}
				stats = append(stats, st)
			}
			if msg := capacityWarning(stats, quotas(v)); msg != "" {
				n.log.Warn().Msg(msg)
			}
			return
		}
		select {
		case <-n.closing:
			return
		case <-t.C:
		}
	}
}

func quotas(v *fsm.View) []uint32 {
	var out []uint32
	for _, s := range v.Stores() {
		out = append(out, s.QuotaRPS)
	}
	return out
}
