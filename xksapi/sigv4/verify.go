package sigv4

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"hash"
	"sync"
	"time"
)

// Verifier checks SigV4 signatures and caches derived signing keys. The zero
// value is ready to use; NewVerifier is equivalent. Set the fields before the
// first Verify: they are read without synchronisation.
type Verifier struct {
	// MaxSkew is how far X-Amz-Date may be from the server clock, either
	// way; exactly MaxSkew is accepted. Zero means DefaultMaxSkew.
	MaxSkew time.Duration
	// MaxCachedKeys caps the derived-key cache. Zero means
	// DefaultMaxCachedKeys.
	MaxCachedKeys int

	cache keyCache
}

// NewVerifier returns a Verifier with the specification's 5-minute window.
func NewVerifier() *Verifier {
	return &Verifier{MaxSkew: DefaultMaxSkew, MaxCachedKeys: DefaultMaxCachedKeys}
}

func (v *Verifier) maxSkew() time.Duration {
	if v.MaxSkew > 0 {
		return v.MaxSkew
	}
	return DefaultMaxSkew
}

func (v *Verifier) maxCachedKeys() int {
	if v.MaxCachedKeys > 0 {
		return v.MaxCachedKeys
	}
	return DefaultMaxCachedKeys
}

// Verify checks a request already parsed into auth against secret (the
// credential the caller found for auth.AccessKeyID in the key store the path
// routed to) and that key store's region, at time now. It returns nil only if
// every check listed in the package documentation passes. It is safe for
// concurrent use.
func (v *Verifier) Verify(req *Request, auth *Authorization, secret []byte, region string, now time.Time) error {
	return v.verify(req, auth, secret, region, Service, now)
}

// verify is Verify with the service as a parameter, so that AWS's published
// test vectors (service "service") can exercise the whole path.
func (v *Verifier) verify(req *Request, auth *Authorization, secret []byte, region, service string, now time.Time) error {
	if auth == nil || len(auth.Signature) == 0 {
		return fail(ErrMissing, "no Authorization header")
	}
	if req == nil || req.Header == nil {
		return fail(ErrMissing, "no request headers")
	}
	multi, _ := req.Header.(MultiHeaderSource)
	amzDate, err := lookup(req.Header, multi, "x-amz-date")
	if err != nil {
		return err
	}
	if len(amzDate) == 0 {
		return fail(ErrMissing, "no X-Amz-Date header")
	}
	signedAt, ok := parseAmzDate(amzDate)
	if !ok {
		return fail(ErrMalformed, "X-Amz-Date "+quote(amzDate)+" is not in the form "+AmzDateFormat)
	}
	switch {
	case string(auth.Service) != service:
		return fail(ErrScope, "credential scope service is "+quote(auth.Service)+", not "+service)
	case string(auth.Region) != region:
		return fail(ErrScope, "credential scope region "+quote(auth.Region)+" is not the key store's region "+quote([]byte(region)))
	case !bytes.Equal(auth.Date, amzDate[:8]):
		return fail(ErrScope, "credential scope date "+quote(auth.Date)+" is not the date of X-Amz-Date "+string(amzDate))
	}
	skew := v.maxSkew()
	if d := now.Sub(signedAt); d > skew || d < -skew {
		return fail(ErrClockSkew, "X-Amz-Date "+string(amzDate)+" is more than "+skew.String()+
			" from server time "+now.UTC().Format(AmzDateFormat))
	}

	s := getScratch()
	defer putScratch(s)
	sc := scope{amzDate: amzDate, date: auth.Date, region: auth.Region, service: auth.Service}
	if err := s.stringToSign(req, multi, auth.SignedHeaders, &sc); err != nil {
		return err
	}
	key := v.signingKey(s, secret, &sc, now)
	mac := key.macs.Get().(hash.Hash)
	mac.Reset()
	mac.Write(s.buf)
	hex.Encode(s.hex[:], mac.Sum(s.sum[:0]))
	key.macs.Put(mac)
	if subtle.ConstantTimeCompare(s.hex[:], auth.Signature) != 1 {
		return ErrSignature
	}
	return nil
}

// scope is what the credential scope and X-Amz-Date contribute to the string
// to sign; every field has been checked against the server's expectations.
type scope struct {
	amzDate, date, region, service []byte
}

// scratch holds the per-call buffers. It is pooled so that the hot path does
// not allocate: the SHA-256 state, the canonical request (later the string to
// sign) and the digests all live here.
type scratch struct {
	sha     hash.Hash
	buf     []byte
	key     []byte
	query   []byte
	sum     [sha256.Size]byte
	hex     [2 * sha256.Size]byte
	bodyHex [2 * sha256.Size]byte
}

var scratchPool = sync.Pool{New: func() any {
	return &scratch{sha: sha256.New(), buf: make([]byte, 0, 1024), key: make([]byte, 0, 128)}
}}

// maxRetainedBuf stops one huge header from pinning a huge buffer in the pool.
const maxRetainedBuf = 16 << 10

func getScratch() *scratch { return scratchPool.Get().(*scratch) }

func putScratch(s *scratch) {
	if cap(s.buf) > maxRetainedBuf || cap(s.query) > maxRetainedBuf || cap(s.key) > maxRetainedBuf {
		return
	}
	scratchPool.Put(s)
}

// stringToSign leaves the SigV4 string to sign in s.buf. It validates the
// method, path, query and signed headers as it canonicalises them, because
// anything it cannot canonicalise unambiguously must fail rather than be
// guessed at.
func (s *scratch) stringToSign(req *Request, multi MultiHeaderSource, signedHeaders []byte, sc *scope) error {
	if len(req.Method) == 0 || !tokenChars.all(req.Method) {
		return fail(ErrMalformed, "request method "+quote(req.Method)+" is not an HTTP token")
	}
	if !plainPath(req.RawPath) {
		return fail(ErrMalformed, "request path "+quote(req.RawPath)+
			" is not a plain path (only unreserved characters and single slashes, no dot segments)")
	}

	s.sha.Reset()
	s.sha.Write(req.Body)
	hex.Encode(s.bodyHex[:], s.sha.Sum(s.sum[:0]))

	b := append(s.buf[:0], req.Method...)
	b = append(b, '\n')
	b = append(b, req.RawPath...)
	b = append(b, '\n')
	if len(req.Query) > 0 {
		var err error
		if s.query, err = appendCanonicalQuery(s.query[:0], req.Query); err != nil {
			return err
		}
		b = append(b, s.query...)
	}
	b = append(b, '\n')

	var haveHost, haveDate bool
	var prev []byte
	for name := range bytes.SplitSeq(signedHeaders, []byte{';'}) {
		if len(name) == 0 || !lowerTokenChars.all(name) {
			return fail(ErrSignedHeaders, "SignedHeaders "+quote(signedHeaders)+" must list lowercase header names")
		}
		if prev != nil && bytes.Compare(prev, name) >= 0 {
			return fail(ErrSignedHeaders, "SignedHeaders "+quote(signedHeaders)+" is not sorted or repeats a name")
		}
		prev = name
		var value []byte
		switch string(name) {
		case "x-amz-date":
			haveDate = true
			value = sc.amzDate
		default:
			var err error
			if value, err = lookup(req.Header, multi, headerName(name)); err != nil {
				return err
			}
			if len(value) == 0 {
				return fail(ErrSignedHeaders, "signed header "+string(name)+" is not in the request")
			}
			haveHost = haveHost || string(name) == "host"
		}
		b = append(b, name...)
		b = append(b, ':')
		var ok bool
		if b, ok = appendCanonicalValue(b, value); !ok {
			return fail(ErrMalformed, "header "+string(name)+" contains control characters")
		}
		b = append(b, '\n')
		if string(name) == "x-amz-content-sha256" {
			if err := checkContentSHA256(value, s.bodyHex[:]); err != nil {
				return err
			}
		}
	}
	if !haveHost || !haveDate {
		return fail(ErrSignedHeaders, "SignedHeaders "+quote(signedHeaders)+" must include host and x-amz-date")
	}
	b = append(b, '\n')
	b = append(b, signedHeaders...)
	b = append(b, '\n')
	b = append(b, s.bodyHex[:]...)

	s.sha.Reset()
	s.sha.Write(b)
	hex.Encode(s.hex[:], s.sha.Sum(s.sum[:0]))

	b = append(b[:0], Algorithm+"\n"...)
	b = append(b, sc.amzDate...)
	b = append(b, '\n')
	b = appendScope(b, sc)
	b = append(b, '\n')
	b = append(b, s.hex[:]...)
	s.buf = b
	return nil
}

func appendScope(b []byte, sc *scope) []byte {
	b = append(b, sc.date...)
	b = append(b, '/')
	b = append(b, sc.region...)
	b = append(b, '/')
	b = append(b, sc.service...)
	b = append(b, '/')
	return append(b, terminator...)
}

// checkContentSHA256 rejects a signed x-amz-content-sha256 that contradicts
// the body. The canonical request uses the body's own hash either way; this
// check only turns "the body changed" into a clearer error.
func checkContentSHA256(value, bodyHex []byte) error {
	value = bytes.Trim(value, " \t")
	if string(value) == "UNSIGNED-PAYLOAD" || bytes.Equal(value, bodyHex) {
		return nil
	}
	return fail(ErrSignature, "x-amz-content-sha256 is not the SHA-256 of the request body "+
		"(streaming payloads are not supported)")
}

// lookup returns the value of a header, rejecting repeats when the source
// can report them.
func lookup(h HeaderSource, multi MultiHeaderSource, name string) ([]byte, error) {
	if multi == nil {
		return h.Peek(name), nil
	}
	values := multi.PeekAll(name)
	switch len(values) {
	case 0:
		return nil, nil
	case 1:
		return values[0], nil
	}
	return nil, fail(ErrMalformed, "header "+name+" appears more than once")
}

// headerName returns name as a string, without allocating for the headers
// that signers actually sign; a string built from the bytes would escape
// through the HeaderSource interface call.
func headerName(name []byte) string {
	switch string(name) {
	case "host":
		return "host"
	case "content-type":
		return "content-type"
	case "content-length":
		return "content-length"
	case "x-amz-content-sha256":
		return "x-amz-content-sha256"
	case "x-amz-security-token":
		return "x-amz-security-token"
	case "x-amz-target":
		return "x-amz-target"
	case "user-agent":
		return "user-agent"
	case "accept":
		return "accept"
	}
	return string(name)
}

// appendCanonicalValue appends a header value with leading and trailing
// blanks removed and each inner run of blanks collapsed to one space, as
// SigV4 requires. It refuses control characters: a newline in a value could
// otherwise forge further lines of the canonical request.
func appendCanonicalValue(b, value []byte) ([]byte, bool) {
	blank := false
	wrote := false
	for _, c := range value {
		switch {
		case c == ' ' || c == '\t':
			blank = true
			continue
		case c < ' ' || c == 0x7f:
			return b, false
		}
		if blank && wrote {
			b = append(b, ' ')
		}
		b = append(b, c)
		blank, wrote = false, true
	}
	return b, true
}

// plainPath reports whether p is an absolute path of unreserved characters
// with no empty, "." or ".." segment except a trailing slash. Such a path is
// its own SigV4 canonical URI under every signer's rules.
func plainPath(p []byte) bool {
	if len(p) == 0 || p[0] != '/' {
		return false
	}
	for seg := range bytes.SplitSeq(p[1:], []byte{'/'}) {
		switch string(seg) {
		case ".", "..":
			return false
		}
		if !unreservedChars.all(seg) {
			return false
		}
	}
	return !bytes.Contains(p, []byte("//"))
}

// parseAmzDate parses exactly AmzDateFormat without allocating; time.Parse
// would also accept values SigV4 signers never produce.
func parseAmzDate(b []byte) (time.Time, bool) {
	if len(b) != len(AmzDateFormat) || b[8] != 'T' || b[15] != 'Z' {
		return time.Time{}, false
	}
	num := func(s []byte) (int, bool) {
		n := 0
		for _, c := range s {
			if !digitChars[c] {
				return 0, false
			}
			n = n*10 + int(c-'0')
		}
		return n, true
	}
	year, ok1 := num(b[0:4])
	month, ok2 := num(b[4:6])
	day, ok3 := num(b[6:8])
	hour, ok4 := num(b[9:11])
	minute, ok5 := num(b[11:13])
	sec, ok6 := num(b[13:15])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) || month < 1 || month > 12 || day < 1 ||
		hour > 23 || minute > 59 || sec > 59 {
		return time.Time{}, false
	}
	t := time.Date(year, time.Month(month), day, hour, minute, sec, 0, time.UTC)
	if t.Day() != day {
		return time.Time{}, false
	}
	return t, true
}
