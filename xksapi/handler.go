package xksapi

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"strconv"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/bytebufferpool"
	"github.com/valyala/fasthttp"

	"github.com/xksproxy/xksproxy/fsm"
	"github.com/xksproxy/xksproxy/hsm"
	"github.com/xksproxy/xksproxy/internal/buildinfo"
	"github.com/xksproxy/xksproxy/xksapi/sigv4"
)

// exchange carries one request through the pipeline and into its log line.
type exchange struct {
	start  time.Time
	took   time.Duration
	route  route
	store  *fsm.StoreView
	req    request
	akid   []byte
	rule   string
	result *apiError
	// authenticated: the signature verified, so the metadata logged is the
	// signer's; before that it is whatever anyone sent.
	authenticated bool
	// admitted: the request passed load shedding, so its time in the
	// handler counts in the CPU wait estimate.
	admitted bool
	// inHSM is the time spent in HSM calls (waiting for a session and for
	// the answer), which the CPU wait estimate leaves out: the HSM pool
	// sheds on its own wait.
	inHSM time.Duration
}

func (s *Server) handle(ctx *fasthttp.RequestCtx) {
	if s.draining.Load() {
		ctx.SetConnectionClose()
	}
	uri := ctx.Request.Header.RequestURI()
	path, query := uri, []byte(nil)
	if i := bytes.IndexByte(uri, '?'); i >= 0 {
		path, query = uri[:i], uri[i+1:]
	}
	if s.serveProbe(ctx, path) {
		return
	}
	x := exchange{start: time.Now()}
	x.result = s.process(ctx, &x, path, query)
	if x.result != nil {
		writeError(ctx, x.result.name, x.result.message)
		if x.result.status != 0 {
			ctx.SetStatusCode(x.result.status)
		}
	}
	x.took = time.Since(x.start)
	if x.admitted {
		s.handlerTimes.observe(x.took - x.inHSM)
	}
	keyStore := ""
	if x.store != nil {
		keyStore = x.store.Name
	}
	s.metrics.observe(x.route.op, keyStore, x.result, x.took)
	if !x.authenticated {
		s.metrics.unauthenticated.Inc()
	}
	s.logExchange(ctx, &x)
}

func (s *Server) process(ctx *fasthttp.RequestCtx, x *exchange, path, query []byte) *apiError {
	r, ok := parseRoute(path)
	if !ok {
		return fail(InvalidURIPathException, "no XKS API operation at this path")
	}
	x.route = r
	if !ctx.IsPost() {
		ctx.Response.Header.Set("Allow", "POST")
		return &apiError{name: UnsupportedOperationException, status: fasthttp.StatusMethodNotAllowed,
			message: "the XKS API accepts only POST"}
	}
	if len(query) > 0 {
		return fail(InvalidURIPathException, "the XKS API takes no query string")
	}
	if len(ctx.PostBody()) > s.maxBody {
		return fail(UnsupportedOperationException, "request body is larger than this proxy accepts")
	}
	// Readiness comes before anything that reads the replicated state: a
	// node catching up has an empty or old view, and what that view would
	// answer (404 InvalidUriPathException for a key store it has not learned
	// yet) AWS KMS reads as a configuration error. InternalException is
	// what KMS retries.
	view := s.views.Load()
	if view == nil {
		return fail(InternalException, "the proxy has not loaded its key stores yet; retry")
	}
	if s.cfg.Ready != nil {
		if err := s.cfg.Ready(); err != nil {
			return &apiError{name: InternalException, message: notReadyMessage, detail: err.Error()}
		}
	}
	x.store = view.StoreByPath(r.uriPath)
	if x.store == nil {
		return fail(InvalidURIPathException, "no key store is configured at this URI path")
	}
	if err := s.authenticate(ctx, x, path, query); err != nil {
		return err
	}
	x.authenticated = true
	// GetHealthStatus is never shed: it is how AWS KMS tells a busy proxy
	// from a dead one.
	if r.op != OpHealth && s.shedForCPU() {
		return throttle(shedCPU, "the proxy is overloaded (requests would wait too long for a CPU); retry")
	}
	if n := s.inFlight.Add(1); n > int64(s.cfg.MaxInFlight) {
		s.inFlight.Add(-1)
		return throttle(shedInFlight, "the proxy is at its concurrency limit; retry")
	}
	defer s.inFlight.Add(-1)
	x.admitted = true

	if !x.store.Enabled {
		return fail(InvalidStateException, "key store "+x.store.Name+" is disabled")
	}
	if !s.quotas.allow(&x.store.KeyStore) {
		return throttle(shedQuota, "key store "+x.store.Name+" is over its request quota")
	}
	if err := decodeRequest(ctx.PostBody(), r.op, s.cfg.Limits, &x.req); err != nil {
		return err
	}
	if r.op == OpHealth {
		return s.serveHealthStatus(ctx)
	}
	key := x.store.Key(r.keyID)
	if key == nil {
		return fail(KeyNotFoundException, "key store "+x.store.Name+" has no key "+string(r.keyID))
	}
	md := x.req.RequestMetadata
	rc := fsm.RequestContext{PrincipalARN: md.AWSPrincipalARN, KMSKeyARN: md.KMSKeyARN,
		ViaService: md.KMSViaService, SourceVPC: md.AWSSourceVPC, SourceVPCE: md.AWSSourceVPCE}
	allowed, rule := x.store.Authorize(key, r.op.grantOp(), &rc)
	x.rule = rule
	if !allowed {
		return fail(AccessDeniedException, "no grant of key store "+x.store.Name+" allows this principal to "+r.op.String()+" with key "+key.ID)
	}
	switch r.op {
	case OpMetadata:
		buf := bytebufferpool.Get()
		buf.B = appendMetadataResponse(buf.B[:0], key.Usage.Names(), key.Enabled)
		writeJSON(ctx, fasthttp.StatusOK, buf.B)
		bytebufferpool.Put(buf)
		return nil
	case OpEncrypt:
		return s.encrypt(ctx, key, x)
	default:
		return s.decrypt(ctx, key, x)
	}
}

// authenticate verifies the SigV4 signature with a credential of the key
// store the path routed to; a valid signature for another key store fails.
func (s *Server) authenticate(ctx *fasthttp.RequestCtx, x *exchange, path, query []byte) *apiError {
	hdr := ctx.Request.Header.Peek("Authorization")
	if len(hdr) == 0 {
		return fail(AuthenticationFailedException, "missing Authorization header")
	}
	auth, err := sigv4.ParseAuthorization(hdr)
	if err != nil {
		return fail(AuthenticationFailedException, err.Error())
	}
	x.akid = auth.AccessKeyID
	now := s.cfg.Now()
	cred, ok := x.store.Credential(auth.AccessKeyID, now)
	if !ok {
		return fail(AuthenticationFailedException, "access key id is not an active credential of this key store")
	}
	req := sigv4.Request{
		Method:  ctx.Method(),
		RawPath: path,
		Query:   query,
		Header:  &ctx.Request.Header,
		Body:    ctx.PostBody(),
	}
	if err := s.verifier.Verify(&req, &auth, cred.Secret, x.store.Region, now); err != nil {
		return fail(AuthenticationFailedException, err.Error())
	}
	return nil
}

func (s *Server) encrypt(ctx *fasthttp.RequestCtx, key *fsm.Key, x *exchange) *apiError {
	req := &x.req
	if !key.Enabled {
		return fail(InvalidStateException, "key "+key.ID+" is disabled")
	}
	if key.Usage&fsm.UsageEncrypt == 0 {
		return fail(InvalidKeyUsageException, "key "+key.ID+" may not encrypt")
	}
	if req.CDIVAlgorithm != nil && key.Usage&fsm.UsageDecrypt == 0 {
		// A CDIV promises AWS KMS that the ciphertext decrypts, which a key
		// that may not decrypt cannot keep.
		return fail(InvalidKeyUsageException, "key "+key.ID+" may not decrypt, so its ciphertext cannot carry a data integrity value")
	}
	version := key.Version(key.CurrentVersion)
	res := encryptResult{iv: make([]byte, 12)}
	// The HSM never chooses the IV (SoftHSMv2 would silently encrypt with an
	// empty one), so every encrypt draws a fresh 96-bit IV here.
	rand.Read(res.iv)
	var aad []byte
	if key.Legacy != nil && key.CurrentVersion == key.Legacy.Version {
		// Until the first rotation of a key imported from another proxy,
		// write that proxy's format: both proxies then read all either
		// wrote, and the load balancer can point back at the old one.
		res.metadata = key.Legacy.StaticMetadata
		aad = legacyAAD(req.AAD, res.metadata)
	} else {
		res.metadata = encodeCiphertextMetadata(version.Number)
		aad = hsmAAD(req.AAD, res.metadata)
	}
	var err error
	called := time.Now()
	res.ciphertext, res.tag, err = s.hsm.EncryptGCM(version.HSMLabel, res.iv, req.Plaintext, aad)
	x.inHSM += time.Since(called)
	if err != nil {
		return hsmFailure(err, key, version.Number)
	}
	if req.CDIVAlgorithm != nil {
		// The CDIV promises AWS KMS that this exact output decrypts to the
		// plaintext, so it is computed first and then proven by decrypting.
		res.cdiv = cdiv(req.AAD, res.metadata, res.iv, res.ciphertext, res.tag)
		called := time.Now()
		back, err := s.hsm.DecryptGCM(version.HSMLabel, res.iv, res.ciphertext, res.tag, aad)
		x.inHSM += time.Since(called)
		if err != nil {
			return hsmFailure(err, key, version.Number)
		}
		if subtle.ConstantTimeCompare(back, req.Plaintext) != 1 {
			return &apiError{name: InternalException, message: "encrypt output failed its verification decrypt",
				detail: "CDIV round trip mismatch"}
		}
	}
	buf := bytebufferpool.Get()
	buf.B = appendEncryptResponse(buf.B[:0], &res)
	writeJSON(ctx, fasthttp.StatusOK, buf.B)
	bytebufferpool.Put(buf)
	return nil
}

func (s *Server) decrypt(ctx *fasthttp.RequestCtx, key *fsm.Key, x *exchange) *apiError {
	req := &x.req
	if !key.Enabled {
		return fail(InvalidStateException, "key "+key.ID+" is disabled")
	}
	if key.Usage&fsm.UsageDecrypt == 0 {
		return fail(InvalidKeyUsageException, "key "+key.ID+" may not decrypt")
	}
	var version *fsm.KeyVersion
	var aad []byte
	if legacyCiphertext(key, req.CiphertextMetadata) {
		version = key.Version(key.Legacy.Version)
		aad = legacyAAD(req.AAD, req.CiphertextMetadata)
	} else {
		if req.CiphertextMetadata == nil {
			return fail(InvalidCiphertextException, "ciphertextMetadata is missing; every ciphertext from this proxy carries it")
		}
		n, ok := decodeCiphertextMetadata(req.CiphertextMetadata)
		if !ok {
			return fail(InvalidCiphertextException, "ciphertextMetadata was not produced by this proxy")
		}
		if version = key.Version(n); version == nil {
			return fail(InvalidCiphertextException, "ciphertext names version "+strconv.FormatUint(uint64(n), 10)+", which key "+key.ID+" does not have")
		}
		aad = hsmAAD(req.AAD, req.CiphertextMetadata)
	}
	called := time.Now()
	plaintext, err := s.hsm.DecryptGCM(version.HSMLabel, req.InitializationVector, req.Ciphertext, req.AuthenticationTag, aad)
	x.inHSM += time.Since(called)
	if err != nil {
		return hsmFailure(err, key, version.Number)
	}
	buf := bytebufferpool.Get()
	buf.B = appendDecryptResponse(buf.B[:0], plaintext)
	writeJSON(ctx, fasthttp.StatusOK, buf.B)
	bytebufferpool.Put(buf)
	return nil
}

// hsmFailure maps an HSM error to the specification's error. The PKCS#11
// detail goes to our log only.
func hsmFailure(err error, key *fsm.Key, version uint32) *apiError {
	e := &apiError{detail: err.Error()}
	switch {
	case errors.Is(err, hsm.ErrInvalidCiphertext):
		e.name, e.message = InvalidCiphertextException, "ciphertext, IV, tag, AAD or ciphertextMetadata do not authenticate"
	case errors.Is(err, hsm.ErrBusy):
		e.name, e.message, e.shed = ThrottlingException, "the HSM is busy; retry", shedHSMBusy
	case errors.Is(err, hsm.ErrTimeout):
		e.name, e.message = DependencyTimeoutException, "the HSM did not answer in time"
	case errors.Is(err, hsm.ErrKeyNotFound):
		e.name, e.message = InternalException, "material for key "+key.ID+" version "+strconv.FormatUint(uint64(version), 10)+" is not in this node's HSM"
	case errors.Is(err, hsm.ErrUnavailable):
		e.name, e.message = InternalException, "the HSM is unavailable"
	default:
		e.name, e.message = InternalException, "the HSM failed"
	}
	return e
}

// notReadyMessage is what leaves the node when Config.Ready refuses. Its
// error stays in our log: it may name any key store's keys and HSM labels,
// which neither AWS KMS (the customer's CloudWatch, perhaps another
// tenant's) nor an unauthenticated /ready may see.
const notReadyMessage = "this node is not ready to serve (catching up with its cluster, out of contact with it, or missing key material); retry"

// ready reports why a load balancer should not send this node traffic: a
// reason fit for anyone to read, and the detail, for our log only, when
// Config.Ready refused. The reason is "" when the node is ready.
func (s *Server) ready() (reason string, detail error) {
	if s.draining.Load() {
		return "draining: this node is shutting down", nil
	}
	if s.views.Load() == nil {
		return "key stores not loaded", nil
	}
	if s.cfg.Ready != nil {
		if err := s.cfg.Ready(); err != nil {
			return notReadyMessage, err
		}
	}
	// HSM health counts for the load balancer, not for refusing a request:
	// a live call finds a sick HSM faster than the cached check, which may
	// also lag a recovery.
	h := s.hsm.Health()
	if h.Status == hsm.StatusUnavailable {
		return "HSM unavailable", nil
	}
	if time.Since(h.CheckedAt) > healthMaxAge {
		return "HSM health check is overdue", nil
	}
	return "", nil
}

// noteReadiness logs why the node is not ready when that changes, so that
// the detail /ready keeps to itself is in the log once, not once a probe.
func (s *Server) noteReadiness(reason string, detail error) {
	now := reason
	if detail != nil {
		now = detail.Error()
	}
	if last := s.lastNotReady.Swap(&now); last != nil && *last == now {
		return
	}
	if now == "" {
		s.log.Info().Msg("ready to serve")
		return
	}
	s.log.Warn().Str("reason", now).Msg("not ready to serve")
}

// hsmMembers is what a node with several HSMs (*hsm.Group) offers: each
// HSM gets its own ekmFleetDetails entry.
type hsmMembers interface{ Members() []*hsm.HSM }

// reportedStatus is the status GetHealthStatus gives an HSM whose last
// health reading is h.
func (s *Server) reportedStatus(h hsm.Health) string {
	status := h.Status.String()
	if time.Since(h.CheckedAt) > healthMaxAge {
		status = hsm.StatusUnavailable.String()
	}
	if status == hsm.StatusActive.String() && s.cfg.Degraded != nil && s.cfg.Degraded() {
		status = hsm.StatusDegraded.String()
	}
	return status
}

func (s *Server) serveHealthStatus(ctx *fasthttp.RequestCtx) *apiError {
	model, manufacturer, serial := s.hsm.TokenInfo()
	id := s.cfg.NodeID
	if id == "" {
		id = serial
	}
	own := []FleetMember{{ID: id, Model: model, Status: s.reportedStatus(s.hsm.Health())}}
	if g, ok := s.hsm.(hsmMembers); ok && len(g.Members()) > 1 {
		own = own[:0]
		for _, m := range g.Members() {
			memberModel, _, _ := m.TokenInfo()
			own = append(own, FleetMember{ID: id + "/" + m.TokenLabel(), Model: memberModel, Status: s.reportedStatus(m.Health())})
		}
		own = own[:min(len(own), maxFleetDetails)]
	}
	report := HealthReport{
		FleetSize: len(own),
		Vendor:    "xksproxy",
		Model:     "xksproxy " + Version,
		EKMVendor: manufacturer,
		Fleet:     own,
	}
	if s.cfg.Fleet != nil {
		size, others := s.cfg.Fleet()
		report.FleetSize = max(size, 1) + len(own) - 1
		// The specification allows at most ten entries; this node's own,
		// freshest, come first.
		report.Fleet = append(report.Fleet, others[:min(len(others), maxFleetDetails-len(own))]...)
	}
	buf := bytebufferpool.Get()
	buf.B = appendHealthResponse(buf.B[:0], &report)
	writeJSON(ctx, fasthttp.StatusOK, buf.B)
	bytebufferpool.Put(buf)
	return nil
}

// serveProbe answers the load balancer's unauthenticated GET /ping and
// /ready; it reports whether path was one of them.
func (s *Server) serveProbe(ctx *fasthttp.RequestCtx, path []byte) bool {
	switch string(path) {
	case "/ping":
		writeJSON(ctx, fasthttp.StatusOK, []byte(`{"status":"ok"}`))
	case "/ready":
		reason, detail := s.ready()
		s.noteReadiness(reason, detail)
		if reason != "" {
			buf := bytebufferpool.Get()
			buf.B = append(buf.B[:0], `{"ready":false,"reason":`...)
			buf.B = appendJSONString(buf.B, reason)
			buf.B = append(buf.B, '}')
			writeJSON(ctx, fasthttp.StatusServiceUnavailable, buf.B)
			bytebufferpool.Put(buf)
		} else {
			writeJSON(ctx, fasthttp.StatusOK, []byte(`{"ready":true}`))
		}
	default:
		return false
	}
	if !ctx.IsGet() && !ctx.IsHead() {
		ctx.Response.Header.Set("Allow", "GET, HEAD")
		writeError(ctx, UnsupportedOperationException, "health probes accept only GET")
		ctx.SetStatusCode(fasthttp.StatusMethodNotAllowed)
	}
	return true
}

// handleHealthPort serves the plain-HTTP listener: probes and metrics,
// nothing that carries a secret.
func (s *Server) handleHealthPort(ctx *fasthttp.RequestCtx) {
	uri := ctx.Request.Header.RequestURI()
	if string(uri) == "/metrics" {
		s.serveMetrics(ctx)
		return
	}
	if !s.serveProbe(ctx, uri) {
		writeError(ctx, InvalidURIPathException, "this port serves only GET /ping, GET /ready and GET /metrics")
	}
}

// serveMetrics answers a Prometheus scrape.
func (s *Server) serveMetrics(ctx *fasthttp.RequestCtx) {
	if !ctx.IsGet() && !ctx.IsHead() {
		ctx.Response.Header.Set("Allow", "GET, HEAD")
		writeError(ctx, UnsupportedOperationException, "metrics accept only GET")
		ctx.SetStatusCode(fasthttp.StatusMethodNotAllowed)
		return
	}
	s.scrape(ctx)
}

// logExchange writes the one line per request: who, which key, what, the
// outcome and the latency. Never plaintext, key material or secrets.
//
// A request refused before its signature verified says only what anyone
// may claim, in any size a body allows: its line is marked
// "authenticated":false, carries at most maxLoggedField bytes of each
// field, and is rate-limited (unauthenticatedEvent).
func (s *Server) logExchange(ctx *fasthttp.RequestCtx, x *exchange) {
	level := zerolog.InfoLevel
	if x.result != nil {
		level = zerolog.WarnLevel
		if x.result.name.Status() >= 500 {
			level = zerolog.ErrorLevel
		}
	}
	var ev *zerolog.Event
	field := func(s string) string { return s }
	switch {
	case !x.authenticated:
		ev = s.unauthenticatedEvent(level)
		field = cut
	case x.result != nil && x.result.shed != notShed:
		ev = s.throttledEvent(level)
	default:
		ev = s.log.WithLevel(level)
	}
	if ev == nil {
		return
	}
	if x.result != nil && x.req.RequestMetadata == nil {
		// Refused before its body was decoded (unauthenticated, shed,
		// disabled): its kmsRequestId and principal are what let an
		// operator find the call in CloudTrail. Decoded only for a line
		// that is written: under overload most refusals write none.
		decodeMetadata(ctx.PostBody(), &x.req)
	}
	md := x.req.RequestMetadata
	if md == nil {
		md = &RequestMetadata{}
	}
	ev = ev.Str("kmsRequestId", field(md.KMSRequestID)).
		Str("op", x.route.op.String()).
		Str("kmsOperation", field(md.KMSOperation)).
		Str("principal", field(md.AWSPrincipalARN)).
		Str("kmsKeyArn", field(md.KMSKeyARN)).
		Bytes("keyId", x.route.keyID).
		Str("accessKeyId", field(string(x.akid)))
	if x.store != nil {
		ev = ev.Str("keyStore", x.store.Name)
	}
	if md.KMSViaService != "" {
		ev = ev.Str("viaService", field(md.KMSViaService))
	}
	if md.AWSSourceVPC != "" {
		ev = ev.Str("sourceVpc", field(md.AWSSourceVPC))
	}
	if md.AWSSourceVPCE != "" {
		ev = ev.Str("sourceVpce", field(md.AWSSourceVPCE))
	}
	ev = ev.Int("status", ctx.Response.StatusCode())
	if x.rule != "" {
		ev = ev.Str("authz", x.rule)
	}
	if x.result != nil {
		ev = ev.Str("outcome", string(x.result.name)).Str("reason", field(x.result.message))
		if x.result.detail != "" {
			ev = ev.Str("detail", field(x.result.detail))
		}
	} else {
		ev = ev.Str("outcome", "ok")
	}
	ev.Float64("latency_ms", float64(x.took.Microseconds())/1000).Msg("xks request")
}

// unauthenticatedEvent starts a log line about input from a caller that
// has not authenticated (a refused request, a malformed one, a failed TLS
// handshake), or returns nil when the level is off or the rate limit says
// no. Such lines are what an attacker controls, in number as in content,
// so they come out of a token bucket (Config.UnauthenticatedLogRate); the
// first line after some were dropped says how many.
func (s *Server) unauthenticatedEvent(level zerolog.Level) *zerolog.Event {
	if level < s.log.GetLevel() || level < zerolog.GlobalLevel() {
		return nil
	}
	if !s.unauthLog.AllowN(s.cfg.Now(), 1) {
		s.unauthDropped.Add(1)
		s.metrics.unauthDropped.Inc()
		return nil
	}
	ev := s.log.WithLevel(level).Bool("authenticated", false)
	if n := s.unauthDropped.Swap(0); n > 0 {
		ev = ev.Int64("dropped", n)
	}
	return ev
}

// throttledEvent starts the log line of an authenticated request refused
// with ThrottlingException (CPU wait, in-flight limit, key store quota, HSM
// pool), or returns nil when the level is off or the rate limit says no.
// Such refusals come by the thousand per second exactly when the node has
// no CPU to spare, and a line each was a tenth of a refusal's cost; they
// come out of a token bucket of throttledLinesPerSecond, the first line
// after some were dropped says how many, and xksproxy_requests_shed_total
// counts them all.
func (s *Server) throttledEvent(level zerolog.Level) *zerolog.Event {
	if level < s.log.GetLevel() || level < zerolog.GlobalLevel() {
		return nil
	}
	if !s.throttledLog.AllowN(s.cfg.Now(), 1) {
		s.throttledDropped.Add(1)
		return nil
	}
	ev := s.log.WithLevel(level)
	if n := s.throttledDropped.Swap(0); n > 0 {
		ev = ev.Int64("dropped", n)
	}
	return ev
}

// throttledLinesPerSecond bounds the log lines of throttled requests, in
// bursts of ten seconds' worth: enough to see what was refused and for
// whom, not a line per refusal.
const throttledLinesPerSecond = 10

// maxFleetDetails is the specification's cap on ekmFleetDetails entries.
const maxFleetDetails = 10

// Version is the proxy's release version, reported in GetHealthStatus.
var Version = buildinfo.Read().Version
