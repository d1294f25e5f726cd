package fsm

import (
	"fmt"
	"math/bits"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Operation is an XKS operation that a grant may allow, as one bit, so that
// a set of operations is their union (as with Usage). Grants store
// operations by name (String), the names the data plane and the XKS
// specification use; the replicated encoding does not depend on the bits.
type Operation uint8

const (
	OperationGetKeyMetadata Operation = 1 << iota
	OperationEncrypt
	OperationDecrypt
)

// AllOperations is every operation a grant may allow, and what a grant that
// names none allows.
const AllOperations = OperationGetKeyMetadata | OperationEncrypt | OperationDecrypt

// operationNames lists every operation with its name, in the order of the
// specification.
var operationNames = [...]struct {
	op   Operation
	name string
}{
	{OperationGetKeyMetadata, "GetKeyMetadata"}, {OperationEncrypt, "Encrypt"}, {OperationDecrypt, "Decrypt"},
}

// ParseOperation returns the operation a grant names ("GetKeyMetadata",
// "Encrypt" or "Decrypt", exactly), or 0 for any other name.
func ParseOperation(name string) Operation {
	for _, on := range operationNames {
		if on.name == name {
			return on.op
		}
	}
	return 0
}

// String is the name of one operation.
func (o Operation) String() string {
	for _, on := range operationNames {
		if on.op == o {
			return on.name
		}
	}
	return fmt.Sprintf("Operation(%d)", uint8(o))
}

// Names lists the operations of a set by name, in the specification's
// order.
func (o Operation) Names() []string {
	var names []string
	for _, on := range operationNames {
		if o&on.op != 0 {
			names = append(names, on.name)
		}
	}
	return names
}

// AllKeys as a grant's KeyID makes it apply to every key of its key store.
const AllKeys = "*"

// Grant says which callers may use a key, and for what: the XKS
// specification's secondary authorization, on the request's requestMetadata.
// It matches a request when every non-empty condition matches: any entry of
// a list may match (OR within a list), and every list must (AND across).
type Grant struct {
	ID       string `json:"id"` // unique in the state
	KeyStore string `json:"keyStore"`
	KeyID    string `json:"keyId"` // a key of KeyStore, or AllKeys
	// Principals are awsPrincipalArn patterns, at least one; `*` matches any
	// run of characters (including none), everything else matches itself,
	// case-sensitively: "arn:aws:iam::111122223333:role/*".
	Principals []string `json:"principals"`
	// Accounts: the 12-digit account field of awsPrincipalArn.
	Accounts []string `json:"accounts,omitempty"`
	// Regions: the region field of kmsKeyArn.
	Regions     []string `json:"regions,omitempty"`
	ViaServices []string `json:"viaServices,omitempty"` // kmsViaService, exactly
	SourceVPCs  []string `json:"sourceVpcs,omitempty"`  // awsSourceVpc, exactly
	SourceVPCEs []string `json:"sourceVpces,omitempty"` // awsSourceVpce, exactly
	// Operations the grant allows; empty allows all three.
	Operations []string  `json:"operations,omitempty"`
	CreatedAt  time.Time `json:"createdAt"` // set by Apply from the command's At
}

// maxGrantList bounds every list of a grant, and so the work one grant can
// add to a request.
const maxGrantList = 64

var (
	accountPattern    = regexp.MustCompile(`^[0-9]{12}$`)
	viaServicePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{0,252}$`)
	vpcPattern        = regexp.MustCompile(`^vpc-[0-9a-f]{1,32}$`)
	vpcePattern       = regexp.MustCompile(`^vpce-[0-9a-f]{1,32}$`)
)

// validate checks the grant's own fields; the key store and key are the
// command's business.
func (g *Grant) validate() error {
	if !namePattern.MatchString(g.ID) {
		return invalid("grant id %q: use 1-64 characters of A-Z a-z 0-9 . _ -", g.ID)
	}
	if g.KeyID != AllKeys && !keyIDPattern.MatchString(g.KeyID) {
		return invalid("grant %s: key id %q: use %q for every key or 1-128 characters of A-Z a-z 0-9 . _ -", g.ID, g.KeyID, AllKeys)
	}
	for _, l := range [][]string{g.Principals, g.Accounts, g.Regions, g.ViaServices, g.SourceVPCs, g.SourceVPCEs, g.Operations} {
		if len(l) > maxGrantList {
			return invalid("grant %s: a list has %d entries; at most %d", g.ID, len(l), maxGrantList)
		}
	}
	if len(g.Principals) == 0 {
		return invalid("grant %s: needs at least one principal pattern (%q matches every principal)", g.ID, "*")
	}
	for _, p := range g.Principals {
		if p == "" || len(p) > 2048 || strings.IndexFunc(p, func(r rune) bool { return r <= ' ' || r > '~' }) >= 0 {
			return invalid("grant %s: principal pattern %q: use 1-2048 printable ASCII characters without spaces", g.ID, p)
		}
	}
	lists := []struct {
		name    string
		values  []string
		pattern *regexp.Regexp
		want    string
	}{
		{"account", g.Accounts, accountPattern, "12 digits"},
		{"region", g.Regions, regionPattern, "an AWS region name"},
		{"via service", g.ViaServices, viaServicePattern, "a service host name such as ec2.us-east-1.amazonaws.com"},
		{"source VPC", g.SourceVPCs, vpcPattern, "vpc- and hexadecimal digits"},
		{"source VPC endpoint", g.SourceVPCEs, vpcePattern, "vpce- and hexadecimal digits"},
	}
	for _, l := range lists {
		for _, v := range l.values {
			if !l.pattern.MatchString(v) {
				return invalid("grant %s: %s %q: want %s", g.ID, l.name, v, l.want)
			}
		}
	}
	for _, op := range g.Operations {
		if ParseOperation(op) == 0 {
			return invalid("grant %s: operation %q: want %s, %s or %s", g.ID, op, OperationGetKeyMetadata, OperationEncrypt, OperationDecrypt)
		}
	}
	return nil
}

func cloneGrant(g Grant) *Grant {
	g.Principals = slices.Clone(g.Principals)
	g.Accounts = slices.Clone(g.Accounts)
	g.Regions = slices.Clone(g.Regions)
	g.ViaServices = slices.Clone(g.ViaServices)
	g.SourceVPCs = slices.Clone(g.SourceVPCs)
	g.SourceVPCEs = slices.Clone(g.SourceVPCEs)
	g.Operations = slices.Clone(g.Operations)
	return &g
}

// RequestContext is what a request tells about its caller: the
// requestMetadata fields a grant can test.
type RequestContext struct {
	PrincipalARN string // awsPrincipalArn
	KMSKeyARN    string // kmsKeyArn
	ViaService   string // kmsViaService
	SourceVPC    string // awsSourceVpc
	SourceVPCE   string // awsSourceVpce
}

// compiledGrant is a Grant prepared at view build time so that a request
// tests it without allocating.
type compiledGrant struct {
	id          string
	rule        string    // what Authorize reports when this grant allows
	ops         Operation // the set the grant allows
	principals  []pattern
	accounts    []string
	regions     []string
	viaServices []string
	sourceVPCs  []string
	sourceVPCEs []string
}

func compileGrant(g *Grant) *compiledGrant {
	c := &compiledGrant{
		id:          g.ID,
		rule:        "grant " + g.ID,
		ops:         AllOperations,
		accounts:    g.Accounts,
		regions:     g.Regions,
		viaServices: g.ViaServices,
		sourceVPCs:  g.SourceVPCs,
		sourceVPCEs: g.SourceVPCEs,
	}
	if len(g.Operations) > 0 {
		c.ops = 0
		for _, op := range g.Operations {
			c.ops |= ParseOperation(op)
		}
	}
	for _, p := range g.Principals {
		c.principals = append(c.principals, compilePattern(p))
	}
	return c
}

// allows tests one request; account and region come from the request's ARNs.
// The exact-match lists go before the principal patterns: they are cheaper
// and, in a store with many grants, usually what tells grants apart.
func (c *compiledGrant) allows(op Operation, rc *RequestContext, account, region string) bool {
	if c.ops&op == 0 ||
		!oneOf(c.accounts, account) ||
		!oneOf(c.regions, region) ||
		!oneOf(c.viaServices, rc.ViaService) ||
		!oneOf(c.sourceVPCs, rc.SourceVPC) ||
		!oneOf(c.sourceVPCEs, rc.SourceVPCE) {
		return false
	}
	for i := range c.principals {
		if c.principals[i].match(rc.PrincipalARN) {
			return true
		}
	}
	return false
}

// oneOf is a condition list's test: empty means no condition.
func oneOf(list []string, v string) bool {
	return len(list) == 0 || slices.Contains(list, v)
}

// pattern is a principal pattern split at its `*`s: the text must start
// with prefix, end with suffix, and hold middle in order in between.
type pattern struct {
	exact  bool // no `*` at all: the text must equal prefix
	prefix string
	middle []string
	suffix string
}

func compilePattern(p string) pattern {
	parts := strings.Split(p, "*")
	if len(parts) == 1 {
		return pattern{exact: true, prefix: p}
	}
	c := pattern{prefix: parts[0], suffix: parts[len(parts)-1]}
	for _, m := range parts[1 : len(parts)-1] {
		if m != "" {
			c.middle = append(c.middle, m)
		}
	}
	return c
}

// match takes the leftmost place for each middle part, which is enough when
// `*` is the only wildcard: any later match leaves less room for the rest.
func (p *pattern) match(s string) bool {
	if p.exact {
		return s == p.prefix
	}
	if len(s) < len(p.prefix)+len(p.suffix) || !strings.HasPrefix(s, p.prefix) || !strings.HasSuffix(s, p.suffix) {
		return false
	}
	s = s[len(p.prefix) : len(s)-len(p.suffix)]
	for _, m := range p.middle {
		i := strings.Index(s, m)
		if i < 0 {
			return false
		}
		s = s[i+len(m):]
	}
	return true
}

// arnField returns field n (from 0) of an ARN,
// arn:partition:service:region:account:resource, or "" when it has no such
// field.
func arnField(arn string, n int) string {
	for range n {
		i := strings.IndexByte(arn, ':')
		if i < 0 {
			return ""
		}
		arn = arn[i+1:]
	}
	i := strings.IndexByte(arn, ':')
	if i < 0 {
		return ""
	}
	return arn[:i]
}

var emptyRequest RequestContext

// Authorize decides whether the request described by rc may perform op (one
// operation, not a set) on key k of this key store.
// rule names the grant that allowed it, or says why nothing did; it is
// bounded in length and never quotes the request, so it may go into an API
// error message as it is. The allow path does not allocate.
func (s *StoreView) Authorize(k *Key, op Operation, rc *RequestContext) (allowed bool, rule string) {
	if bits.OnesCount8(uint8(op)) != 1 || op&^AllOperations != 0 {
		return false, "operation is not one of GetKeyMetadata, Encrypt, Decrypt"
	}
	if rc == nil {
		rc = &emptyRequest
	}
	grants, named := s.keyGrants[k.ID]
	if !named {
		grants = s.storeGrants
	}
	if len(grants) == 0 {
		if s.GrantsMode == GrantsOpen {
			return true, "no grant names the key (key store open)"
		}
		return false, fmt.Sprintf("no grant matches: no grant names key %s (key store %s closed)", k.ID, s.Name)
	}
	account, region := arnField(rc.PrincipalARN, 4), arnField(rc.KMSKeyARN, 3)
	for _, g := range grants {
		if g.allows(op, rc, account, region) {
			return true, g.rule
		}
	}
	return false, fmt.Sprintf("no grant matches the principal for %s on key %s (key store %s %s, %d grants name the key)",
		op, k.ID, s.Name, s.GrantsMode, len(grants))
}
