package hsm

import (
	"errors"
	"fmt"
	"time"
)

// Status is the HSM's health as the XKS health API reports it.
type Status int

// The zero Status is deliberately none of these, so that an unset Health
// never reads as healthy.
const (
	// StatusActive: the last deep check passed.
	StatusActive Status = iota + 1
	// StatusDegraded: the HSM answers, but slowly or under saturation (the
	// probe timed out or found no free session, or calls have outlived
	// CallTimeout and are still running).
	StatusDegraded
	// StatusUnavailable: the HSM failed; crypto is refused with
	// ErrUnavailable while the monitor recovers.
	StatusUnavailable
)

func (s Status) String() string {
	switch s {
	case StatusActive:
		return "ACTIVE"
	case StatusDegraded:
		return "DEGRADED"
	case StatusUnavailable:
		return "UNAVAILABLE"
	}
	return "UNKNOWN"
}

// Health is the result of the last deep check or observed failure.
type Health struct {
	Status    Status
	CheckedAt time.Time
	// Err says briefly what is wrong; empty when ACTIVE. It never holds
	// secrets.
	Err string
}

// state is what the hot path reads with one atomic load.
type state struct {
	Health
	// down, when set, is returned to every caller without touching the HSM;
	// a non-closed down state means recovery is needed.
	down   error
	closed bool
}

const (
	// probeWait is how long the deep check waits for a session: longer
	// than WaitTimeout, so that a saturated but healthy HSM is not reported
	// as failing merely because request traffic holds every session.
	probeWait = time.Second
	// probePassTTL is how long a passing probe vouches for the HSM when a
	// decrypt fails ambiguously, so that a flood of bad ciphertexts does
	// not double the HSM's load with probes.
	probePassTTL = time.Second
	// Recovery attempts back off between these bounds (both capped at
	// HealthInterval).
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// Health returns the cached result of the last check. It never calls the HSM.
func (h *HSM) Health() Health {
	return h.st.Load().Health
}

// CheckNow runs the deep check synchronously (recovering first if the HSM is
// down) and returns its result, which also becomes the cached Health.
func (h *HSM) CheckNow() Health {
	return h.check()
}

// setHealth stores next unless the HSM is closed, or unless a failure is
// waiting for recovery and force is false: a passing probe on one session
// must not hide a failure another session just reported.
func (h *HSM) setHealth(next *state, force bool) {
	h.healthMu.Lock()
	defer h.healthMu.Unlock()
	if cur := h.st.Load(); cur != nil && (cur.closed || (cur.down != nil && !force)) {
		return
	}
	h.st.Store(next)
}

// fail records that the token or module failed, makes every caller get
// ErrUnavailable without touching the HSM, and wakes the monitor to recover.
func (h *HSM) fail(cause error) error {
	if errors.Is(cause, ErrUnavailable) {
		return cause
	}
	err := fmt.Errorf("%w: %w", ErrUnavailable, cause)
	h.lastPass.Store(0)
	h.setHealth(&state{Health: Health{Status: StatusUnavailable, CheckedAt: time.Now(), Err: cause.Error()}, down: err}, true)
	select {
	case h.kick <- struct{}{}:
	default:
	}
	return err
}

// now is a monotonic clock reading for lastPass.
func (h *HSM) now() int64 {
	return int64(time.Since(h.epoch))
}

// check is the deep check: recover if down, otherwise a real round trip on
// the health key through the pool.
func (h *HSM) check() Health {
	h.checkMu.Lock()
	defer h.checkMu.Unlock()
	if st := h.st.Load(); st.closed {
		return st.Health
	} else if st.down != nil {
		if err := h.recover(); err != nil {
			h.fail(err)
		}
		return h.Health()
	}
	_, _, err := h.do(getCall(opRevalidate, ""), probeWait)
	if err == nil {
		_, _, err = h.do(getCall(opProbe, h.cfg.HealthKeyLabel), probeWait)
	}
	switch {
	case err == nil:
		next := Health{Status: StatusActive, CheckedAt: time.Now()}
		if n := h.stuck.Load(); n > 0 {
			next.Status, next.Err = StatusDegraded, fmt.Sprintf("%d HSM call(s) outlived CallTimeout and are still running", n)
		}
		h.setHealth(&state{Health: next}, false)
	case errors.Is(err, ErrBusy), errors.Is(err, ErrTimeout):
		h.setHealth(&state{Health: Health{Status: StatusDegraded, CheckedAt: time.Now(), Err: err.Error()}}, false)
	default:
		// Anything else (including a missing health key or a wrong
		// round-trip result) needs the recovery path, which also
		// re-creates the health key.
		h.fail(err)
	}
	return h.Health()
}

// recover brings h back. While another HSM of the same module serves, the
// module evidently works, so h first reconnects alone (see
// sharedModule.reconnect): a token that fails its operations (a partition
// of a network HSM answering CKR_DEVICE_ERROR) is retried without touching
// the others. Otherwise, or when h cannot even reach its token, it
// re-initialises the module and re-opens the pool, together with every
// other HSM of the module (see sharedModule.reinit). That holds every
// session of every one of them while it works: C_Finalize while another
// thread is inside the module is undefined behaviour, and holding the pools
// is how this package keeps every other goroutine out.
//
// SoftHSMv2 needs the C_Finalize/C_Initialize: once a token's directory has
// vanished, C_GetTokenInfo keeps failing with CKR_GENERAL_ERROR even after
// the directory is back, until the library is initialised again. It is also
// the only portable way to make a module rescan its slots.
func (h *HSM) recover() error {
	if done, err := h.shared.reconnect(h); done {
		return err
	}
	return h.shared.reinit(h)
}

// collect takes every session out of the pool. It waits up to twice
// CallTimeout (at least a second) for running calls to bring theirs back;
// a call still running then is treated as hung.
func (h *HSM) collect() ([]*session, error) {
	wait := max(time.Second, 2*h.cfg.CallTimeout)
	held := make([]*session, 0, len(h.sessions))
	t := time.NewTimer(wait)
	defer t.Stop()
	for len(held) < len(h.sessions) {
		select {
		case s := <-h.free:
			held = append(held, s)
		case <-t.C:
			return held, fmt.Errorf("hsm: %d of %d sessions still busy in HSM calls after %v", len(h.sessions)-len(held), len(h.sessions), wait)
		}
	}
	return held, nil
}

// release puts sessions taken by collect back into the pool.
func (h *HSM) release(held []*session) {
	for _, s := range held {
		h.free <- s
	}
}

// monitor runs the deep check every HealthInterval, and recovery with
// exponential back-off while the HSM is down. A failing call wakes it early,
// but never sooner than minBackoff after the previous attempt, so a burst of
// failures cannot turn into a storm of re-initialisations.
func (h *HSM) monitor() {
	defer close(h.monitorDone)
	lo, hi := min(minBackoff, h.cfg.HealthInterval), min(maxBackoff, h.cfg.HealthInterval)
	backoff := lo
	last := time.Now()
	next := last.Add(h.cfg.HealthInterval)
	t := time.NewTimer(h.cfg.HealthInterval)
	defer t.Stop()
	for {
		select {
		case <-h.closing:
			return
		case <-h.kick:
			if soon := last.Add(lo); soon.Before(next) {
				next = soon
				t.Reset(max(0, time.Until(next)))
			}
			continue
		case <-t.C:
		}
		hl := h.check()
		last = time.Now()
		// A failure reported during the check is covered by its result.
		select {
		case <-h.kick:
		default:
		}
		wait := h.cfg.HealthInterval
		if hl.Status == StatusUnavailable {
			wait = backoff
			backoff = min(2*backoff, hi)
		} else {
			backoff = lo
		}
		next = last.Add(wait)
		t.Reset(wait)
	}
}
