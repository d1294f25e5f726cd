// Package xksapi is the data plane: the XKS Proxy API over fasthttp, from the
// TLS listener to the HSM call and the one log line per request.
package xksapi

import (
	"crypto/tls"
	"errors"
	"math"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
	"golang.org/x/time/rate"

	"github.com/xksproxy/xksproxy/fsm"
	"github.com/xksproxy/xksproxy/hsm"
	"github.com/xksproxy/xksproxy/internal/logbridge"
	"github.com/xksproxy/xksproxy/xksapi/sigv4"
)

// HSM is what the data plane needs of the key manager; *hsm.HSM provides it.
type HSM interface {
	EncryptGCM(keyLabel string, iv, plaintext, aad []byte) (ciphertext, tag []byte, err error)
	DecryptGCM(keyLabel string, iv, ciphertext, tag, aad []byte) ([]byte, error)
	Health() hsm.Health
	TokenInfo() (model, manufacturer, serial string)
}

// Config tunes a Server. Every zero value has a working default.
type Config struct {
	// Limits bound request sizes; zero fields take DefaultLimits.
	Limits Limits
	// MaxInFlight is how many requests may be inside the handler at once
	// before new ones get 429 ThrottlingException; 0 means 4096.
	MaxInFlight int
	// OverloadWait is the expected wait for a CPU (see cpuWait) at which
	// requests are turned away with 429 ThrottlingException; shedding
	// starts at half of it. 0 means 100ms; negative turns shedding off.
	OverloadWait time.Duration
	// CPUWait reports how long a request arriving now would wait for a CPU
	// (see cpuWait); nil means the node's own measure, taken while serving.
	CPUWait func() time.Duration
	// NodeID names this node's HSM in GetHealthStatus; "" means the token serial.
	NodeID string
	// Ready is an extra condition for /ready and for serving crypto (the
	// cluster's staleness limit); nil means always ready.
	Ready func() error
	// Degraded reports that this node serves only part of its keys (some
	// key material is missing from its HSM): its health entry then says
	// DEGRADED. nil means never.
	Degraded func() bool
	// Fleet reports the fleet size and the other live nodes' HSMs for
	// GetHealthStatus; nil means this node alone.
	Fleet func() (size int, others []FleetMember)
	// ReadTimeout bounds receiving one request; 0 means 10s.
	ReadTimeout time.Duration
	// IdleTimeout closes idle keep-alive connections; 0 means 120s.
	IdleTimeout time.Duration
	// MaxConns is how many connections a listener keeps open at once; one
	// over it is closed as soon as it is accepted. 0 means 16384; negative,
	// no limit.
	MaxConns int
	// MaxConnsPerIP is how many connections one remote address may keep
	// open at once on a listener. 0 means 1024; negative, no limit.
	MaxConnsPerIP int
	// UnauthenticatedLogRate bounds the log lines about callers that have
	// not authenticated (requests refused before their signature verified,
	// malformed requests, failed TLS handshakes): this many per second on
	// average, in bursts of up to ten seconds' worth. 0 means 10; negative
	// logs none. The metrics count them all the same.
	UnauthenticatedLogRate float64
	// Now is the clock for SigV4, credential expiry and the rate limit of
	// unauthenticated log lines; nil means time.Now.
	Now func() time.Time
	// Metrics receives the data plane's metrics and is what GET /metrics
	// on the health port serves, so a node adds its own collectors to it;
	// nil means a registry of the server's own. One registry serves one
	// Server.
	Metrics *prometheus.Registry
}

// hardBodyLimit is the most fasthttp reads of a request body.
const hardBodyLimit = 256 << 10

// healthMaxAge is how old a cached deep health check may be before it no
// longer counts (the specification allows one minute).
const healthMaxAge = time.Minute

// Server answers the XKS API for every key store in the current fsm view.
type Server struct {
	cfg      Config
	views    *fsm.ViewHolder
	hsm      HSM
	log      zerolog.Logger
	verifier *sigv4.Verifier
	inFlight atomic.Int64
	// draining: the node is stopping; /ready fails so that load balancers
	// send no new connections, and answers close the ones they have.
	draining atomic.Bool
	// lastNotReady is why /ready last said no, "" when it said yes: the
	// detail is logged when it changes (noteReadiness).
	lastNotReady atomic.Pointer[string]
	quotas       quotas
	maxBody      int // cfg.Limits.MaxBodyFor(), computed once
	// cpu samples the scheduler once ServeTLS starts; nil before.
	cpu atomic.Pointer[cpuWait]
	// handlerTimes feeds the CPU wait estimate: how long admitted requests
	// took in the handler.
	handlerTimes handlerTimes
	cpuOnce      sync.Once
	metrics      *requestMetrics
	// unauthLog and unauthDropped bound the lines about unauthenticated
	// callers (unauthenticatedEvent).
	unauthLog     *rate.Limiter
	unauthDropped atomic.Int64
	// throttledLog and throttledDropped bound the lines about throttled
	// requests (throttledEvent).
	throttledLog     *rate.Limiter
	throttledDropped atomic.Int64
	scrape           fasthttp.RequestHandler

	api    *fasthttp.Server
	health *fasthttp.Server
	// apiConns counts the XKS listener's connections once ServeTLS runs.
	apiConns atomic.Pointer[connLimits]
}

// New builds a Server; it serves nothing until ServeTLS or ServeHealth.
func New(cfg Config, views *fsm.ViewHolder, h HSM, log zerolog.Logger) *Server {
	if cfg.Limits.MaxPlaintext < DefaultLimits.MaxPlaintext {
		cfg.Limits.MaxPlaintext = DefaultLimits.MaxPlaintext
	}
	if cfg.Limits.MaxAAD < DefaultLimits.MaxAAD {
		cfg.Limits.MaxAAD = DefaultLimits.MaxAAD
	}
	if cfg.Limits.MaxARN < DefaultLimits.MaxARN {
		cfg.Limits.MaxARN = DefaultLimits.MaxARN
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 4096
	}
	if cfg.OverloadWait == 0 {
		cfg.OverloadWait = 100 * time.Millisecond
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = 10 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 120 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = 16384
	}
	if cfg.MaxConnsPerIP == 0 {
		cfg.MaxConnsPerIP = 1024
	}
	if cfg.UnauthenticatedLogRate == 0 {
		cfg.UnauthenticatedLogRate = 10
	}
	if cfg.Metrics == nil {
		cfg.Metrics = prometheus.NewRegistry()
	}
	s := &Server{cfg: cfg, views: views, hsm: h, log: log, verifier: sigv4.NewVerifier(), maxBody: cfg.Limits.MaxBodyFor(),
		unauthLog:    rate.NewLimiter(rate.Limit(max(cfg.UnauthenticatedLogRate, 0)), int(math.Ceil(max(cfg.UnauthenticatedLogRate, 0)*10))),
		throttledLog: rate.NewLimiter(throttledLinesPerSecond, throttledLinesPerSecond*10)}
	s.metrics = newMetrics(cfg.Metrics, s)
	s.scrape = metricsHandler(cfg.Metrics, log)
	s.api = s.newHTTPServer(s.recovering(s.metrics.panics[listenerAPI], s.handle))
	s.health = s.newHTTPServer(s.recovering(s.metrics.panics[listenerHealth], s.handleHealthPort))
	return s
}

func (s *Server) newHTTPServer(h fasthttp.RequestHandler) *fasthttp.Server {
	return &fasthttp.Server{
		Handler:      h,
		ErrorHandler: s.handleMalformed,
		Name:         "xksproxy",
		// fasthttp refuses connections over Concurrency with a plain-text
		// 503 that AWS KMS cannot interpret; set it out of reach and bound
		// work with MaxInFlight instead, which answers JSON.
		Concurrency: 1 << 20,
		// A body somewhat over the limit is read and refused in the handler
		// (bodyTooLarge), so the client gets the JSON answer on a live
		// connection; only a body over this hard cap makes fasthttp
		// answer before reading it and close the connection.
		MaxRequestBodySize:           hardBodyLimit,
		ReadBufferSize:               16 << 10,
		ReadTimeout:                  s.cfg.ReadTimeout,
		WriteTimeout:                 s.cfg.ReadTimeout,
		IdleTimeout:                  s.cfg.IdleTimeout,
		NoDefaultContentType:         true,
		DisablePreParseMultipartForm: true,
		// What fasthttp logs about connections is anyone's input: it goes
		// through the rate limit of lines about unauthenticated callers.
		// handleMalformed has logged failed TLS handshakes already.
		Logger: logbridge.FastHTTP{Log: s.log, Peer: s.unauthenticatedEvent, Cut: cut, Logged: tlsFailure},
	}
}

// Handler is the XKS API as a fasthttp handler, for embedding the API in
// another server and for measuring it without sockets.
func (s *Server) Handler() fasthttp.RequestHandler { return s.api.Handler }

// ServeTLS serves the XKS API on ln over TLS until Shutdown.
func (s *Server) ServeTLS(ln net.Listener, cfg *tls.Config) error {
	if s.cfg.CPUWait == nil {
		s.cpuOnce.Do(func() { s.cpu.Store(startCPUWait(&s.handlerTimes, s.cfg.OverloadWait)) })
	}
	l := s.limitConns(ln, listenerAPI)
	s.apiConns.Store(l)
	return s.api.Serve(tls.NewListener(l, cfg))
}

// cpuWaitNow is the current CPU wait estimate; 0 while not serving.
func (s *Server) cpuWaitNow() time.Duration { return s.readCPUWait((*cpuWait).current) }

// shedForCPU decides whether a request is refused for want of CPU, on the
// estimate of a queue that stands (see standingQueue), not the gauge's.
func (s *Server) shedForCPU() bool {
	return shouldShed(s.readCPUWait((*cpuWait).shedOn), s.cfg.OverloadWait)
}

// readCPUWait reads the node's own measure with read, or the configured
// one, which stands for both.
func (s *Server) readCPUWait(read func(*cpuWait) time.Duration) time.Duration {
	if s.cfg.CPUWait != nil {
		return s.cfg.CPUWait()
	}
	if c := s.cpu.Load(); c != nil {
		return read(c)
	}
	return 0
}

// ServeHealth serves the plain-HTTP load-balancer port (/ping, /ready) and
// the Prometheus metrics (/metrics) on ln until Shutdown. It carries no XKS
// API and no secrets.
func (s *Server) ServeHealth(ln net.Listener) error {
	return s.health.Serve(s.limitConns(ln, listenerHealth))
}

// Drain starts a graceful stop: /ready answers 503 from now on, so that a
// load balancer stops opening connections to this node, and every answer
// asks its client to close the connection, so that clients reconnect
// through the load balancer to another node. Requests are served as usual
// until Shutdown.
func (s *Server) Drain() { s.draining.Store(true) }

// Shutdown stops both listeners and waits for requests in progress.
func (s *Server) Shutdown() error {
	err := errors.Join(s.api.Shutdown(), s.health.Shutdown())
	if c := s.cpu.Swap(nil); c != nil {
		c.close()
	}
	return err
}

// handleMalformed answers what fasthttp could not parse, in the
// specification's JSON, so that AWS KMS can report it.
func (s *Server) handleMalformed(ctx *fasthttp.RequestCtx, err error) {
	if tlsFailure(err) {
		// No HTTP answer can reach a client whose handshake failed.
		if ev := s.unauthenticatedEvent(zerolog.InfoLevel); ev != nil {
			ev.Str("remote", ctx.RemoteAddr().String()).Str("error", cut(err.Error())).Msg("TLS handshake failed")
		}
		ctx.SetConnectionClose()
		return
	}
	if idle, ok := err.(net.Error); ok && idle.Timeout() && len(ctx.Request.Header.RawHeaders()) == 0 {
		// Not one byte of a request came before read_timeout: an idle
		// connection (a client's spare keep-alive, a port scanner, an
		// idle-connection flood), not a malformed request. fasthttp hands
		// over exactly this error unwrapped; a timeout within the request
		// line or headers comes wrapped, one within the body after headers.
		writeError(ctx, ValidationException, "no request was received in time")
		s.log.Debug().Str("remote", ctx.RemoteAddr().String()).Msg("closed a connection that sent no request")
		return
	}
	var small *fasthttp.ErrSmallBuffer
	var netErr net.Error
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		writeError(ctx, UnsupportedOperationException, "request body is larger than this proxy accepts")
	case errors.As(err, &small):
		writeError(ctx, ValidationException, "request headers are too large")
	case errors.As(err, &netErr) && netErr.Timeout():
		writeError(ctx, ValidationException, "request was not received in time")
	default:
		writeError(ctx, ValidationException, "malformed HTTP request")
	}
	if ev := s.unauthenticatedEvent(zerolog.WarnLevel); ev != nil {
		ev.Str("remote", ctx.RemoteAddr().String()).Str("error", cut(err.Error())).Msg("refused malformed HTTP request")
	}
}

// tlsFailure tells a failed TLS handshake (a client without the right
// certificate, a port scanner, plain HTTP on the TLS port) from a bad
// request. crypto/tls reports most handshake failures as plain errors
// whose text starts "tls: ".
func tlsFailure(err error) bool {
	var record tls.RecordHeaderError
	var alert tls.AlertError
	var verify *tls.CertificateVerificationError
	return errors.As(err, &record) || errors.As(err, &alert) || errors.As(err, &verify) ||
		strings.Contains(err.Error(), "tls: ")
}
