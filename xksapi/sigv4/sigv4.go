package sigv4

import (
	"errors"
	"strconv"
	"time"
)

// Service is the service name AWS KMS puts in the credential scope of every
// XKS proxy request.
const Service = "kms-xks-proxy"

// Algorithm is the only signing algorithm the XKS specification uses.
const Algorithm = "AWS4-HMAC-SHA256"

// AmzDateFormat is the layout of the X-Amz-Date header.
const AmzDateFormat = "20060102T150405Z"

// DefaultMaxSkew is the specification's limit on how far X-Amz-Date may be
// from the server clock, in either direction.
const DefaultMaxSkew = 5 * time.Minute

// DefaultMaxCachedKeys caps the derived-key cache. Live entries number about
// two per credential (the window can straddle midnight), so this is far above
// any real configuration and only bounds memory if something goes wrong.
const DefaultMaxCachedKeys = 1024

const terminator = "aws4_request"

// Sentinel errors. Every error Verify or ParseAuthorization returns is, or
// wraps, exactly one of them.
var (
	// ErrMissing: no Authorization header, or no X-Amz-Date header.
	ErrMissing = errors.New("sigv4: missing authentication information")
	// ErrMalformed: the Authorization header, X-Amz-Date, the method, the
	// path, the query or a signed header value cannot be parsed or is not in
	// the form this verifier accepts.
	ErrMalformed = errors.New("sigv4: malformed request authentication")
	// ErrScope: the credential scope names another service or region, a date
	// other than X-Amz-Date's, or does not end in aws4_request.
	ErrScope = errors.New("sigv4: credential scope does not match")
	// ErrSignedHeaders: SignedHeaders lacks host or x-amz-date, is not
	// lowercase and sorted, or names a header the request does not carry.
	ErrSignedHeaders = errors.New("sigv4: signed headers are unacceptable")
	// ErrClockSkew: X-Amz-Date is too far from the server clock.
	ErrClockSkew = errors.New("sigv4: request time is too far from server time")
	// ErrSignature: the signature (or a signed payload hash) does not match.
	ErrSignature = errors.New("sigv4: request signature does not match")
)

// authError carries an operator-facing message and the sentinel it belongs
// to, so errors.Is works without the message repeating the sentinel's text.
type authError struct {
	kind error
	msg  string
}

func (e *authError) Error() string { return e.msg }
func (e *authError) Unwrap() error { return e.kind }

func fail(kind error, msg string) error {
	return &authError{kind: kind, msg: "sigv4: " + msg}
}

// quote renders client-supplied bytes for an error message: quoted so that
// control characters cannot forge log lines, and truncated so that a huge
// header cannot make a huge error.
func quote(b []byte) string {
	const limit = 64
	if len(b) > limit {
		return strconv.Quote(string(b[:limit])) + "..."
	}
	return strconv.Quote(string(b))
}

// HeaderSource looks up a request header by name. Verify always passes
// lowercase names and the lookup must be case-insensitive;
// *fasthttp.RequestHeader satisfies it. A missing header is nil or empty.
type HeaderSource interface {
	Peek(name string) []byte
}

// MultiHeaderSource is a HeaderSource that can also return every value of a
// repeated header, as *fasthttp.RequestHeader can. When Request.Header
// implements it, a signed header that appears more than once is rejected
// with ErrMalformed: Peek would see only the first copy, and whatever reads
// the header later might take another.
type MultiHeaderSource interface {
	HeaderSource
	PeekAll(name string) [][]byte
}

// Request is the part of an HTTP request that SigV4 covers. The slices are
// only read, and only during Verify.
type Request struct {
	Method  []byte       // as on the request line, e.g. "POST"
	RawPath []byte       // the URI path exactly as sent, without the query
	Query   []byte       // the raw query string without '?'; empty for XKS
	Header  HeaderSource // the request headers, including Host
	Body    []byte       // the complete request body
}
