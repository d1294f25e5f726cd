package sigv4

import (
	"bytes"
	"slices"
)

// appendCanonicalQuery appends the SigV4 canonical form of a raw query
// string: every name and value percent-decoded and re-encoded so that only
// unreserved characters stay literal (escapes in uppercase hex), a missing
// '=' read as an empty value, the pairs sorted by name and then by value,
// joined with '&'. Empty components ("a=1&&b=2") carry no parameter and are
// skipped. A '+' is a literal plus, not a space, because SigV4 signers encode
// spaces as %20. XKS requests carry no query, so this path may allocate.
func appendCanonicalQuery(dst, q []byte) ([]byte, error) {
	type param struct{ name, value []byte }
	var params []param
	for comp := range bytes.SplitSeq(q, []byte{'&'}) {
		if len(comp) == 0 {
			continue
		}
		rawName, rawValue, _ := bytes.Cut(comp, []byte{'='})
		name, ok1 := reencode(rawName)
		value, ok2 := reencode(rawValue)
		if !ok1 || !ok2 {
			return dst, fail(ErrMalformed, "query component "+quote(comp)+" has an invalid percent escape")
		}
		params = append(params, param{name, value})
	}
	slices.SortFunc(params, func(a, b param) int {
		if c := bytes.Compare(a.name, b.name); c != 0 {
			return c
		}
		return bytes.Compare(a.value, b.value)
	})
	for i, p := range params {
		if i > 0 {
			dst = append(dst, '&')
		}
		dst = append(dst, p.name...)
		dst = append(dst, '=')
		dst = append(dst, p.value...)
	}
	return dst, nil
}

// reencode decodes the percent escapes of s and encodes the result the way
// SigV4 wants it. It reports false for a '%' not followed by two hex digits.
func reencode(s []byte) ([]byte, bool) {
	const upperHex = "0123456789ABCDEF"
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '%' {
			if i+2 >= len(s) {
				return nil, false
			}
			hi, ok1 := unhex(s[i+1])
			lo, ok2 := unhex(s[i+2])
			if !ok1 || !ok2 {
				return nil, false
			}
			c = hi<<4 | lo
			i += 2
		}
		if unreservedChars[c] {
			out = append(out, c)
		} else {
			out = append(out, '%', upperHex[c>>4], upperHex[c&0xf])
		}
	}
	return out, true
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
