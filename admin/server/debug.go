package server

import (
	"net/http"
	"net/http/pprof"
)

// profile serves the Go runtime's profiles, for an operator (or a
// performance engineer) to see where a node's CPU and memory go under real
// load: `go tool pprof` with the admin token. Profiles name functions and
// show no request data, but they are the process's insides, so they sit
// behind the admin API's authentication like everything else on it.
func profile(w http.ResponseWriter, r *http.Request) {
	switch name := r.PathValue("profile"); name {
	case "profile":
		pprof.Profile(w, r)
	case "trace":
		pprof.Trace(w, r)
	case "allocs", "block", "goroutine", "heap", "mutex", "threadcreate":
		pprof.Handler(name).ServeHTTP(w, r)
	default:
		http.NotFound(w, r)
	}
}
