package fsm

import (
	"encoding/json"
	"fmt"
)

// CommandType is the first byte of every log entry. The numbering is
// append-only: a number is never reused or renumbered, even after its
// command is retired, because old entries stay in logs and snapshots.
type CommandType uint8

// IgnoreIfUnknown, set in a command type, tells a node that does not know
// the type to skip the entry instead of stopping. Only a command whose
// absence cannot change what any node allows may carry it; none of today's
// commands may.
const IgnoreIfUnknown CommandType = 0x80

// The command types. 0 is never valid, so a zeroed entry cannot pass as a
// command.
const (
	CmdSeed              CommandType = 1
	CmdCreateKeyStore    CommandType = 2
	CmdUpdateKeyStore    CommandType = 3
	CmdDeleteKeyStore    CommandType = 4
	CmdAddCredential     CommandType = 5
	CmdRemoveCredential  CommandType = 6
	CmdCreateKey         CommandType = 7
	CmdSetKeyEnabled     CommandType = 8
	CmdAddKeyVersion     CommandType = 9
	CmdSetCurrentVersion CommandType = 10
	CmdAddGrant          CommandType = 11
	CmdRemoveGrant       CommandType = 12
	CmdScheduleDeletion  CommandType = 13
	CmdCancelDeletion    CommandType = 14
	CmdDeleteKey         CommandType = 15
	CmdRaiseCommandSet   CommandType = 16 | IgnoreIfUnknown
	// 17 and 18 are the node identity's; 18 is unused so far.
	CmdRevokeNodeCertificates CommandType = 17
	CmdCreateOperator         CommandType = 19
	CmdRevokeOperator         CommandType = 20
	CmdAudited                CommandType = 21
	CmdRecordAction           CommandType = 22
	// 23 is reserved for the operators' commands.
)

// commands maps each known type to its name and decoder.
var commands = map[CommandType]struct {
	name   string
	decode func([]byte) (Command, error)
}{
	CmdSeed:                   {"Seed", decodeAs[Seed]},
	CmdCreateKeyStore:         {"CreateKeyStore", decodeAs[CreateKeyStore]},
	CmdUpdateKeyStore:         {"UpdateKeyStore", decodeAs[UpdateKeyStore]},
	CmdDeleteKeyStore:         {"DeleteKeyStore", decodeAs[DeleteKeyStore]},
	CmdAddCredential:          {"AddCredential", decodeAs[AddCredential]},
	CmdRemoveCredential:       {"RemoveCredential", decodeAs[RemoveCredential]},
	CmdCreateKey:              {"CreateKey", decodeAs[CreateKey]},
	CmdSetKeyEnabled:          {"SetKeyEnabled", decodeAs[SetKeyEnabled]},
	CmdAddKeyVersion:          {"AddKeyVersion", decodeAs[AddKeyVersion]},
	CmdSetCurrentVersion:      {"SetCurrentVersion", decodeAs[SetCurrentVersion]},
	CmdAddGrant:               {"AddGrant", decodeAs[AddGrant]},
	CmdRemoveGrant:            {"RemoveGrant", decodeAs[RemoveGrant]},
	CmdScheduleDeletion:       {"ScheduleDeletion", decodeAs[ScheduleDeletion]},
	CmdCancelDeletion:         {"CancelDeletion", decodeAs[CancelDeletion]},
	CmdDeleteKey:              {"DeleteKey", decodeAs[DeleteKey]},
	CmdRaiseCommandSet:        {"RaiseCommandSet", decodeAs[RaiseCommandSet]},
	CmdRevokeNodeCertificates: {"RevokeNodeCertificates", decodeAs[RevokeNodeCertificates]},
	CmdCreateOperator:         {"CreateOperator", decodeAs[CreateOperator]},
	CmdRevokeOperator:         {"RevokeOperator", decodeAs[RevokeOperator]},
	CmdAudited:                {"Audited", decodeAs[Audited]},
	CmdRecordAction:           {"RecordAction", decodeAs[RecordAction]},
}

// String names the type for messages.
func (t CommandType) String() string {
	if c, ok := commands[t]; ok {
		return c.name
	}
	return fmt.Sprintf("unknown command type 0x%02x", uint8(t))
}

// Optional reports whether a node that does not know t may skip it.
func (t CommandType) Optional() bool { return t&IgnoreIfUnknown != 0 }

// Command is one change to the state. Validate checks it against a state:
// the leader calls it before raft.Apply so that a bad command never enters
// the log, and Apply calls it again, because another command may have been
// committed in between; there a violation becomes ApplyResult.Err.
//
// Only this package implements Command: each command also knows how to
// apply itself, which must stay next to its rules.
type Command interface {
	Type() CommandType
	Validate(s *State) error
	// applyTo makes the change in t; it runs only after Validate passed on
	// t.next's predecessor and never fails.
	applyTo(t *txn)
}

// Encode turns a command into a log entry: its type byte, then JSON.
func Encode(c Command) ([]byte, error) {
	if c == nil {
		return nil, fmt.Errorf("encode: no command")
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", c.Type(), err)
	}
	return append([]byte{byte(c.Type())}, payload...), nil
}

// Decode parses a log entry written by Encode. It returns the command by
// value (Seed, CreateKeyStore, ...). A type this build does not know wraps
// ErrUnknownCommand; unknown JSON fields are an error too, since dropping a
// field a newer node wrote would apply a different change than it meant.
func Decode(b []byte) (Command, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("decode: empty log entry")
	}
	t := CommandType(b[0])
	c, ok := commands[t]
	if !ok {
		return nil, fmt.Errorf("decode: %w 0x%02x (optional: %v); this node is older than the one that wrote it", ErrUnknownCommand, uint8(t), t.Optional())
	}
	cmd, err := c.decode(b[1:])
	if a, ok := cmd.(Audited); ok && err == nil {
		cmd, err = a.withInner()
	}
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", t, err)
	}
	return cmd, nil
}

func decodeAs[C Command](payload []byte) (Command, error) {
	var c C
	if err := decodeStrict(payload, &c); err != nil {
		return nil, err
	}
	return c, nil
}
