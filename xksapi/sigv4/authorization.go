package sigv4

import "bytes"

// Authorization is a parsed SigV4 Authorization header. Its fields alias the
// bytes given to ParseAuthorization, so they are valid only as long as those
// bytes are (for fasthttp, until the handler returns).
type Authorization struct {
	AccessKeyID   []byte
	Date          []byte // yyyymmdd from the credential scope
	Region        []byte
	Service       []byte
	SignedHeaders []byte // as sent, e.g. "host;x-amz-date"
	Signature     []byte // lowercase hex, 64 chars
}

// Limits on credential scope parts. AWS uses far shorter values; the limits
// only stop absurd input from travelling further, e.g. into log lines.
const (
	maxAccessKeyID = 128
	maxScopePart   = 64
)

// ParseAuthorization parses an Authorization header of the form
//
//	AWS4-HMAC-SHA256 Credential=AKID/yyyymmdd/region/service/aws4_request, SignedHeaders=a;b, Signature=hex
//
// Spaces may follow the algorithm and each comma; the three components may
// come in any order but each exactly once, and nothing else may appear. The
// access key id must be ASCII letters and digits (the key store enforces the
// specification's stricter 20..30 chars of A-Z2-7), region and service
// letters, digits and '-', and the signature 64 lowercase hex digits. An
// empty header is ErrMissing, a scope not ending in aws4_request is
// ErrScope, anything else wrong is ErrMalformed. Whether SignedHeaders is
// sorted, lowercase and complete is checked by Verify (ErrSignedHeaders);
// here it need only be a ';'-separated list of header-name characters.
func ParseAuthorization(h []byte) (Authorization, error) {
	var a Authorization
	if len(h) == 0 {
		return a, fail(ErrMissing, "no Authorization header")
	}
	rest, ok := bytes.CutPrefix(h, []byte(Algorithm+" "))
	if !ok {
		return a, fail(ErrMalformed, "Authorization header does not start with \""+Algorithm+" \"")
	}
	const (
		haveCredential = 1 << iota
		haveSignedHeaders
		haveSignature
		haveAll = haveCredential | haveSignedHeaders | haveSignature
	)
	seen := 0
	for {
		rest = skipSpaces(rest)
		part, tail, more := bytes.Cut(rest, []byte{','})
		rest = tail
		name, value, ok := bytes.Cut(part, []byte{'='})
		if !ok {
			return a, fail(ErrMalformed, "Authorization component "+quote(part)+" is not name=value")
		}
		var bit int
		var err error
		switch string(name) {
		case "Credential":
			bit = haveCredential
			err = parseCredential(value, &a)
		case "SignedHeaders":
			bit = haveSignedHeaders
			a.SignedHeaders = value
			if !validSignedHeadersSyntax(value) {
				err = fail(ErrMalformed, "SignedHeaders "+quote(value)+" is not a ';'-separated list of header names")
			}
		case "Signature":
			bit = haveSignature
			a.Signature = value
			if !isLowerHex64(value) {
				err = fail(ErrMalformed, "Signature must be 64 lowercase hex digits")
			}
		default:
			return a, fail(ErrMalformed, "unknown Authorization component "+quote(name))
		}
		if seen&bit != 0 {
			return a, fail(ErrMalformed, "Authorization component "+string(name)+" appears twice")
		}
		if err != nil {
			return a, err
		}
		seen |= bit
		if !more {
			break
		}
	}
	if seen != haveAll {
		return a, fail(ErrMalformed, "Authorization header needs Credential, SignedHeaders and Signature")
	}
	return a, nil
}

func parseCredential(v []byte, a *Authorization) error {
	var parts [5][]byte
	for i := range parts {
		if i == len(parts)-1 {
			parts[i] = v
			break
		}
		p, rest, ok := bytes.Cut(v, []byte{'/'})
		if !ok {
			return fail(ErrMalformed, "Credential must be access-key-id/date/region/service/aws4_request")
		}
		parts[i], v = p, rest
	}
	akid, date, region, service, term := parts[0], parts[1], parts[2], parts[3], parts[4]
	switch {
	case len(akid) == 0 || len(akid) > maxAccessKeyID || !alnumChars.all(akid):
		return fail(ErrMalformed, "Credential access key id must be 1 to 128 ASCII letters and digits")
	case len(date) != 8 || !digitChars.all(date):
		return fail(ErrMalformed, "Credential date "+quote(date)+" is not yyyymmdd")
	case !validScopePart(region):
		return fail(ErrMalformed, "Credential region "+quote(region)+" is not a region name")
	case !validScopePart(service):
		return fail(ErrMalformed, "Credential service "+quote(service)+" is not a service name")
	case string(term) != terminator:
		if bytes.IndexByte(term, '/') >= 0 {
			return fail(ErrMalformed, "Credential must be access-key-id/date/region/service/aws4_request")
		}
		return fail(ErrScope, "credential scope ends in "+quote(term)+", not "+terminator)
	}
	a.AccessKeyID, a.Date, a.Region, a.Service = akid, date, region, service
	return nil
}

func skipSpaces(b []byte) []byte {
	for len(b) > 0 && b[0] == ' ' {
		b = b[1:]
	}
	return b
}

func validScopePart(b []byte) bool {
	return len(b) > 0 && len(b) <= maxScopePart && scopeChars.all(b)
}

// validSignedHeadersSyntax accepts header-name tokens of either case joined
// by ';', so that an uppercase name reaches Verify and is reported there as
// the SignedHeaders problem it is.
func validSignedHeadersSyntax(b []byte) bool {
	for name := range bytes.SplitSeq(b, []byte{';'}) {
		if len(name) == 0 || !tokenChars.all(name) {
			return false
		}
	}
	return true
}

func isLowerHex64(b []byte) bool {
	return len(b) == 64 && lowerHexChars.all(b)
}
