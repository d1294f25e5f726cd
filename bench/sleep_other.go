//go:build !linux

package bench

import "time"

// lockDispatcherThread has nothing to tune outside Linux.
func lockDispatcherThread() {}

// preciseSleep falls back to the runtime's timers outside Linux.
func preciseSleep(d time.Duration) { time.Sleep(d) }
