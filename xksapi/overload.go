package xksapi

import (
	"math/rand/v2"
	"runtime/metrics"
	"slices"
	"sync/atomic"
	"time"
)

// cpuWait estimates how long a runnable goroutine of this process waits for
// a CPU, from the Go scheduler's own histogram of exactly that
// (/sched/latencies:seconds), sampled in the background.
//
// It is the part of a request's wait that the HSM pool cannot see. When the
// node runs out of CPU (TLS, HTTP, SigV4 and the HSM library all share it),
// requests do not queue for HSM sessions: their connections' goroutines
// queue for the CPU, and every hand-off in a request's life (readable
// connection, HSM session, HSM answer) waits once more. Shedding on that
// wait, like the HSM pool sheds on its expected wait, bounds the answer time
// of what is accepted; the number of busy connections does not enter into it.
type cpuWait struct {
	ns   atomic.Int64 // the estimate, in nanoseconds
	stop chan struct{}
	done chan struct{}
}

// cpuWaitSample is how often the estimate is refreshed, and cpuWaitWindow
// the span it covers: fresh enough to react within a fifth of the 250 ms
// budget, long enough that one stall of an otherwise idle node is not
// taken for a queue. One metrics.Read costs about a microsecond.
const (
	cpuWaitSample  = 10 * time.Millisecond
	cpuWaitWindows = 5 // samples per window: 50 ms
)

// cpuWaitQuantile picks the scheduler wait that counts: most wake-ups of an
// idle goroutine are immediate even on a saturated node, so the mean hides
// the queue; the 90th percentile of the window tracks it.
const cpuWaitQuantile = 0.9

// cpuWaitMinEvents is the fewest scheduling events a window needs to say
// anything: a queue for the CPU means many runnable goroutines, and a
// handful of wake-ups (the runtime records one transition in eight) is an
// idle node, however late one of them ran.
const cpuWaitMinEvents = 32

const schedLatencies = "/sched/latencies:seconds"

func startCPUWait() *cpuWait {
	c := &cpuWait{stop: make(chan struct{}), done: make(chan struct{})}
	sample := []metrics.Sample{{Name: schedLatencies}}
	metrics.Read(sample)
	if sample[0].Value.Kind() != metrics.KindFloat64Histogram {
		close(c.done)
		return c
	}
	go c.run(sample)
	return c
}

// run keeps the last cpuWaitWindows readings of the cumulative histogram and
// estimates from the difference between the newest and the oldest.
func (c *cpuWait) run(sample []metrics.Sample) {
	defer close(c.done)
	h := sample[0].Value.Float64Histogram()
	buckets := h.Buckets
	var ring [cpuWaitWindows][]uint64
	for i := range ring {
		ring[i] = slices.Clone(h.Counts)
	}
	t := time.NewTicker(cpuWaitSample)
	defer t.Stop()
	for next := 0; ; next = (next + 1) % cpuWaitWindows {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		metrics.Read(sample)
		counts := sample[0].Value.Float64Histogram().Counts
		// ring[next] is the oldest reading; it is replaced by this one.
		c.ns.Store(int64(windowQuantile(ring[next], counts, buckets, cpuWaitQuantile) * float64(time.Second)))
		ring[next] = append(ring[next][:0], counts...)
	}
}

// windowQuantile is the q-quantile, in seconds, of the events counted
// between two readings of a cumulative histogram (counts[i] lies between
// buckets[i] and buckets[i+1]); 0 when fewer than cpuWaitMinEvents
// happened. It answers a bucket's lower bound: the wait is at least that.
func windowQuantile(prev, counts []uint64, buckets []float64, q float64) float64 {
	var total uint64
	for i := range counts {
		total += counts[i] - prev[i]
	}
	if total < cpuWaitMinEvents {
		return 0
	}
	want := uint64(q * float64(total))
	var seen uint64
	for i := range counts {
		seen += counts[i] - prev[i]
		if seen > want {
			return max(buckets[i], 0)
		}
	}
	return max(buckets[len(counts)-1], 0)
}

func (c *cpuWait) current() time.Duration { return time.Duration(c.ns.Load()) }

func (c *cpuWait) close() {
	close(c.stop)
	<-c.done
}

// handOffs is how many times a request waits for a CPU between arriving and
// being answered: its connection becoming readable, the HSM session it
// queued for, and the HSM's answer.
const handOffs = 3

// shouldShed decides whether a request is turned away now. Its expected
// wait is the CPU wait at every hand-off; shedding starts (at random, so the
// load falls smoothly rather than in steps) when that passes half of limit
// and is certain at limit.
func shouldShed(cpu, limit time.Duration) bool {
	wait := handOffs * cpu
	switch {
	case limit <= 0 || wait <= limit/2:
		return false
	case wait >= limit:
		return true
	}
	return rand.Int64N(int64(limit/2)) < int64(wait-limit/2)
}
