package xksapi

import (
	"math"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

func TestWindowQuantile(t *testing.T) {
	buckets := []float64{0, 0.001, 0.002, 0.004, 0.008}
	zero := []uint64{0, 0, 0, 0}
	cases := []struct {
		name         string
		prev, counts []uint64
		q, want      float64
	}{
		{"nothing happened", []uint64{50, 50, 50, 50}, []uint64{50, 50, 50, 50}, 0.9, 0},
		{"too few events to say", zero, []uint64{0, 0, 0, 31}, 0.9, 0},
		{"only the window counts", []uint64{1000, 0, 0, 0}, []uint64{1000, 10, 10, 80}, 0.9, 0.004},
		{"median", zero, []uint64{40, 20, 20, 20}, 0.5, 0.001},
		{"all in the top bucket", []uint64{7, 7, 7, 0}, []uint64{7, 7, 7, 32}, 0.9, 0.004},
	}
	for _, tc := range cases {
		if got := windowQuantile(tc.prev, tc.counts, buckets, tc.q, cpuWaitMinEvents); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
	// The runtime's first bucket starts at minus infinity.
	if got := windowQuantile([]uint64{0, 0}, []uint64{40, 0}, []float64{math.Inf(-1), 0.001, 0.002}, 0.5, cpuWaitMinEvents); got != 0 {
		t.Errorf("a wait in the bucket from minus infinity: got %v, want 0", got)
	}
}

func TestShouldShed(t *testing.T) {
	const limit = 60 * time.Millisecond
	const trials = 20000
	share := func(wait, limit time.Duration) float64 {
		n := 0
		for range trials {
			if shouldShed(wait, limit) {
				n++
			}
		}
		return float64(n) / trials
	}
	for _, tc := range []struct {
		wait     time.Duration
		lo, hi   float64
		describe string
	}{
		{0, 0, 0, "idle"},
		{30 * time.Millisecond, 0, 0, "expected wait at half the limit"},
		{45 * time.Millisecond, 0.45, 0.55, "three quarters of the limit"},
		{60 * time.Millisecond, 1, 1, "at the limit"},
		{time.Second, 1, 1, "far over"},
	} {
		if got := share(tc.wait, limit); got < tc.lo || got > tc.hi {
			t.Errorf("%s (expected wait %v): shed %.3f, want [%.2f, %.2f]", tc.describe, tc.wait, got, tc.lo, tc.hi)
		}
	}
	if share(time.Second, -1) != 0 {
		t.Error("a negative limit must turn shedding off")
	}
}

func TestExpectedWait(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct{ probe, sched, inHandler, want time.Duration }{
		{0, 0, 0, 0},
		{30 * ms, 1 * ms, 2 * ms, 32 * ms}, // connections wait to be seen readable
		{0, 4 * ms, 0, 4 * ms},             // no probe back yet: the scheduler's wait
		{5 * ms, 10 * ms, 20 * ms, 30 * ms},
	} {
		if got := expectedWait(tc.probe, tc.sched, tc.inHandler); got != tc.want {
			t.Errorf("expectedWait(%v, %v, %v) = %v, want %v", tc.probe, tc.sched, tc.inHandler, got, tc.want)
		}
	}
}

// Every duration falls in the bucket whose bounds hold it, and the buckets
// are a quarter of an octave wide at most (a microsecond below 4µs).
func TestHandlerTimeBuckets(t *testing.T) {
	for _, us := range []int64{0, 1, 3, 4, 5, 7, 8, 9, 15, 16, 100, 999, 1000, 12345, 250000, 1 << 28, 1<<29 - 1} {
		d := time.Duration(us) * time.Microsecond
		i := handlerTimeBucket(d)
		lo, hi := handlerTimeBounds[i], handlerTimeBounds[i+1]
		if s := d.Seconds(); s < lo || s >= hi {
			t.Errorf("%dµs went to bucket %d, [%v, %v) s", us, i, lo, hi)
		}
		if lo >= 4e-6 && hi/lo > 1.26 {
			t.Errorf("bucket %d is [%v, %v) s: wider than a quarter octave", i, lo, hi)
		}
	}
	if got := handlerTimeBucket(time.Hour); got != handlerTimeBuckets-1 {
		t.Errorf("an hour went to bucket %d, want the last, %d", got, handlerTimeBuckets-1)
	}
	if got := handlerTimeBucket(-time.Second); got != 0 {
		t.Errorf("a negative time went to bucket %d, want 0", got)
	}
}

// When admitted requests take long in the handler, the estimate says so
// within a window, and forgets it once they stop.
func TestCPUWaitFollowsHandlerTimes(t *testing.T) {
	var h handlerTimes
	c := startCPUWait(&h, 0)
	defer c.close()
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
				// In tens, so that a window holds enough of them even
				// when a busy machine fires the timer late.
				for range 10 {
					h.observe(40 * time.Millisecond)
				}
			}
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for c.current() < 32*time.Millisecond && time.Now().Before(deadline) {
		time.Sleep(cpuWaitSample)
	}
	close(stop)
	if w := c.current(); w < 32*time.Millisecond {
		t.Fatalf("requests taking 40ms in the handler: estimate %v", w)
	}
	deadline = time.Now().Add(5 * time.Second)
	for c.current() >= 32*time.Millisecond && time.Now().Before(deadline) {
		time.Sleep(cpuWaitSample)
	}
	if w := c.current(); w >= 32*time.Millisecond {
		t.Fatalf("the estimate stayed at %v after the slow requests stopped", w)
	}
}

// A probe counts from its write: while it waits to be read its age is the
// wait, and once read, the time it took.
func TestProbeMeasuresTheWaitToBeRead(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	c := &cpuWait{probeR: r, probeW: w}
	defer r.Close()
	defer w.Close()
	if got := c.probe(); got != 0 {
		t.Fatalf("first probe = %v, want 0", got)
	}
	time.Sleep(30 * time.Millisecond)
	if got := c.probe(); got < 30*time.Millisecond {
		t.Fatalf("a probe unread for 30ms reports %v", got)
	}
	go c.readProbes()
	deadline := time.Now().Add(5 * time.Second)
	for c.probeSent.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if d := time.Duration(c.probeDelay.Load()); d < 30*time.Millisecond {
		t.Fatalf("the probe read after 30ms took %v", d)
	}
}

// The scheduler's wait rises when runnable goroutines outnumber the CPUs,
// as they do on an overloaded server (many connections, each needing a
// little CPU per request), and falls back once they are gone.
func TestCPUWaitFollowsSaturation(t *testing.T) {
	c := startCPUWait(new(handlerTimes), 0)
	defer c.close()
	var stop atomic.Bool
	workers := 128 * runtime.GOMAXPROCS(0)
	done := make(chan struct{}, workers)
	for range workers {
		go func() {
			defer func() { done <- struct{}{} }()
			for !stop.Load() {
				for start := time.Now(); time.Since(start) < 100*time.Microsecond; {
				}
				runtime.Gosched()
			}
		}()
	}
	var peak time.Duration
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && peak < 5*time.Millisecond {
		time.Sleep(cpuWaitSample)
		peak = max(peak, c.current())
	}
	stop.Store(true)
	for range workers {
		<-done
	}
	if peak < 5*time.Millisecond {
		t.Fatalf("CPU wait with %d goroutines busy on %d CPUs peaked at %v", workers, runtime.GOMAXPROCS(0), peak)
	}
	t.Logf("saturated: %v", peak)
	deadline = time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && c.current() >= time.Millisecond {
		time.Sleep(cpuWaitSample)
	}
	if w := c.current(); w >= time.Millisecond {
		t.Fatalf("CPU wait stayed at %v after the load stopped", w)
	}
}

// A rise of the estimate that a stall leaves behind is not shed on; one
// that lasts, or reaches the limit, is; and after that, a new rise is shed
// on at once for a while. The rises let through that way do not prolong
// the while: stalls come a few times a second under a CPU quota.
func TestStandingQueue(t *testing.T) {
	const limit = 100 * time.Millisecond
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	q := standingQueue{limit: limit}
	steps := []struct {
		at, estimate, want int // ms
	}{
		{0, 10, 10},   // below half the limit: passed on, as it sheds nothing
		{10, 70, 0},   // a rise begins
		{50, 90, 0},   // 40 ms old: a stall's rise, held back
		{60, 20, 20},  // drained by itself
		{70, 80, 0},   // a new rise starts its own clock
		{160, 80, 0},  // 90 ms old
		{170, 85, 85}, // 100 ms old: it stands
		{180, 60, 60},
		{190, 40, 40}, // shedding drained it
		{600, 70, 70}, // within rearmFor of the last standing sample (180): at once
		{610, 20, 20},
		{1100, 70, 70}, // still within it; a rise let through does not renew it
		{1110, 20, 20},
		{1190, 70, 0}, // 1010 ms after 180: a fresh rise again, though 1100 was let through
		{1200, 20, 20},
		{1700, 20, 20},
		{1710, 70, 0},    // a fresh rise
		{1720, 100, 100}, // at the limit: at once, whatever its age
		{2000, 70, 70},   // within rearmFor of 1720
	}
	for _, s := range steps {
		if got := q.shedOn(at(s.at), ms(s.estimate)); got != ms(s.want) {
			t.Fatalf("at %d ms, estimate %d ms: shed on %v, want %v", s.at, s.estimate, got, ms(s.want))
		}
	}
}

// The shedder acts on the standing queue's figure, the gauge shows the
// estimate: a stall's rise shows on the gauge and refuses nothing.
func TestShedsOnTheStandingQueueOnly(t *testing.T) {
	s := &Server{cfg: Config{OverloadWait: 100 * time.Millisecond}}
	c := &cpuWait{}
	s.cpu.Store(c)
	c.ns.Store(int64(time.Second))
	if s.shedForCPU() {
		t.Fatal("shed on a rise that does not stand")
	}
	if got := s.cpuWaitNow(); got != time.Second {
		t.Fatalf("the gauge reads %v, want the estimate, 1s", got)
	}
	c.shedNS.Store(int64(time.Second))
	if !s.shedForCPU() {
		t.Fatal("not shed on a standing queue at ten times the limit")
	}
}
