package xksapi

import (
	"encoding/binary"
	"io"
	"math/rand/v2"
	"os"
	"runtime/metrics"
	"slices"
	"sync/atomic"
	"time"
)

// cpuWait estimates how long a request arriving now would wait for a CPU
// before it is answered, measured in the background in two parts.
//
// It is the part of a request's wait that the HSM pool cannot see. When the
// node runs out of CPU (TLS, HTTP, SigV4 and the HSM library all share it),
// requests do not queue for HSM sessions: their connections' goroutines
// queue for the CPU. A request waits first for its connection to be seen
// readable and its goroutine to run, then once more at each later hand-off
// (HSM session, HSM answer):
//
//   - the first wait is probed: every sample, a timestamp goes through a
//     pipe to a goroutine blocked reading it, which is woken by the same
//     netpoller as a connection. On a saturated node the netpoller is only
//     consulted every ~10 ms, and then every woken goroutine queues behind
//     the others; the scheduler's own measure misses the first part;
//   - the later ones come from the Go scheduler's histogram of the time
//     runnable goroutines wait to run (/sched/latencies:seconds).
//
// Shedding on that wait, like the HSM pool sheds on its expected wait,
// bounds the answer time of what is accepted; the number of busy
// connections does not enter into it.
type cpuWait struct {
	ns   atomic.Int64 // the estimate, in nanoseconds
	stop chan struct{}
	done chan struct{}

	probeR, probeW *os.File
	probeSent      atomic.Int64 // when the probe in flight was written (UnixNano); 0 when none is
	probeDelay     atomic.Int64 // how long the last probe took to be read, in nanoseconds
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
	r, w, err := os.Pipe()
	if sample[0].Value.Kind() != metrics.KindFloat64Histogram || err != nil {
		close(c.done)
		return c
	}
	c.probeR, c.probeW = r, w
	go c.readProbes()
	go c.run(sample)
	return c
}

// readProbes records how long each probe took from its write to this
// goroutine running.
func (c *cpuWait) readProbes() {
	var b [8]byte
	for {
		if _, err := io.ReadFull(c.probeR, b[:]); err != nil {
			return
		}
		c.probeDelay.Store(max(0, time.Now().UnixNano()-int64(binary.LittleEndian.Uint64(b[:]))))
		c.probeSent.Store(0)
	}
}

// probe sends a probe unless one is still in flight, and returns the wait
// of the latest: the last one read, or the one in flight if it has waited
// longer.
func (c *cpuWait) probe() time.Duration {
	now := time.Now().UnixNano()
	wait := c.probeDelay.Load()
	if sent := c.probeSent.Load(); sent != 0 {
		return time.Duration(max(wait, now-sent))
	}
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(now))
	c.probeSent.Store(now)
	if _, err := c.probeW.Write(b[:]); err != nil {
		c.probeSent.Store(0)
	}
	return time.Duration(wait)
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
		sched := time.Duration(windowQuantile(ring[next], counts, buckets, cpuWaitQuantile) * float64(time.Second))
		ring[next] = append(ring[next][:0], counts...)
		c.ns.Store(int64(expectedWait(c.probe(), sched)))
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
	if c.probeW != nil {
		c.probeW.Close()
		c.probeR.Close()
	}
}

// laterHandOffs is how many more times a request waits for a CPU after its
// connection was seen readable: for the HSM session it queued for, and for
// the HSM's answer.
const laterHandOffs = 2

// expectedWait is a request's wait for a CPU: the first, probed, wait and
// the scheduler's wait at each later hand-off. A probe that comes back at
// once on an idle node still counts the scheduler's part, and vice versa.
func expectedWait(probe, sched time.Duration) time.Duration {
	return max(probe, sched) + laterHandOffs*sched
}

// shouldShed decides whether a request is turned away now, given its
// expected wait: shedding starts (at random, so the load falls smoothly
// rather than in steps) when that passes half of limit and is certain at
// limit.
func shouldShed(wait, limit time.Duration) bool {
	switch {
	case limit <= 0 || wait <= limit/2:
		return false
	case wait >= limit:
		return true
	}
	return rand.Int64N(int64(limit/2)) < int64(wait-limit/2)
}
