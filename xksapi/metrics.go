package xksapi

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
)

// requestBuckets spread the histogram over AWS KMS's 250 ms budget, which
// KMS's XksProxyLatency also tops out at (a timeout counts as 250 ms):
// steps of at most half an octave from 1 ms to 250 ms where network HSMs
// land, one below for a software HSM's tens of microseconds, bounds at the
// HSM's default wait (50 ms) and call (150 ms) deadlines and at the budget
// itself, and two beyond it for what KMS saw as a timeout.
var requestBuckets = []float64{.0005, .001, .0015, .002, .003, .005, .0075, .01, .015, .02, .03, .05, .075, .1, .15, .2, .25, .5, 1}

// retryableByKMS are the errorNames AWS KMS retries (besides an
// unreachable proxy); every other error reaches the customer at once.
var retryableByKMS = map[ErrorName]bool{InternalException: true, DependencyTimeoutException: true, ThrottlingException: true}

// shedReason says which limit refused a request with ThrottlingException.
type shedReason uint8

const (
	notShed      shedReason = iota
	shedCPU                 // the expected time in the node passed overload_wait
	shedInFlight            // max_in_flight requests were already in progress
	shedQuota               // the key store is over its request quota
	shedHSMBusy             // no HSM session would have been free in time
	numShedReasons
)

var shedLabels = [numShedReasons]string{shedCPU: "cpu", shedInFlight: "in_flight", shedQuota: "quota", shedHSMBusy: "hsm_busy"}

// opLabels name the operations in metrics; OpUnknown is a request that
// never routed to one.
var opLabels = [...]string{OpUnknown: "none", OpMetadata: "metadata", OpEncrypt: "encrypt", OpDecrypt: "decrypt", OpHealth: "health"}

// errorNames are the outcomes besides "ok", each at its index+1 in
// requestMetrics.requests.
var errorNames = [...]ErrorName{
	ValidationException, InvalidStateException, InvalidCiphertextException, InvalidKeyUsageException,
	AuthenticationFailedException, AccessDeniedException, KeyNotFoundException, InvalidURIPathException,
	ThrottlingException, UnsupportedOperationException, DependencyTimeoutException, InternalException,
}

// requestMetrics are the data plane's Prometheus metrics. Their labels come
// only from the enums above, never from the request, and every combination
// is resolved once in newMetrics: counting a request is an array index and
// an atomic add, with no lookup and no allocation.
type requestMetrics struct {
	requests [len(opLabels)][len(errorNames) + 1]prometheus.Counter
	duration [len(opLabels)]prometheus.Observer
	shed     [numShedReasons]prometheus.Counter
	panics   [len(listenerLabels)]prometheus.Counter
	// unauthenticated counts requests refused before their signature
	// verified; unauthDropped the log lines about unauthenticated callers
	// that the rate limit dropped.
	unauthenticated prometheus.Counter
	unauthDropped   prometheus.Counter
	connsRefused    [len(listenerLabels)][len(limitLabels)]prometheus.Counter
	byStore         storeRequests
}

// outcomeCounters are one key store's request counters, by operation and
// outcome index.
type outcomeCounters [len(opLabels)][len(errorNames) + 1]prometheus.Counter

// storeRequests counts requests per key store (AWS KMS's XksProxyErrors is
// per key store). The label comes from the state, not the request: a
// request names a key store only by a path the state holds, and every
// other request counts under key_store="". A key store's counters are
// resolved once, at its first request, into a map that is copied on write,
// so that counting stays a map read and an atomic add.
type storeRequests struct {
	vec    *prometheus.CounterVec
	mu     sync.Mutex
	byName atomic.Pointer[map[string]*outcomeCounters]
}

func (sr *storeRequests) counters(keyStore string) *outcomeCounters {
	if m := sr.byName.Load(); m != nil {
		if c, ok := (*m)[keyStore]; ok {
			return c
		}
	}
	sr.mu.Lock()
	defer sr.mu.Unlock()
	old := sr.byName.Load()
	if old != nil {
		if c, ok := (*old)[keyStore]; ok {
			return c
		}
	}
	next := make(map[string]*outcomeCounters, 1)
	if old != nil {
		for k, v := range *old {
			next[k] = v
		}
	}
	c := &outcomeCounters{}
	for op, opLabel := range opLabels {
		c[op][0] = sr.vec.WithLabelValues(keyStore, opLabel, "ok", "false")
		for i, name := range errorNames {
			c[op][i+1] = sr.vec.WithLabelValues(keyStore, opLabel, string(name), strconv.FormatBool(retryableByKMS[name]))
		}
	}
	next[keyStore] = c
	sr.byName.Store(&next)
	return c
}

// The connection limits, as metrics name them.
const (
	limitMaxConns = iota
	limitMaxConnsPerIP
)

var limitLabels = [...]string{limitMaxConns: "max_conns", limitMaxConnsPerIP: "max_conns_per_ip"}

// The server's two listeners, as metrics name them.
const (
	listenerAPI = iota
	listenerHealth
)

var listenerLabels = [...]string{listenerAPI: "api", listenerHealth: "health"}

// newMetrics registers the data plane's metrics on reg.
func newMetrics(reg prometheus.Registerer, s *Server) *requestMetrics {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "xksproxy_requests_total",
		Help: "XKS API requests answered, by operation (none: not an API path), outcome (ok or the errorName) and whether AWS KMS retries that outcome.",
	}, []string{"operation", "outcome", "retryable"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "xksproxy_request_duration_seconds",
		Help:    "Time from receiving an XKS API request to its answer, by operation.",
		Buckets: requestBuckets,
	}, []string{"operation"})
	shed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "xksproxy_requests_shed_total",
		Help: "XKS API requests refused with ThrottlingException, by the limit that refused them.",
	}, []string{"reason"})
	panics := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "xksproxy_panics_total",
		Help: "Requests whose handler panicked, answered 500 InternalException with their connection closed, by listener (api: the XKS listener, health: the health port).",
	}, []string{"listener"})
	m := &requestMetrics{
		byStore: storeRequests{vec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xksproxy_key_store_requests_total",
			Help: `XKS API requests answered, by key store ("": the path names none), operation, outcome (ok or the errorName) and whether AWS KMS retries that outcome.`,
		}, []string{"key_store", "operation", "outcome", "retryable"})},
		unauthenticated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "xksproxy_requests_unauthenticated_total",
			Help: "XKS API requests refused before their signature verified (unknown path or key store, body too large, bad signature, node not ready), logged or not.",
		}),
		unauthDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "xksproxy_unauthenticated_log_lines_dropped_total",
			Help: "Log lines about unauthenticated callers (refused or malformed requests, failed TLS handshakes) dropped by log.unauthenticated_lines_per_second.",
		}),
	}
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "xksproxy_connections_refused_total",
		Help: "Connections closed as soon as accepted because they were over api.max_conns or api.max_conns_per_ip, by listener and limit.",
	}, []string{"listener", "limit"})
	for i, l := range listenerLabels {
		m.panics[i] = panics.WithLabelValues(l)
		for j, lim := range limitLabels {
			m.connsRefused[i][j] = refused.WithLabelValues(l, lim)
		}
	}
	for op, opLabel := range opLabels {
		m.requests[op][0] = requests.WithLabelValues(opLabel, "ok", "false")
		for i, name := range errorNames {
			m.requests[op][i+1] = requests.WithLabelValues(opLabel, string(name), strconv.FormatBool(retryableByKMS[name]))
		}
		m.duration[op] = duration.WithLabelValues(opLabel)
	}
	for r := shedCPU; r < numShedReasons; r++ {
		m.shed[r] = shed.WithLabelValues(shedLabels[r])
	}
	m.byStore.counters("")
	reg.MustRegister(requests, duration, shed, panics, m.unauthenticated, m.unauthDropped, refused, m.byStore.vec,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "xksproxy_connections_open",
			Help: "Connections open on the XKS listener; beyond api.max_conns new ones are closed as soon as accepted.",
		}, func() float64 {
			if l := s.apiConns.Load(); l != nil {
				return float64(l.openConns())
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "xksproxy_requests_in_flight",
			Help: "Authenticated XKS API requests in progress; beyond api.max_in_flight new ones are shed.",
		}, func() float64 { return float64(s.inFlight.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "xksproxy_cpu_wait_seconds",
			Help: "Estimated time in the node of a request arriving now (its probed wait to be read plus the 90th percentile of the time admitted requests took in the handler outside HSM calls over the last 50 ms); crypto requests are shed once it stays above half of api.overload_wait for 100 ms or reaches it, and for 1 s after that on any rise above half.",
		}, func() float64 { return s.cpuWaitNow().Seconds() }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "xksproxy_ready",
			Help: "1 when this node can serve crypto now (what /ready reports), else 0.",
		}, func() float64 {
			if reason, _ := s.ready(); reason != "" {
				return 0
			}
			return 1
		}),
	)
	return m
}

// observe counts one answered request; keyStore is the one its path named
// ("" for none).
func (m *requestMetrics) observe(op Operation, keyStore string, result *apiError, took time.Duration) {
	outcome := outcomeIndex(result)
	m.requests[op][outcome].Inc()
	m.byStore.counters(keyStore)[op][outcome].Inc()
	m.duration[op].Observe(took.Seconds())
	if result != nil && result.shed != notShed {
		m.shed[result.shed].Inc()
	}
}

// outcomeIndex is result's place in requestMetrics.requests: 0 for success.
func outcomeIndex(result *apiError) int {
	if result == nil {
		return 0
	}
	for i, name := range errorNames {
		if name == result.name {
			return i + 1
		}
	}
	// Status() answers 500 for a name it does not know; count it as
	// InternalException, the last of errorNames.
	return len(errorNames)
}

// metricsHandler serves reg in the Prometheus exposition format.
func metricsHandler(reg prometheus.Gatherer, log zerolog.Logger) fasthttp.RequestHandler {
	return fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		// One collector failing must not blind the whole scrape.
		ErrorHandling: promhttp.ContinueOnError,
		ErrorLog:      promLogger{log},
	}))
}

type promLogger struct{ log zerolog.Logger }

func (l promLogger) Println(v ...any) {
	l.log.Warn().Msg(strings.TrimSuffix(fmt.Sprintln(v...), "\n"))
}
