package xksapi

import (
	"sync"

	"golang.org/x/time/rate"

	"github.com/xksproxy/xksproxy/fsm"
)

// quotas holds one token bucket per key store with a request quota, so that
// one tenant of the proxy cannot starve the others (the specification lets
// a proxy answer ThrottlingException per path prefix).
type quotas struct {
	m sync.Map // key store name -> *quota
}

type quota struct {
	rps     uint32
	limiter *rate.Limiter
}

// allow takes a token from ks's bucket; a key store without a quota always
// passes. A changed quota takes effect on the next request.
func (q *quotas) allow(ks *fsm.KeyStore) bool {
	if ks.QuotaRPS == 0 {
		return true
	}
	v, ok := q.m.Load(ks.Name)
	if !ok || v.(*quota).rps != ks.QuotaRPS {
		// A one-second burst absorbs the jitter of a steady caller.
		v = &quota{rps: ks.QuotaRPS, limiter: rate.NewLimiter(rate.Limit(ks.QuotaRPS), int(ks.QuotaRPS))}
		q.m.Store(ks.Name, v)
	}
	return v.(*quota).limiter.Allow()
}
