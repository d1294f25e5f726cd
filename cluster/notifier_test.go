package cluster

import (
	"context"
	"sync"
	"testing"
	"time"
)

func TestIndexNotifierWakesEachWaiterAtItsTarget(t *testing.T) {
	var w indexNotifier
	early, releaseEarly := w.Reached(3)
	defer releaseEarly()
	late, releaseLate := w.Reached(7)
	defer releaseLate()
	w.Advance(2)
	select {
	case <-early:
		t.Fatal("target 3 reached at index 2")
	default:
	}
	w.Advance(5)
	select {
	case <-early:
	default:
		t.Fatal("target 3 not reached at index 5")
	}
	select {
	case <-late:
		t.Fatal("target 7 reached at index 5")
	default:
	}
	w.Advance(4) // lower: changes nothing
	if w.Index() != 5 {
		t.Fatalf("index %d after advancing to 5 then 4", w.Index())
	}
	w.Advance(7)
	select {
	case <-late:
	default:
		t.Fatal("target 7 not reached at index 7")
	}
	if n := w.waiting(); n != 0 {
		t.Fatalf("%d waiters left registered after every target was reached", n)
	}
}

func TestIndexNotifierAnswersAReachedTargetAtOnce(t *testing.T) {
	var w indexNotifier
	w.Advance(10)
	if !w.Wait(context.Background(), 10) || !w.Wait(context.Background(), 1) {
		t.Fatal("a reached target was not answered")
	}
	if n := w.waiting(); n != 0 {
		t.Fatalf("%d waiters registered for reached targets", n)
	}
}

func TestIndexNotifierForgetsAWaiterThatGivesUp(t *testing.T) {
	var w indexNotifier
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if w.Wait(ctx, 1) {
		t.Fatal("index 1 reached without an advance")
	}
	if n := w.waiting(); n != 0 {
		t.Fatalf("%d waiters left registered after giving up", n)
	}
}

func TestIndexNotifierUnderConcurrentWaitersAndAdvances(t *testing.T) {
	var w indexNotifier
	const waiters, top = 50, 200
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	failed := make(chan uint64, waiters)
	for i := range waiters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			target := uint64(i*top/waiters + 1)
			if !w.Wait(ctx, target) || w.Index() < target {
				failed <- target
			}
		}()
	}
	for i := uint64(1); i <= top; i++ {
		w.Advance(i)
	}
	wg.Wait()
	close(failed)
	for target := range failed {
		t.Errorf("waiter for %d was not woken at %d", target, top)
	}
}
