package bench

import (
	"container/heap"
	"context"
	"math"
	"time"
)

// Clock is the time source of the scheduler; tests drive a fake one.
type Clock interface {
	Now() time.Time
	// SleepUntil returns at t (at once if t has passed), or false as soon as
	// ctx is done.
	SleepUntil(ctx context.Context, t time.Time) bool
}

// realClock sleeps precisely: Go timers fire on whole milliseconds when the
// process is otherwise idle (the runtime's poller waits in milliseconds),
// which at 1800 requests/s would send the average request half a
// millisecond late and add that to every latency. So the last stretch of
// each wait is a precise sleep (see preciseSleep), and only longer waits,
// which need to be cancellable, use a timer.
type realClock struct{}

// preciseBelow is the wait below which realClock sleeps precisely.
const preciseBelow = 2 * time.Millisecond

func (realClock) Now() time.Time { return time.Now() }

func (realClock) SleepUntil(ctx context.Context, t time.Time) bool {
	for {
		if ctx.Err() != nil {
			return false
		}
		d := time.Until(t)
		if d <= 0 {
			return true
		}
		if d <= preciseBelow {
			preciseSleep(d)
			continue
		}
		timer := time.NewTimer(d - preciseBelow)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return false
		}
	}
}

// Schedule is one key's fixed, open-loop arrival schedule: request i is due
// at Start + Offset + i/Rate, whatever happened to the requests before it.
// Each due time is computed from i by multiplication, never by adding up
// intervals, so rounding cannot accumulate into drift.
type Schedule struct {
	Start  time.Time
	Rate   float64       // requests per second, > 0
	Offset time.Duration // this key's phase, so that keys do not fire in lockstep
}

// Due is the intended send time of request i.
func (s Schedule) Due(i int64) time.Time {
	return s.Start.Add(s.Offset + time.Duration(math.Round(float64(i)*1e9/s.Rate)))
}

// IndexAt is the index of the first request due at or after t.
func (s Schedule) IndexAt(t time.Time) int64 {
	elapsed := t.Sub(s.Start) - s.Offset
	if elapsed <= 0 {
		return 0
	}
	i := int64(math.Ceil(elapsed.Seconds() * s.Rate))
	// The float estimate can be one off either way; settle it exactly
	// against Due, which is the definition.
	for i > 0 && !s.Due(i-1).Before(t) {
		i--
	}
	for s.Due(i).Before(t) {
		i++
	}
	return i
}

// Count is the number of requests due in [from, to).
func (s Schedule) Count(from, to time.Time) int64 {
	if !to.After(from) {
		return 0
	}
	return s.IndexAt(to) - s.IndexAt(from)
}

// lateCutoff is how far past the end of the run a dispatcher that fell behind
// may still send requests that were due before the end (their lateness is in
// their latency). A generator that cannot keep up falls ever further behind
// and reaches it; the requests it never sent lower the offered rate, which
// makes the run INVALID.
const lateCutoff = time.Second

// runSchedules calls dispatch for every request of every schedule due
// before end, in due order, each at (or, when the caller falls behind, as
// soon as possible after) its due time, passing the due time itself: a late
// dispatch keeps its place on the schedule, so the lateness is counted in
// its latency rather than hidden (no coordinated omission). It stops early
// when ctx ends, when dispatch returns false, or when the clock passes
// end+lateCutoff. Before each wait, published learns the due time of the
// next request: every request due earlier has been dispatched. It returns
// how many requests it dispatched.
//
// One loop serves every key, so that one thread does all the waiting; see
// lockDispatcherThread.
func runSchedules(ctx context.Context, clock Clock, schedules []Schedule, end time.Time,
	dispatch func(key int, i int64, due time.Time) bool, published func(next time.Time)) int64 {
	h := make(dueHeap, 0, len(schedules))
	for k, s := range schedules {
		if due := s.Due(0); due.Before(end) {
			h = append(h, dueEntry{key: k, due: due})
		}
	}
	heap.Init(&h)
	var n int64
	for h.Len() > 0 {
		e := h[0]
		published(e.due)
		if !clock.SleepUntil(ctx, e.due) {
			break
		}
		if !clock.Now().Before(end.Add(lateCutoff)) {
			break
		}
		if !dispatch(e.key, e.i, e.due) {
			break
		}
		n++
		if next := schedules[e.key].Due(e.i + 1); next.Before(end) {
			h[0] = dueEntry{key: e.key, i: e.i + 1, due: next}
			heap.Fix(&h, 0)
		} else {
			heap.Pop(&h)
		}
	}
	published(end)
	return n
}

// dueEntry is the next request of one schedule.
type dueEntry struct {
	key int
	i   int64
	due time.Time
}

// dueHeap orders the schedules' next requests by due time (then key, so
// that ties are dealt the same way every run).
type dueHeap []dueEntry

func (h dueHeap) Len() int { return len(h) }
func (h dueHeap) Less(a, b int) bool {
	if !h[a].due.Equal(h[b].due) {
		return h[a].due.Before(h[b].due)
	}
	return h[a].key < h[b].key
}
func (h dueHeap) Swap(a, b int) { h[a], h[b] = h[b], h[a] }
func (h *dueHeap) Push(x any)   { *h = append(*h, x.(dueEntry)) }
func (h *dueHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
