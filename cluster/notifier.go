package cluster

import (
	"context"
	"sync"
	"sync/atomic"
)

// indexNotifier follows an index that only grows (the FSM's applied index,
// the published view's, the reconciler's) and wakes whoever waits for it to
// reach a target: one channel per waiter, closed when the index gets there,
// in place of loops that read the index every few milliseconds. rqlite's
// ReadyTarget is the model.
type indexNotifier struct {
	index   atomic.Uint64
	mu      sync.Mutex
	waiters map[chan struct{}]uint64 // channel -> its target
}

// Index is the index reached so far.
func (w *indexNotifier) Index() uint64 { return w.index.Load() }

// Advance records that index is reached and wakes the waiters it satisfies.
// An index lower than one already reached changes nothing. It never blocks
// (raft's FSM goroutine calls it).
func (w *indexNotifier) Advance(index uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if index <= w.index.Load() {
		return
	}
	w.index.Store(index)
	for ch, target := range w.waiters {
		if target <= index {
			close(ch)
			delete(w.waiters, ch)
		}
	}
}

// Reached returns a channel closed once the index is at least target, and
// release, which the caller calls when it stops waiting (a waiter that
// gives up must not stay registered).
func (w *indexNotifier) Reached(target uint64) (reached <-chan struct{}, release func()) {
	ch := make(chan struct{})
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.index.Load() >= target {
		close(ch)
		return ch, func() {}
	}
	if w.waiters == nil {
		w.waiters = map[chan struct{}]uint64{}
	}
	w.waiters[ch] = target
	return ch, func() {
		w.mu.Lock()
		delete(w.waiters, ch)
		w.mu.Unlock()
	}
}

// Wait waits until the index is at least target; false when ctx ends first.
func (w *indexNotifier) Wait(ctx context.Context, target uint64) bool {
	reached, release := w.Reached(target)
	defer release()
	select {
	case <-reached:
		return true
	case <-ctx.Done():
		return false
	}
}

// waiting is how many waiters are registered (for tests).
func (w *indexNotifier) waiting() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.waiters)
}
