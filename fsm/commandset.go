package fsm

import "fmt"

// CommandSet is the command vocabulary this build reads: the command types
// and fields it decodes and applies. Raise it whenever a command type or a
// field is added, and make RequiredCommandSet return the new number for the
// commands that use the addition: a node of an older build cannot decode
// them (decoding is strict) and would stop, or would apply a different
// change than the others.
//
// Every build released before command sets existed reads set 1. Set 2
// adds the key usages beyond ENCRYPT and DECRYPT, and credential seals
// bound to their key store (SealBoundToKeyStore). Set 3 adds keys that
// remember another proxy's ciphertext format (Key.Legacy), the deny-list
// of node certificates (RevokeNodeCertificates), named operators and the
// audit trail (CreateOperator, RevokeOperator, Audited, RecordAction, and
// the state's operators and audit fields).
const CommandSet = 3

// commandSetNodeIdentity is the set that reads RevokeNodeCertificates.
const commandSetNodeIdentity = 3

// SealBoundToKeyStore is the first byte of a sealed credential secret whose
// seal binds its key store as well as its access key id. Builds before
// command set 2 cannot open it.
const SealBoundToKeyStore = 2

// usageSet1 is the key usages every build reads.
const usageSet1 = UsageEncrypt | UsageDecrypt

// RequiredCommandSet is the oldest command set whose nodes apply c exactly
// as this build does.
func RequiredCommandSet(c Command) int {
	need := 1
	key := func(k *Key) {
		if k.Usage&^usageSet1 != 0 {
			need = max(need, 2)
		}
		if k.Legacy != nil {
			need = max(need, 3)
		}
	}
	creds := func(cs []StoredCredential) {
		for _, cr := range cs {
			if len(cr.SealedSecret) > 0 && cr.SealedSecret[0] == SealBoundToKeyStore {
				need = max(need, 2)
			}
		}
	}
	switch c := c.(type) {
	case Seed:
		for i := range c.KeyStores {
			creds(c.KeyStores[i].Credentials)
		}
		for i := range c.Keys {
			key(&c.Keys[i])
		}
	case CreateKeyStore:
		creds(c.KeyStore.Credentials)
	case AddCredential:
		creds([]StoredCredential{c.Credential})
	case CreateKey:
		key(&c.Key)
	case RevokeNodeCertificates:
		need = max(need, commandSetNodeIdentity)
	case CreateOperator, RevokeOperator, RecordAction:
		need = max(need, 3)
	case Audited:
		need = max(3, RequiredCommandSet(c.inner))
	}
	return need
}

// CommandSetError refuses a command that needs a newer command set than the
// cluster has reached.
type CommandSetError struct {
	Command  CommandType
	Needs    int
	InEffect int
}

func (e *CommandSetError) Error() string {
	return fmt.Sprintf("%s needs command set %d, and the cluster is at %d until every voter runs a build that reads it",
		e.Command, e.Needs, e.InEffect)
}

// CheckCommandSet refuses c when the cluster's command set in s is older
// than c needs. The leader checks before proposing and Apply checks again,
// so that every replica of this build refuses the same entries.
func CheckCommandSet(s *State, c Command) error {
	if need := RequiredCommandSet(c); need > s.CommandSet() {
		return &CommandSetError{Command: c.Type(), Needs: need, InEffect: s.CommandSet()}
	}
	return nil
}

// RaiseCommandSet records that every voter reads command set To, so that
// commands needing it may be proposed. Its type carries IgnoreIfUnknown:
// builds from before command sets skip it, and skipping changes nothing
// they allow. The leader proposes it; it is never lowered.
type RaiseCommandSet struct {
	To int `json:"to"`
}

func (RaiseCommandSet) Type() CommandType { return CmdRaiseCommandSet }

func (c RaiseCommandSet) Validate(s *State) error {
	if c.To <= s.CommandSet() {
		return fmt.Errorf("the cluster is already at command set %d", s.CommandSet())
	}
	if c.To > CommandSet {
		return fmt.Errorf("command set %d is newer than this build's %d", c.To, CommandSet)
	}
	return nil
}

func (c RaiseCommandSet) applyTo(t *txn) { t.next.commandSet = c.To }
