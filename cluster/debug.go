package cluster

import (
	"net/http"
	"net/http/pprof"
)

// debugRoutes serve the Go runtime's profiles, for an operator (or a
// performance engineer) to see where a node's CPU and memory go under real
// load: `go tool pprof` with the admin token. Profiles name functions and
// show no request data, but they are the process's insides, so they sit
// behind the admin API's authentication like everything else on it.
func (a *admin) debugRoutes(mux *http.ServeMux) {
	mux.Handle("GET /v1/debug/pprof/profile", a.authenticated(http.HandlerFunc(pprof.Profile)))
	mux.Handle("GET /v1/debug/pprof/trace", a.authenticated(http.HandlerFunc(pprof.Trace)))
	for _, name := range []string{"allocs", "block", "goroutine", "heap", "mutex", "threadcreate"} {
		mux.Handle("GET /v1/debug/pprof/"+name, a.authenticated(pprof.Handler(name)))
	}
}
