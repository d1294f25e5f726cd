// Package sigv4 verifies the AWS Signature Version 4 signatures with which
// AWS KMS signs its calls to an External Key Store (XKS) proxy, as described
// in Appendix A of the XKS proxy API specification. It is transport-agnostic:
// the HTTP server hands it the method, the raw path and query, a header
// lookup and the body, and it imports only the standard library.
//
// What Verify checks:
//
//   - The Authorization header (ParseAuthorization) uses AWS4-HMAC-SHA256
//     and names Credential, SignedHeaders and Signature exactly once each;
//     the Signature is 64 lowercase hex digits (AWS signers emit lowercase,
//     so uppercase is rejected as malformed rather than normalised).
//   - X-Amz-Date is present, appears once, and is exactly 20060102T150405Z.
//   - The credential scope names service kms-xks-proxy, the region of the
//     key store the request was routed to, the date of X-Amz-Date, and ends
//     in aws4_request.
//   - X-Amz-Date is no more than MaxSkew (5 minutes) from the server clock,
//     in either direction.
//   - SignedHeaders is lowercase, strictly sorted, includes host and
//     x-amz-date, and every header it names is present (a header with an
//     empty value counts as absent, because fasthttp cannot tell the two
//     apart) and, when the HeaderSource can say so, present only once.
//   - The method is an HTTP token and the path is plain: it starts with a
//     slash and holds only RFC 3986 unreserved characters and slashes, with
//     no empty, "." or ".." segments. Signers disagree on how to canonicalise
//     anything else (curl 7.88 signs the path as sent, AWS SDKs re-encode
//     it), and XKS paths never need it, so such paths fail as malformed
//     instead of verifying by luck.
//   - A query string, which XKS never sends, is canonicalised by the SigV4
//     rules: percent-decoded, re-encoded with uppercase escapes, sorted by
//     name then value. A '+' is a literal plus, as SigV4 signers encode a
//     space as %20.
//   - The payload is always hashed: the last line of the canonical request
//     is the SHA-256 of the body received, never a value the client claims.
//     A signed x-amz-content-sha256 must be that hash or UNSIGNED-PAYLOAD;
//     with UNSIGNED-PAYLOAD the body is still hashed, so a client that really
//     left the payload unsigned fails the signature check.
//   - The signature, recomputed from the secret the caller looked up for the
//     access key id, matches in constant time.
//
// What it does not do: it keeps no replay cache. The specification's
// protection against replay is the five-minute window, together with TLS
// (and optionally mTLS) on the connection; a captured request can be
// replayed inside that window. It does not look up credentials (the caller
// maps the access key id to a secret of the key store the path routed to),
// does not support presigned URLs, the Date header in place of X-Amz-Date,
// streaming (chunked) payload signatures or SigV4a, and does not interpret
// headers that are not signed.
//
// Errors wrap one of the sentinel errors (ErrMissing, ErrMalformed,
// ErrScope, ErrSignedHeaders, ErrClockSkew, ErrSignature) for errors.Is, and
// their messages are meant to be returned to AWS KMS and shown to operators:
// they never contain the secret, the derived signing key or the expected
// signature.
//
// Signer produces requests the way AWS KMS does, for tests and tools.
//
// Derived signing keys are cached per (date, region, service, secret) so the
// hot path computes one HMAC instead of five. Entries for dates that no
// longer fall inside the clock-skew window are dropped whenever a new key is
// added, so a cache holds at most two dates of keys per credential, and
// MaxCachedKeys caps it regardless.
package sigv4
