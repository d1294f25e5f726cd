package hsm

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/pkcs11"
)

const sessionFlags = pkcs11.CKF_SERIAL_SESSION | pkcs11.CKF_RW_SESSION

// session is one pooled PKCS#11 session and the worker goroutine that owns
// it. A cgo call cannot be interrupted, so the call runs on the worker and
// the caller only waits for it; a caller that gives up leaves the worker to
// finish and return the session to the pool.
type session struct {
	h    pkcs11.SessionHandle
	jobs chan *call
	// mech is a reusable one-element mechanism list, saving an allocation
	// per operation.
	mech []*pkcs11.Mechanism
	// idx is the session's place in the pool, its slot in cachedKey.copies.
	idx int
	// key is the key handle the current operation uses (see forget).
	key pkcs11.ObjectHandle
}

func newSession(idx int) *session {
	// jobs never holds more than one call: only the holder of a free
	// session sends, and the worker is idle while its session is free.
	return &session{jobs: make(chan *call, 1), mech: make([]*pkcs11.Mechanism, 1), idx: idx}
}

type op uint8

const (
	opEncrypt op = iota
	opDecrypt
	opGenerate
	opHasKey
	opProbe
	opImportCluster
	opHasCluster
	opWrapNew
	opUnwrap
	opSeal
	opUnseal
	opDestroy
	opRevalidate
)

func (o op) String() string {
	switch o {
	case opEncrypt:
		return "encrypt"
	case opDecrypt:
		return "decrypt"
	case opGenerate:
		return "generate"
	case opHasKey:
		return "find"
	case opImportCluster:
		return "import cluster keys"
	case opHasCluster:
		return "find cluster keys"
	case opWrapNew:
		return "generate and wrap"
	case opUnwrap:
		return "unwrap"
	case opSeal:
		return "seal"
	case opUnseal:
		return "unseal"
	case opDestroy:
		return "destroy"
	case opRevalidate:
		return "revalidate keys"
	}
	return "probe"
}

// A call's state decides who owns it once the HSM has answered: the caller
// if it was still waiting, the worker if the caller had given up.
const (
	callPending uint32 = iota
	callFinished
	callAbandoned
)

// call is one request handed to a worker. Calls are pooled with their result
// channel and timer, so the hot path allocates neither.
type call struct {
	op    op
	label string
	iv    []byte
	in    []byte // plaintext, ciphertext, ceremony material or wrapped key
	tag   []byte
	aad   []byte
	buf   []byte // ciphertext||tag for C_Decrypt, reused across calls

	out   []byte
	found bool
	err   error

	state atomic.Uint32
	done  chan struct{} // buffered: the worker never blocks on a caller
	timer *time.Timer   // session wait, then call deadline
}

// maxPooledBuf bounds the decrypt buffer kept in a pooled call: XKS
// ciphertexts are at most 4300 bytes plus the tag.
const maxPooledBuf = 8 << 10

var calls = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &call{done: make(chan struct{}, 1), timer: t}
}}

// key is the label of the key whose cached handle c uses.
func (c *call) key() string {
	if c.op == opUnwrap {
		return ClusterKEKLabel
	}
	return c.label
}

func getCall(o op, label string) *call {
	c := calls.Get().(*call)
	c.op, c.label = o, label
	c.state.Store(callPending)
	return c
}

// putCall drops every reference to caller data before pooling the call.
func putCall(c *call) {
	c.label, c.iv, c.in, c.tag, c.aad, c.out, c.found, c.err = "", nil, nil, nil, nil, nil, false, nil
	if cap(c.buf) > maxPooledBuf {
		c.buf = nil
	}
	calls.Put(c)
}

// acquire takes a free session, waiting at most wait. The fast path is a
// plain channel receive; the timer is armed only when the pool is empty.
// Overload is shed by expected wait, not by queue length: a caller whose
// place in the queue, at the average call time, would outlast wait gets
// ErrBusy at once instead of occupying the queue until the deadline. A
// long queue of fast calls is not overload; a short queue of slow ones is.
func (h *HSM) acquire(t *time.Timer, wait time.Duration) (*session, error) {
	select {
	case s := <-h.free:
		return s, nil
	default:
	}
	ahead := h.waiting.Add(1)
	defer h.waiting.Add(-1)
	if h.ExpectedWait(ahead) > wait {
		return nil, ErrBusy
	}
	t.Reset(wait)
	select {
	case s := <-h.free:
		t.Stop()
		return s, nil
	case <-t.C:
		return nil, ErrBusy
	case <-h.closing:
		t.Stop()
		return nil, errClosed
	}
}

// do runs c on a pooled session and waits at most CallTimeout for it. It
// consumes c: the caller must not touch c afterwards.
func (h *HSM) do(c *call, wait time.Duration) ([]byte, bool, error) {
	if down := h.st.Load().down; down != nil {
		putCall(c)
		return nil, false, down
	}
	s, err := h.acquire(c.timer, wait)
	if err != nil {
		putCall(c)
		return nil, false, err
	}
	s.jobs <- c
	c.timer.Reset(h.cfg.CallTimeout)
	select {
	case <-c.done:
		c.timer.Stop()
	case <-c.timer.C:
		// Counted before the hand-over, so that the worker's decrement
		// always follows this increment.
		h.stuck.Add(1)
		if c.state.CompareAndSwap(callPending, callAbandoned) {
			// From here on the worker owns c.
			h.timeouts.Add(1)
			return nil, false, ErrTimeout
		}
		// The worker finished as the deadline passed: take its answer.
		h.stuck.Add(-1)
		<-c.done
	}
	out, found, err := c.out, c.found, c.err
	putCall(c)
	return out, found, err
}

// worker executes the calls sent to s until Close closes s.jobs, which it
// does only while holding s, so no caller can send on the closed channel.
func (h *HSM) worker(s *session) {
	for c := range s.jobs {
		if down := h.st.Load().down; down != nil {
			// The HSM failed after the caller checked; keep the module free
			// for recovery.
			c.err = down
		} else {
			start := time.Now()
			c.out, c.found, c.err = h.exec(s, c)
			h.observeCall(time.Since(start))
		}
		finished := c.state.CompareAndSwap(callPending, callFinished)
		if !finished {
			h.stuck.Add(-1)
			putCall(c)
		}
		// Free the session before waking the caller, so that a caller
		// issuing its next call at once finds it on the fast path.
		h.free <- s
		if finished {
			c.done <- struct{}{}
		}
	}
}

// observeCall folds one call's duration into the moving average. Its
// weight, 1/callAverageWeight, follows a change of load within a few tens
// of calls, while one call stalled by a CPU quota or a preemption (a few
// milliseconds where calls take tens of microseconds) moves it little: at
// 1/8, such stalls on a node under a CPU limit shed requests with queues
// that were draining in time. Concurrent updates may lose one another; the
// average stays an average.
func (h *HSM) observeCall(d time.Duration) {
	old := h.callNS.Load()
	if old == 0 {
		h.callNS.Store(int64(d))
		return
	}
	h.callNS.Store(old + (int64(d)-old)/callAverageWeight)
}

const callAverageWeight = 32

// ExpectedWait estimates how long a caller with queued callers ahead of it
// (itself included) waits for a session: they drain at PoolSize calls per
// average call time.
func (h *HSM) ExpectedWait(queued int64) time.Duration {
	return time.Duration(queued * h.callNS.Load() / int64(h.cfg.PoolSize))
}

// Stats is a snapshot of the pool for monitoring.
type Stats struct {
	// PoolSize is the number of sessions.
	PoolSize int
	// InUse is how many sessions are not free: running a call, or held by
	// recovery or Close.
	InUse int
	// Waiting is how many callers are queued for a session.
	Waiting int
	// ExpectedWait is how long a caller arriving now would expect to wait
	// for a session (see ExpectedWait): 0 while one is free.
	ExpectedWait time.Duration
	// CallAverage is the moving average of one HSM call.
	CallAverage time.Duration
	// Stuck is how many calls have outlived CallTimeout and still run.
	Stuck int
	// Timeouts counts the calls that outlived CallTimeout since Open.
	Timeouts uint64
}

// Stats reads the pool's counters; it never calls the HSM and takes no lock.
// The fields are read one by one, so under load they may disagree slightly.
func (h *HSM) Stats() Stats {
	st := Stats{
		PoolSize:    h.cfg.PoolSize,
		InUse:       h.cfg.PoolSize - len(h.free),
		Waiting:     int(h.waiting.Load()),
		CallAverage: time.Duration(h.callNS.Load()),
		Stuck:       int(h.stuck.Load()),
		Timeouts:    h.timeouts.Load(),
	}
	if st.InUse >= st.PoolSize {
		st.ExpectedWait = h.ExpectedWait(int64(st.Waiting) + 1)
	}
	return st
}
