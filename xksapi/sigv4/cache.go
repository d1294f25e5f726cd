package sigv4

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"
)

// cachedKey is a derived signing key. It keeps only keyed HMAC states, not
// the key bytes themselves, and pools them because crypto/hmac keyed once can
// be Reset for the next message at no cost, while keying it allocates.
type cachedKey struct {
	date string // yyyymmdd of the scope, for eviction
	macs sync.Pool
}

func newCachedKey(key [sha256.Size]byte, date string) *cachedKey {
	k := &cachedKey{date: date}
	k.macs.New = func() any { return hmac.New(sha256.New, key[:]) }
	return k
}

// keyCache maps (date, region, service, secret) to a derived key. Reads are
// lock-free loads of an immutable map; the rare writer copies it under mu.
// A key is added at most once per credential, region and day, so copying is
// cheaper overall than making every read take a lock. The map keys contain
// the secret: a credential removed from the configuration stays in memory
// until its date leaves the window, a day at most.
type keyCache struct {
	mu      sync.Mutex
	entries atomic.Pointer[map[string]*cachedKey]
}

func (c *keyCache) load() map[string]*cachedKey {
	if p := c.entries.Load(); p != nil {
		return *p
	}
	return nil
}

func (c *keyCache) len() int { return len(c.load()) }

// signingKey returns the cached key for the scope and secret, deriving and
// caching it on a miss. The scope has passed the clock-skew check, so its
// date lies in the window that eviction keeps.
func (v *Verifier) signingKey(s *scratch, secret []byte, sc *scope, now time.Time) *cachedKey {
	s.key = appendCacheID(s.key[:0], secret, sc)
	if k, ok := v.cache.load()[string(s.key)]; ok {
		return k
	}
	k := newCachedKey(deriveKey(secret, sc.date, sc.region, sc.service), string(sc.date))
	skew := v.maxSkew()
	oldest := now.Add(-skew).UTC().Format("20060102")
	newest := now.Add(skew).UTC().Format("20060102")
	return v.cache.insert(s.key, k, oldest, newest, v.maxCachedKeys())
}

// insert adds k under id unless another goroutine got there first. It drops
// every entry whose date is outside [oldest, newest]: a scope date must equal
// the date of an X-Amz-Date within the skew window, so those keys can never
// verify anything again. If the cache is still full, it starts over rather
// than grow: the cap is a safety net, not a working set.
func (c *keyCache) insert(id []byte, k *cachedKey, oldest, newest string, limit int) *cachedKey {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.load()
	if existing, ok := old[string(id)]; ok {
		return existing
	}
	next := make(map[string]*cachedKey, len(old)+1)
	for oid, e := range old {
		if oldest <= e.date && e.date <= newest {
			next[oid] = e
		}
	}
	if len(next) >= limit {
		clear(next)
	}
	next[string(id)] = k
	c.entries.Store(&next)
	return k
}

// appendCacheID builds the cache key. Region and service are length-prefixed
// so that no two different scopes produce the same bytes; the secret goes
// last and needs no prefix.
func appendCacheID(b, secret []byte, sc *scope) []byte {
	b = append(b, sc.date...)
	b = binary.AppendUvarint(b, uint64(len(sc.region)))
	b = append(b, sc.region...)
	b = binary.AppendUvarint(b, uint64(len(sc.service)))
	b = append(b, sc.service...)
	return append(b, secret...)
}

// deriveKey computes the SigV4 signing key:
// HMAC(HMAC(HMAC(HMAC("AWS4"+secret, date), region), service), "aws4_request").
func deriveKey(secret, date, region, service []byte) [sha256.Size]byte {
	k := make([]byte, 0, 4+len(secret))
	k = append(append(k, "AWS4"...), secret...)
	for _, msg := range [][]byte{date, region, service, []byte(terminator)} {
		next := hmacSum(k, msg)
		// Each intermediate key signs anything for its date, so this copy is
		// wiped rather than left to the garbage collector (crypto/hmac's own
		// copies are out of reach).
		clear(k)
		k = next
	}
	var out [sha256.Size]byte
	copy(out[:], k)
	clear(k)
	return out
}

func hmacSum(key, msg []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	return m.Sum(nil)
}
