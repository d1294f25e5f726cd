// Package bench is the XKS load generator behind cmd/xksbench: an
// open-loop scheduler (each request has an intended send time on a fixed
// schedule and its latency counts from that time, so a stalled proxy cannot
// hide behind a stalled generator), SigV4-signed HTTPS keep-alive requests
// through xksclient's independent signer, HDR latency histograms, and
// the Result that the reports in bench/report are drawn from. It imports
// none of the server's packages.
package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Spread says how a key's requests are spread over the endpoints.
type Spread string

// The spreads.
const (
	// SpreadRoundRobin sends each key's consecutive requests to the
	// endpoints in turn, like a load balancer.
	SpreadRoundRobin Spread = "round-robin"
	// SpreadPerNode pins each key to one endpoint (key i to endpoint i mod n).
	SpreadPerNode Spread = "per-node"
)

// Config is one load to generate.
type Config struct {
	Target Target
	// Keys is the number of logical keys, each with its own schedule; when
	// it exceeds the key ids given, ids are reused in turn. 0 means one per
	// key id.
	Keys           int
	RatePerKey     float64 // requests per second per logical key
	Mix            Mix
	PlaintextBytes int
	AADBytes       int
	CDIV           bool // ask for and verify ciphertextDataIntegrityValue
	Warmup         time.Duration
	Duration       time.Duration
	// MaxRequests caps the requests of the whole run, warm-up included; the
	// measured window is shortened to fit. 0 leaves the schedule's own
	// count, rate × keys × (warm-up + duration), as the bound.
	MaxRequests int64
	Connections int // per endpoint
	// Preconnect opens every connection before the run, so that TLS
	// handshakes are not measured; otherwise they open as the load needs
	// them, and a burst of handshakes can land inside the measurement.
	Preconnect   bool
	Spread       Spread
	MaxInFlight  int           // requests outstanding at once, beyond which they count as client-saturated
	Timeout      time.Duration // per request
	Budget       time.Duration // the p99 a PASS needs
	MaxErrorRate float64       // the error fraction a PASS tolerates
	RingSize     int           // ciphertexts kept per key for decrypts
	Principal    string        // requestMetadata.awsPrincipalArn
	Hooks        []Hook
	// Progress receives a live line once a second; nil for none.
	Progress io.Writer
}

// DefaultConfig is the configuration every flag's default describes.
func DefaultConfig() Config {
	return Config{
		RatePerKey: 100, Mix: DefaultMix, PlaintextBytes: 32, AADBytes: 64,
		Warmup: 5 * time.Second, Duration: 30 * time.Second,
		Connections: 32, Preconnect: true, Spread: SpreadRoundRobin, MaxInFlight: 4096, Timeout: 5 * time.Second,
		Budget: 250 * time.Millisecond, RingSize: 1024,
		Principal: "arn:aws:iam::111122223333:role/xksbench",
	}
}

// maxKeys bounds the logical keys: each keeps its own histogram (about
// 140 KB) and ciphertext ring.
const maxKeys = 256

// Validate reports the first setting that cannot work.
func (c *Config) Validate() error {
	if err := c.Target.Validate(); err != nil {
		return err
	}
	if c.Keys == 0 {
		c.Keys = len(c.Target.KeyIDs)
	}
	switch {
	case c.Keys < 1 || c.Keys > maxKeys:
		return fmt.Errorf("--keys %d is outside 1..%d", c.Keys, maxKeys)
	case !(c.RatePerKey > 0 && c.RatePerKey <= 1e6):
		return fmt.Errorf("--rate %g is outside (0, 1000000]", c.RatePerKey)
	case c.Mix.total() == 0:
		return errors.New("the mix gives no operation a weight")
	case c.PlaintextBytes < 1 || c.PlaintextBytes > 4300:
		return fmt.Errorf("--plaintext-size %d is outside 1..4300", c.PlaintextBytes)
	case c.AADBytes < 0 || c.AADBytes > 8192:
		return fmt.Errorf("--aad-size %d is outside 0..8192", c.AADBytes)
	case c.Warmup < 0:
		return errors.New("--warmup is negative")
	case c.Duration <= 0:
		return errors.New("--duration must be positive")
	case c.MaxRequests < 0:
		return errors.New("--max-requests is negative")
	case c.Connections < 1:
		return errors.New("--connections must be at least 1")
	case c.Spread != SpreadRoundRobin && c.Spread != SpreadPerNode:
		return fmt.Errorf("--spread %q is neither %s nor %s", c.Spread, SpreadRoundRobin, SpreadPerNode)
	case c.MaxInFlight < 1:
		return errors.New("--max-in-flight must be at least 1")
	case c.Timeout <= 0:
		return errors.New("--timeout must be positive")
	case c.Budget <= 0:
		return errors.New("--budget must be positive")
	case c.MaxErrorRate < 0 || c.MaxErrorRate > 1:
		return fmt.Errorf("--max-error-rate %g is outside 0..1", c.MaxErrorRate)
	case c.RingSize < 1:
		return errors.New("--ring-size must be at least 1")
	}
	for _, h := range c.Hooks {
		if h.At >= c.Duration {
			return fmt.Errorf("hook at %s is not inside the %s measured run", h.At, c.Duration)
		}
	}
	return nil
}

// Runner generates one configuration's load; FindMax reuses it across
// steps, with its connections and ciphertexts.
type Runner struct {
	cfg       Config
	endpoints []*endpoint
	keys      []*keyState
	caller    *caller
	clock     Clock
	runID     string
	runs      int
	primed    bool
	hookGrace time.Duration
	// onMeasureStart, when set, learns when the measured window will start
	// (tests align fake-server faults with it).
	onMeasureStart func(time.Time)
}

// NewRunner validates cfg and opens nothing yet: connections are made by
// the first requests.
func NewRunner(cfg Config) (*Runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	eps, err := newEndpoints(cfg.Target, cfg.Connections)
	if err != nil {
		return nil, err
	}
	id := make([]byte, 4)
	if _, err := rand.Read(id); err != nil {
		return nil, err
	}
	r := &Runner{cfg: cfg, endpoints: eps, caller: newCaller(cfg), clock: realClock{}, runID: hex.EncodeToString(id), hookGrace: hookGrace}
	ids := cfg.Target.KeyIDs
	for k := 0; k < cfg.Keys; k++ {
		id := ids[k%len(ids)]
		name := id
		if cfg.Keys > len(ids) {
			name = fmt.Sprintf("%s#%d", id, k/len(ids)+1)
		}
		r.keys = append(r.keys, r.caller.newKey(name, id, cfg.RingSize, cfg.Mix))
	}
	return r, nil
}

// account is the AWS account of an ARN, for the kmsKeyArn the bench sends.
func account(arn string) string {
	if parts := strings.Split(arn, ":"); len(parts) > 4 && parts[4] != "" {
		return parts[4]
	}
	return "111122223333"
}

// Close closes the connections.
func (r *Runner) Close() {
	for _, ep := range r.endpoints {
		ep.close()
	}
}

// cutOff ends every request in flight at once, as cancelled.
func (r *Runner) cutOff() {
	for _, ep := range r.endpoints {
		ep.cutOff()
	}
}

// restore undoes cutOff once no request is in flight.
func (r *Runner) restore() {
	for _, ep := range r.endpoints {
		ep.restore()
	}
}

func (r *Runner) endpointFor(key int, i int64) *endpoint {
	n := int64(len(r.endpoints))
	if r.cfg.Spread == SpreadPerNode {
		return r.endpoints[int64(key)%n]
	}
	return r.endpoints[(int64(key)+i)%n]
}

// ErrWrongAnswer marks a proxy that answered, but wrongly.
var ErrWrongAnswer = errors.New("the proxy answered wrongly")

// fill opens every endpoint's missing connections at once; an interrupt
// ends it.
func (r *Runner) fill(ctx context.Context) {
	stop := context.AfterFunc(ctx, r.cutOff)
	defer stop()
	var wg sync.WaitGroup
	for _, ep := range r.endpoints {
		wg.Go(func() { ep.fill(r.cfg.Timeout) })
	}
	wg.Wait()
}

// primeRetries is how often prime retries a throttled request, waiting
// 0.1 s more each time: 5.5 s in all.
const primeRetries = 10

// primeCount is how many ciphertexts each key gets before the schedule
// starts, so that the first decrypts have something to decrypt.
const primeCount = 4

// prime checks every operation of the mix once per key before any load, so
// that a wrong credential or key id fails at once with a clear message
// rather than as a run of errors, and fills each key's ciphertext ring.
func (r *Runner) prime(ctx context.Context) error {
	// An interrupt ends the preflight at once; the run that would follow
	// ends as interrupted.
	stop := context.AfterFunc(ctx, r.cutOff)
	defer stop()
	mix := r.cfg.Mix
	for k, ks := range r.keys {
		ep := r.endpointFor(k, 0)
		var ops []Op
		if mix[OpEncrypt] > 0 || mix[OpDecrypt] > 0 {
			for j := 0; j < min(primeCount, r.cfg.RingSize); j++ {
				ops = append(ops, OpEncrypt)
			}
		}
		if mix[OpDecrypt] > 0 {
			ops = append(ops, OpDecrypt)
		}
		if mix[OpMetadata] > 0 {
			ops = append(ops, OpMetadata)
		}
		if mix[OpHealth] > 0 && k == 0 {
			ops = append(ops, OpHealth)
		}
		prefix := fmt.Sprintf("xksbench-%s-preflight-%d-", r.runID, k)
		for j, op := range ops {
			f := r.roundTrip(ep, ks, op, requestID{prefix, int64(j)})
			// A node still busy with the handshakes of fill may shed
			// the first requests; that is not a misconfiguration.
			for retry := 1; f.throttled() && retry <= primeRetries && ctx.Err() == nil; retry++ {
				time.Sleep(time.Duration(retry) * 100 * time.Millisecond)
				f = r.roundTrip(ep, ks, op, requestID{prefix + "retry-" + strconv.Itoa(retry) + "-", int64(j)})
			}
			if !f.ok() {
				err := fmt.Errorf("preflight %s on key %s via %s: %s", op, ks.id, ep.base, describe(f))
				if f.wrong() {
					err = fmt.Errorf("%w: %w", ErrWrongAnswer, err)
				}
				return err
			}
		}
	}
	return nil
}

// roundTrip sends one operation and waits for its outcome.
func (r *Runner) roundTrip(ep *endpoint, ks *keyState, op Op, id requestID) failure {
	outcome := make(chan failure, 1)
	x := &exchange{deadline: time.Now().Add(r.cfg.Timeout), done: func(x *exchange, status int, body []byte, err error) {
		outcome <- r.caller.check(x, status, body, err)
	}}
	if f := r.caller.prepare(x, ep, ks, op, id); !f.ok() {
		return f
	}
	ep.do(x)
	return <-outcome
}

func describe(f failure) string {
	if f.kind == kindHTTP {
		return fmt.Sprintf("HTTP %d %s: %s", f.status, f.name, f.message)
	}
	return fmt.Sprintf("%s: %s", f.name, f.message)
}

// startLead is how far ahead of now the schedule starts, so that the
// dispatcher is running before the first request is due.
const startLead = 20 * time.Millisecond

type pendingReq struct {
	key int
	op  Op
	due time.Time
}

// run is the state of one Run.
type run struct {
	r           *Runner
	idPrefix    []string // per key, the request ids' prefix
	rec         *recorder
	inflight    atomic.Int64
	dispatchedN atomic.Int64
	cap         int64
	wg          sync.WaitGroup // requests in flight
	watermark   atomic.Int64   // unix ns: every request due before it has been dispatched
	complete    func(x *exchange, status int, body []byte, err error)

	backlogMu sync.Mutex
	backlog   []pendingReq // client-saturated requests waiting for their end
	backlogN  atomic.Int64
}

// Run generates the configured load once and measures it.
func (r *Runner) Run(ctx context.Context) (*Result, error) {
	cfg := r.cfg
	res := &Result{SchemaVersion: SchemaVersion, Tool: "xksbench", Kind: "run", StartedAt: time.Now().UTC(),
		Host: hostInfo(), Target: r.targetInfo(), Config: r.configInfo()}
	duration, stoppedBy := cfg.Duration, "duration"
	totalRate := cfg.RatePerKey * float64(len(r.keys))
	if cfg.MaxRequests > 0 {
		fits := time.Duration(float64(cfg.MaxRequests)/totalRate*float64(time.Second)) - cfg.Warmup
		if fits < duration {
			if fits < time.Second {
				return nil, fmt.Errorf("--max-requests %d at %g/s leaves less than 1s after the %s warm-up", cfg.MaxRequests, totalRate, cfg.Warmup)
			}
			duration, stoppedBy = fits.Truncate(time.Millisecond), "max-requests"
		}
	}
	if cfg.Preconnect {
		r.fill(ctx)
	}
	if !r.primed {
		if err := r.prime(ctx); err != nil {
			return nil, err
		}
		r.primed = true
	}
	r.runs++
	clock := r.clock
	start := clock.Now().Add(startLead)
	measureStart := start.Add(cfg.Warmup)
	measureEnd := measureStart.Add(duration)
	rn := &run{r: r, rec: newRecorder(len(r.keys), measureStart, measureEnd), cap: cfg.MaxRequests}
	rn.complete = rn.finish
	for k := range r.keys {
		rn.idPrefix = append(rn.idPrefix, "xksbench-"+r.runID+"-"+strconv.Itoa(r.runs)+"-"+strconv.Itoa(k)+"-")
	}
	rn.watermark.Store(start.UnixNano())
	if r.onMeasureStart != nil {
		r.onMeasureStart(measureStart)
	}
	hookCtx, cancelHooks := context.WithCancel(ctx)
	defer cancelHooks()
	hooks := startHooks(hookCtx, clock, cfg.Hooks, measureStart)
	progressCtx, stopProgress := context.WithCancel(context.Background())
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		rn.progressLoop(progressCtx, newProgressPrinter(cfg.Progress), start, measureStart, measureEnd)
	}()

	schedules := make([]Schedule, len(r.keys))
	for k := range r.keys {
		// Keys are spread evenly over one interval so that they do not
		// all fire at the same instant.
		offset := time.Duration(float64(k) / float64(len(r.keys)) / cfg.RatePerKey * float64(time.Second))
		schedules[k] = Schedule{Start: start, Rate: cfg.RatePerKey, Offset: offset}
	}
	dispatched := make(chan struct{})
	go func() {
		defer close(dispatched)
		lockDispatcherThread()
		runSchedules(ctx, clock, schedules, measureEnd, rn.dispatch,
			func(next time.Time) { rn.watermark.Store(next.UnixNano()) })
	}()
	<-dispatched
	interrupted := ctx.Err() != nil
	stoppedAt := clock.Now()

	// Every request has its own timeout, so the drain ends by then; an
	// interrupt cuts it short. Requests cut off end as cancelled, and the
	// connections they leave closed are dropped before the next run.
	cut := false
	cancelRequests := func() {
		cut = true
		r.cutOff()
	}
	drained := make(chan struct{})
	go func() { rn.wg.Wait(); close(drained) }()
	grace := cfg.Timeout + time.Second
	if interrupted {
		grace = time.Second
	}
	select {
	case <-drained:
	case <-time.After(grace):
		cancelRequests()
		<-drained
	case <-ctx.Done():
		if !interrupted {
			interrupted = true
			cancelRequests()
		}
		<-drained
	}
	if cut {
		r.restore()
	}
	rn.flushBacklog(clock.Now())
	stopProgress()
	<-progressDone
	res.Hooks = hooks.finish(cancelHooks, r.hookGrace)

	windowEnd := measureEnd
	if interrupted {
		stoppedBy = "interrupted"
		if stoppedAt.Before(windowEnd) {
			windowEnd = stoppedAt
		}
		if windowEnd.Before(measureStart) {
			windowEnd = measureStart
		}
	}
	seconds := windowEnd.Sub(measureStart).Seconds()
	requested := make([]int64, len(r.keys))
	rates := make([]float64, len(r.keys))
	names := make([]string, len(r.keys))
	ids := make([]string, len(r.keys))
	for k, ks := range r.keys {
		requested[k] = schedules[k].Count(measureStart, windowEnd)
		rates[k], names[k], ids[k] = cfg.RatePerKey, ks.name, ks.id
	}
	rn.rec.fill(res, cfg.Mix, names, ids, requested, rates, seconds)
	res.Measured = Measured{WarmupSeconds: cfg.Warmup.Seconds(), DurationSeconds: round(seconds, 3), StoppedBy: stoppedBy}
	res.Verdict = judge(res, cfg, judgeInput{
		wrong: rn.rec.wrong, interrupted: interrupted,
		warmupDone: rn.rec.warmupDone, warmupErrors: rn.rec.warmupErrors,
	})
	res.FinishedAt = time.Now().UTC()
	return res, nil
}

// dispatch issues request i of key k, due at due: it is sent at once unless
// the in-flight bound is reached, in which case it is a client-saturated
// failure whose latency runs until capacity returns.
func (rn *run) dispatch(k int, i int64, due time.Time) bool {
	if rn.cap > 0 && rn.dispatchedN.Add(1) > rn.cap {
		return false
	}
	op := rn.r.keys[k].picker.next()
	rn.rec.dispatched(due)
	limit := int64(rn.r.cfg.MaxInFlight)
	if rn.inflight.Add(1) > limit {
		rn.inflight.Add(-1)
		rn.backlogMu.Lock()
		rn.backlog = append(rn.backlog, pendingReq{k, op, due})
		rn.backlogN.Add(1)
		rn.backlogMu.Unlock()
		// A slot may have freed since the check, with no completion left
		// to notice the backlog.
		if rn.inflight.Load() < limit {
			rn.flushBacklog(rn.r.clock.Now())
		}
		return true
	}
	// Sent now, by this goroutine: its answer is read by the connection's.
	rn.wg.Add(1)
	now := rn.r.clock.Now()
	rn.rec.sent(k, op, due, now)
	x := &exchange{deadline: now.Add(rn.r.cfg.Timeout), done: rn.complete, key: k, due: due}
	ep := rn.r.endpointFor(k, i)
	if f := rn.r.caller.prepare(x, ep, rn.r.keys[k], op, requestID{rn.idPrefix[k], i}); !f.ok() {
		rn.end(x, f)
		return true
	}
	ep.do(x)
	return true
}

// finish checks the outcome of x and records it.
func (rn *run) finish(x *exchange, status int, body []byte, err error) {
	rn.end(x, rn.r.caller.check(x, status, body, err))
}

func (rn *run) end(x *exchange, f failure) {
	end := rn.r.clock.Now()
	rn.rec.done(x.key, x.op, x.due, end, f)
	rn.inflight.Add(-1)
	if rn.backlogN.Load() > 0 {
		rn.flushBacklog(end)
	}
	rn.wg.Done()
}

// flushBacklog ends the client-saturated requests at time at: capacity has
// returned (or the run is over), and what they waited counts as latency.
func (rn *run) flushBacklog(at time.Time) {
	rn.backlogMu.Lock()
	items := rn.backlog
	rn.backlog = nil
	rn.backlogN.Store(0)
	rn.backlogMu.Unlock()
	for _, p := range items {
		rn.rec.done(p.key, p.op, p.due, at, failure{kind: kindClient, name: errSaturated,
			message: fmt.Sprintf("not sent: the in-flight limit (--max-in-flight %d) was reached", rn.r.cfg.MaxInFlight)})
	}
}

func (r *Runner) targetInfo() TargetInfo {
	t := r.cfg.Target
	return TargetInfo{Endpoints: t.Endpoints, URIPath: t.URIPath, KeyStore: t.KeyStore, Region: t.Region, KeyIDs: t.KeyIDs}
}

func (r *Runner) configInfo() ConfigInfo {
	c := r.cfg
	info := ConfigInfo{
		RatePerKey: c.RatePerKey, Keys: len(r.keys), KeysShareIDs: len(r.keys) > len(c.Target.KeyIDs),
		Mix: map[string]int{}, PlaintextBytes: c.PlaintextBytes, AADBytes: c.AADBytes, CDIV: c.CDIV,
		WarmupSeconds: c.Warmup.Seconds(), DurationSeconds: c.Duration.Seconds(), MaxRequests: c.MaxRequests,
		Connections: c.Connections, Preconnect: c.Preconnect, Spread: string(c.Spread), MaxInFlight: c.MaxInFlight,
		TimeoutSeconds: c.Timeout.Seconds(), BudgetMs: ms(c.Budget), MaxErrorRate: c.MaxErrorRate, RingSize: c.RingSize,
		Hooks: []HookSpec{},
	}
	for _, ks := range r.keys {
		info.KeyIDs = append(info.KeyIDs, ks.id)
	}
	for _, op := range Ops() {
		if c.Mix[op] > 0 {
			info.Mix[op.String()] = c.Mix[op]
		}
	}
	for _, h := range c.Hooks {
		info.Hooks = append(info.Hooks, HookSpec{AtSeconds: h.At.Seconds(), Command: h.Command})
	}
	return info
}

func hostInfo() HostInfo {
	h := HostInfo{OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU(), GoVersion: runtime.Version(),
		GOMAXPROCS: runtime.GOMAXPROCS(0), CPUModel: cpuModel()}
	h.Hostname, _ = os.Hostname()
	return h
}

// cpuModel is the first "model name" of /proc/cpuinfo, "" elsewhere.
func cpuModel() string {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(data), "\n") {
		if name, value, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(name) == "model name" {
			return strings.TrimSpace(value)
		}
	}
	return ""
}
