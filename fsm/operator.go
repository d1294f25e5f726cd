package fsm

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"regexp"
	"strings"
	"time"
)

// Role is what an operator may do through the admin API. The roles nest:
// each may do everything the one before it may.
type Role string

const (
	// RoleReader reads: every listing and status, the audit trail.
	RoleReader Role = "reader"
	// RoleKillSwitch also disables a key or a key store, and nothing else:
	// the emergency role, safe to hand to an on-call responder.
	RoleKillSwitch Role = "killswitch"
	// RoleOperator also manages key stores, credentials, keys and grants.
	RoleOperator Role = "operator"
	// RoleAdmin also manages operators, membership, snapshots and profiles.
	RoleAdmin Role = "admin"
)

// Roles lists the roles from the least to the most privileged.
var Roles = []Role{RoleReader, RoleKillSwitch, RoleOperator, RoleAdmin}

func (r Role) rank() int {
	for i, x := range Roles {
		if x == r {
			return i
		}
	}
	return -1
}

// Valid reports whether r is one of Roles.
func (r Role) Valid() bool { return r.rank() >= 0 }

// Allows reports whether an operator of role r may do what needs role need.
func (r Role) Allows(need Role) bool { return r.Valid() && need.Valid() && r.rank() >= need.rank() }

// MaxOperators bounds the named operators: enough for every person and
// pipeline of a team, few enough to review.
const MaxOperators = 256

// BootstrapOperator names the operator of a node's admin.token_file. It is
// not in the state (each node reads its own file), so no named operator may
// take its name.
const BootstrapOperator = "bootstrap"

// Operator is a named admin API token. The state holds the SHA-256 of the
// token, never the token: the token is 32 random bytes, so a fast hash
// leaves nothing to brute-force, and every request can be checked without
// the cost a slow KDF would add to each admin call on every node.
type Operator struct {
	Name      string    `json:"name"`
	Role      Role      `json:"role"`
	TokenHash string    `json:"tokenHash"` // hex SHA-256 of the token
	CreatedAt time.Time `json:"createdAt"`
}

// TokenHash is the hash of an admin token as the state holds it.
func TokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// TokenFingerprint names a token in the audit trail and in forwarded
// requests without revealing it: the first 16 hex digits of its hash.
func TokenFingerprint(hash string) string { return "sha256:" + hash[:min(16, len(hash))] }

// OperatorByToken finds the operator whose token hashes to hash, comparing
// every hash in constant time.
func (s *State) OperatorByToken(hash string) *Operator {
	var found *Operator
	for _, op := range s.operators {
		if subtle.ConstantTimeCompare([]byte(op.TokenHash), []byte(hash)) == 1 {
			found = op
		}
	}
	return found
}

// Operator returns the named operator, or nil.
func (s *State) Operator(name string) *Operator { return s.operators[name] }

// Operators lists the named operators by name.
func (s *State) Operators() []*Operator { return sortedValues(s.operators) }

var tokenHashPattern = regexp.MustCompile(`^[0-9a-f]{64}$`)

func validOperator(op *Operator) error {
	switch {
	case !namePattern.MatchString(op.Name):
		return invalid("operator name %q: use 1-64 characters of A-Z a-z 0-9 . _ -", op.Name)
	case strings.EqualFold(op.Name, BootstrapOperator):
		return invalid("operator name %q is the token_file's operator", op.Name)
	case !op.Role.Valid():
		return invalid("operator %s: role %q: want one of reader, killswitch, operator, admin", op.Name, op.Role)
	case !tokenHashPattern.MatchString(op.TokenHash):
		return invalid("operator %s: the token hash is not 64 hex digits", op.Name)
	}
	return nil
}

// CreateOperator adds a named operator with its token's hash.
type CreateOperator struct {
	At        time.Time `json:"at"`
	Name      string    `json:"name"`
	Role      Role      `json:"role"`
	TokenHash string    `json:"tokenHash"`
}

func (CreateOperator) Type() CommandType { return CmdCreateOperator }

func (c CreateOperator) Validate(s *State) error {
	if err := requireTime(c.At); err != nil {
		return err
	}
	if err := validOperator(&Operator{Name: c.Name, Role: c.Role, TokenHash: c.TokenHash}); err != nil {
		return err
	}
	if s.operators[c.Name] != nil {
		return conflict("operator %s already exists; revoke it first to issue a new token", c.Name)
	}
	if len(s.operators) >= MaxOperators {
		return conflict("there are already %d operators, the most the cluster holds", len(s.operators))
	}
	if s.OperatorByToken(c.TokenHash) != nil {
		return conflict("this token is already another operator's")
	}
	return nil
}

func (c CreateOperator) applyTo(t *txn) {
	t.putOperator(&Operator{Name: c.Name, Role: c.Role, TokenHash: c.TokenHash, CreatedAt: c.At})
}

// RevokeOperator removes a named operator: its token stops working on every
// node as the command applies, and a change it had sent that has not yet
// committed is refused by the leader and by Apply.
type RevokeOperator struct {
	Name string `json:"name"`
}

func (RevokeOperator) Type() CommandType { return CmdRevokeOperator }

func (c RevokeOperator) Validate(s *State) error {
	if s.operators[c.Name] == nil {
		return notFound("no operator %s", c.Name)
	}
	return nil
}

func (c RevokeOperator) applyTo(t *txn) { t.deleteOperator(c.Name) }

// RecordAction records in the audit trail an admin change that is not a
// command of the state (a membership change). It changes nothing else.
type RecordAction struct {
	Action  string `json:"action"`
	Subject string `json:"subject"`
}

func (RecordAction) Type() CommandType { return CmdRecordAction }

var actionPattern = regexp.MustCompile(`^[A-Za-z]{1,64}$`)

func (c RecordAction) Validate(*State) error {
	if !actionPattern.MatchString(c.Action) || len(c.Subject) > 512 {
		return invalid("recorded action %q: a name of 1-64 letters and a subject of at most 512 bytes", c.Action)
	}
	return nil
}

func (RecordAction) applyTo(*txn) {}

// RequiredRole is the role an operator needs to issue c, and false for a
// command no operator issues (the nodes' own: Seed, DeleteKey,
// RaiseCommandSet). It is checked where the request arrives, again by the
// leader before it proposes, and again by Apply.
func RequiredRole(c Command) (Role, bool) {
	switch c := c.(type) {
	case SetKeyEnabled:
		if !c.Enabled {
			return RoleKillSwitch, true
		}
		return RoleOperator, true
	case UpdateKeyStore:
		if c.Enabled != nil && !*c.Enabled && c.QuotaRPS == nil && c.GrantsMode == nil {
			return RoleKillSwitch, true
		}
		return RoleOperator, true
	case CreateKeyStore, DeleteKeyStore, AddCredential, RemoveCredential, CreateKey, AddKeyVersion,
		SetCurrentVersion, AddGrant, RemoveGrant, ScheduleDeletion, CancelDeletion:
		return RoleOperator, true
	case CreateOperator, RevokeOperator, RecordAction:
		return RoleAdmin, true
	}
	return "", false
}

// CheckNamed refuses, from command set 3 on, an operator's change that does
// not name its operator (is not in an Audited entry): the leader then
// checks every change against its operator, and none escapes the audit
// trail. The nodes' own commands go bare.
func CheckNamed(s *State, c Command) error {
	if _, operators := RequiredRole(c); operators && s.CommandSet() >= 3 {
		return forbidden("%s is an operator's change: from command set 3 on it must name its operator (an Audited entry); retry if the cluster has just reached command set 3", c.Type())
	}
	return nil
}

// Actor is who asked for a change and through which node: what the audit
// trail records and what the leader checks again.
type Actor struct {
	// Kind is "token" (a named operator), "bootstrap" (a node's
	// admin.token_file) or "certificate" (an operator certificate).
	Kind string `json:"kind"`
	Name string `json:"name"`
	Role Role   `json:"role"`
	// Credential names the token (TokenFingerprint) or the certificate
	// (its SHA-256 fingerprint), never a secret.
	Credential string `json:"credential,omitempty"`
	RemoteAddr string `json:"remoteAddr"`
	Node       string `json:"node"` // the node that received the request
}

// The kinds of actor.
const (
	ActorToken       = "token"
	ActorBootstrap   = "bootstrap"
	ActorCertificate = "certificate"
)

func (a *Actor) validShape() error {
	if len(a.Name) > 256 || len(a.Credential) > 128 || len(a.RemoteAddr) > 128 || len(a.Node) > 128 || a.Name == "" {
		return invalid("actor: a name of 1-256 bytes and at most 128 bytes of credential, address and node")
	}
	switch a.Kind {
	case ActorToken, ActorCertificate:
	case ActorBootstrap:
		if a.Name != BootstrapOperator || a.Role != RoleAdmin {
			return invalid("actor: the bootstrap operator is %s with role admin", BootstrapOperator)
		}
	default:
		return invalid("actor kind %q: want token, bootstrap or certificate", a.Kind)
	}
	if !a.Role.Valid() {
		return invalid("actor %s: role %q", a.Name, a.Role)
	}
	return nil
}

// Permit refuses an actor that may not issue c in state s: a named
// operator must still exist with the same role and the same token (a
// revoked or replaced token is refused even if the node that received the
// request had not yet learnt of it), and its role must allow c.
func (a *Actor) Permit(s *State, c Command) error {
	need, ok := RequiredRole(c)
	if !ok {
		return invalid("%s is the nodes' own command; no operator issues it", c.Type())
	}
	if a.Kind == ActorToken {
		op := s.operators[a.Name]
		switch {
		case op == nil:
			return forbidden("operator %s does not exist (revoked)", a.Name)
		case op.Role != a.Role:
			return forbidden("operator %s now has role %s, not %s", a.Name, op.Role, a.Role)
		case TokenFingerprint(op.TokenHash) != a.Credential:
			return forbidden("operator %s's token was replaced", a.Name)
		}
	}
	if !a.Role.Allows(need) {
		return forbidden("%s %s has role %s; %s needs %s", a.Kind, a.Name, a.Role, c.Type(), need)
	}
	return nil
}
