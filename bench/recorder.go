package bench

import (
	"sort"
	"sync"
	"time"
)

// failure says why a request did not succeed; the zero value is success.
type failure struct {
	kind    string // kindHTTP, kindTransport or kindClient
	status  int
	name    string
	message string
}

func (f failure) ok() bool { return f.kind == "" }

// throttled is true for a 429 answer: the proxy shedding load.
func (f failure) throttled() bool { return f.kind == kindHTTP && f.status == 429 }

// wrong is true for the failures that mean the proxy answered incorrectly,
// which fail a run whatever its latency.
func (f failure) wrong() bool {
	return f.kind == kindClient && (f.name == errWrongPlaintext || f.name == errWrongCDIV)
}

const (
	kindHTTP      = "http"
	kindTransport = "transport"
	kindClient    = "client"
)

// The names of client failures.
const (
	errSaturated      = "client-saturated" // the in-flight bound was reached: never sent
	errWrongPlaintext = "wrong-plaintext"  // decrypt answered other bytes than were encrypted
	errWrongCDIV      = "wrong-cdiv"       // the CDIV does not match the answer
	errBadResponse    = "bad-response"     // a 200 answer that is not a valid XKS answer
	errNoCiphertext   = "no-ciphertext"    // a decrypt was due before any encrypt of its key succeeded
)

type errKey struct {
	op     Op
	kind   string
	status int
	name   string
}

type tally struct{ offered, ok, errors, saturated int64 }

func (t *tally) add(f failure) {
	if f.ok() {
		t.ok++
		return
	}
	t.errors++
	if f.kind == kindClient && f.name == errSaturated {
		t.saturated++
	}
}

// all is the index of the every-operation column in per-second arrays.
const all = int(numOps)

// second is one second of the measured window. The counters go by when
// things happened; the histograms by when requests were due. A second's
// histograms are condensed into figures and dropped once the schedule has
// moved past it and none of its requests is still pending, so that memory
// stays bounded however long the run.
type second struct {
	offered, achieved, errors [numOps + 1]int64
	hist                      [numOps + 1]*Histogram
	pending                   int64
	closed                    bool
	count                     [numOps + 1]int64
	p50, p99, max             [numOps + 1]float64
	// lag is how late the bench sent the requests due in this second,
	// condensed into lagP99 and lagMax on close.
	lag            *Histogram
	lagP99, lagMax float64
}

func (s *second) close() {
	if s.lag != nil {
		s.lagP99, s.lagMax = ms(s.lag.Percentile(99)), ms(s.lag.Max())
		s.lag = nil
	}
	for i, h := range s.hist {
		if h != nil {
			s.count[i], s.p50[i], s.p99[i], s.max[i] = h.Count(), ms(h.Percentile(50)), ms(h.Percentile(99)), ms(h.Max())
			s.hist[i] = nil
		}
	}
	s.closed = true
}

// recorder collects the outcome of every request. Requests count as
// measured when they were due inside [measureStart, measureEnd), whenever
// they were sent or finished; earlier ones are warm-up.
type recorder struct {
	mu                       sync.Mutex
	measureStart, measureEnd time.Time

	total, lag *Histogram
	byOp       [numOps]*Histogram
	byKey      []*Histogram
	tTotal     tally
	tOp        [numOps]tally
	tKey       []tally
	errs       map[errKey]*ErrorCount
	seconds    []*second
	closedUpTo int

	warmupDone, warmupErrors int64
	wrong                    int64 // wrong answers, warm-up included
}

func newRecorder(keys int, measureStart, measureEnd time.Time) *recorder {
	r := &recorder{
		measureStart: measureStart, measureEnd: measureEnd,
		total: NewHistogram(), lag: NewHistogram(),
		byKey: make([]*Histogram, keys), tKey: make([]tally, keys),
		errs: map[errKey]*ErrorCount{},
	}
	for i := range r.byOp {
		r.byOp[i] = NewHistogram()
	}
	for i := range r.byKey {
		r.byKey[i] = NewHistogram()
	}
	return r
}

func (r *recorder) measured(due time.Time) bool {
	return !due.Before(r.measureStart) && due.Before(r.measureEnd)
}

func (r *recorder) sec(t time.Time) *second {
	i := 0
	if d := t.Sub(r.measureStart); d > 0 {
		i = int(d / time.Second)
	}
	for len(r.seconds) <= i {
		r.seconds = append(r.seconds, &second{})
	}
	return r.seconds[i]
}

// dispatched notes a request the scheduler issued, sent or not.
func (r *recorder) dispatched(due time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.measured(due) {
		r.sec(due).pending++
	}
}

// sent notes that a request left the bench at time at.
func (r *recorder) sent(key int, op Op, due, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.measured(due) {
		return
	}
	r.tTotal.offered++
	r.tOp[op].offered++
	r.tKey[key].offered++
	s := r.sec(at)
	s.offered[op]++
	s.offered[all]++
	r.lag.Record(at.Sub(due))
	ds := r.sec(due)
	if ds.lag == nil {
		ds.lag = NewHistogram()
	}
	ds.lag.Record(at.Sub(due))
}

// done records a request's end at time at: its latency counts from due.
func (r *recorder) done(key int, op Op, due, at time.Time, f failure) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if f.wrong() {
		r.wrong++
	}
	if !r.measured(due) {
		r.warmupDone++
		if !f.ok() {
			r.warmupErrors++
		}
		return
	}
	latency := at.Sub(due)
	r.total.Record(latency)
	r.byOp[op].Record(latency)
	r.byKey[key].Record(latency)
	r.tTotal.add(f)
	r.tOp[op].add(f)
	r.tKey[key].add(f)
	if !f.ok() {
		k := errKey{op, f.kind, f.status, f.name}
		e := r.errs[k]
		if e == nil {
			e = &ErrorCount{Op: op.String(), Kind: f.kind, Status: f.status, Name: f.name, Sample: f.message}
			r.errs[k] = e
		}
		e.Count++
	}
	ds := r.sec(due)
	for _, i := range []int{int(op), all} {
		if ds.hist[i] == nil {
			ds.hist[i] = NewHistogram()
		}
		ds.hist[i].Record(latency)
	}
	ds.pending--
	as := r.sec(at)
	if f.ok() {
		as.achieved[op]++
		as.achieved[all]++
	} else {
		as.errors[op]++
		as.errors[all]++
	}
}

// closeBefore condenses every second that ends at or before watermark (the
// point every key's schedule has reached) and has nothing pending.
func (r *recorder) closeBefore(watermark time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for ; r.closedUpTo < len(r.seconds); r.closedUpTo++ {
		end := r.measureStart.Add(time.Duration(r.closedUpTo+1) * time.Second)
		s := r.seconds[r.closedUpTo]
		if end.After(watermark) || s.pending > 0 {
			return
		}
		s.close()
	}
}

// progress is the live view printed once a second.
type progress struct {
	ok, errors         int64 // in the whole seconds of the measured window so far
	p50, p99           time.Duration
	lastOK, lastErrors int64 // in the last whole second
	warmupDone         int64
}

// progress counts answers by the second they came in, up to the last whole
// second before now, so that the running totals and the last second's
// figures agree.
func (r *recorder) progress(now time.Time) progress {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := progress{p50: r.total.Percentile(50), p99: r.total.Percentile(99), warmupDone: r.warmupDone}
	last := int(now.Sub(r.measureStart)/time.Second) - 1
	for i := 0; i <= last && i < len(r.seconds); i++ {
		p.ok += r.seconds[i].achieved[all]
		p.errors += r.seconds[i].errors[all]
	}
	if last >= 0 && last < len(r.seconds) {
		p.lastOK, p.lastErrors = r.seconds[last].achieved[all], r.seconds[last].errors[all]
	}
	return p
}

func (r *recorder) stats(t tally, h *Histogram, requested int64, requestedRate, seconds float64, full bool) Stats {
	s := Stats{
		Requested: requested, Offered: t.offered, OK: t.ok, Errors: t.errors, ClientSaturated: t.saturated,
		RequestedRate: round(requestedRate, 3), LatencyMs: h.Summary(),
	}
	if seconds > 0 {
		s.OfferedRate = round(float64(t.offered)/seconds, 3)
		s.AchievedRate = round(float64(t.ok)/seconds, 3)
	}
	if n := t.ok + t.errors; n > 0 {
		s.ErrorRate = round(float64(t.errors)/float64(n), 9)
	}
	if full {
		s.PercentileCurve = h.Curve()
		// Encoding an in-memory histogram cannot fail; an empty string only
		// drops an optional field.
		s.HDR, _ = h.Encode()
	}
	return s
}

// fill writes the recorded figures into res. requested holds each logical
// key's scheduled request count in the measured window, rates its rate.
func (r *recorder) fill(res *Result, mix Mix, keyNames, keyIDs []string, requested []int64, rates []float64, seconds float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.seconds {
		if !s.closed {
			s.close()
		}
	}
	var reqTotal int64
	var rateTotal float64
	res.Keys = nil
	for k := range keyNames {
		reqTotal += requested[k]
		rateTotal += rates[k]
		res.Keys = append(res.Keys, KeyStats{Key: keyNames[k], KeyID: keyIDs[k],
			Stats: r.stats(r.tKey[k], r.byKey[k], requested[k], rates[k], seconds, false)})
	}
	res.Totals = r.stats(r.tTotal, r.total, reqTotal, rateTotal, seconds, true)
	res.Operations = map[string]Stats{}
	for _, op := range Ops() {
		if mix[op] == 0 {
			continue
		}
		share := mix.Share(op)
		res.Operations[op.String()] = r.stats(r.tOp[op], r.byOp[op],
			int64(float64(reqTotal)*share+0.5), rateTotal*share, seconds, true)
	}
	res.Errors = []ErrorCount{}
	for _, e := range r.errs {
		res.Errors = append(res.Errors, *e)
	}
	sort.Slice(res.Errors, func(i, j int) bool {
		a, b := res.Errors[i], res.Errors[j]
		if a.Count != b.Count {
			return a.Count > b.Count
		}
		if a.Op != b.Op {
			return a.Op < b.Op
		}
		return a.Name < b.Name
	})
	res.GeneratorLagMs = r.lag.Summary()
	res.Timeseries = []SecondRow{}
	for i, s := range r.seconds {
		cols := []int{all}
		for _, op := range Ops() {
			if mix[op] > 0 {
				cols = append(cols, int(op))
			}
		}
		for _, c := range cols {
			name := "all"
			if c != all {
				name = Op(c).String()
			}
			row := SecondRow{Second: i, Op: name,
				Offered: s.offered[c], Achieved: s.achieved[c], Errors: s.errors[c],
				Count: s.count[c], P50Ms: s.p50[c], P99Ms: s.p99[c], MaxMs: s.max[c]}
			if c == all {
				row.LagP99Ms, row.LagMaxMs = s.lagP99, s.lagMax
			}
			res.Timeseries = append(res.Timeseries, row)
		}
	}
}
