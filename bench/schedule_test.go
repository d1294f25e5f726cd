package bench

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// fakeClock is a clock that only moves when told: SleepUntil jumps to the
// wake-up time plus a fixed overshoot (as a real timer wakes a little late),
// and advance simulates the generator being descheduled.
type fakeClock struct {
	mu        sync.Mutex
	now       time.Time
	overshoot time.Duration
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) SleepUntil(ctx context.Context, t time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.After(c.now) {
		c.now = t.Add(c.overshoot)
	}
	return ctx.Err() == nil
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

var epoch = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func TestScheduleEvenlySpacedWithoutDrift(t *testing.T) {
	for _, rate := range []float64{1800, 3, 7, 1e5, 0.5} {
		s := Schedule{Start: epoch, Rate: rate}
		interval := 1e9 / rate
		prev := s.Due(0)
		for i := int64(1); i < 20000; i++ {
			d := s.Due(i)
			if gap := float64(d.Sub(prev)); gap < interval-1 || gap > interval+1 {
				t.Fatalf("rate %g: gap before request %d is %vns, want %.1f±1", rate, i, gap, interval)
			}
			prev = d
		}
		// An hour (or a long way) out, request i is still exactly where i/rate
		// puts it: rounding never adds up.
		n := int64(rate * 3600)
		if got, want := s.Due(n), epoch.Add(time.Hour); got.Sub(want).Abs() > time.Nanosecond {
			t.Errorf("rate %g: request %d due at %v, want %v (drift %v)", rate, n, got, want, got.Sub(want))
		}
	}
}

func TestScheduleIndexAtAndCount(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, rate := range []float64{1800, 3, 1e5, 0.5} {
		s := Schedule{Start: epoch, Rate: rate, Offset: time.Duration(rng.Int64N(int64(1e9 / rate)))}
		for range 2000 {
			at := epoch.Add(time.Duration(rng.Int64N(int64(100 * time.Second))))
			i := s.IndexAt(at)
			if s.Due(i).Before(at) || (i > 0 && !s.Due(i-1).Before(at)) {
				t.Fatalf("rate %g: IndexAt(%v) = %d, due %v; previous due %v", rate, at, i, s.Due(i), s.Due(i-1))
			}
		}
		if got, want := s.Count(epoch.Add(5*time.Second), epoch.Add(15*time.Second)), int64(rate*10); got != want {
			t.Errorf("rate %g: %d requests due in 10s, want %d", rate, got, want)
		}
	}
}

type dispatchLog struct {
	key       []int
	due, sent []time.Time
}

func runFake(t *testing.T, c *fakeClock, schedules []Schedule, end time.Time, during func(n int)) dispatchLog {
	t.Helper()
	var log dispatchLog
	next := make([]int64, len(schedules))
	var published []time.Time
	n := runSchedules(context.Background(), c, schedules, end, func(k int, i int64, due time.Time) bool {
		if i != next[k] {
			t.Fatalf("key %d: request %d dispatched after %d others", k, i, next[k])
		}
		next[k]++
		if len(published) == 0 || published[len(published)-1].After(due) {
			t.Fatalf("request due %v dispatched past the published watermark", due)
		}
		log.key, log.due, log.sent = append(log.key, k), append(log.due, due), append(log.sent, c.Now())
		if during != nil {
			during(len(log.due) - 1)
		}
		return true
	}, func(next time.Time) { published = append(published, next) })
	if n != int64(len(log.due)) {
		t.Fatalf("runSchedules reported %d dispatches, saw %d", n, len(log.due))
	}
	for i := 1; i < len(published); i++ {
		if published[i].Before(published[i-1]) {
			t.Fatalf("published progress went back from %v to %v", published[i-1], published[i])
		}
	}
	return log
}

func TestRunScheduleSendsEveryRequestOnTime(t *testing.T) {
	c := &fakeClock{now: epoch, overshoot: 37 * time.Microsecond}
	s := Schedule{Start: epoch, Rate: 1000}
	log := runFake(t, c, []Schedule{s}, epoch.Add(time.Second), nil)
	if len(log.due) != 1000 {
		t.Fatalf("%d requests dispatched in 1s at 1000/s", len(log.due))
	}
	for i := range log.due {
		if !log.due[i].Equal(s.Due(int64(i))) {
			t.Fatalf("request %d carries intended time %v, schedule says %v", i, log.due[i], s.Due(int64(i)))
		}
		if lag := log.sent[i].Sub(log.due[i]); lag < 0 || lag > 37*time.Microsecond {
			t.Fatalf("request %d sent %v after its time", i, lag)
		}
	}
	// Each wake-up overshoots by 37µs, yet the last request is still due
	// exactly at 999ms: oversleeping does not push the schedule.
	if got := log.due[999].Sub(epoch); got != 999*time.Millisecond {
		t.Fatalf("last request due at +%v, want +999ms", got)
	}
}

func TestRunScheduleCatchesUpHonestly(t *testing.T) {
	c := &fakeClock{now: epoch}
	s := Schedule{Start: epoch, Rate: 1000}
	// The generator loses 100ms right after request 200 (a GC pause, a
	// descheduled thread).
	log := runFake(t, c, []Schedule{s}, epoch.Add(time.Second), func(i int) {
		if i == 200 {
			c.advance(100 * time.Millisecond)
		}
	})
	if len(log.due) != 1000 {
		t.Fatalf("%d requests dispatched, want all 1000 (catching up, none skipped)", len(log.due))
	}
	burst := 0
	for i := 201; i < 1000; i++ {
		if !log.due[i].Equal(s.Due(int64(i))) {
			t.Fatalf("request %d moved from its intended time", i)
		}
		lag := log.sent[i].Sub(log.due[i])
		if lag > 0 {
			burst++
			// Sent all at once at +300ms: each carries exactly how late it was.
			if want := epoch.Add(300 * time.Millisecond).Sub(log.due[i]); lag != want {
				t.Fatalf("request %d: lag %v, want %v", i, lag, want)
			}
		}
	}
	if burst != 99 {
		t.Fatalf("%d requests were sent late, want the 99 due during the pause", burst)
	}

	// The recorder turns that lag into latency: a request answered at once
	// but sent 99ms late has a 99ms latency.
	rec := newRecorder(1, epoch, epoch.Add(time.Second))
	for i := range log.due {
		rec.dispatched(log.due[i])
		rec.sent(0, OpEncrypt, log.due[i], log.sent[i])
		rec.done(0, OpEncrypt, log.due[i], log.sent[i], failure{})
	}
	if got := rec.lag.Max(); got < 98*time.Millisecond || got > 100*time.Millisecond {
		t.Errorf("generator lag max %v, want 99ms", got)
	}
	if got := rec.total.Percentile(95); got < 40*time.Millisecond {
		t.Errorf("latency p95 %v hides the 99 late requests", got)
	}
}

func TestRunScheduleGivesUpWhenTooFarBehind(t *testing.T) {
	c := &fakeClock{now: epoch}
	s := Schedule{Start: epoch, Rate: 1000}
	end := epoch.Add(time.Second)
	log := runFake(t, c, []Schedule{s}, end, func(i int) {
		if i == 500 {
			c.advance(2 * time.Second)
		}
	})
	// The clock is past end+lateCutoff: the remaining requests were never
	// offered, and Count still says 1000 were requested.
	if len(log.due) != 501 {
		t.Fatalf("%d requests dispatched, want 501", len(log.due))
	}
	if got := s.Count(epoch, end); got != 1000 {
		t.Fatalf("requested %d", got)
	}
}

func TestRunSchedulesInterleavesKeys(t *testing.T) {
	c := &fakeClock{now: epoch, overshoot: 10 * time.Microsecond}
	// Three keys at 300/s, offset by a third of an interval each, as Run
	// spreads them: together an even 900/s.
	var schedules []Schedule
	for k := range 3 {
		schedules = append(schedules, Schedule{Start: epoch, Rate: 300, Offset: time.Duration(k) * time.Second / 900})
	}
	log := runFake(t, c, schedules, epoch.Add(time.Second), nil)
	if len(log.due) != 900 {
		t.Fatalf("%d requests dispatched, want 900", len(log.due))
	}
	var perKey [3]int
	for i := range log.due {
		perKey[log.key[i]]++
		if i > 0 {
			if gap := log.due[i].Sub(log.due[i-1]); gap < 1111*time.Microsecond || gap > 1112*time.Microsecond {
				t.Fatalf("gap %v between requests %d and %d, want 1/900 s", gap, i-1, i)
			}
			if log.key[i] != (log.key[i-1]+1)%3 {
				t.Fatalf("keys dealt out of turn at %d", i)
			}
		}
	}
	if perKey != [3]int{300, 300, 300} {
		t.Fatalf("per key %v", perKey)
	}
}

func TestRecorderClosesSecondsOnlyWhenDone(t *testing.T) {
	rec := newRecorder(1, epoch, epoch.Add(3*time.Second))
	due := epoch.Add(500 * time.Millisecond)
	rec.dispatched(due)
	rec.sent(0, OpEncrypt, due, due)
	rec.closeBefore(epoch.Add(2 * time.Second))
	if rec.seconds[0].closed {
		t.Fatal("second 0 closed while its request is pending")
	}
	rec.done(0, OpEncrypt, due, epoch.Add(1500*time.Millisecond), failure{})
	rec.closeBefore(epoch.Add(2 * time.Second))
	s := rec.seconds[0]
	if !s.closed || s.hist[all] != nil || s.count[all] != 1 || s.max[all] < 999 || s.max[all] > 1001 {
		t.Fatalf("second 0 after close: %+v", s)
	}
	if rec.seconds[1].achieved[all] != 1 {
		t.Fatal("the answer belongs to second 1, when it arrived")
	}
}
