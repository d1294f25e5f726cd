package bench

import (
	"runtime"
	"syscall"
	"time"
)

// prSetTimerSlack is prctl's PR_SET_TIMERSLACK.
const prSetTimerSlack = 29

// lockDispatcherThread gives the calling goroutine its own OS thread with a
// timer slack of 1ns instead of Linux's default 50µs, so that preciseSleep
// wakes within tens of microseconds of its time. The thread is never
// unlocked: it ends with the goroutine, taking its changed slack with it.
func lockDispatcherThread() {
	runtime.LockOSThread()
	// Best effort: without it sleeps are merely 50µs less precise.
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerSlack, 1, 0)
}

// preciseSleep blocks the thread in nanosleep(2). An interruption by a
// signal returns early; the caller sleeps again for what is left.
func preciseSleep(d time.Duration) {
	ts := syscall.NsecToTimespec(int64(d))
	_ = syscall.Nanosleep(&ts, nil)
}
