package sigv4

// charSet is a byte class as a lookup table: every request runs a few hundred
// bytes through these checks, and a table beats a chain of comparisons.
type charSet [256]bool

func (s *charSet) all(b []byte) bool {
	for _, c := range b {
		if !s[c] {
			return false
		}
	}
	return true
}

func newCharSet(ranges string, singles string) *charSet {
	var s charSet
	for i := 0; i+1 < len(ranges); i += 2 {
		for c := int(ranges[i]); c <= int(ranges[i+1]); c++ {
			s[c] = true
		}
	}
	for i := 0; i < len(singles); i++ {
		s[singles[i]] = true
	}
	return &s
}

var (
	digitChars    = newCharSet("09", "")
	lowerHexChars = newCharSet("09af", "")
	alnumChars    = newCharSet("09azAZ", "")
	// scopeChars may appear in a credential scope's region and service.
	scopeChars = newCharSet("09azAZ", "-")
	// tokenChars may appear in an HTTP token (RFC 9110 section 5.6.2): the
	// syntax of methods and header names.
	tokenChars      = newCharSet("09azAZ", "!#$%&'*+-.^_`|~")
	lowerTokenChars = newCharSet("09az", "!#$%&'*+-.^_`|~")
	// unreservedChars are RFC 3986's unreserved characters, the only ones
	// SigV4 leaves unencoded.
	unreservedChars = newCharSet("09azAZ", "-._~")
)
