package xksapi

import (
	"fmt"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// recovering serves h and turns a panic into 500 InternalException, so that
// one bad input or one bug stops one request, never the node: fasthttp does
// not recover handlers, and a panic there ends the process. The connection
// is closed, since whatever the handler left on it cannot be trusted.
func (s *Server) recovering(panics prometheus.Counter, h fasthttp.RequestHandler) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		defer func() {
			if p := recover(); p != nil {
				s.panicked(ctx, p, panics)
			}
		}()
		h(ctx)
	}
}

// panicked answers and logs a request whose handler panicked: the stack
// once, at error, with what finds the call in CloudTrail.
func (s *Server) panicked(ctx *fasthttp.RequestCtx, p any, panics prometheus.Counter) {
	stack := debug.Stack()
	panics.Inc()
	var req request
	func() {
		// The body may be what made the handler panic; reading it again
		// must not take the recovery down too.
		defer func() { _ = recover() }()
		decodeMetadata(ctx.PostBody(), &req)
	}()
	md := req.RequestMetadata
	if md == nil {
		md = &RequestMetadata{}
	}
	ctx.Response.Reset()
	writeError(ctx, InternalException, "the proxy failed while answering this request; retry")
	ctx.SetConnectionClose()
	if r, ok := parseRoute(ctx.Path()); ok {
		s.metrics.requests[r.op][outcomeIndex(&apiError{name: InternalException})].Inc()
	}
	s.log.Error().Str("kmsRequestId", cut(md.KMSRequestID)).Str("kmsOperation", cut(md.KMSOperation)).
		Str("path", cut(string(ctx.Path()))).Str("remote", ctx.RemoteAddr().String()).
		Str("panic", cut(fmt.Sprint(p))).Bytes("stack", stack).Msg("panic while serving a request")
}

// maxLoggedField is the most of any one caller-chosen value a log line
// carries when the caller may not be who it claims (unauthenticated, or a
// request that crashed its handler).
const maxLoggedField = 256

// cut shortens s to maxLoggedField bytes, marking that it did.
func cut(s string) string {
	if len(s) <= maxLoggedField {
		return s
	}
	return s[:maxLoggedField] + "…"
}
