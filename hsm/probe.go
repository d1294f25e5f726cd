package hsm

import (
	"crypto/rand"
	"math"
	"sync"
	"time"
)

// ProbePoint is what the HSM sustained with a number of concurrent callers.
type ProbePoint struct {
	Concurrency int
	// Rate is operations per second.
	Rate float64
	// CallTime is the mean time of one operation as its caller saw it.
	CallTime time.Duration
	Errors   int
}

// Probe measures the HSM's encrypt rate (32 bytes, 64 bytes of AAD, the
// XKS hot path) under the key labelled label with each number of concurrent
// callers in levels, for per each: so at most len(levels) × per in all,
// after a warm-up of three calls per session.
// Levels above the pool size are capped at it. Use a dedicated key: the
// probe loads the HSM as hard as it can.
func (h *HSM) Probe(label string, levels []int, per time.Duration) []ProbePoint {
	// Warm-up: each session's first use of a key copies it (keycache.go),
	// a call that would otherwise count in the first level's time.
	var warm sync.WaitGroup
	for range h.cfg.PoolSize {
		warm.Add(1)
		go func() {
			defer warm.Done()
			for range 3 {
				iv := make([]byte, ivSize)
				rand.Read(iv)
				h.EncryptGCM(label, iv, make([]byte, 32), nil)
			}
		}()
	}
	warm.Wait()
	points := make([]ProbePoint, 0, len(levels))
	for _, level := range levels {
		level = max(1, min(level, h.cfg.PoolSize))
		var mu sync.Mutex
		var ops, errs int
		var busy time.Duration
		deadline := time.Now().Add(per)
		start := time.Now()
		var wg sync.WaitGroup
		for range level {
			wg.Add(1)
			go func() {
				defer wg.Done()
				plain, aad := make([]byte, 32), make([]byte, 64)
				var n, bad int
				var spent time.Duration
				for time.Now().Before(deadline) {
					iv := make([]byte, ivSize)
					rand.Read(iv)
					t := time.Now()
					_, _, err := h.EncryptGCM(label, iv, plain, aad)
					spent += time.Since(t)
					if err != nil {
						bad++
						continue
					}
					n++
				}
				mu.Lock()
				ops, errs, busy = ops+n, errs+bad, busy+spent
				mu.Unlock()
			}()
		}
		wg.Wait()
		p := ProbePoint{Concurrency: level, Rate: float64(ops) / time.Since(start).Seconds(), Errors: errs}
		if ops+errs > 0 {
			p.CallTime = busy / time.Duration(ops+errs)
		}
		points = append(points, p)
	}
	return points
}

// Sizing is a pool_size recommendation and the numbers it came from.
type Sizing struct {
	// Target is the rate the pool must sustain, per second.
	Target float64
	// CallTime is one operation's time with one caller: the HSM's latency.
	CallTime time.Duration
	// Headroom multiplies what Little's law asks for.
	Headroom float64
	// PoolSize is the recommendation.
	PoolSize int
	// Best is the probe's highest rate; Reachable says whether it reached
	// Target × Headroom. When it did not, more sessions would not help:
	// PoolSize is then the fewest callers that gave (almost) the best rate.
	Best      ProbePoint
	Reachable bool
}

// SizingHeadroom is the margin on Little's law: bursts, and a slower HSM
// on a bad day.
const SizingHeadroom = 1.5

// Recommend sizes the pool for target operations per second from a probe
// whose first point has one caller: by Little's law, target × CallTime
// operations are in flight on average, times the headroom, and at least 2.
func Recommend(points []ProbePoint, target float64) Sizing {
	s := Sizing{Target: target, Headroom: SizingHeadroom, PoolSize: defaultPoolSize}
	if len(points) == 0 {
		return s
	}
	s.CallTime = points[0].CallTime
	for _, p := range points {
		if p.Rate > s.Best.Rate {
			s.Best = p
		}
	}
	s.Reachable = s.Best.Rate >= target*s.Headroom
	if s.Reachable {
		s.PoolSize = max(defaultPoolSize, int(math.Ceil(target*s.CallTime.Seconds()*s.Headroom)))
		return s
	}
	for _, p := range points {
		if p.Rate >= 0.95*s.Best.Rate {
			s.PoolSize = max(defaultPoolSize, p.Concurrency)
			break
		}
	}
	return s
}
