package xksapi

import (
	"encoding/binary"
	"io"
	"math/bits"
	"math/rand/v2"
	"os"
	"runtime/metrics"
	"slices"
	"sync/atomic"
	"time"
)

// cpuWait estimates how long a request arriving now would spend in the
// node before it is answered, measured in the background in two parts.
//
// When the node runs out of CPU (TLS, HTTP, SigV4 and the HSM library all
// share it), requests do not queue for HSM sessions: their connections'
// goroutines queue for the CPU. A request waits first for its connection to
// be seen readable and its goroutine to run, then inside the handler at
// each hand-off (HSM session, HSM answer):
//
//   - the first wait is probed: every sample, a timestamp goes through a
//     pipe to a goroutine blocked reading it, which is woken by the same
//     netpoller as a connection. On a saturated node the netpoller is only
//     consulted every ~10 ms, and then every woken goroutine queues behind
//     the others. The Go scheduler's histogram of the time runnable
//     goroutines wait to run (/sched/latencies:seconds) is its floor;
//   - the rest is measured: the 90th percentile of the time the requests
//     admitted in the window spent in the handler outside their HSM calls.
//
// An earlier version modelled the second part as two more scheduler waits;
// on a node under a CPU quota that read twice the latency clients saw and
// shed requests at 60% of capacity. Measuring the handler instead follows
// what requests actually take. Time in HSM calls (waiting for a session and
// for the answer) is left out: a network HSM takes milliseconds during
// which the request uses no CPU, and counting them turned a node with a
// 2 ms HSM away at half its capacity. The HSM pool sheds on its own
// expected wait (hsm.ExpectedWait against the pool's WaitTimeout).
//
// Shedding on that estimate, like the HSM pool sheds on its expected wait,
// bounds the answer time of what is accepted; the number of busy
// connections does not enter into it.
type cpuWait struct {
	ns atomic.Int64 // the estimate, in nanoseconds
	// shedNS is the estimate the shedder acts on: ns while the queue is
	// standing (see standingQueue), 0 while a rise is too young to tell
	// from a stall.
	shedNS   atomic.Int64
	standing standingQueue // the sampler's alone
	handlers *handlerTimes
	stop     chan struct{}
	done     chan struct{}

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

// handlerMinEvents is the fewest admitted requests a window needs before
// their times count: below 320 requests/s a node is not overloaded, and a
// few slow ones are not a trend.
const handlerMinEvents = 16

const schedLatencies = "/sched/latencies:seconds"

// startCPUWait starts the estimate, for a shedder that refuses requests
// from half of limit (see standingQueue).
func startCPUWait(handlers *handlerTimes, limit time.Duration) *cpuWait {
	c := &cpuWait{handlers: handlers, standing: standingQueue{limit: limit}, stop: make(chan struct{}), done: make(chan struct{})}
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

// run keeps the last cpuWaitWindows readings of both cumulative histograms
// and estimates from the difference between the newest and the oldest.
func (c *cpuWait) run(sample []metrics.Sample) {
	defer close(c.done)
	h := sample[0].Value.Float64Histogram()
	buckets := h.Buckets
	var sched, handled [cpuWaitWindows][]uint64
	for i := range sched {
		sched[i] = slices.Clone(h.Counts)
		handled[i] = c.handlers.read(nil)
	}
	spare := c.handlers.read(nil)
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
		handlerCounts := c.handlers.read(spare[:0])
		// sched[next] and handled[next] are the oldest readings; this one
		// replaces them.
		schedWait := time.Duration(windowQuantile(sched[next], counts, buckets, cpuWaitQuantile, cpuWaitMinEvents) * float64(time.Second))
		inHandler := time.Duration(windowQuantile(handled[next], handlerCounts, handlerTimeBounds, cpuWaitQuantile, handlerMinEvents) * float64(time.Second))
		sched[next] = append(sched[next][:0], counts...)
		handled[next], spare = handlerCounts, handled[next]
		e := expectedWait(c.probe(), schedWait, inHandler)
		c.ns.Store(int64(e))
		c.shedNS.Store(int64(c.standing.shedOn(time.Now(), e)))
	}
}

// windowQuantile is the q-quantile, in seconds, of the events counted
// between two readings of a cumulative histogram (counts[i] lies between
// buckets[i] and buckets[i+1]); 0 when fewer than minEvents happened. It
// answers a bucket's lower bound: the wait is at least that.
func windowQuantile(prev, counts []uint64, buckets []float64, q float64, minEvents uint64) float64 {
	var total uint64
	for i := range counts {
		total += counts[i] - prev[i]
	}
	if total < minEvents {
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

// shedOn is the estimate the shedder acts on (see standingQueue).
func (c *cpuWait) shedOn() time.Duration { return time.Duration(c.shedNS.Load()) }

func (c *cpuWait) close() {
	close(c.stop)
	<-c.done
	if c.probeW != nil {
		c.probeW.Close()
		c.probeR.Close()
	}
}

// expectedWait is the time in the node of a request arriving now: its wait
// to be read (the probe, or the scheduler's wait if the probe came back at
// once) and then what admitted requests took in the handler.
func expectedWait(probe, sched, inHandler time.Duration) time.Duration {
	return max(probe, sched) + inHandler
}

// handlerTimes counts how long admitted requests spent in the handler,
// cumulatively, in buckets a quarter of an octave wide, without a lock: one
// atomic add per request. The sampler reads windows of it as it does the
// scheduler's histogram. The Prometheus duration histogram cannot serve:
// its 12 buckets are too coarse for a quantile, it counts refusals too, and
// reading it allocates.
type handlerTimes struct {
	counts [handlerTimeBuckets]atomic.Uint64
}

// handlerTimeBuckets reaches 2^29 µs, about nine minutes.
const handlerTimeBuckets = 4 * 28

func (h *handlerTimes) observe(d time.Duration) { h.counts[handlerTimeBucket(d)].Add(1) }

// read appends the current counts to dst.
func (h *handlerTimes) read(dst []uint64) []uint64 {
	for i := range h.counts {
		dst = append(dst, h.counts[i].Load())
	}
	return dst
}

// handlerTimeBucket: 0–3 µs have a bucket each; above, the leading bit of
// the microseconds picks the octave and the two bits after it the quarter.
func handlerTimeBucket(d time.Duration) int {
	us := uint64(max(d, 0) / time.Microsecond)
	if us < 4 {
		return int(us)
	}
	e := bits.Len64(us) - 1
	return min(4*(e-1)+int(us>>(e-2)&3), handlerTimeBuckets-1)
}

// handlerTimeBounds are the buckets' lower bounds in seconds, and the upper
// bound of the last, as windowQuantile takes them.
var handlerTimeBounds = func() []float64 {
	b := make([]float64, handlerTimeBuckets+1)
	for i := range b {
		us := i
		if i >= 4 {
			us = (4 + i%4) << (i/4 - 1)
		}
		b[i] = float64(us) / 1e6
	}
	return b
}()

// standingQueue tells a queue for the CPU that stands from one that a
// stall left behind and that drains by itself, in the manner of CoDel: a
// rise of the estimate above half the limit counts once it has lasted
// standingAfter, or at once when it reaches the limit.
//
// Under a CPU quota the node stops in bursts: measured with
// bench-overload's cgroup (0.25 CPU, 10 ms periods, pinned to one core) at
// 900 requests/s, where the node used 0.19 CPU, the probe went unread for
// 30 to 150 ms a few times a second while the sampler kept its 10 ms ticks,
// clients saw a p99 of 30 ms, and shedding on every rise refused 19
// requests in 18,000. find-max then took the node's capacity for a fraction
// of what it served: no sustainable rate at all, or 927/s for a node that
// served 1,854/s without a refusal. Such rises above 50 ms lasted 10 to 40
// ms; a queue that stands is one the node does not drain, and outlasts
// them. A rise within rearmFor of the last one found standing is passed on
// at once: an overload that shedding held back returns as soon as shedding
// stops, and must not get a fresh standingAfter to build up in. Only a
// rise found standing renews that window; the rises it lets through do
// not, or stalls a few times a second would keep it open for good.
type standingQueue struct {
	limit     time.Duration
	highSince time.Time // first sample of the current rise; zero when the last sample was below half the limit
	stood     time.Time // the last sample found standing
}

// standingAfter outlasts the stalls measured under a CPU quota (above) with
// room to spare, and stays short next to the 250 ms budget: an overload
// that doubles the load builds a wait of about as much again as it lasts.
const (
	standingAfter = 100 * time.Millisecond
	rearmFor      = time.Second
)

// shedOn returns the estimate the shedder acts on, given the estimate e
// sampled at now: e while the queue stands, 0 otherwise.
func (q *standingQueue) shedOn(now time.Time, e time.Duration) time.Duration {
	if q.limit <= 0 {
		return e
	}
	if e <= q.limit/2 {
		q.highSince = time.Time{}
		return e
	}
	if q.highSince.IsZero() {
		q.highSince = now
	}
	if e >= q.limit || now.Sub(q.highSince) >= standingAfter {
		q.stood = now
		return e
	}
	if !q.stood.IsZero() && now.Sub(q.stood) < rearmFor {
		return e
	}
	return 0
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
